'use strict';
// tokotani-nextjs: the stand-in for TokoTani's Next.js server. Plain `http`, no framework.

const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');

const {
  SESSION_DAYS,
  bearerMatches,
  hashPassword,
  newSessionToken,
  sessionCookie,
  sessionTokenFrom,
  verifyPassword,
} = require('./lib/auth');
const { DatabaseError, createPool, query, redactUrl } = require('./lib/db');
const { loadConfig, writeDotenvValue } = require('./lib/env');
const { log } = require('./lib/log');

const COMPONENT = 'tokotani-nextjs';
const ROTATABLE_SECRETS = ['NEXTAUTH_SECRET', 'ADMIN_TOKEN'];
const ROLES = ['customer', 'admin'];
const MAX_EMAIL_CHARS = 200;
const MAX_NAME_CHARS = 200;
const MIN_PASSWORD_CHARS = 8;
const MAX_PRICE = 1e10;
const MAX_STOCK = 2147483647; // INTEGER
const ADMIN_AUTH_ERROR =
  'a valid "Authorization: Bearer <ADMIN_TOKEN>" header is required (or the session cookie of an admin user)';
// Sent on every response. Strict-Transport-Security, Content-Security-Policy and X-Frame-Options
// are left out on purpose (see README.md: a hardening check is meant to find them missing).
const SECURITY_HEADERS = {
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'strict-origin-when-cross-origin',
};
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

function jsonObject(body) {
  if (!body || typeof body !== 'object' || Array.isArray(body)) {
    throw new HttpError(400, 'the request body must be a JSON object');
  }
  return body;
}

// The first max characters (code points, so a pair of surrogates is never split).
function truncate(text, max) {
  return [...text].slice(0, max).join('');
}

function positiveId(text, what) {
  if (!/^[1-9][0-9]{0,9}$/.test(text) || Number(text) > 2147483647) {
    throw new HttpError(400, `the ${what} id must be a positive integer`);
  }
  return Number(text);
}

function publicUser(user) {
  return { id: user.id, email: user.email, name: user.name, role: user.role };
}

// The body of POST /api/admin/users, checked: {email, name, password, role}.
function newUserInput(body) {
  const { email, name, password, role = 'customer' } = jsonObject(body);
  if (typeof email !== 'string' || !email || [...email].length > MAX_EMAIL_CHARS || !email.includes('@')) {
    throw new HttpError(400, `email must be a string of 1 to ${MAX_EMAIL_CHARS} characters containing "@"`);
  }
  if (typeof name !== 'string' || !name.trim() || [...name].length > MAX_NAME_CHARS) {
    throw new HttpError(400, `name must be a non-empty string of at most ${MAX_NAME_CHARS} characters`);
  }
  if (typeof password !== 'string' || [...password].length < MIN_PASSWORD_CHARS) {
    throw new HttpError(400, `password must be a string of at least ${MIN_PASSWORD_CHARS} characters`);
  }
  if (!ROLES.includes(role)) throw new HttpError(400, `role must be one of ${ROLES.join(', ')}`);
  return { email, name, password, role };
}

// The body of PATCH /api/admin/products/:id: {price?, stock?}, at least one of them.
function productChanges(body) {
  const { price, stock } = jsonObject(body);
  if (price === undefined && stock === undefined) throw new HttpError(400, 'give price, stock or both');
  if (price !== undefined) {
    if (typeof price !== 'number' || !Number.isFinite(price) || price < 0 || price > MAX_PRICE) {
      throw new HttpError(400, `price must be a number between 0 and ${MAX_PRICE}`);
    }
    // products.price is NUMERIC(12, 2): rounded to cents, it must stay below 1e10.
    if (Math.round(price * 100) >= MAX_PRICE * 100) {
      throw new HttpError(400, `price must be below ${MAX_PRICE} once rounded to cents (NUMERIC(12, 2))`);
    }
  }
  if (stock !== undefined && (!Number.isInteger(stock) || stock < 0 || stock > MAX_STOCK)) {
    throw new HttpError(400, `stock must be an integer between 0 and ${MAX_STOCK}`);
  }
  return { price: price === undefined ? null : price, stock: stock === undefined ? null : stock };
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

  // Run work(sql) in one transaction on one pooled connection: committed if it returns, rolled
  // back if it throws. A constraint violation (SQLSTATE class 23) reaches the caller as pg's error,
  // with its code; any other database failure becomes a DatabaseError (503).
  async function transaction(work) {
    let client;
    try {
      client = await pool.connect();
    } catch (err) {
      databaseUp = false;
      throw new DatabaseError(err.message);
    }
    let broken = false;
    const sql = (text, values) =>
      client.query({ text, values, query_timeout: 2000 }).then(
        (result) => {
          databaseUp = true;
          return result;
        },
        (err) => {
          if (typeof err.code === 'string' && err.code.startsWith('23')) throw err;
          databaseUp = false;
          broken = true;
          throw new DatabaseError(err.message);
        },
      );
    let failed = true;
    try {
      await sql('BEGIN');
      const result = await work(sql);
      await sql('COMMIT');
      failed = false;
      return result;
    } finally {
      if (failed) await client.query('ROLLBACK').catch(() => {});
      client.release(broken);
    }
  }

  // One row of audit_log, through sql (db, or the sql of a transaction).
  function audit(sql, req, { actor, action, target = null, detail = null }) {
    return sql('INSERT INTO audit_log (actor, action, target, detail, remote_addr) VALUES ($1, $2, $3, $4, $5)', [
      actor,
      action,
      target === null ? null : String(target),
      detail === null ? null : JSON.stringify(detail),
      req.socket.remoteAddress || null,
    ]);
  }

  // The user of the request's session cookie while its sessions row exists and has not expired.
  async function sessionUser(req) {
    const token = sessionTokenFrom(req.headers.cookie);
    if (!token) return null;
    const { rows } = await db(
      `SELECT u.id, u.email, u.name, u.role, s.expires
         FROM sessions s JOIN users u ON u.id = s."userId"
        WHERE s."sessionToken" = $1 AND s.expires > now()`,
      [token],
    );
    return rows[0] || null;
  }

  // Who may use /api/admin/*: the ADMIN_TOKEN bearer, or the session of a user whose role is admin.
  async function adminActor(req) {
    if (bearerMatches(req.headers.authorization, config.adminToken)) return 'admin-token';
    const user = await sessionUser(req);
    if (user && user.role === 'admin') return `user:${user.email}`;
    throw new HttpError(401, ADMIN_AUTH_ERROR);
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
    const id = positiveId(params[0], 'order');
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

  async function login(url, params, req) {
    const { email, password } = jsonObject(await readJsonBody(req));
    if (typeof email !== 'string' || typeof password !== 'string') {
      throw new HttpError(400, 'email and password must be strings');
    }
    const { rows } = await db('SELECT id, email, name, role, password_hash FROM users WHERE email = $1', [email]);
    const user = rows[0];
    if (!(await verifyPassword(password, user ? user.password_hash : null))) {
      const reason = !user ? 'unknown email' : user.password_hash ? 'wrong password' : 'no password set';
      const actor = `user:${truncate(email, MAX_EMAIL_CHARS)}`;
      await audit(db, req, { actor, action: 'login.failed', detail: { reason } });
      throw new HttpError(401, 'invalid email or password');
    }
    const token = newSessionToken();
    const expires = await transaction(async (sql) => {
      const session = await sql(
        `INSERT INTO sessions ("sessionToken", "userId", expires)
         VALUES ($1, $2, now() + make_interval(days => $3)) RETURNING expires`,
        [token, user.id, SESSION_DAYS],
      );
      await audit(sql, req, { actor: `user:${user.email}`, action: 'login', target: user.id });
      return session.rows[0].expires;
    });
    return { status: 200, json: { user: publicUser(user), expires }, headers: { 'Set-Cookie': sessionCookie(token) } };
  }

  async function session(url, params, req) {
    const user = await sessionUser(req);
    if (!user) throw new HttpError(401, 'no valid session');
    return { status: 200, json: { user: publicUser(user), expires: user.expires } };
  }

  async function whoami(url, params, req, actor) {
    return { status: 200, json: { actor } };
  }

  async function createUser(url, params, req, actor) {
    const input = newUserInput(await readJsonBody(req));
    const passwordHash = await hashPassword(input.password);
    try {
      const user = await transaction(async (sql) => {
        const { rows } = await sql(
          'INSERT INTO users (email, name, role, password_hash) VALUES ($1, $2, $3, $4) RETURNING id, email, role',
          [input.email, input.name, input.role, passwordHash],
        );
        const created = rows[0];
        await audit(sql, req, {
          actor,
          action: 'user.create',
          target: created.id,
          detail: { email: created.email, role: created.role },
        });
        return created;
      });
      return { status: 201, json: user };
    } catch (err) {
      if (err.code === '23505') {
        throw new HttpError(409, `a user with the email ${JSON.stringify(input.email)} already exists`);
      }
      throw err;
    }
  }

  async function updateProduct(url, params, req, actor) {
    const id = positiveId(params[0], 'product');
    const changes = productChanges(await readJsonBody(req));
    const product = await transaction(async (sql) => {
      const before = await sql('SELECT price, stock FROM products WHERE id = $1 FOR UPDATE', [id]);
      if (before.rows.length === 0) throw new HttpError(404, `product ${id} not found`);
      const { rows } = await sql(
        `UPDATE products SET price = coalesce($2, price), stock = coalesce($3, stock)
          WHERE id = $1
          RETURNING id, sku, name, price, stock, updated_at`,
        [id, changes.price, changes.stock],
      );
      const after = rows[0];
      await audit(sql, req, {
        actor,
        action: 'product.update',
        target: id,
        detail: { before: before.rows[0], after: { price: after.price, stock: after.stock } },
      });
      return after;
    });
    return { status: 200, json: product };
  }

  async function rotateSecret(secretType, req, actor) {
    const secret = crypto.randomBytes(32).toString('base64url');
    const rotatedAt = await transaction(async (sql) => {
      const { rows } = await sql('INSERT INTO secret_rotations (secret_type) VALUES ($1) RETURNING rotated_at', [
        secretType,
      ]);
      await audit(sql, req, { actor, action: 'secret.rotate', target: secretType });
      // The file is rewritten inside the transaction: if that fails, no rotation is recorded.
      writeDotenvValue(config.envFile, secretType, secret);
      return rows[0].rotated_at;
    });
    // The new value is used at once: the old ADMIN_TOKEN stops working now.
    if (secretType === 'ADMIN_TOKEN') config.adminToken = secret;
    if (secretType === 'NEXTAUTH_SECRET') config.nextauthSecret = secret;
    log(COMPONENT, `rotated ${secretType} in ${config.envFile}`);
    return rotatedAt;
  }

  async function rotate(url, params, req, actor) {
    const body = await readJsonBody(req);
    const secretType = body && typeof body === 'object' ? body.secretType : undefined;
    if (!ROTATABLE_SECRETS.includes(secretType)) {
      throw new HttpError(400, `secretType must be one of ${ROTATABLE_SECRETS.join(', ')}`);
    }
    const run = rotation.then(() => rotateSecret(secretType, req, actor));
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
    { method: 'POST', re: /^\/api\/auth\/login$/, route: '/api/auth/login', handler: login },
    { method: 'GET', re: /^\/api\/auth\/session$/, route: '/api/auth/session', handler: session },
    // admin: true routes answer 401 unless adminActor() accepts the request; the handler gets the actor.
    { method: 'GET', re: /^\/api\/admin\/whoami$/, route: '/api/admin/whoami', handler: whoami, admin: true },
    { method: 'POST', re: /^\/api\/admin\/users$/, route: '/api/admin/users', handler: createUser, admin: true },
    {
      method: 'PATCH',
      re: /^\/api\/admin\/products\/([^/]+)$/,
      route: '/api/admin/products/:id',
      handler: updateProduct,
      admin: true,
    },
    {
      method: 'POST',
      re: /^\/api\/admin\/secrets\/rotate$/,
      route: '/api/admin/secrets/rotate',
      handler: rotate,
      admin: true,
    },
  ];

  function send(res, result) {
    const headers = { 'Cache-Control': 'no-store', ...SECURITY_HEADERS, ...result.headers };
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
        const actor = route.admin ? await adminActor(req) : null;
        result = await route.handler(url, route.re.exec(url.pathname).slice(1), req, actor);
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
