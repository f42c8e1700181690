'use strict';
// `npm run build`: what `next build` leaves behind that matters here, a build id in
// .next/BUILD_ID. The id is the UTC build time plus a short hash of the sources, so two
// builds of the same code differ only in their time, and a code change shows in the hash.

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.join(__dirname, '..');
const SOURCES = ['package.json', 'package-lock.json', 'server.js', 'engine-hub.js'];
const SOURCE_DIRS = ['lib', 'scripts'];
const MIGRATIONS = 'prisma/migrations';

function sourceFiles() {
  const files = [...SOURCES];
  for (const dir of SOURCE_DIRS) {
    for (const name of fs.readdirSync(path.join(ROOT, dir)).sort()) {
      if (name.endsWith('.js')) files.push(path.join(dir, name));
    }
  }
  const migrations = path.join(ROOT, MIGRATIONS);
  if (fs.existsSync(migrations)) {
    for (const name of fs.readdirSync(migrations).sort()) files.push(path.join(MIGRATIONS, name, 'migration.sql'));
  }
  return files.filter((f) => fs.existsSync(path.join(ROOT, f)));
}

function main() {
  const hash = crypto.createHash('sha256');
  for (const file of sourceFiles()) {
    hash.update(`${file}\0`);
    hash.update(fs.readFileSync(path.join(ROOT, file)));
  }
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  const buildId = `${stamp}-${hash.digest('hex').slice(0, 10)}`;

  const outDir = path.join(ROOT, '.next');
  fs.mkdirSync(outDir, { recursive: true });
  const tmp = path.join(outDir, `.BUILD_ID.${process.pid}.tmp`);
  fs.writeFileSync(tmp, buildId, { mode: 0o644 }); // no newline, as Next.js writes it
  fs.renameSync(tmp, path.join(outDir, 'BUILD_ID'));
  console.log(`build ${buildId} written to .next/BUILD_ID`);
}

main();
