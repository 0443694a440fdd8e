// The Express application: the hello and liveness routes without middleware, and the
// users API under /api/v1 behind request id, access log and timeout middleware.
import { randomUUID } from 'node:crypto';
import { STATUS_CODES } from 'node:http';

import timeout from 'connect-timeout';
import express from 'express';
import morgan from 'morgan';

import { REQUEST_TIMEOUT_MS, findUser } from './db.js';

const MAX_BIGINT = 2n ** 63n - 1n;

// Digits with an optional plus sign, the syntax that Go's strconv.ParseInt and Java's
// Long.parseLong accept for a positive number.
const POSITIVE_INTEGER = /^\+?[0-9]+$/;

morgan.token('request-id', (req) => req.id);

const ACCESS_LOG_FORMAT =
  ':date[iso] :method :url :status :response-time ms request_id=:request-id client=:remote-addr';

export function createApp(pool) {
  const app = express();
  app.disable('x-powered-by');
  // req.ip, which morgan logs, then comes from X-Forwarded-For when the peer is loopback.
  app.set('trust proxy', 'loopback');

  app.get('/', (req, res) => {
    res.type('text/plain').send('Hello, World!');
  });
  app.get('/livez', (req, res) => {
    res.type('text/plain').send('ok\n');
  });
  app.use('/api/v1', createApiRouter(pool));
  return app;
}

function createApiRouter(pool) {
  const router = express.Router();
  router.use(requestId);
  router.use(morgan(ACCESS_LOG_FORMAT));
  router.use(timeout(REQUEST_TIMEOUT_MS));

  router.get('/users/:id', async (req, res) => {
    const id = parseUserId(req.params.id);
    if (id === null) {
      const detail = `user id must be a positive 64-bit integer, got ${JSON.stringify(req.params.id)}`;
      sendProblem(res, 400, detail);
      return;
    }

    let user;
    try {
      user = await findUser(pool, id);
    } catch (err) {
      console.error(`[${req.id}] query user ${id} failed: ${err.message}`);
      if (!req.timedout) {
        sendProblem(res, 503, 'the database is unavailable');
      }
      return;
    }

    // connect-timeout has already sent the 504 through the error handler.
    if (req.timedout) {
      return;
    }
    if (user === undefined) {
      sendProblem(res, 404, `no user with id ${id}`);
      return;
    }
    res.json(user);
  });

  router.use(handleError);
  return router;
}

// Reads X-Request-Id or generates one, and echoes it in the response.
function requestId(req, res, next) {
  req.id = req.get('X-Request-Id') || randomUUID();
  res.set('X-Request-Id', req.id);
  next();
}

// Returns the id as a decimal string, or null unless it is a positive 64-bit integer. The
// string keeps ids above 2^53 exact on their way to PostgreSQL.
function parseUserId(text) {
  if (!POSITIVE_INTEGER.test(text)) {
    return null;
  }
  const id = BigInt(text);
  return id >= 1n && id <= MAX_BIGINT ? id.toString() : null;
}

function sendProblem(res, status, detail) {
  res
    .status(status)
    .type('application/problem+json')
    .send(JSON.stringify({ type: 'about:blank', title: STATUS_CODES[status], status, detail }));
}

// Sends a 504 problem for a request timeout and a 500 problem for any other error. Express 5
// also routes a rejected promise from an async handler here.
function handleError(err, req, res, next) {
  if (res.headersSent) {
    next(err);
    return;
  }
  if (err.code === 'ETIMEDOUT' && req.timedout) {
    sendProblem(res, 504, `the request took longer than ${REQUEST_TIMEOUT_MS} ms`);
    return;
  }
  console.error(`[${req.id}] ${req.method} ${req.originalUrl} failed:`, err);
  sendProblem(res, 500, 'the server failed to handle the request');
}
