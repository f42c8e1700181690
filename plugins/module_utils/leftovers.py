# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""No leftovers: what an interrupted run leaves behind, who removes it, and the databases restores keep.

A run of the backup, restore or verification engines makes things it removes itself when it ends:

- a staging or work directory ``<parent>/.tokotani-restore-<random>`` (a restore's decompressed zstd
  backup) or ``.tokotani-verify-<random>`` (the verification's offsite copy), see ``WorkDir``;
- a scratch database: ``<database>__restore_<stamp>[_<n>]`` (a restore in mode replace, before the swap)
  or ``<scratch>_<stamp>`` (the weekly verification);
- child processes: ``pg_restore`` (and its workers), ``psql``, ``zstd``/``gzip``, ``vacuumdb``.

Each of those things is *claimed* for the run's whole life by an exclusive lock (``locks.FileLock``) on a
lock file named after it: ``<directory>.lock`` beside a directory, ``.tokotani-db.<name>.lock`` in the
run's backup directory for a database (made before the database is created). SIGTERM, SIGINT and SIGHUP
become ``Interrupted`` (``interruptible``), which unwinds through the engines' cleanup: children are
stopped, the scratch database dropped, the directory removed. ``kill -9`` cannot be caught: children run
with ``setpriv --pdeathsig KILL`` (util-linux) where it exists, so they die with the run, and the kernel
releases the run's locks. The next backup, restore or verification run then finds the leftover with a
free lock (``locks.leftover_verdict``) and removes it (``Janitor.clean``): a scratch database with
``DROP DATABASE ... WITH (FORCE)``, which first terminates whatever is still connected to it (an orphaned
``pg_restore``). Only names of exactly these forms are ever considered (``derived_databases``).

The lock file of a scratch database lives in the run's backup directory, the one place every run for
that server on that host shares: a scratch database whose lock file a run does not find there (made by a
run on another host, or from another backup directory) is only removed once its name's stamp is more
than a day old. Runs against one server are expected to go through one host and one backup directory.

Restores keep what they replace: ``<database>__pre_restore_<stamp>`` (the live database before a restore)
and ``<database>__failed_restore_<stamp>`` (the database a revert replaced). ``plan_keep_previous`` is
their retention, ``keep_previous`` (2) and ``keep_previous_days`` (7): a kept database due to go is dropped
only once a backup of it holds its data, which the backup run takes first - never the only copy.

Pure standard library (no Ansible imports), for the modules and the host-side runner alike.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time

from ansible_collections.tokotani.dr.plugins.module_utils import backup_catalog as catalog
from ansible_collections.tokotani.dr.plugins.module_utils import locks
from ansible_collections.tokotani.dr.plugins.module_utils.pg_cli import PgError, quote_ident

NAMEDATALEN = 63
RESTORE_SCRATCH = "__restore_"
PRE_RESTORE = "__pre_restore_"
FAILED_RESTORE = "__failed_restore_"
KEPT_KINDS = {PRE_RESTORE: "pre_restore", FAILED_RESTORE: "failed_restore"}
WORK_PREFIXES = {"restore": ".tokotani-restore-", "verify": ".tokotani-verify-"}
DB_LOCK_PREFIX = ".tokotani-db."
KEEP_PREVIOUS = 2
KEEP_PREVIOUS_DAYS = 7
# A lock file whose directory is gone is removed once it is this old (its run may be about to make it).
ORPHAN_LOCK_GRACE = 60
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_STAMP_TAIL = r"(\d{8}_\d{6})(?:_(\d+))?$"


# --------------------------------------------------------------------------- names


def derived_name(database, suffix):
    """database + suffix, cutting database so that the whole fits PostgreSQL's 63-byte names."""
    room = NAMEDATALEN - len(suffix.encode("utf-8"))
    base = database.encode("utf-8")[:room].decode("utf-8", "ignore")
    return base + suffix


def stamp(dt):
    return dt.astimezone(datetime.UTC).strftime("%Y%m%d_%H%M%S")


def derived_databases(names, database, marker):
    """The names database's runs made with marker: exactly ``derived_name(database, marker + <stamp>[_<n>])``.

    Returns dicts {name, made_at (epoch seconds, from the stamp), seq}, newest first. Nothing else
    ever matches: not the database itself, not another database's names, not a stamp that is no date.
    """
    pattern = re.compile(re.escape(marker) + _STAMP_TAIL)
    found = []
    for name in names:
        match = pattern.search(name)
        if not match or name == database or name != derived_name(database, name[match.start() :]):
            continue
        try:
            made = datetime.datetime.strptime(match.group(1), "%Y%m%d_%H%M%S").replace(tzinfo=datetime.UTC)
        except ValueError:
            continue
        found.append({"name": name, "made_at": made.timestamp(), "seq": int(match.group(2) or 1)})
    found.sort(key=lambda item: (item["made_at"], item["seq"]), reverse=True)
    return found


def db_lock_path(directory, name):
    """The lock file a run holds in its backup directory for the scratch database name."""
    return catalog.lock_path(directory, name, prefix=DB_LOCK_PREFIX)


def claim_database(directory, name, what):
    """Claim the scratch database name before creating it: the held lock, or None when another run holds
    it (the name is taken: pick another). When no lock file can be made in directory, a locks.Unlocked
    whose warning says that the database, if this run is killed, is removed only once it is a day old."""
    lock = locks.FileLock(db_lock_path(directory, name), what)
    try:
        return lock if lock.try_acquire() else None
    except OSError as err:
        return locks.Unlocked(
            f"cannot make the lock file of the scratch database {name} in {directory} ({err.strerror}): "
            "if this run is killed, its scratch database is removed only once it is a day old"
        )


# --------------------------------------------------------------------------- signals


class Interrupted(PgError):
    """SIGTERM, SIGINT or SIGHUP arrived while a run was interruptible: it unwinds through its cleanup.

    The engine that knows what was undone rewrites ``msg`` and sets ``explained``.
    """

    explained = False

    def __init__(self, signum, msg=None):
        self.signame = signal.Signals(signum).name
        super().__init__(msg or f"interrupted by {self.signame}", interrupted_by=self.signame)


class _Guard:
    """One per process: signal handlers installed while any ``interruptible`` block runs (they nest)."""

    def __init__(self):
        self.depth = 0
        self.deferring = 0
        self.previous = {}
        self.pending = None
        self.raised = None

    def handle(self, signum, _frame):
        if self.raised is not None or self.pending is not None:
            return  # already unwinding (or deferred): let the cleanup finish
        if self.deferring:
            self.pending = signum
            return
        self.raised = signum
        raise Interrupted(signum)


_GUARD = _Guard()


@contextlib.contextmanager
def interruptible():
    """While the block runs, SIGTERM, SIGINT and SIGHUP raise Interrupted in the main thread (once: a
    second signal during the cleanup that follows is ignored). The previous handlers come back after."""
    guard = _GUARD
    if threading.current_thread() is not threading.main_thread():
        yield guard
        return
    if guard.depth == 0:
        guard.pending = guard.raised = None
        for sig in SIGNALS:
            with contextlib.suppress(OSError, ValueError):
                guard.previous[sig] = signal.signal(sig, guard.handle)
    guard.depth += 1
    try:
        yield guard
    finally:
        guard.depth -= 1
        if guard.depth == 0:
            for sig, handler in guard.previous.items():
                signal.signal(sig, handler)
            guard.previous = {}
            guard.pending = guard.raised = None


@contextlib.contextmanager
def deferred_signals():
    """A step that must not be cut in two (the swap): a signal is held until the block ends, then raised."""
    guard = _GUARD
    guard.deferring += 1
    try:
        yield guard
    finally:
        guard.deferring -= 1
    if not guard.deferring and guard.pending is not None and guard.raised is None:
        guard.raised = guard.pending
        raise Interrupted(guard.pending)


# --------------------------------------------------------------------------- children

_SETPRIV = {}


def _setpriv():
    if "path" not in _SETPRIV:
        path = shutil.which("setpriv") or shutil.which("setpriv", path="/usr/bin:/bin")
        found = None
        if path:
            try:
                usage = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=10, check=False)
                found = path if "--pdeathsig" in usage.stdout else None
            except (OSError, subprocess.SubprocessError):
                found = None
        _SETPRIV["path"] = found
    return _SETPRIV["path"]


def child_argv(argv):
    """argv to start a child that dies with this process, even on kill -9 (``setpriv --pdeathsig KILL``,
    util-linux on Linux); argv unchanged where setpriv cannot do that."""
    path = _setpriv()
    return [path, "--pdeathsig", "KILL", "--", *argv] if path else list(argv)


# --------------------------------------------------------------------------- work directories


class WorkDir:
    """A run's staging or work directory ``<parent>/.tokotani-<kind>-<random>`` (0700), claimed by an
    exclusive lock on ``<directory>.lock`` from before it is made until after it is removed."""

    def __init__(self, parent, kind, what):
        parent = parent or tempfile.gettempdir()
        prefix = WORK_PREFIXES[kind]
        for _attempt in range(100):
            path = os.path.join(parent, prefix + secrets.token_hex(4))
            try:
                os.close(os.open(path + catalog.LOCK_SUFFIX, os.O_WRONLY | os.O_CREAT | os.O_EXCL, locks.FILE_MODE))
            except FileExistsError:
                continue
            lock = locks.FileLock(path + catalog.LOCK_SUFFIX, what)
            lock.acquire(5)  # a cleaner's probe lets go at once
            try:
                os.mkdir(path, 0o700)
            except BaseException:
                lock.release(remove=True)
                raise
            self.path = path
            self.lock = lock
            return
        raise PgError(f"no free name for a {prefix}* directory in {parent}")

    def remove(self):
        shutil.rmtree(self.path, ignore_errors=True)
        self.lock.release(remove=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def work_dir_verdicts(directory, now):
    """The staging and work directories in directory (and lock files left without theirs): for each,
    {kind, name, path, stale, reason, holders}. Symbolic links, files and (unless this is root) other users'
    directories are never considered."""
    found = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return found
    for name in names:
        if not name.startswith(tuple(WORK_PREFIXES.values())):
            continue
        path = os.path.join(directory, name)
        if name.endswith(catalog.LOCK_SUFFIX):
            if os.path.lexists(path[: -len(catalog.LOCK_SUFFIX)]):
                continue  # judged with its directory
            state = locks.probe(path)
            with contextlib.suppress(OSError):
                if state == locks.FREE and now - os.lstat(path).st_mtime > ORPHAN_LOCK_GRACE:
                    reason = "a lock file left without its directory, held by nobody"
                    found.append(_verdict("lock_file", path, stale=True, reason=reason, holders=[]))
            continue
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or (os.geteuid() != 0 and st.st_uid != os.geteuid()):
            continue  # a symbolic link or a file is never ours; another user's run cleans up its own
        lock = path + catalog.LOCK_SUFFIX
        state = locks.probe(lock)
        made = st.st_mtime
        stale, reason = locks.leftover_verdict(state, made, now)
        found.append(_verdict("work_directory", path, stale=stale, reason=reason, holders=locks.holders(lock)))
    return found


def _verdict(kind, path, *, stale, reason, holders):
    name = os.path.basename(path)
    return {"kind": kind, "name": name, "path": path, "stale": stale, "reason": reason, "holders": holders}


# --------------------------------------------------------------------------- keep_previous


def keep_previous_settings(params):
    """(keep_previous, keep_previous_days) of a backup's or restore's params; raises PgError when negative."""
    keep = int(params.get("keep_previous", KEEP_PREVIOUS))
    keep_days = int(params.get("keep_previous_days", KEEP_PREVIOUS_DAYS))
    if keep < 0 or keep_days < 0:
        raise PgError("keep_previous and keep_previous_days cannot be negative")
    return keep, keep_days


def plan_keep_previous(kept, held, now, *, keep=KEEP_PREVIOUS, keep_days=KEEP_PREVIOUS_DAYS):
    """What keep_previous does with the databases restores kept. A pure decision.

    kept: dicts {name, kind, made_at, seq} (made_at: the stamp in the name, epoch seconds); held: {name:
    backup name} of the kept databases a valid backup holds (a backup *of the kept database itself*).
    Returns [(item, action, reason)], newest first, action one of:

    - "keep": among the newest ``keep`` (both kinds together, by stamp) and at most ``keep_days`` old;
    - "drop": due to go, and a backup holds all of its data;
    - "archive": due to go, but no backup holds its data yet. What a kept database alone holds is what was
      written to the database between its last backup and the restore (or revert) that set it aside, and
      nothing tells whether anything was; so it is backed up first (a backup run does that) and dropped
      after. It is never dropped before.
    """
    ordered = sorted(kept, key=lambda item: (item["made_at"], item.get("seq", 1)), reverse=True)
    decisions = []
    for index, item in enumerate(ordered):
        if index < keep and now - item["made_at"] <= keep_days * 86400:
            decisions.append((item, "keep", f"among the newest {keep} and at most {keep_days} days old"))
            continue
        why = f"beyond the newest {keep}" if index >= keep else f"older than {keep_days} days"
        if item["name"] in held:
            decisions.append((item, "drop", f"{why}; the backup {held[item['name']]} holds its data"))
        else:
            decisions.append((item, "archive", f"{why}; no backup holds its data yet"))
    return decisions


def held_by(kept, entries):
    """{kept database name: the newest valid backup entry of that very database that started at or after
    it was set aside}. entries: catalog entries, newest first. A pure decision."""
    made = {item["name"]: item["made_at"] for item in kept}
    held = {}
    for entry in entries:
        name = entry.get("database")
        if name in made and name not in held and entry["valid"] and (entry["timestamp"] or 0) >= made[name]:
            held[name] = entry
    return held


# --------------------------------------------------------------------------- the janitor


class Janitor:
    """Removes what interrupted runs left and applies keep_previous; reports every decision.

    psql reaches the server; lock_dir is the run's backup directory (where scratch databases' lock files
    are). In check mode nothing is changed, and the report says what would be.
    """

    def __init__(self, psql, lock_dir, log=None, check_mode=False):
        self.psql = psql
        self.lock_dir = lock_dir
        self.log = log or (lambda msg: None)
        self.check_mode = check_mode
        self.warnings = []
        self._server_version = None

    def _database_names(self):
        rows = self.psql.query_json(
            "SELECT json_build_object('name', datname, 'v', current_setting('server_version_num')::int) "
            "FROM pg_database;",
            self.psql.conn.maintenance_db,
            what="listing the databases",
        )
        if rows:
            self._server_version = rows[0]["v"]
        return [row["name"] for row in rows]

    def clean(self, scratch=(), directories=(), now=None, keep_since=None):
        """Remove the stale scratch databases of (database, marker) pairs and the stale work directories
        in directories. Returns report items {kind, name, path, action, reason}.

        keep_since (epoch seconds): scratch databases made since then are left, whatever their lock - the
        recovery in progress (tokotani.dr.recovery_run) that started then staged them for its swap."""
        now = time.time() if now is None else now
        report = []
        seen = set()
        for directory in directories:
            if not directory or os.path.abspath(directory) in seen:
                continue
            seen.add(os.path.abspath(directory))
            for item in work_dir_verdicts(directory, now):
                report.append(self._remove_dir(item))
        if scratch:
            try:
                names = self._database_names()
            except PgError as err:
                self.warnings.append(f"cannot look for the scratch databases of interrupted runs: {err.msg}")
                names = []
            for database, marker in scratch:
                for item in derived_databases(names, database, marker):
                    if keep_since is not None and item["made_at"] >= keep_since:
                        reason = "staged by the recovery in progress, for its swap"
                        report.append(
                            {
                                "kind": "scratch_database",
                                "name": item["name"],
                                "path": None,
                                "reason": reason,
                                "action": "left",
                                "holders": [],
                            }
                        )
                        continue
                    report.append(self._drop_scratch(item, now))
            if names and self.lock_dir:
                report.extend(self._orphan_claims(names, now))
        return report

    def _orphan_claims(self, names, now):
        """Lock files of scratch databases that no longer exist and nobody holds (a run killed between its
        claim and CREATE DATABASE, or a cleanup cut short): removed once ORPHAN_LOCK_GRACE old."""
        existing = {os.path.basename(db_lock_path(self.lock_dir, name)) for name in names}
        report = []
        try:
            files = sorted(os.listdir(self.lock_dir))
        except OSError:
            return report
        for name in files:
            if not (name.startswith(DB_LOCK_PREFIX) and name.endswith(catalog.LOCK_SUFFIX)) or name in existing:
                continue
            path = os.path.join(self.lock_dir, name)
            try:
                old = now - os.lstat(path).st_mtime > ORPHAN_LOCK_GRACE
            except OSError:
                continue
            if not old or locks.probe(path) != locks.FREE:
                continue
            item = {"kind": "lock_file", "name": name, "path": path, "reason": "the lock file of a dropped database"}
            if self.check_mode:
                report.append(dict(item, action="would_remove"))
                continue
            claim = locks.FileLock(path, "cleanup of an interrupted run")
            try:
                if claim.try_acquire(create=False):
                    claim.release(remove=True)
                    report.append(dict(item, action="removed"))
            except OSError:
                continue
        return report

    def _remove_dir(self, item):
        out = {k: item[k] for k in ("kind", "name", "path", "reason")}
        if not item["stale"]:
            return dict(out, action="left", holders=item["holders"])
        if self.check_mode:
            return dict(out, action="would_remove")
        lock_file = item["path"] if item["kind"] == "lock_file" else item["path"] + catalog.LOCK_SUFFIX
        claim = locks.FileLock(lock_file, "cleanup of an interrupted run")
        try:
            if os.path.exists(lock_file) and not claim.try_acquire(create=False):
                return dict(out, action="left", reason="claimed by another run meanwhile")
        except OSError:
            return dict(out, action="left", reason="its lock file went meanwhile (another cleanup?)")
        try:
            if item["kind"] == "work_directory":
                shutil.rmtree(item["path"])
        except FileNotFoundError:
            pass
        except OSError as err:
            claim.release()
            self.warnings.append(f"could not remove {item['path']} of an interrupted run: {err.strerror}")
            return dict(out, action="failed", reason=f"{item['reason']}; removing it failed: {err.strerror}")
        claim.release(remove=True)
        if item["kind"] == "work_directory":
            self.log(f"removed the directory {item['path']} of an interrupted run ({item['reason']})")
        return dict(out, action="removed")

    def _drop_scratch(self, item, now):
        name = item["name"]
        lock_file = db_lock_path(self.lock_dir, name) if self.lock_dir else None
        state = locks.probe(lock_file) if lock_file else locks.ABSENT
        stale, reason = locks.leftover_verdict(state, item["made_at"], now)
        out = {"kind": "scratch_database", "name": name, "path": None, "reason": reason}
        if not stale:
            return dict(out, action="left", holders=locks.holders(lock_file) if lock_file else [])
        if self.check_mode:
            return dict(out, action="would_remove")
        claim = locks.FileLock(lock_file, "cleanup of an interrupted run") if state == locks.FREE else None
        try:
            if claim is not None and not claim.try_acquire(create=False):
                return dict(out, action="left", reason="claimed by another run meanwhile")
        except OSError:
            claim = None
        try:
            terminated = self._drop(name, force=True)
        except PgError as err:
            if claim is not None:
                claim.release()
            self.warnings.append(f"could not drop the scratch database {name} of an interrupted run: {err.msg}")
            return dict(out, action="failed", reason=f"{reason}; dropping it failed: {err.msg}")
        if claim is not None:
            claim.release(remove=True)
        if terminated:
            reason += f"; {terminated} connection(s) to it (an orphaned pg_restore?) were terminated"
        self.log(f"dropped the scratch database {name} of an interrupted run ({reason})")
        return dict(out, action="removed", reason=reason)

    def _drop(self, name, force):
        """DROP DATABASE name; with force, terminating its connections first. Returns how many were."""
        terminated = 0
        if force:
            rows = self.psql.query_json(
                "SELECT json_build_object('n', count(pg_terminate_backend(pid))) FROM pg_stat_activity "
                "WHERE datname = :'n' AND pid <> pg_backend_pid();",
                self.psql.conn.maintenance_db,
                variables={"n": name},
                what=f"terminating the connections to {name}",
            )
            terminated = rows[0]["n"] if rows else 0
        with_force = " WITH (FORCE)" if force and (self._server_version or 0) >= 130000 else ""
        self.psql.run_sql(
            f"DROP DATABASE IF EXISTS {quote_ident(name)}{with_force};",
            self.psql.conn.maintenance_db,
            what=f"dropping {name}",
        )
        return terminated

    def keep_previous(
        self,
        database,
        backup_dir,
        *,
        keep=KEEP_PREVIOUS,
        keep_days=KEEP_PREVIOUS_DAYS,
        archive=None,
        now=None,
        keys=None,
    ):
        """Apply plan_keep_previous to database's kept databases; backup_dir holds the backups.

        archive(name) backs a kept database up and returns the backup's name (the backup engine gives
        one); without it (a restore run), a kept database no backup holds stays for the next backup run.
        keys (backup_keys.KeyRing): with a key, only a backup signed by it counts as holding the data.
        Returns report items {name, kind, made_at, action (kept, dropped, would_drop, failed), reason,
        backup (the one holding its data, or None)}. One someone is connected to is not dropped.
        """
        now = time.time() if now is None else now
        try:
            names = self._database_names()
        except PgError as err:
            self.warnings.append(f"cannot list the databases kept by restores of {database}: {err.msg}")
            return []
        kept = []
        for marker, kind in KEPT_KINDS.items():
            kept.extend(dict(item, kind=kind) for item in derived_databases(names, database, marker))
        if not kept:
            return []
        entries = catalog.scan(backup_dir, include_legacy=False, keys=keys)["backups"] if backup_dir else []
        held = held_by(kept, entries)
        names = {name: entry["name"] for name, entry in held.items()}
        report = []
        for item, action, reason in plan_keep_previous(kept, names, now, keep=keep, keep_days=keep_days):
            out = {"name": item["name"], "kind": item["kind"], "made_at": catalog.epoch_to_iso(item["made_at"])}
            out["backup"] = names.get(item["name"])
            if action == "keep":
                report.append(dict(out, action="kept", reason=reason))
            elif self.check_mode:
                then = " once a backup run has backed it up" if action == "archive" else ""
                report.append(dict(out, action="would_drop", reason=reason + then))
            elif action == "archive" and archive is None:
                later = f"; the next backup run of {database} backs it up, then drops it"
                report.append(dict(out, action="kept", reason=reason + later))
            else:
                report.append(dict(out, **self._drop_kept(item["name"], reason, held.get(item["name"]), archive)))
        return report

    def _drop_kept(self, name, reason, entry, archive):
        """Drop a kept database due to go: once its backup (entry) passes its checksums, or after archive()."""
        backup = None
        if entry is not None:
            try:
                with catalog.hold_backup(entry, f"keep_previous: checking the backup of {name}"):
                    catalog.verify_entry(entry)
            except catalog.CatalogError as err:
                entry.update(valid=False, problems=[err.msg])
            if entry["valid"]:
                backup = entry["name"]
            else:
                reason += f", but that backup fails its checksums ({'; '.join(entry['problems'][:3])})"
                if archive is None:
                    self.warnings.append(f"keep_previous kept {name}: {reason}")
                    return {"action": "kept", "reason": f"{reason}: it stays", "backup": None}
        if backup is None:
            try:
                backup = archive(name)
            except (PgError, catalog.CatalogError, OSError) as err:
                msg = getattr(err, "msg", None) or str(err)
                self.warnings.append(f"keep_previous did not drop {name}: backing it up first failed: {msg}")
                return {"action": "kept", "reason": f"{reason}; backing it up failed, so it stays", "backup": None}
            reason = f"{reason}; backed up first as {backup}"
        try:
            self._drop(name, force=False)
        except PgError as err:
            if "being accessed by other users" in (err.stderr or "") + err.msg:
                why = f"{reason}, but someone is connected to it: a later run drops it"
                return {"action": "kept", "reason": why, "backup": backup}
            self.warnings.append(f"could not drop the kept database {name}: {err.msg}")
            return {"action": "failed", "reason": f"{reason}; dropping it failed: {err.msg}", "backup": backup}
        self.log(f"dropped the kept database {name} ({reason})")
        return {"action": "dropped", "reason": reason, "backup": backup}


def removed_summary(report):
    """'database X, directory Y' for the items a cleanup removed (or would remove), else ''."""
    what = {"scratch_database": "database", "work_directory": "directory", "lock_file": "lock file"}
    return ", ".join(
        f"{what[item['kind']]} {item['path'] if item['kind'] != 'scratch_database' else item['name']}"
        for item in report
        if item["action"] in ("removed", "would_remove")
    )


# --------------------------------------------------------------------------- backup_info
