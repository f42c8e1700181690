'use strict';
// tokotani-engine-hub: the stand-in for TokoTani's background worker. It records a heartbeat
// row in engine_heartbeat every HEARTBEAT_INTERVAL_MS; the web server raises an alert when
// that row is missing or older than three intervals. Database errors are logged and retried.

const { createPool, query, redactUrl } = require('./lib/db');
const { loadConfig } = require('./lib/env');
const { log } = require('./lib/log');

const COMPONENT = 'tokotani-engine-hub';
// One row per worker; pm2 numbers the instances of an app in NODE_APP_INSTANCE.
const WORKER = `engine-hub-${process.env.NODE_APP_INSTANCE || 0}`;

function main() {
  let config;
  let pool;
  try {
    config = loadConfig();
    pool = createPool(config, { component: COMPONENT, max: 1 });
  } catch (err) {
    log(COMPONENT, `cannot start: ${err.message}`);
    process.exit(1);
  }
  log(
    COMPONENT,
    `worker ${WORKER} started (pid ${process.pid}, every ${config.heartbeatIntervalMs} ms, ` +
      `database ${redactUrl(config.databaseUrl)})`,
  );

  let timer = null;
  let inFlight = Promise.resolve();
  let healthy = null; // last outcome, so that only changes are logged
  let stopping = false;

  async function beat() {
    try {
      await query(
        pool,
        `INSERT INTO engine_heartbeat (worker, beat_at, pid) VALUES ($1, now(), $2)
         ON CONFLICT (worker) DO UPDATE SET beat_at = excluded.beat_at, pid = excluded.pid`,
        [WORKER, process.pid],
      );
      if (healthy === null) log(COMPONENT, 'first heartbeat recorded');
      if (healthy === false) log(COMPONENT, 'heartbeat recorded again: the database is reachable');
      healthy = true;
    } catch (err) {
      log(COMPONENT, `heartbeat failed: ${err.message}; retrying in ${config.heartbeatIntervalMs} ms`);
      healthy = false;
    }
  }

  function schedule(delay) {
    timer = setTimeout(() => {
      inFlight = beat().then(() => {
        if (!stopping) schedule(config.heartbeatIntervalMs);
      });
    }, delay);
  }

  async function shutdown(signal) {
    if (stopping) return;
    stopping = true;
    log(COMPONENT, `${signal} received, shutting down`);
    clearTimeout(timer);
    await inFlight;
    await pool.end().catch(() => {});
    log(COMPONENT, 'stopped');
    process.exit(0);
  }
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));

  schedule(0);
}

main();
