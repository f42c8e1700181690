'use strict';
// Configuration: the process environment, plus a `.env` file in the working directory
// (KEY=VALUE lines, no dependency). A variable set in the process environment wins.

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const PACKAGE = require('../package.json');

const KEY_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

function unquote(value) {
  const v = value.trim();
  if (v.length >= 2 && (v[0] === '"' || v[0] === "'") && v[v.length - 1] === v[0]) {
    return v.slice(1, -1);
  }
  return v;
}

// Parse the text of a .env file: blank lines and `#` comments are skipped, an optional
// `export ` prefix is allowed, and a value may be wrapped in single or double quotes.
function parseDotenv(text) {
  const out = {};
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) continue;
    const key = line.slice(0, eq).replace(/^export\s+/, '').trim();
    if (!KEY_RE.test(key)) continue;
    out[key] = unquote(line.slice(eq + 1));
  }
  return out;
}

function envFilePath(cwd = process.cwd()) {
  return path.join(cwd, '.env');
}

function readDotenv(file) {
  try {
    return parseDotenv(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    if (err.code === 'ENOENT') return {};
    throw new Error(`cannot read ${file}: ${err.message}`);
  }
}

function intSetting(vars, name, fallback, min, max) {
  const raw = vars[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new Error(`${name} must be an integer between ${min} and ${max}, got ${JSON.stringify(raw)}`);
  }
  return n;
}

// The merged settings with their defaults. Throws with a clear message on a bad value.
function loadConfig({ cwd = process.cwd(), env = process.env } = {}) {
  const file = envFilePath(cwd);
  const vars = { ...readDotenv(file), ...env };
  return {
    envFile: file,
    databaseUrl: vars.DATABASE_URL || '',
    port: intSetting(vars, 'PORT', 3000, 1, 65535),
    host: vars.HOST || '127.0.0.1',
    nextauthSecret: vars.NEXTAUTH_SECRET || '',
    adminToken: vars.ADMIN_TOKEN || '',
    heartbeatIntervalMs: intSetting(vars, 'HEARTBEAT_INTERVAL_MS', 5000, 50, 3600000),
    appVersion: vars.APP_VERSION || PACKAGE.version,
  };
}

// Set KEY=value in a .env file atomically: the other lines are kept as they are, the new
// content goes to a 0600 temporary file in the same directory, which is fsynced and renamed
// over the old one, so a reader sees either the old or the new file, never half of one.
function writeDotenvValue(file, key, value) {
  if (!KEY_RE.test(key)) throw new Error(`invalid variable name ${JSON.stringify(key)}`);
  if (/[\r\n]/.test(value)) throw new Error(`the value of ${key} must be a single line`);
  let lines = [];
  try {
    lines = fs.readFileSync(file, 'utf8').split(/\r?\n/);
  } catch (err) {
    if (err.code !== 'ENOENT') throw err;
  }
  if (lines.length && lines[lines.length - 1] === '') lines.pop();
  const keyRe = new RegExp(`^\\s*(export\\s+)?${key}\\s*=`);
  let found = false;
  lines = lines.map((line) => {
    if (!keyRe.test(line)) return line;
    found = true;
    return `${key}=${value}`;
  });
  if (!found) lines.push(`${key}=${value}`);

  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`);
  const fd = fs.openSync(tmp, 'wx', 0o600);
  try {
    fs.writeFileSync(fd, `${lines.join('\n')}\n`);
    fs.fchmodSync(fd, 0o600); // openSync's mode passes through the umask: make it exactly 0600
    fs.fsyncSync(fd);
  } catch (err) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  fs.closeSync(fd);
  try {
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  const dirFd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(dirFd);
  } finally {
    fs.closeSync(dirFd);
  }
}

module.exports = { parseDotenv, envFilePath, loadConfig, writeDotenvValue };
