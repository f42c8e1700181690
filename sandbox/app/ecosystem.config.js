'use strict';
// pm2 process file: `pm2 start ecosystem.config.js [--only <app>]`.
// Secrets (DATABASE_URL, NEXTAUTH_SECRET, ADMIN_TOKEN) are not here: the apps read them
// from the `.env` file in their working directory, which is this directory.
//
// Cluster mode: PM2_NEXTJS_INSTANCES=<n> (n >= 2) in this directory's .env runs tokotani-nextjs as n instances in
// pm2's cluster mode, with the base directory's `current` link (../../current of a release) as their working
// directory. `pm2 reload` then replaces the instances one at a time, each new one starting in the release `current`
// points to: a switch of `current` followed by a reload changes the running code without refusing a request.
// (pm2 keeps a process's working directory and script across reloads, so a release's own path would keep the old
// code running.)

const path = require('node:path');

const { envFilePath, parseDotenv } = require('./lib/env');

function instancesOf() {
  let vars = {};
  try {
    vars = parseDotenv(require('node:fs').readFileSync(envFilePath(__dirname), 'utf8'));
  } catch {
    return 1;
  }
  const n = Number.parseInt(vars.PM2_NEXTJS_INSTANCES || '1', 10);
  return Number.isInteger(n) && n >= 2 && n <= 16 ? n : 1;
}

const instances = instancesOf();
const cluster = instances > 1;

module.exports = {
  apps: [
    {
      name: 'tokotani-nextjs',
      script: 'server.js',
      cwd: cluster ? path.resolve(__dirname, '..', '..', 'current') : __dirname,
      exec_mode: cluster ? 'cluster' : 'fork',
      instances,
      autorestart: true,
      kill_timeout: 10000,
      env: {
        NODE_ENV: 'production',
      },
    },
    {
      name: 'tokotani-engine-hub',
      script: 'engine-hub.js',
      cwd: __dirname,
      exec_mode: 'fork',
      instances: 1,
      autorestart: true,
      kill_timeout: 10000,
      env: {
        NODE_ENV: 'production',
      },
    },
  ],
};
