'use strict';
// The PostgreSQL connection pool shared by the web server, the engine hub and the scripts.

const { Pool } = require('pg');

const { log } = require('./log');

const DEFAULT_TIMEOUT_MS = 2000;

// Any failure to reach or query the database: the web server answers 503 for these.
class DatabaseError extends Error {}

// DATABASE_URL without its password, for logs and error messages.
function redactUrl(url) {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '<unparseable DATABASE_URL>';
  }
}

function requireDatabaseUrl(config) {
  if (!config.databaseUrl) {
    throw new Error('DATABASE_URL is not set (environment or .env): postgres://user:password@host:port/database');
  }
  return config.databaseUrl;
}

// A pool that fails fast when the database is unreachable (connect timeout ~2 s), logs the
// errors of idle connections instead of crashing, and reconnects on the next query.
function createPool(config, { component, max = 10 } = {}) {
  const pool = new Pool({
    connectionString: requireDatabaseUrl(config),
    max,
    connectionTimeoutMillis: DEFAULT_TIMEOUT_MS,
    idleTimeoutMillis: 10000,
    application_name: component,
  });
  pool.on('error', (err) => log(component, `idle database connection lost: ${err.message}`));
  return pool;
}

// Run one query with a deadline (connecting included), so that a hung or unreachable
// database fails the call within timeoutMs instead of hanging it. Errors become DatabaseError.
async function query(pool, text, values = [], timeoutMs = DEFAULT_TIMEOUT_MS) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer from the database within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    return await Promise.race([pool.query({ text, values, query_timeout: timeoutMs }), deadline]);
  } catch (err) {
    throw new DatabaseError(err.message);
  } finally {
    clearTimeout(timer);
  }
}

module.exports = { DatabaseError, createPool, query, redactUrl, requireDatabaseUrl };
