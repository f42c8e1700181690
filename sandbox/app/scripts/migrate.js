'use strict';
// `npm run migrate`: apply db/schema.sql once, the way `prisma migrate deploy` applies a
// migration. The schema and its row in _prisma_migrations are written in one transaction,
// under an advisory lock, so a second or concurrent run finds the row and does nothing.

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const { Client } = require('pg');

const { requireDatabaseUrl, redactUrl } = require('../lib/db');
const { loadConfig } = require('../lib/env');

const MIGRATION_NAME = '20240115093000_init';
const SCHEMA_FILE = path.join(__dirname, '..', 'db', 'schema.sql');
const LOCK_KEY = 72707369; // the advisory lock key Prisma Migrate uses

async function migrate(config) {
  const sql = fs.readFileSync(SCHEMA_FILE, 'utf8');
  const checksum = crypto.createHash('sha256').update(sql).digest('hex');
  const client = new Client({ connectionString: requireDatabaseUrl(config), application_name: 'tokotani-migrate' });
  await client.connect();
  try {
    await client.query('BEGIN');
    await client.query('SELECT pg_advisory_xact_lock($1)', [LOCK_KEY]);
    const table = await client.query("SELECT to_regclass('_prisma_migrations') IS NOT NULL AS present");
    if (table.rows[0].present) {
      const applied = await client.query(
        `SELECT checksum, finished_at FROM _prisma_migrations
          WHERE migration_name = $1 AND finished_at IS NOT NULL AND rolled_back_at IS NULL`,
        [MIGRATION_NAME],
      );
      if (applied.rows.length > 0) {
        await client.query('ROLLBACK');
        console.log(`migration ${MIGRATION_NAME} already applied (${applied.rows[0].finished_at.toISOString()})`);
        if (applied.rows[0].checksum !== checksum) {
          console.warn(`warning: db/schema.sql changed since ${MIGRATION_NAME} was applied (checksum differs)`);
        }
        return;
      }
    }
    const started = new Date();
    await client.query(sql);
    await client.query(
      `INSERT INTO _prisma_migrations
         (id, checksum, finished_at, migration_name, logs, rolled_back_at, started_at, applied_steps_count)
       VALUES ($1, $2, now(), $3, NULL, NULL, $4, 1)`,
      [crypto.randomUUID(), checksum, MIGRATION_NAME, started],
    );
    await client.query('COMMIT');
    console.log(`migration ${MIGRATION_NAME} applied`);
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
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
    console.error(`migration ${MIGRATION_NAME} failed${where}: ${err.message}`);
    process.exit(1);
  }
}

main();
