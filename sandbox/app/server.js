'use strict';
// tokotani-nextjs: the stand-in for TokoTani's Next.js server. Plain `http`, no framework.

const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');

const { DatabaseError, createPool, query, redactUrl } = require('./lib/db');
const { loadConfig, writeDotenvValue } = require('./lib/env');
const { log } = require('./lib/log');

const COMPONENT = 'tokotani-nextjs';
const ROTATABLE_SECRETS = ['NEXTAUTH_SECRET', 'ADMIN_TOKEN'];
const MAX_BODY_BYTES = 64 * 1024;
const PRODUCTS_DEFAULT_LIMIT = 50;
const PRODUCTS_MAX_LIMIT = 500;
const SHUTDOWN_GRACE_MS = 8000;

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function readBuildId() {
  try {
    return fs.readFileSync(path.join(__dirname, '.next', 'BUILD_ID'), 'utf8').trim() || null;
  } catch {
    return null;
  }
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function formatRupiah(value) {
  return `Rp ${Number(value).toLocaleString('id-ID', { maximumFractionDigits: 2 })}`;
}

function sha256(text) {
  return crypto.createHash('sha256').update(text).digest();
}

// Constant-time check of an `Authorization: Bearer <token>` header (hashing first makes
// the compared buffers the same length whatever was sent).
function bearerMatches(header, token) {
  if (!token) return false;
  const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header || '');
  return Boolean(match) && crypto.timingSafeEqual(sha256(match[1]), sha256(token));
}

function readJsonBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new HttpError(413, `request body larger than ${MAX_BODY_BYTES} bytes`));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8') || 'null'));
      } catch {
        reject(new HttpError(400, 'the request body is not valid JSON'));
      }
    });
    req.on('error', reject);
  });
}

function createApp(config, pool) {
  const buildId = readBuildId();
  const startedAt = Date.now();
  const requestCounts = new Map(); // "method\troute\tstatus" -> count
  let databaseUp = null; // result of the last database call: true, false, or null before any
  let rotation = Promise.resolve(); // rotations run one at a time (read-modify-write of .env)

  async function db(text, values) {
    try {
      const result = await query(pool, text, values);
      databaseUp = true;
      return result;
    } catch (err) {
      databaseUp = false;
      throw err;
    }
  }

  async function home() {
    const { rows } = await db('SELECT id, name, price FROM products ORDER BY id LIMIT 50');
    const items = rows
      .map((p) => `<tr><td>${escapeHtml(p.name)}</td><td>${escapeHtml(formatRupiah(p.price))}</td></tr>`)
      .join('\n');
    const html = `<!doctype html>
<html lang="id">
<head><meta charset="utf-8"><title>TokoTani Online</title></head>
<body>
<h1>TokoTani Online</h1>
<p>Versi ${escapeHtml(config.appVersion)}, build ${escapeHtml(buildId || 'none')}</p>
<table>
<thead><tr><th>Produk</th><th>Harga</th></tr></thead>
<tbody>
${items}
</tbody>
</table>
</body>
</html>
`;
    return { status: 200, type: 'text/html; charset=utf-8', body: html };
  }

  async function health() {
    const body = { status: 'ok', version: config.appVersion, build_id: buildId, database: 'ok' };
    try {
      await db('SELECT 1');
      return { status: 200, json: body };
    } catch (err) {
      return { status: 503, json: { ...body, status: 'degraded', database: 'error', error: err.message } };
    }
  }

  async function products(url) {
    const raw = url.searchParams.get('limit');
    const limit = raw === null ? PRODUCTS_DEFAULT_LIMIT : Number(raw);
    if (!Number.isInteger(limit) || limit < 1 || limit > PRODUCTS_MAX_LIMIT) {
      throw new HttpError(400, `limit must be an integer between 1 and ${PRODUCTS_MAX_LIMIT}`);
    }
    const { rows } = await db(
      'SELECT id, sku, name, category, price, stock FROM products ORDER BY id LIMIT $1',
      [limit],
    );
    return { status: 200, json: { products: rows } };
  }

  async function order(url, params) {
    if (!/^[1-9][0-9]{0,9}$/.test(params[0]) || Number(params[0]) > 2147483647) {
      throw new HttpError(400, 'the order id must be a positive integer');
    }
    const id = Number(params[0]);
    const head = await db(
      `SELECT o.id, o.status, o.total, o.created_at, u.id AS user_id, u.email, u.name
         FROM orders o JOIN users u ON u.id = o.user_id
        WHERE o.id = $1`,
      [id],
    );
    if (head.rows.length === 0) throw new HttpError(404, `order ${id} not found`);
    const items = await db(
      `SELECT oi.id, oi.product_id, p.sku, p.name AS product_name, oi.quantity, oi.unit_price
         FROM order_items oi JOIN products p ON p.id = oi.product_id
        WHERE oi.order_id = $1
        ORDER BY oi.id`,
      [id],
    );
    const o = head.rows[0];
    return {
      status: 200,
      json: {
        id: o.id,
        status: o.status,
        total: o.total,
        created_at: o.created_at,
        user: { id: o.user_id, email: o.email, name: o.name },
        items: items.rows,
      },
    };
  }

  // Alerts an operator (or a DR drill) polls: empty when everything is healthy.
  async function currentAlerts() {
    const alerts = [];
    let beat;
    try {
      beat = (
        await db(
          `SELECT count(*)::int AS workers, extract(epoch FROM now() - max(beat_at))::float8 AS age
             FROM engine_heartbeat`,
        )
      ).rows[0];
    } catch (err) {
      alerts.push({ name: 'DatabaseUnreachable', severity: 'critical', summary: `database error: ${err.message}` });
      return { alerts, heartbeatAge: null };
    }
    const limitSeconds = (3 * config.heartbeatIntervalMs) / 1000;
    if (beat.workers === 0) {
      alerts.push({
        name: 'EngineHubHeartbeatMissing',
        severity: 'critical',
        summary: 'the engine hub has never recorded a heartbeat',
      });
    } else if (beat.age > limitSeconds) {
      alerts.push({
        name: 'EngineHubHeartbeatStale',
        severity: 'critical',
        summary: `last engine hub heartbeat ${beat.age.toFixed(1)} s ago (limit ${limitSeconds} s)`,
      });
    }
    return { alerts, heartbeatAge: beat.age };
  }

  async function alertsRoute() {
    const { alerts } = await currentAlerts();
    return { status: 200, json: { alerts } };
  }

  async function metrics() {
    const { heartbeatAge } = await currentAlerts();
    let counts = null;
    try {
      counts = (
        await db('SELECT (SELECT count(*) FROM products)::int AS products, (SELECT count(*) FROM orders)::int AS orders')
      ).rows[0];
    } catch {
      // databaseUp is now false; the counts are left out
    }
    const label = (v) => String(v).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
    const lines = [
      '# HELP tokotani_http_requests_total HTTP requests served, by method, route and status.',
      '# TYPE tokotani_http_requests_total counter',
    ];
    for (const [key, count] of [...requestCounts.entries()].sort()) {
      const [method, route, status] = key.split('\t');
      lines.push(`tokotani_http_requests_total{method="${method}",route="${label(route)}",status="${status}"} ${count}`);
    }
    lines.push(
      '# HELP tokotani_database_up 1 when the last database query succeeded, else 0.',
      '# TYPE tokotani_database_up gauge',
      `tokotani_database_up ${databaseUp ? 1 : 0}`,
      '# HELP tokotani_process_uptime_seconds Seconds since this server process started.',
      '# TYPE tokotani_process_uptime_seconds gauge',
      `tokotani_process_uptime_seconds ${((Date.now() - startedAt) / 1000).toFixed(3)}`,
      '# HELP tokotani_build_info The running version and build id.',
      '# TYPE tokotani_build_info gauge',
      `tokotani_build_info{version="${label(config.appVersion)}",build_id="${label(buildId || '')}"} 1`,
    );
    if (counts) {
      lines.push(
        '# HELP tokotani_shop_products Rows in the products table.',
        '# TYPE tokotani_shop_products gauge',
        `tokotani_shop_products ${counts.products}`,
        '# HELP tokotani_shop_orders Rows in the orders table.',
        '# TYPE tokotani_shop_orders gauge',
        `tokotani_shop_orders ${counts.orders}`,
      );
    }
    if (heartbeatAge !== null && heartbeatAge !== undefined) {
      lines.push(
        '# HELP tokotani_engine_hub_heartbeat_age_seconds Seconds since the newest engine hub heartbeat.',
        '# TYPE tokotani_engine_hub_heartbeat_age_seconds gauge',
        `tokotani_engine_hub_heartbeat_age_seconds ${heartbeatAge.toFixed(3)}`,
      );
    }
    return { status: 200, type: 'text/plain; version=0.0.4; charset=utf-8', body: `${lines.join('\n')}\n` };
  }

  async function rotateSecret(secretType) {
    const secret = crypto.randomBytes(32).toString('base64url');
    let client;
    try {
      client = await pool.connect();
    } catch (err) {
      databaseUp = false;
      throw new DatabaseError(err.message);
    }
    const sql = (text, values) =>
      client.query({ text, values, query_timeout: 2000 }).catch((err) => {
        databaseUp = false;
        throw new DatabaseError(err.message);
      });
    let failed = true;
    try {
      await sql('BEGIN');
      const { rows } = await sql('INSERT INTO secret_rotations (secret_type) VALUES ($1) RETURNING rotated_at', [
        secretType,
      ]);
      // The file is rewritten inside the transaction: if that fails, no rotation is recorded.
      writeDotenvValue(config.envFile, secretType, secret);
      await sql('COMMIT');
      failed = false;
      if (secretType === 'ADMIN_TOKEN') config.adminToken = secret; // the old token stops working now
      log(COMPONENT, `rotated ${secretType} in ${config.envFile}`);
      return rows[0].rotated_at;
    } finally {
      if (failed) await client.query('ROLLBACK').catch(() => {});
      client.release(failed);
    }
  }

  async function rotate(url, params, req) {
    if (!bearerMatches(req.headers.authorization, config.adminToken)) {
      throw new HttpError(401, 'a valid "Authorization: Bearer <ADMIN_TOKEN>" header is required');
    }
    const body = await readJsonBody(req);
    const secretType = body && typeof body === 'object' ? body.secretType : undefined;
    if (!ROTATABLE_SECRETS.includes(secretType)) {
      throw new HttpError(400, `secretType must be one of ${ROTATABLE_SECRETS.join(', ')}`);
    }
    const run = rotation.then(() => rotateSecret(secretType));
    rotation = run.catch(() => {});
    const rotatedAt = await run;
    return { status: 200, json: { rotated: secretType, rotated_at: rotatedAt } };
  }

  const routes = [
    { method: 'GET', re: /^\/$/, route: '/', handler: home },
    { method: 'GET', re: /^\/api\/health$/, route: '/api/health', handler: health },
    { method: 'GET', re: /^\/api\/products$/, route: '/api/products', handler: products },
    { method: 'GET', re: /^\/api\/orders\/([^/]+)$/, route: '/api/orders/:id', handler: order },
    { method: 'GET', re: /^\/api\/metrics$/, route: '/api/metrics', handler: metrics },
    { method: 'GET', re: /^\/api\/alerts$/, route: '/api/alerts', handler: alertsRoute },
    { method: 'POST', re: /^\/api\/admin\/secrets\/rotate$/, route: '/api/admin/secrets/rotate', handler: rotate },
  ];

  function send(res, result) {
    const headers = { 'Cache-Control': 'no-store', ...result.headers };
    let body = result.body;
    if (result.json !== undefined) {
      headers['Content-Type'] = 'application/json; charset=utf-8';
      body = `${JSON.stringify(result.json)}\n`;
    } else {
      headers['Content-Type'] = result.type;
    }
    headers['Content-Length'] = Buffer.byteLength(body);
    res.writeHead(result.status, headers);
    res.end(body);
  }

  async function handle(req, res) {
    const started = process.hrtime.bigint();
    const url = new URL(req.url, 'http://localhost');
    let routeName = 'unmatched';
    res.on('finish', () => {
      const key = `${req.method}\t${routeName}\t${res.statusCode}`;
      requestCounts.set(key, (requestCounts.get(key) || 0) + 1);
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      // The path only: a query string is never logged.
      log(COMPONENT, `${req.method} ${url.pathname} ${res.statusCode} ${ms.toFixed(1)}ms`);
    });
    let result;
    try {
      const matching = routes.filter((r) => r.re.test(url.pathname));
      const route = matching.find((r) => r.method === req.method);
      if (!route) {
        if (matching.length === 0) throw new HttpError(404, 'not found');
        routeName = matching[0].route;
        result = { status: 405, json: { error: 'method not allowed' }, headers: { Allow: matching[0].method } };
      } else {
        routeName = route.route;
        result = await route.handler(url, route.re.exec(url.pathname).slice(1), req);
      }
    } catch (err) {
      if (err instanceof HttpError) {
        result = { status: err.status, json: { error: err.message } };
        if (err.status === 401) result.headers = { 'WWW-Authenticate': 'Bearer' };
      } else if (err instanceof DatabaseError) {
        result = { status: 503, json: { error: `database unavailable: ${err.message}` } };
      } else {
        log(COMPONENT, `internal error on ${req.method} ${url.pathname}: ${err.stack || err}`);
        result = { status: 500, json: { error: 'internal server error' } };
      }
    }
    if (!res.headersSent && !res.destroyed) send(res, result);
  }

  return { handle, buildId };
}

function main() {
  let config;
  let pool;
  try {
    config = loadConfig();
    pool = createPool(config, { component: COMPONENT });
  } catch (err) {
    log(COMPONENT, `cannot start: ${err.message}`);
    process.exit(1);
  }
  const app = createApp(config, pool);
  const server = http.createServer((req, res) => {
    app.handle(req, res);
  });

  server.on('error', (err) => {
    log(COMPONENT, `cannot listen on ${config.host}:${config.port}: ${err.message}`);
    process.exit(1);
  });
  server.listen(config.port, config.host, () => {
    log(
      COMPONENT,
      `listening on http://${config.host}:${config.port} (version ${config.appVersion}, ` +
        `build ${app.buildId || 'none: run npm run build'}, database ${redactUrl(config.databaseUrl)})`,
    );
  });

  let stopping = false;
  function shutdown(signal) {
    if (stopping) return;
    stopping = true;
    log(COMPONENT, `${signal} received, shutting down`);
    setTimeout(() => {
      log(COMPONENT, `connections still open after ${SHUTDOWN_GRACE_MS} ms, exiting anyway`);
      process.exit(1);
    }, SHUTDOWN_GRACE_MS).unref();
    server.close(async () => {
      await pool.end().catch(() => {});
      log(COMPONENT, 'stopped');
      process.exit(0);
    });
    server.closeIdleConnections();
  }
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
}

main();
