#!/usr/bin/env bash
# The stand-in app's other versions, each one commit on top of the published main (v1.0.0) and tagged, for the
# deployment and rollback scenarios (plan 2.2, test scenario 2 of 4.1):
#   v1.0.1        the code's version only
#   v1.1.0        on v1.0.1: the migration 20261201000000_add_loyalty (a column of users)
#   v2-crash      tokotani-nextjs throws at start (a crash loop under pm2)
#   v2-500        /api/health answers 500, and the migration 20261203000000_add_wishlist (a new table) applies
#   v2-migration  the migration 20261204000000_broken fails (a table that does not exist): nothing applied
# Run in the app's source repository (a git work tree on main). A tag whose commit already sits on its base is
# kept, so a second run changes nothing; it prints "tagged <tags>" or "unchanged".
set -euo pipefail
export GIT_AUTHOR_NAME=sandbox GIT_AUTHOR_EMAIL=sandbox@tokotani.invalid
export GIT_COMMITTER_NAME=sandbox GIT_COMMITTER_EMAIL=sandbox@tokotani.invalid
main=$(git rev-parse main)
made=()

bump() {
  python3 - "$1" <<'PY'
import json, sys
for name in ("package.json", "package-lock.json"):
    with open(name) as handle:
        doc = json.load(handle)
    doc["version"] = sys.argv[1]
    if name == "package-lock.json":
        doc["packages"][""]["version"] = sys.argv[1]
    with open(name, "w") as handle:
        json.dump(doc, handle, indent=2)
        handle.write("\n")
PY
}

# replace <file> <old> <new>: exactly one occurrence, or the version would not be the one described
replace() {
  python3 - "$@" <<'PY'
import sys
name, old, new = sys.argv[1:4]
text = open(name).read()
if text.count(old) != 1:
    sys.exit(f"{name}: expected one '{old}', found {text.count(old)}")
open(name, "w").write(text.replace(old, new))
PY
}

migration() {
  mkdir -p "prisma/migrations/$1"
  printf '%s\n' "$2" >"prisma/migrations/$1/migration.sql"
}

# version <tag> <base tag or commit> <commands...>: the tag as one commit on base, unless it is there already
version() {
  local tag="$1" base="$2"
  shift 2
  base=$(git rev-parse "$base^{commit}")
  if git rev-parse -q --verify "refs/tags/$tag" >/dev/null && [ "$(git rev-parse "$tag^{commit}^")" = "$base" ]; then
    return 0
  fi
  git checkout -q --detach "$base"
  "$@"
  git add -A
  git commit -q -m "TokoTani app $tag"
  git tag -f "$tag" >/dev/null
  made+=("$tag")
}

v1_0_1() { bump 1.0.1; }
v1_1_0() {
  migration 20261201000000_add_loyalty 'ALTER TABLE users ADD COLUMN loyalty_points integer NOT NULL DEFAULT 0;'
  bump 1.1.0
}
v2_crash() {
  replace server.js "'use strict';" "'use strict';
throw new Error('tokotani-nextjs 2.0.0-crash: cannot start (the stand-in broken release)');"
  bump 2.0.0-crash
}
v2_500() {
  replace server.js "return { status: 200, json: body };" \
    "return { status: 500, json: { ...body, status: 'error', error: 'the stand-in broken release answers 500' } };"
  migration 20261203000000_add_wishlist 'CREATE TABLE wishlist (user_id text NOT NULL, product_id text NOT NULL);'
  bump 2.0.0-500
}
v2_migration() {
  migration 20261204000000_broken 'ALTER TABLE users ADD COLUMN referral_code text;
ALTER TABLE no_such_table ADD COLUMN broken integer;'
  bump 2.0.0-migration
}

version v1.0.1 "$main" v1_0_1
version v1.1.0 v1.0.1 v1_1_0
version v2-crash "$main" v2_crash
version v2-500 "$main" v2_500
version v2-migration "$main" v2_migration
git checkout -q main
if [ "${#made[@]}" -gt 0 ]; then echo "tagged ${made[*]}"; else echo unchanged; fi
