'use strict';
// Authentication helpers of the web server: the admin bearer token, password hashes (scrypt)
// and NextAuth's database-strategy session cookie, whose value is the sessions."sessionToken".

const crypto = require('node:crypto');
const { promisify } = require('node:util');

const scrypt = promisify(crypto.scrypt);

const SESSION_COOKIE = 'next-auth.session-token';
const SESSION_DAYS = 30;
const SALT_BYTES = 16;
const KEY_BYTES = 32;
const HASH_RE = /^scrypt\$([A-Za-z0-9_-]+)\$([A-Za-z0-9_-]+)$/;

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

// `scrypt$<salt base64url>$<hash base64url>`: a 16-byte random salt and a 32-byte key.
async function hashPassword(password) {
  const salt = crypto.randomBytes(SALT_BYTES);
  const key = await scrypt(password, salt, KEY_BYTES);
  return `scrypt$${salt.toString('base64url')}$${key.toString('base64url')}`;
}

function parseHash(stored) {
  const match = HASH_RE.exec(typeof stored === 'string' ? stored : '');
  if (!match) return null;
  const salt = Buffer.from(match[1], 'base64url');
  const key = Buffer.from(match[2], 'base64url');
  return salt.length > 0 && key.length === KEY_BYTES ? { salt, key } : null;
}

// Whether password matches the stored hash. Without a usable hash (no such user, a user without a
// password) a key is still derived, so that a refusal takes as long whatever its reason.
async function verifyPassword(password, stored) {
  const parsed = parseHash(stored);
  const salt = parsed ? parsed.salt : crypto.randomBytes(SALT_BYTES);
  const key = await scrypt(password, salt, KEY_BYTES);
  return parsed !== null && crypto.timingSafeEqual(key, parsed.key);
}

function newSessionToken() {
  return crypto.randomBytes(32).toString('base64url');
}

function sessionCookie(token) {
  return `${SESSION_COOKIE}=${token}; Path=/; HttpOnly; SameSite=Lax`;
}

// The value of the session cookie in a `Cookie:` request header, or null.
function sessionTokenFrom(cookieHeader) {
  for (const part of String(cookieHeader || '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === SESSION_COOKIE) {
      const value = part.slice(eq + 1).trim();
      return value || null;
    }
  }
  return null;
}

module.exports = {
  SESSION_COOKIE,
  SESSION_DAYS,
  bearerMatches,
  hashPassword,
  newSessionToken,
  sessionCookie,
  sessionTokenFrom,
  verifyPassword,
};
