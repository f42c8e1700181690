# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The app's releases on a server, the one that is live, and switching it (plan 1.2 and 2.2).

The layout is the one tokotani.dr.tokotani_app builds (and community.general.deploy_helper and
Ansistrano use): ``<base>/releases/<release>`` with the marker ``.tokotani-release.json`` (version,
commit) written when its build completed, ``<base>/current`` a symbolic link to the live release.
Each switch writes ``.tokotani-live.json`` into the release made live (since when, which release it
replaced), which is how "the release before the live one" is known after rollbacks too. A switch
away from a release that failed (a deployment's health gate) marks it failed in that record, so
that "previous" never picks a release that already proved broken (it stays selectable by name).

Everything read back here (directory names, markers, the live records, migration directory names,
``_prisma_migrations`` rows) is treated as written by an intruder: names are confined to plain
patterns, files are read without following links and with a size limit, and nothing read goes into
SQL or a shell; it is only compared and shown.

Pure standard library apart from pg_cli (psql) for the applied migrations.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import stat

from ansible_collections.tokotani.dr.plugins.module_utils import backup_catalog as catalog
from ansible_collections.tokotani.dr.plugins.module_utils import locks, pg_cli
from ansible_collections.tokotani.dr.plugins.module_utils.errors import DrError
from ansible_collections.tokotani.dr.plugins.module_utils.manifest_schema import is_relpath
from ansible_collections.tokotani.dr.plugins.module_utils.pg_cli import PgError

MARKER = ".tokotani-release.json"
LIVE_RECORD = ".tokotani-live.json"
LOCK_FILE = ".tokotani-release.lock"
RECORD_MAX = 64 * 1024
RELEASE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/+-]{0,127}$")
COMMIT_RE = re.compile(r"^[0-9a-f]{7,40}$")
MIGRATION_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
SHOWN_MAX = 80
FAILURE_MAX = 300
# What the release needs to run: the marker of a completed build, the process file, its dependencies.
RUNNABLE = ("ecosystem.config.js", "node_modules")

APPLIED_SQL = """
SELECT json_build_object('present', to_regclass('public._prisma_migrations') IS NOT NULL);
"""
APPLIED_NAMES_SQL = """
SELECT json_build_object('name', migration_name) FROM public._prisma_migrations
 WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL ORDER BY migration_name;
"""


class ReleaseError(DrError):
    """A release that cannot be found, read or made live; nothing was changed."""


def shown(value):
    """A read-back value as a message may show it: printable, cut to SHOWN_MAX characters."""
    text = "".join(ch if ch.isprintable() else "?" for ch in str(value))
    return text if len(text) <= SHOWN_MAX else text[: SHOWN_MAX - 3] + "..."


def read_regular(path, limit):
    """(the bytes of the regular file at path, None), or (None, a problem); (None, None) when it does not exist.
    Never follows a link (a link is a problem); reads at most limit bytes (a larger file is a problem)."""
    name = os.path.basename(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return None, None
    except OSError as err:
        if err.errno == errno.ELOOP:
            return None, f"{name} is a symbolic link (refused: it could point anywhere)"
        return None, f"{name} cannot be read ({err.strerror or err})"
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None, f"{name} is not a regular file"
        data = handle.read(limit + 1)
    if len(data) > limit:
        return None, f"{name} is larger than {limit} bytes"
    return data, None


def read_record(path):
    """(the JSON object in the small regular file at path, or None; a problem or None). Never follows a link."""
    name = os.path.basename(path)
    data, problem = read_regular(path, RECORD_MAX)
    if data is None:
        return None, problem
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None, f"{name} is not JSON"
    if not isinstance(doc, dict):
        return None, f"{name} is not a JSON object"
    return doc, None


def _timestamp(value):
    """The ISO text of a read-back timestamp, None when it is not one."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return catalog.iso(catalog.parse_timestamp(value))
    except DrError:
        return None


def _migrations(path, migrations_dir):
    """(sorted migration names, problems): the subdirectories of path/migrations_dir that hold a
    migration.sql (Prisma's layout), None when the release has no such directory."""
    try:
        where = catalog.confined_join(path, migrations_dir)
    except DrError as err:
        return None, [err.msg]
    if not os.path.isdir(where) or os.path.islink(where):
        return None, []
    names, problems = [], []
    for name in sorted(os.listdir(where)):
        entry = os.path.join(where, name)
        if os.path.islink(entry) or not os.path.isdir(entry):
            continue
        script = os.path.join(entry, "migration.sql")
        if os.path.islink(script) or not os.path.isfile(script):
            continue
        if not MIGRATION_NAME_RE.match(name):
            problems.append(f"the migration directory {shown(name)!r} has a name this tool refuses")
            continue
        names.append(name)
    return names, problems


def _release(releases_dir, name, migrations_dir):
    path = os.path.join(releases_dir, name)
    entry = {
        "name": shown(name),
        "path": os.path.join(releases_dir, shown(name)),
        "version": None,
        "commit": None,
        "built_at": None,
        "live_since": None,
        "replaced": None,
        "failed": None,
        "build_id": None,
        "migrations": None,
        "runnable": False,
        "problems": [],
    }
    problems = entry["problems"]
    if not RELEASE_NAME_RE.match(name):
        problems.append("its directory name is not one this tool makes (letters, digits, '.', '_', '-')")
        return entry
    marker, problem = read_record(os.path.join(path, MARKER))
    if problem:
        problems.append(problem)
    elif marker is None:
        problems.append(f"no {MARKER}: its build never completed")
    else:
        version, commit = marker.get("version"), marker.get("commit")
        if isinstance(version, str) and VERSION_RE.match(version):
            entry["version"] = version
        else:
            problems.append(f"{MARKER} has no usable version")
        if isinstance(commit, str) and COMMIT_RE.match(commit):
            entry["commit"] = commit
        else:
            problems.append(f"{MARKER} has no usable commit")
        entry["built_at"] = catalog.iso(catalog.parse_timestamp(os.lstat(os.path.join(path, MARKER)).st_mtime))
    live, problem = read_record(os.path.join(path, LIVE_RECORD))
    if problem:
        problems.append(problem)
    elif live is not None:
        entry["live_since"] = _timestamp(live.get("live_since"))
        replaced = live.get("replaced")
        if isinstance(replaced, str) and RELEASE_NAME_RE.match(replaced):
            entry["replaced"] = replaced
        entry["failed"] = _failure(live)
    entry["build_id"] = read_build_id(os.path.join(path, ".next", "BUILD_ID"))
    missing = [part for part in RUNNABLE if not os.path.exists(os.path.join(path, part))]
    if missing:
        problems.append("it has no " + " and no ".join(missing))
    entry["migrations"], more = _migrations(path, migrations_dir)
    problems.extend(more)
    entry["runnable"] = not problems
    return entry


def _reason(text):
    """Why a release failed, as a record keeps it and a message shows it: printable, at most FAILURE_MAX long."""
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    return text if len(text) <= FAILURE_MAX else text[: FAILURE_MAX - 3] + "..."


def _failure(live):
    """The failed mark of a live record ({at, reason}), or None; the reason is only ever shown."""
    at = _timestamp(live.get("failed_at"))
    if at is None:
        return None
    reason = live.get("failure")
    reason = _reason(reason) if isinstance(reason, str) else "not recorded"
    return {"at": at, "reason": reason}


def read_build_id(path):
    """The build id in the small regular file at path (its first line, when a plain token), else None."""
    data, _problem = read_regular(path, 256)
    text = (data or b"").decode("utf-8", "replace").strip().splitlines()[:1]
    return text[0] if text and re.match(r"^[A-Za-z0-9_-]{1,128}$", text[0]) else None


class Releases:
    """The releases under base and the live one, read once (scan)."""

    def __init__(self, base, migrations_dir="prisma/migrations"):
        self.base = os.path.abspath(base)
        self.releases_dir = os.path.join(self.base, "releases")
        self.current = os.path.join(self.base, "current")
        self.migrations_dir = migrations_dir
        self.entries = []
        self.live = None
        self.current_problem = None

    def scan(self):
        if not is_relpath(self.migrations_dir):
            raise ReleaseError(
                f"migrations_dir {shown(self.migrations_dir)!r} must be a plain path inside the release, "
                "such as prisma/migrations"
            )
        if not os.path.isdir(self.releases_dir) or os.path.islink(self.releases_dir):
            raise ReleaseError(
                f"{self.releases_dir} is not a directory: no release of the app was ever built here "
                "(deploy one with the tokotani.dr.tokotani_app role)"
            )
        names = [
            name
            for name in sorted(os.listdir(self.releases_dir))
            if not os.path.islink(os.path.join(self.releases_dir, name))
            and os.path.isdir(os.path.join(self.releases_dir, name))
        ]
        self.entries = [_release(self.releases_dir, name, self.migrations_dir) for name in names]
        self.live = self._live()
        return self

    def _live(self):
        """The name of the release current points to; None (and current_problem) otherwise."""
        if not os.path.lexists(self.current):
            self.current_problem = f"{self.current} does not exist: no release is live"
            return None
        if not os.path.islink(self.current):
            self.current_problem = f"{self.current} is not a symbolic link: it is not switched by this tool"
            return None
        target = os.readlink(self.current)
        resolved = os.path.normpath(os.path.join(self.base, target))
        name = os.path.basename(resolved)
        if os.path.dirname(resolved) != self.releases_dir or not any(e["name"] == name for e in self.entries):
            self.current_problem = (
                f"{self.current} points to {shown(target)}, which is not a release under {self.releases_dir}"
            )
            return None
        return name

    def entry(self, name):
        return next((e for e in self.entries if e["name"] == name), None)

    def listing(self):
        """The releases that can be made live, as a message lists them: newest live first."""
        usable = [e for e in self.entries if e["runnable"]]
        ranked = sorted(usable, key=_rank, reverse=True)
        parts = []
        for e in ranked:
            when = f"live since {e['live_since']}" if e["live_since"] else f"built {e['built_at']}"
            if e["failed"]:
                when += f", failed at {e['failed']['at']}"
            parts.append(f"{e['version']} ({e['name']}, {when}{', live now' if e['name'] == self.live else ''})")
        return "; ".join(parts) if parts else "none"

    def resolve(self, version):
        """The release entry that version names: 'previous' (the one live before the live one), a
        release directory name, a version, or a commit prefix. Raises ReleaseError with the list."""
        version = (version or "previous").strip()
        if version == "previous":
            others = [e for e in self.entries if e["runnable"] and e["name"] != self.live and not e["failed"]]
            if not others:
                raise ReleaseError(
                    f"there is no release to roll back to: apart from releases that failed, the only runnable "
                    f"release here is {self.listing()} (releases in {self.releases_dir}); name a failed one "
                    "with version=<release> to make it live anyway",
                    releases=self.entries,
                )
            return max(others, key=_rank)
        exact = [e for e in self.entries if e["name"] == version]
        matches = exact or [
            e
            for e in self.entries
            if e["version"] == version or (COMMIT_RE.match(version) and (e["commit"] or "").startswith(version))
        ]
        runnable = [e for e in matches if e["runnable"]]
        if not matches:
            raise ReleaseError(
                f"no release {shown(version)!r} here: the releases that can be made live are {self.listing()}",
                releases=self.entries,
            )
        if not runnable:
            found = matches[0]
            raise ReleaseError(
                f"release {found['name']} ({shown(version)}) cannot be made live: {'; '.join(found['problems'])}. "
                f"The releases that can be made live are {self.listing()}",
                releases=self.entries,
            )
        if len(runnable) > 1:
            names = ", ".join(e["name"] for e in runnable)
            raise ReleaseError(
                f"{shown(version)!r} names {len(runnable)} releases ({names}): give the release's directory name",
                releases=self.entries,
            )
        return runnable[0]

    def switch(self, entry, now=None, replaced_failed=None):
        """Make entry live: current replaced by a new link in one rename, then its live record written;
        with replaced_failed (why), the release that was live is marked failed in its own record.
        Returns the name of the release that was live (None when none was)."""
        if os.path.lexists(self.current) and not os.path.islink(self.current):
            raise ReleaseError(f"{self.current} is not a symbolic link: refusing to replace it")
        lock = locks.FileLock(os.path.join(self.base, LOCK_FILE), "switching the live release")
        if not lock.try_acquire():
            raise ReleaseError(
                f"another run is switching the live release of {self.base} right now: nothing was changed"
            )
        try:
            before = self._live()
            temporary = os.path.join(self.base, f".current.{secrets.token_hex(6)}.tmp")
            os.symlink(entry["path"], temporary)
            try:
                owner = os.stat(entry["path"])
                if os.geteuid() == 0:
                    os.lchown(temporary, owner.st_uid, owner.st_gid)
                os.replace(temporary, self.current)
            except BaseException:
                catalog.remove_path(temporary)
                raise
            catalog.fsync_path(self.base)
            stamp = catalog.iso(now or catalog.utcnow())
            catalog.write_atomic(
                os.path.join(entry["path"], LIVE_RECORD),
                catalog.json_text({"live_since": stamp, "replaced": before}),
                mode=0o644,
            )
            entry["live_since"], entry["replaced"], entry["failed"] = stamp, before, None
            self.live = entry["name"]
            failed = self.entry(before) if replaced_failed and before else None
            if failed is not None:
                failed["failed"] = {"at": stamp, "reason": _reason(replaced_failed)}
                record = {"live_since": failed["live_since"], "replaced": failed["replaced"]}
                record.update(failed_at=stamp, failure=failed["failed"]["reason"])
                catalog.write_atomic(os.path.join(failed["path"], LIVE_RECORD), catalog.json_text(record), mode=0o644)
            return before
        finally:
            lock.release()


def _rank(entry):
    """Newest live first; releases never recorded live after them, newest build first."""
    return (entry["live_since"] is not None, entry["live_since"] or "", entry["built_at"] or "")


def applied_migrations(psql, database):
    """The names of the migrations applied in database (_prisma_migrations, finished, not rolled back);
    None when it has no _prisma_migrations table."""
    rows = psql.query_json(APPLIED_SQL, database, what="reading the applied migrations")
    if not rows or not rows[0].get("present"):
        return None
    rows = psql.query_json(APPLIED_NAMES_SQL, database, what="reading the applied migrations")
    return [row["name"] for row in rows if isinstance(row, dict) and isinstance(row.get("name"), str)]


def schema_check(entry, applied):
    """How the live database's migrations compare with what release entry knows:
    {applied, known, newer, missing, compatible}. compatible is None when either side is unknown."""
    known = entry.get("migrations")
    result = {"applied": applied, "known": known, "newer": [], "missing": [], "compatible": None}
    if applied is None or known is None:
        return result
    result["newer"] = sorted(set(applied) - set(known))
    result["missing"] = sorted(set(known) - set(applied))
    result["compatible"] = not result["newer"]
    return result


def schema_refusal(entry, check, database):
    """The message that refuses to run entry on the live database's schema, or None when it may."""
    if check["compatible"]:
        return None
    if check["applied"] is None:
        return None  # no migrations table: nothing of a schema to compare
    if check["known"] is None:
        return (
            f"release {entry['name']} has no migrations directory, so whether its code works on the schema of "
            f"database {database} ({len(check['applied'])} migrations applied) cannot be checked"
        )
    newer = ", ".join(shown(name) for name in check["newer"][:10])
    more = f" and {len(check['newer']) - 10} more" if len(check["newer"]) > 10 else ""
    return (
        f"database {database} has {len(check['newer'])} migration(s) that release {entry['name']} does not know "
        f"({newer}{more}): the schema is newer than that release's code"
    )


def release_info(params, psql_factory=None, *, need_target=False):
    """What tokotani.dr.app_release_info returns (and tokotani.dr.app_release computes before the switch)."""
    releases = Releases(params["base_dir"], params.get("migrations_dir") or "prisma/migrations").scan()
    result = {
        "changed": False,
        "base_dir": releases.base,
        "releases": releases.entries,
        "live": releases.live,
        "current_problem": releases.current_problem,
        "target": None,
        "schema": None,
    }
    target = None
    if params.get("version") or need_target:
        target = releases.resolve(params.get("version"))
        result["target"] = target
    if params.get("database") and psql_factory is not None and target is not None:
        try:
            applied = applied_migrations(psql_factory(), params["database"])
        except PgError as err:
            raise ReleaseError(
                f"cannot read the migrations applied in database {params['database']}: {err.msg}"
            ) from None
        result["schema"] = schema_check(target, applied)
        result["schema"]["refusal"] = schema_refusal(target, result["schema"], params["database"])
    return releases, result


def make_live(params, check_mode=False, psql_factory=None):
    """tokotani.dr.app_release: the checks, then the switch (not in check mode)."""
    releases, found = release_info(params, psql_factory, need_target=True)
    target = found["target"]
    # the releases are app_release_info's to list: a failure carries them, the result names the two that matter
    result = {key: found[key] for key in ("changed", "base_dir", "live", "target", "schema")}
    result["previous_live"] = releases.live
    if releases.current_problem and os.path.lexists(releases.current) and not os.path.islink(releases.current):
        raise ReleaseError(releases.current_problem + ": refusing to replace it", **found)
    if result["schema"] is not None and params.get("newer_schema", "fail") == "fail":
        refusal = result["schema"]["refusal"]
        if refusal:
            raise ReleaseError(
                refusal + f". Nothing was changed: {releases.live or 'no release'} is still live.", **found
            )
    if target["name"] == releases.live:
        result["msg"] = f"release {target['name']} ({target['version']}) is already live: nothing to switch"
        return result
    result["changed"] = True
    if check_mode:
        result["msg"] = f"would make release {target['name']} ({target['version']}) live instead of {releases.live}"
        return result
    releases.switch(target, replaced_failed=params.get("replaced_failed") or None)
    result["live"] = target["name"]
    result["msg"] = (
        f"release {target['name']} ({target['version']}) is live; it replaced {result['previous_live'] or 'no release'}"
    )
    return result


def _psql_factory(params):
    """psql for the applied migrations, when params name a database."""
    if not params.get("database"):
        return None
    return lambda: pg_cli.Psql(pg_cli.Connection.from_params(params))


def info(params):
    """tokotani.dr.app_release_info."""
    return release_info(params, _psql_factory(params))[1]


def live(params, check_mode=False):
    """tokotani.dr.app_release."""
    return make_live(params, check_mode, _psql_factory(params))
