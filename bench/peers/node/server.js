// Entry point of the Node.js peer in peregrine's benchmark. The primary process forks one
// worker per available core with node:cluster, and every worker serves the Express app on
// the shared port with its share of the PostgreSQL pool.
//
// Reads PORT (listens on 127.0.0.1:PORT) and DATABASE_URL. SIGTERM or SIGINT to the
// primary stops the workers gracefully.
import cluster from 'node:cluster';
import { availableParallelism } from 'node:os';

import { createApp } from './app.js';
import { TOTAL_POOL_SIZE, createPool } from './db.js';

const HOST = '127.0.0.1';
const SHUTDOWN_TIMEOUT_MS = 10_000;

function requireEnv(key) {
  const value = process.env[key];
  if (!value) {
    console.error(`environment variable ${key} is missing or empty`);
    process.exit(1);
  }
  return value;
}

const port = Number.parseInt(requireEnv('PORT'), 10);
const databaseUrl = requireEnv('DATABASE_URL');
const workerCount = availableParallelism();

if (cluster.isPrimary) {
  runPrimary();
} else {
  runWorker();
}

function runPrimary() {
  let stopping = false;

  console.log(`primary ${process.pid} forking ${workerCount} workers`);
  for (let i = 0; i < workerCount; i += 1) {
    cluster.fork();
  }

  cluster.on('exit', (worker, code, signal) => {
    if (stopping) {
      if (Object.keys(cluster.workers).length === 0) {
        console.log('all workers stopped');
        process.exit(0);
      }
      return;
    }
    console.error(`worker ${worker.process.pid} exited (code ${code}, signal ${signal})`);
    // A worker that never listened failed at start-up, and forking it again would fail the
    // same way, so the whole peer stops instead.
    if (!worker.listened) {
      process.exit(1);
    }
    cluster.fork();
  });
  cluster.on('listening', (worker) => {
    worker.listened = true;
  });

  const stop = (signal) => {
    if (stopping) {
      return;
    }
    stopping = true;
    console.log(`received ${signal}, stopping workers`);
    for (const worker of Object.values(cluster.workers)) {
      worker.process.kill('SIGTERM');
    }
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

function runWorker() {
  const pool = createPool(databaseUrl, Math.ceil(TOTAL_POOL_SIZE / workerCount));
  const server = createApp(pool).listen(port, HOST, (err) => {
    if (err) {
      console.error(`worker ${process.pid} cannot listen on ${HOST}:${port}: ${err.message}`);
      process.exit(1);
    }
    console.log(`worker ${process.pid} listening on ${HOST}:${port}`);
  });

  const stop = () => {
    server.close(() => {
      pool.end().finally(() => process.exit(0));
    });
    server.closeIdleConnections();
    setTimeout(() => {
      console.error(`worker ${process.pid} did not stop within ${SHUTDOWN_TIMEOUT_MS} ms`);
      process.exit(1);
    }, SHUTDOWN_TIMEOUT_MS).unref();
  };
  process.on('SIGTERM', stop);
  // The primary decides when workers stop, so a Ctrl-C to the process group does not
  // stop a worker ahead of it.
  process.on('SIGINT', () => {});
}
