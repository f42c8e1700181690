'use strict';
// One line per event on stdout (pm2 collects it): timestamp, component, message.

function log(component, message) {
  process.stdout.write(`${new Date().toISOString()} [${component}] ${message}\n`);
}

module.exports = { log };
