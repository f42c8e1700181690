'use strict';
// `npm run migrate`: apply every migration of prisma/migrations/<name>/migration.sql not applied yet,
// in name order, the way `prisma migrate deploy` does. Each migration and its row in
// _prisma_migrations are written in one transaction, all under Prisma's advisory lock, so a second
// or concurrent run finds the rows and does nothing. The first migration creates _prisma_migrations.

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const { Client } = require('pg');

const { requireDatabaseUrl, redactUrl } = require('../lib/db');
const { loadConfig } = require('../lib/env');

const MIGRATIONS_DIR = path.join(__dirname, '..', 'prisma', 'migrations');
const LOCK_KEY = 72707369; // the advisory lock key Prisma Migrate uses
let current = 'none';

function migrations() {
  return fs
    .readdirSync(MIGRATIONS_DIR)
    .sort()
    .filter((name) => fs.existsSync(path.join(MIGRATIONS_DIR, name, 'migration.sql')))
    .map((name) => ({ name, file: path.join(MIGRATIONS_DIR, name, 'migration.sql') }));
}

async function applied(client) {
  const table = await client.query("SELECT to_regclass('_prisma_migrations') IS NOT NULL AS present");
  if (!table.rows[0].present) return new Map();
  const rows = await client.query(
    `SELECT migration_name, checksum, finished_at FROM _prisma_migrations
      WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL`,
  );
  return new Map(rows.rows.map((row) => [row.migration_name, row]));
}

async function migrate(config) {
  const client = new Client({ connectionString: requireDatabaseUrl(config), application_name: 'tokotani-migrate' });
  await client.connect();
  try {
    await client.query('SELECT pg_advisory_lock($1)', [LOCK_KEY]);
    const done = await applied(client);
    let count = 0;
    for (const migration of migrations()) {
      const sql = fs.readFileSync(migration.file, 'utf8');
      const checksum = crypto.createHash('sha256').update(sql).digest('hex');
      const row = done.get(migration.name);
      if (row) {
        console.log(`migration ${migration.name} already applied (${row.finished_at.toISOString()})`);
        if (row.checksum !== checksum) {
          console.warn(`warning: ${migration.name} changed since it was applied (checksum differs)`);
        }
        continue;
      }
      current = migration.name;
      const started = new Date();
      await client.query('BEGIN');
      try {
        await client.query(sql);
        await client.query(
          `INSERT INTO _prisma_migrations
             (id, checksum, finished_at, migration_name, logs, rolled_back_at, started_at, applied_steps_count)
           VALUES ($1, $2, now(), $3, NULL, NULL, $4, 1)`,
          [crypto.randomUUID(), checksum, migration.name, started],
        );
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK').catch(() => {});
        throw err;
      }
      console.log(`migration ${migration.name} applied`);
      count += 1;
    }
    if (count === 0) console.log('all migrations already applied');
  } finally {
    await client.end();
  }
}

async function main() {
  let config;
  try {
    config = loadConfig();
    await migrate(config);
  } catch (err) {
    const where = config && config.databaseUrl ? ` on ${redactUrl(config.databaseUrl)}` : '';
    console.error(`migration ${current} failed${where}: ${err.message}`);
    process.exit(1);
  }
}

main();
