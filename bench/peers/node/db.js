// PostgreSQL access for the Node.js peer: the pool, the type parsers it needs and the one
// query the users API runs.
import pg from 'pg';

// The pool size of every peer, shared out among the cluster's workers.
export const TOTAL_POOL_SIZE = 25;

export const REQUEST_TIMEOUT_MS = 10_000;

const SELECT_USER = 'SELECT id, name, email, created_at FROM users WHERE id = $1';

// PostgreSQL sends timestamptz as text in the session's time zone, which createPool sets to
// UTC, for example "2026-12-04 15:41:12.1234+00". The fraction has up to six digits and
// leaves out trailing zeros.
const TIMESTAMPTZ_UTC = /^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2})(?:\.(\d{1,6}))?\+00$/;

// Parses a timestamptz into RFC 3339 text with six fraction digits. A JavaScript Date would
// drop the microseconds that the other peers send.
function parseTimestamptz(text) {
  const match = TIMESTAMPTZ_UTC.exec(text);
  if (match === null) {
    throw new Error(`unexpected timestamptz text ${JSON.stringify(text)}: the session time zone must be UTC`);
  }
  const [, date, time, fraction = ''] = match;
  return `${date}T${time}.${fraction.padEnd(6, '0')}Z`;
}

// Parses a bigint into a Number. pg returns bigint as a string by default, and JSON needs a
// number.
function parseBigint(text) {
  const value = Number(text);
  if (!Number.isSafeInteger(value)) {
    // NOTE: ids above 2^53 - 1 cannot be sent as exact JSON numbers from Node.js 20
    // (JSON.rawJSON arrived in Node.js 21), so such a row fails instead of being rounded.
    throw new RangeError(`bigint ${text} is outside JavaScript's safe integer range`);
  }
  return value;
}

pg.types.setTypeParser(pg.types.builtins.TIMESTAMPTZ, parseTimestamptz);
pg.types.setTypeParser(pg.types.builtins.INT8, parseBigint);

export function createPool(connectionString, size) {
  const pool = new pg.Pool({
    connectionString,
    max: size,
    connectionTimeoutMillis: REQUEST_TIMEOUT_MS,
    // The server cancels a statement that outlives the request timeout, so a timed-out
    // request does not keep its connection busy.
    statement_timeout: REQUEST_TIMEOUT_MS,
    options: '-c TimeZone=UTC',
  });

  // An idle client that loses its connection emits 'error' on the pool, which would crash
  // the worker if nothing listened. The pool drops that client and opens a new one later.
  pool.on('error', (err) => {
    console.error(`idle PostgreSQL client failed: ${err.message}`);
  });
  return pool;
}

// Returns the user row with this id, or undefined. The named query makes pg prepare the
// statement once per connection and reuse it.
export async function findUser(pool, id) {
  const result = await pool.query({ name: 'select-user', text: SELECT_USER, values: [id] });
  return result.rows[0];
}
