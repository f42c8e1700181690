'use strict';
// pm2 process file: `pm2 start ecosystem.config.js [--only <app>]`.
// Secrets (DATABASE_URL, NEXTAUTH_SECRET, ADMIN_TOKEN) are not here: the apps read them
// from the `.env` file in their working directory, which is this directory.

module.exports = {
  apps: [
    {
      name: 'tokotani-nextjs',
      script: 'server.js',
      cwd: __dirname,
      exec_mode: 'fork',
      instances: 1,
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
