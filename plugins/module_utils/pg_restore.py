# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The restore engine behind tokotani.dr.postgresql_restore.

Order of work, so that nothing is touched before the backup is known to be good:

1. resolve the backup (a path, a name, or ``latest``/``before`` in a directory);
2. refuse unless confirmed (check mode excepted: it changes nothing);
3. verify: sha256 against the manifest (directory backups: every file), or the whole gzip
   stream of a legacy ``.sql.gz``;
4. create ``<db>__restore_<ts>`` (mode replace) or the target (mode into) from template0 with
   the source's encoding, locale and owner; restore with ``pg_restore --exit-on-error -j N``
   (zstd directory backups through a staging directory of regular files beside the backup) or
   ``psql -v ON_ERROR_STOP=1``;
5. check: every table of the manifest is present and has exactly the manifest's row count;
6. ANALYZE; give the new database the live one's owner, ACL, settings, comment, connection limit;
7. run the operator's SQL assertions against the new database (read-only sessions), as it will be used;
8. replace mode: terminate the connections and swap with two renames in one transaction,
   keeping the old database as ``<db>__pre_restore_<ts>``.

Any failure before the swap drops the new database; the live one is never touched before the
swap's single transaction.

Mode ``revert`` undoes a replace: the kept ``<db>__pre_restore_<ts>`` takes the name back, through
the same swap (connections terminated, two renames in one transaction), and the database it
replaces is kept as ``<db>__failed_restore_<ts>``.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import secrets
import shutil
import tempfile
import threading
import time

from ansible_collections.tokotani.dr.plugins.module_utils import backup_catalog as catalog
from ansible_collections.tokotani.dr.plugins.module_utils import backup_keys, db_checks, leftovers, locks, pg_cli
from ansible_collections.tokotani.dr.plugins.module_utils import recovery_run as recovery
from ansible_collections.tokotani.dr.plugins.module_utils.leftovers import (
    FAILED_RESTORE,
    PRE_RESTORE,
    RESTORE_SCRATCH,
    child_argv,
    derived_name,
    stamp,
)
from ansible_collections.tokotani.dr.plugins.module_utils.pg_cli import (
    NON_USER_SETTINGS_SQL,
    Connection,
    PgError,
    Psql,
    StderrCollector,
    check_tool_not_older,
    conninfo_dbname,
    create_database_sql,
    database_properties,
    excerpt,
    find_tool,
    properties_sql,
    quote_ident,
    quote_literal,
    restorable_properties,
    server_info,
    tool_version,
)

MODES = ("replace", "stage", "swap", "discard", "into", "revert")
SWAP_ATTEMPTS = 5
DEFAULT_MAINTENANCE_WORK_MEM = "256MB"
ASSERTION_STATEMENT_TIMEOUT = "5min"
ASSERTION_RELATION = "tokotani_assertion"
_PSQL_PREFIX_RE = re.compile(r"^psql:[^:]*:\d+:\s*")


class ZstdStage:
    """A directory pg_restore reads like an uncompressed directory backup.

    pg_restore accepts only regular files in a directory archive (recent minor releases, 15.20
    for one, refuse symlinks and named pipes): toc.dat and the uncompressed
    files are hard-linked (copied when the staging directory is on another filesystem) and the
    ``.zst`` files are decompressed, ``jobs`` at a time, largest first, before pg_restore starts.
    On any exception (an interrupting signal included) the running zstd processes are stopped and
    the queued files dropped; ``stopped`` names what was stopped.
    """

    def __init__(self, source, stage, zstd, jobs=2):
        self.source = source
        self.stage = stage
        self.zstd = zstd
        self.jobs = max(1, jobs)
        self.procs = set()
        self.lock = threading.Lock()
        self.aborted = False
        self.stopped = []

    def prepare(self):
        compressed = []
        for rel in catalog.tree_files(self.source):
            src = os.path.join(self.source, rel)
            dest = os.path.join(self.stage, rel[: -len(".zst")] if rel.endswith(".zst") else rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            if rel.endswith(".zst"):
                compressed.append((os.path.getsize(src), src, dest))
                continue
            try:
                os.link(src, dest)
            except OSError:
                shutil.copyfile(src, dest)
        compressed.sort(reverse=True)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.jobs)
        try:
            for future in [pool.submit(self._decompress, src, dest) for _size, src, dest in compressed]:
                future.result()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            self.stop()
            raise
        finally:
            pool.shutdown(wait=True)

    def stop(self):
        with self.lock:
            self.aborted = True
            procs = list(self.procs)
        for proc in procs:
            if pg_cli.stop_process(proc) and "zstd" not in self.stopped:
                self.stopped.append("zstd")

    def _decompress(self, src, dest):
        argv = [self.zstd, "-q", "-d", "-f", "-o", dest, src]
        with self.lock:
            if self.aborted:
                return
            proc = pg_cli.spawn(child_argv(argv), stdout=pg_cli.DEVNULL, stderr=pg_cli.PIPE)
            self.procs.add(proc)
        _out, err = proc.communicate()
        with self.lock:
            self.procs.discard(proc)
            if self.aborted:
                return
        if proc.returncode != 0:
            raise PgError(
                f"zstd cannot decompress {src} into {os.path.dirname(dest)} (full? set work_dir - "
                "db_recovery_work_dir for recover_db.yml, backup_verify_work_dir for the weekly verification - to a "
                "filesystem with room for the uncompressed data)",
                cmd=argv,
                rc=proc.returncode,
                stderr=excerpt(err.decode("utf-8", "replace")),
            )


def stage_parent(work_dir, backup_path):
    """Where the staging directory goes: work_dir, else beside the backup (same filesystem, so
    hard links instead of copies, and room that a tmpfs /tmp may not have), else the temp dir."""
    if work_dir:
        return work_dir
    parent = os.path.dirname(os.path.abspath(backup_path))
    return parent if os.access(parent, os.W_OK | os.X_OK) else None


class RestoreEngine:
    """One restore run. Options as in the postgresql_restore module (see its documentation)."""

    def __init__(self, conn, params, check_mode=False, log=None):
        self.conn = conn
        self.p = dict(params)
        self.check_mode = check_mode
        self.log = log or (lambda msg: None)
        self.database = self.p["database"]
        self.mode = self.p.get("mode") or "replace"
        self.jobs = max(1, int(self.p.get("jobs") or 2))
        self.verified = []
        self.warnings = []
        self.server_log = None
        self.created = None
        self.assertions = check_assertions(self.p.get("assertions"))
        self.assertion_results = []
        self.table_counts = None
        self.keys = backup_keys.keyring(self.p)
        self.keep_previous, self.keep_previous_days = leftovers.keep_previous_settings(self.p)
        self.lock_dir = self.p.get("backup_dir")
        self.janitor = None
        self.leftovers = []
        self.kept_databases = []
        self.claim = None
        self.swapped = False
        self.stopped = []
        self.live_oid = None
        self.restored_oid = None

    # -- resolving -------------------------------------------------------------
    def resolve(self):
        backup = self.p.get("backup") or "latest"
        directory = self.p.get("backup_dir")
        if backup == "latest":
            before = catalog.parse_timestamp(self.p["before"]) if self.p.get("before") else None
            return self._resolve_latest(directory, before)
        return self._resolve_named(backup, directory)

    def _resolve_latest(self, directory, before):
        if not directory:
            raise PgError("backup: latest needs backup_dir, the directory to pick the newest backup from")
        if not os.path.isdir(directory):
            raise PgError(f"backup_dir {directory} does not exist")
        source = self.p.get("source_database") or self.database
        listing = catalog.scan(directory, database=source, keys=self.keys)
        suspicious = []
        entry = catalog.newest(
            listing["backups"], before=before, accept_suspicious=self.p.get("accept_suspicious"), skipped=suspicious
        )
        for skipped in listing["backups"]:
            if entry is not None and skipped is entry:
                break
            if skipped in suspicious:
                self.warnings.append(catalog.suspicious_warning(skipped))
            elif not skipped["valid"] and (before is None or (skipped["timestamp"] or 0) < before.timestamp()):
                self.warnings.append(
                    f"the newer backup {skipped['name']} is not valid ({'; '.join(skipped['problems'])}): skipped"
                )
        if entry is None:
            what = f"before {catalog.iso(before)} " if before else ""
            why = ""
            valid = [e for e in listing["backups"] if e["valid"]]
            if suspicious:
                why = f"; {catalog.suspicious_warning(suspicious[0])}"
            elif before is not None and valid:
                oldest = min(valid, key=catalog.ended_at)
                ended = oldest.get("finished_at") or oldest["started_at"]
                why = f"; the oldest valid one, {oldest['name']}, ended at {ended}"
            elif listing["backups"]:
                first = listing["backups"][0]
                why = f"; the newest, {first['name']}: {'; '.join(first['problems'])}"
            count = f"{len(listing['backups'])} entries, " + (
                f"{len(valid)} valid" if before is not None else "none valid"
            )
            raise PgError(
                f"no valid backup of database {source} {what}in {directory} ({count}{why})",
                backups=[catalog.public_entry(e) for e in listing["backups"][:10]],
                warnings=self.warnings,
            )
        return entry

    def _managed(self, directory, manifest_file):
        return backup_keys.check_entry(catalog.managed_entry(directory, manifest_file), self.keys)

    def _by_stem(self, parent, stem):
        """A backup named by its stem, as operators type it: its manifest, else a legacy .sql.gz."""
        manifest_file = catalog.manifest_name(stem)
        if os.path.isfile(os.path.join(parent, manifest_file)):
            return self._managed(parent, manifest_file)
        legacy = stem + "." + catalog.LEGACY_EXTENSIONS[0]
        if os.path.isfile(os.path.join(parent, legacy)):
            return catalog.legacy_entry(parent, legacy)
        raise PgError(f"no backup named {stem} in {parent} (neither {manifest_file} nor {legacy} is there)")

    def _resolve_named(self, backup, directory):
        path = backup
        if not os.path.isabs(path) and directory and os.sep not in path:
            path = os.path.join(directory, path)
        path = os.path.abspath(path)
        if path.endswith(catalog.MANIFEST_SUFFIX):
            if not os.path.isfile(path):
                raise PgError(f"the manifest {path} does not exist")
            return self._managed(os.path.dirname(path), os.path.basename(path))
        if not os.path.lexists(path):
            stem = os.path.basename(path)
            parsed = catalog.parse_name(stem + ".x")
            if parsed is None or parsed["stem"] != stem:
                raise PgError(f"the backup {path} does not exist")
            return self._by_stem(os.path.dirname(path), stem)
        parent = os.path.dirname(path)
        name = os.path.basename(path.rstrip(os.sep))
        parsed = catalog.parse_name(name)
        if parsed:
            manifest_file = catalog.manifest_name(parsed["stem"])
            if os.path.isfile(os.path.join(parent, manifest_file)):
                entry = self._managed(parent, manifest_file)
                if entry["manifest"] is not None and entry["manifest"]["data"] != name:
                    raise PgError(
                        "the manifest {} describes {}, not {}".format(manifest_file, entry["manifest"]["data"], name)
                    )
                return entry
        if name.endswith(".sql.gz") and os.path.isfile(path):
            return catalog.legacy_entry(parent, name)
        raise PgError(
            "{} has no manifest beside it ({}); only plain .sql.gz files from the earlier backup scripts "
            "can be restored without one".format(
                path, catalog.manifest_name(parsed["stem"]) if parsed else "<name>.manifest.json"
            )
        )

    # -- checks ----------------------------------------------------------------
    def _check_source(self, entry):
        if entry["kind"] != "managed":
            return
        expected = self.p.get("source_database")
        if expected is None and self.mode in ("replace", "stage"):
            expected = self.database
        if expected is not None and entry["database"] != expected:
            raise PgError(
                "{} is a backup of database {}, not {}: refusing to restore it{}. If that is really "
                "intended, set source_database: {}.".format(
                    entry["name"],
                    entry["database"],
                    expected,
                    f" over {self.database}" if self.mode == "replace" else "",
                    entry["database"],
                )
            )

    def verify(self, entry):
        if not entry["valid"]:
            raise PgError(
                "backup {} is not valid: {}. Nothing was changed.".format(entry["name"], "; ".join(entry["problems"])),
                problems=entry["problems"],
                failed_check="backup integrity",
            )
        catalog.verify_entry(entry)
        if not entry["valid"]:
            raise PgError(
                "backup {} failed verification: {}. Nothing was changed.".format(
                    entry["name"], "; ".join(entry["problems"])
                ),
                problems=entry["problems"],
                failed_check="backup integrity",
            )
        if entry["kind"] == "managed":
            self.verified.append(backup_keys.signature_line(entry, self.keys))
            self.verified.append("sha256 of {} matches the manifest".format(os.path.basename(entry["path"])))
        else:
            name = os.path.basename(entry["path"])
            self.verified.append(
                f"gzip stream of {name} is intact (legacy backup of the earlier scripts: no manifest, nothing signed)"
            )

    def _preflight(self, entry):
        self.psql = Psql(self.conn)
        self.server = server_info(self.psql)
        self.server_log = pg_cli.ServerLog.locate(self.psql, self.server, self.p.get("server_log"), self.warnings)
        smajor = int(self.server["server_version_num"]) // 10000
        fmt = entry["format"]
        if fmt in ("directory", "custom"):
            self.pg_restore = find_tool("pg_restore", self.conn.bindir, smajor)
            version = tool_version(self.pg_restore)
            archive = (entry.get("manifest") or {}).get("pg_dump", {}).get("version")
            if archive and int(archive.split(".")[0]) > version[0]:
                major = int(archive.split(".")[0])
                raise PgError(
                    f"pg_restore {version[0]}.{version[1]} ({self.pg_restore}) cannot read a backup made by pg_dump "
                    f"{archive}: install the client tools of version {major} or newer "
                    f"(Debian/Ubuntu: apt-get install postgresql-client-{major}) or set pg_bindir"
                )
            check_tool_not_older(
                "pg_restore",
                self.pg_restore,
                version[:2],
                self.server["server_version_num"],
                self.server["server_version"],
            )
        self.smajor = smajor

    # -- database operations -----------------------------------------------------
    def _exists(self, name):
        rows = self.psql.query_json(
            "SELECT json_build_object('exists', EXISTS (SELECT 1 FROM pg_database WHERE datname = :'n'));",
            self.conn.maintenance_db,
            variables={"n": name},
        )
        return bool(rows and rows[0]["exists"])

    def _free_name(self, suffix, claim=False):
        """database + suffix (+ _2, _3 ... when taken), within PostgreSQL's name length.

        With claim, the name's lock (leftovers.claim_database) is taken too, before anything is created:
        it tells other runs that the scratch database is in use for as long as this run lives.
        """
        name = derived_name(self.database, suffix)
        seq = 1
        while self._exists(name) or (claim and not self._claim(name)):
            seq += 1
            name = derived_name(self.database, f"{suffix}_{seq}")
        return name

    def _claim(self, name):
        lock = leftovers.claim_database(self.lock_dir, name, f"restore of {self.database} into {name}")
        if lock is None:
            return False
        if lock.warning:
            self.warnings.append(lock.warning)
        self.claim = lock
        return True

    def _release_claim(self, remove=True):
        if self.claim is not None:
            self.claim.release(remove=remove)
            self.claim = None

    def _drop(self, name):
        """Drop a database this run created; True only once it is checked gone (a warning says why not), so
        that a message saying "was dropped" is a fact."""
        force = " WITH (FORCE)" if self.smajor >= 13 else ""
        try:
            self.psql.run_sql(
                f"DROP DATABASE IF EXISTS {quote_ident(name)}{force};",
                self.conn.maintenance_db,
                what=f"dropping the incomplete database {name}",
            )
            still_there = self._exists(name)
        except PgError as err:
            self.warnings.append(f"could not drop {name}: {err.msg}; the next restore or backup run drops it")
            return False
        if still_there:
            self.warnings.append(f"{name} is still there after DROP DATABASE; the next restore or backup run drops it")
            return False
        return True

    def _spawn(self, argv, conn=None, env_extra=None, **kwargs):
        """Start a child that dies with this process (leftovers.child_argv) through pg_cli.spawn (conn's
        environment with env_extra when conn is given); proc.tool names it."""
        proc = pg_cli.spawn(child_argv(argv), conn, env_extra, **kwargs)
        proc.tool = os.path.basename(argv[0])
        return proc

    def _stop(self, procs):
        """Stop the children still running (SIGTERM, then SIGKILL), and remember which."""
        for proc in procs:
            if pg_cli.stop_process(proc) and proc.tool not in self.stopped:
                self.stopped.append(proc.tool)

    def _restore_env(self):
        mwm = self.p.get("maintenance_work_mem") or DEFAULT_MAINTENANCE_WORK_MEM
        # The restore's own sessions only: the swap commits synchronously and flushes all of it.
        return {"PGOPTIONS": f"-c synchronous_commit=off -c maintenance_work_mem={mwm}"}

    def _load(self, entry, target):
        """Restore the backup's content into the (new, empty) database target."""
        if entry["format"] in ("directory", "custom"):
            self._load_archive(entry, target)
        else:
            self._load_plain(entry, target)

    def _load_archive(self, entry, target):
        """pg_restore -j N --exit-on-error; zstd directory backups through a staging directory."""
        source = entry["path"]
        stage = stager = proc = None
        try:
            if entry["format"] == "directory" and any(f.endswith(".zst") for f in catalog.tree_files(source)):
                zstd = shutil.which("zstd")
                if not zstd:
                    raise PgError(f"zstd is needed to restore {entry['name']} (Debian/Ubuntu: apt-get install zstd)")
                parent = stage_parent(self.p.get("work_dir"), source)
                stage = leftovers.WorkDir(parent, "restore", f"restore of {self.database}: staging {entry['name']}")
                stager = ZstdStage(source, stage.path, zstd, self.jobs)
                stager.prepare()
                source = stage.path
            argv = [self.pg_restore, "--exit-on-error", "--no-password", "-j", str(self.jobs)]
            argv += ["-d", conninfo_dbname(target), source]
            proc = self._spawn(argv, self.conn, self._restore_env(), stdout=pg_cli.DEVNULL, stderr=pg_cli.PIPE)
            errors = StderrCollector(proc.stderr)
            rc = proc.wait()
            errors.join(10)
            if rc != 0:
                raise self._restore_error("pg_restore", argv, rc, errors.text())
        except BaseException:
            self.stopped.extend(t for t in (stager.stopped if stager else []) if t not in self.stopped)
            self._stop([proc])
            raise
        finally:
            if stage is not None:
                stage.remove()

    def _load_plain(self, entry, target):
        """psql -v ON_ERROR_STOP=1, fed by gzip/zstd -dc for compressed scripts."""
        psql = find_tool("psql", self.conn.bindir, self.smajor)
        argv = [psql, "-X", "-q", "-w", "-v", "ON_ERROR_STOP=1", "-d", conninfo_dbname(target), "-f"]
        env_extra = self._restore_env()
        decomp = proc = None
        try:
            if entry["compression"] == "none":
                argv.append(entry["path"])
                proc = self._spawn(argv, self.conn, env_extra, stdout=pg_cli.DEVNULL, stderr=pg_cli.PIPE)
            else:
                name = "pigz" if entry["compression"] == "gzip" and shutil.which("pigz") else entry["compression"]
                tool = shutil.which(name)
                if not tool:
                    raise PgError(f"{entry['compression']} is needed to restore {entry['name']}")
                dargv = [tool, "-d", "-c", entry["path"]]
                decomp = self._spawn(dargv, stdout=pg_cli.PIPE, stderr=pg_cli.PIPE)
                derr = StderrCollector(decomp.stderr)
                argv.append("-")
                proc = self._spawn(
                    argv, self.conn, env_extra, stdin=decomp.stdout, stdout=pg_cli.DEVNULL, stderr=pg_cli.PIPE
                )
                decomp.stdout.close()
            errors = StderrCollector(proc.stderr)
            rc = proc.wait()
            errors.join(10)
            if rc != 0:
                raise self._restore_error("psql", argv, rc, errors.text())
            if decomp is not None:
                drc = decomp.wait()
                derr.join(10)
                if drc != 0:
                    raise PgError(
                        f"{os.path.basename(dargv[0])} failed reading {entry['path']}: {excerpt(derr.text(), 2)}",
                        cmd=dargv,
                        rc=drc,
                        stderr=excerpt(derr.text()),
                    )
        except BaseException:
            self._stop([proc, decomp])
            raise

    def _restore_error(self, tool, argv, rc, stderr):
        stderr = self.conn.redact(stderr)
        first, _corrupt, logged = pg_cli.explain_failure(stderr, self.server_log, self.conn.redact)
        return PgError(
            f"{tool} failed: {first or f'rc {rc}'}.{logged}",
            cmd=argv,
            rc=rc,
            stderr=excerpt(stderr),
            failed_check="restore without SQL errors",
        )

    def compare_with_manifest(self, entry, dbname, growing_tables=(), count_if_missing=True):
        """Every table of the entry's manifest with its row count in dbname, judged by the checks engine
        (db_checks: exact counts, at least the manifest's for growing_tables, a missing table fails).
        Also kept as self.table_counts (what modules return per table)."""
        tables = (entry.get("manifest") or {}).get("tables") or []
        counted = db_checks.count_tables(self.psql, dbname, tables, count_if_missing=count_if_missing)
        compared = db_checks.compare_counts(counted, growing_tables)
        self.table_counts = db_checks.public_counts(compared)
        return compared

    def _check(self, entry, target, growing_tables=(), count_if_missing=False):
        """Tables present, row counts as the manifest's (exact unless growing). Returns (tables, rows)."""
        tables = (entry.get("manifest") or {}).get("tables")
        if not tables:
            rows = self.psql.query_json(
                "SELECT json_build_object('n', count(*)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                "AND n.nspname NOT LIKE 'pg\\_toast%';",
                target,
                what="listing the restored tables",
            )
            self.verified.append("restore finished without SQL errors (no manifest: row counts not compared)")
            return rows[0]["n"], None
        compared = self.compare_with_manifest(entry, target, growing_tables, count_if_missing)
        missing = db_checks.missing_tables(compared)
        if missing:
            raise PgError(
                f"the restored database lacks {len(missing)} table(s) of the manifest: {', '.join(missing[:20])}",
                missing_tables=missing,
                failed_check="tables present",
                table_counts=self.table_counts,
            )
        wrong = db_checks.wrong_counts(compared)
        if wrong:
            raise PgError(
                "row counts differ from the manifest: " + "; ".join(wrong[:20]),
                row_mismatches=wrong,
                failed_check="row counts",
                table_counts=self.table_counts,
            )
        total = sum(t["actual"] for t in compared)
        grown = [t for t in compared if t["actual"] != t["expected"]]
        if grown:
            more = ", ".join(f"{t['table']} {t['actual']} >= {t['expected']}" for t in grown)
            self.verified.append(
                f"{len(tables)} tables present with the manifest's row counts, growing tables at least "
                f"({total} rows; {more})"
            )
        else:
            self.verified.append(f"{len(tables)} tables present with the manifest's row counts ({total} rows)")
        return len(tables), total

    def _check_and_analyze(self, entry, target):
        """The row-count check, with ANALYZE (vacuumdb -j) running beside it. Returns (tables, rows)."""
        proc = None
        argv = None
        if self.p.get("analyze", True):
            try:
                vacuumdb = find_tool("vacuumdb", self.conn.bindir, self.smajor)
            except PgError:
                vacuumdb = None
            if vacuumdb:
                argv = [vacuumdb, "--analyze-only", "--quiet", "--no-password", "-j", str(self.jobs)]
                argv += ["-d", conninfo_dbname(target)]
                proc = self._spawn(argv, self.conn, stdout=pg_cli.DEVNULL, stderr=pg_cli.PIPE, text=True)
        try:
            checked = self._check(entry, target)
        except BaseException:
            self._stop([proc])
            raise
        if proc is not None:
            _out, err = proc.communicate()
            if proc.returncode != 0:
                raise PgError(f"ANALYZE of {target} failed", cmd=argv, rc=proc.returncode, stderr=excerpt(err))
            self.verified.append("ANALYZE ran: the planner has statistics from the start")
        elif self.p.get("analyze", True):
            self.psql.run_sql("ANALYZE;", target, what="ANALYZE")
        return checked

    def _run_assertions(self, target):
        """The operator's SQL assertions, each in its own read-only session; the first failure raises."""
        for item in self.assertions:
            problem = self._assertion_problem(item, target)
            if problem is not None:
                self.assertion_results.append({"name": item["name"], "ok": False, "problem": problem})
                raise PgError(
                    f"assertion '{item['name']}' failed: {problem}.",
                    failed_check=f"assertion '{item['name']}'",
                    assertion=item["name"],
                    assertions=list(self.assertion_results),
                )
            self.assertion_results.append({"name": item["name"], "ok": True})
            self.verified.append(f"assertion '{item['name']}' holds")
            self.log(f"assertion '{item['name']}' holds")

    def open_existing(self):
        """Connect for checks of the existing database (postgresql_check, the checklist); it must exist."""
        self.psql = Psql(self.conn)
        self.server = server_info(self.psql)
        if not self._exists(self.database):
            raise PgError(f"the database {self.database} does not exist: nothing to check", failed_check="database")

    def usable_manifest(self, entry=None):
        """The backup of self.p['backup'] (or entry), resolved, with its manifest checked (schema, signature).

        Raises PgError (failed_check ``backup integrity``) when it is not valid. A legacy backup
        (no manifest) is returned as it is: it has no tables to compare.
        """
        entry = entry or self.resolve()
        if not entry["valid"]:
            raise PgError(
                f"backup {entry['name']} is not valid: {'; '.join(entry['problems'])}. Nothing was checked.",
                problems=entry["problems"],
                failed_check="backup integrity",
            )
        if entry["kind"] == "managed":
            self.verified.append(backup_keys.signature_line(entry, self.keys))
        return entry

    def assertion_report(self, dbname):
        """Every assertion, whatever the others return: [{name, ok, problem?}] (also self.assertion_results)."""
        for item in self.assertions:
            problem = self._assertion_problem(item, dbname)
            self.assertion_results.append(
                {"name": item["name"], "ok": problem is None, **({"problem": problem} if problem else {})}
            )
            if problem is None:
                self.verified.append(f"assertion '{item['name']}' holds")
        return self.assertion_results

    def check_existing(self):
        """The restore's own checks on an existing database, changing nothing (tokotani.dr.postgresql_check).

        With a backup: every table of its manifest is there with the manifest's row count (at least
        that many for growing_tables; the manifest is checked first, its signature included). Then
        every assertion, read-only. With fail_on_problem false, every check runs whatever the others
        found, and the result says which did not hold (``passed``, ``problems``) instead of raising.
        """
        self.open_existing()
        report = not self.p.get("fail_on_problem", True)
        growing = self.p.get("growing_tables") or []
        problems = []
        entry = None
        tables = rows = None
        if self.p.get("backup"):
            entry = self.resolve()
            try:
                self.usable_manifest(entry)
                if entry["kind"] == "managed":
                    tables, rows = self._check(entry, self.database, growing, count_if_missing=True)
            except PgError as err:
                if not report:
                    raise
                problems.append(err.msg)
        if report:
            for item in self.assertion_report(self.database):
                if not item["ok"]:
                    problems.append(f"assertion '{item['name']}' failed: {item['problem']}")
        else:
            self._run_assertions(self.database)
        return {
            "changed": False,
            "passed": not problems,
            "problems": problems,
            "database": self.database,
            "backup": catalog.public_entry(entry) if entry else None,
            "tables": tables,
            "rows": rows,
            "table_counts": self.table_counts,
            "verified": self.verified,
            "assertions": self.assertion_results,
            "warnings": self.warnings,
        }

    def _assertion_problem(self, item, target):
        """None when the assertion's query returns one row whose first column is true, else what went wrong."""
        marker = "tokotani-assertion-" + secrets.token_hex(8)
        try:
            _out, notices = self.psql.run_command(
                assertion_sql(item["sql"], marker),
                target,
                what=f"assertion '{item['name']}'",
                env_extra={"PGOPTIONS": ASSERTION_OPTIONS},
            )
        except PgError as err:
            return sql_error_text(err)
        return assertion_outcome(notices, marker)

    def _expect_live(self, oid, what):
        """Refuse, before anything is changed, when the live database is not the one expected_oid names."""
        expected = self.p.get("expected_oid")
        if expected is None or expected == oid:
            return
        now = f"OID {oid}" if oid is not None else "missing"
        raise SwapConflict(
            f"refusing to {what}: the live database {self.database} ({now}) is not the one this recovery saw at "
            f"its start (OID {expected}) - another run swapped a database in since. Nothing was changed.",
            expected_oid=expected,
            live_oid=oid,
        )

    def _swap_conflict(self, live, previous, new, expect):
        """SwapConflict naming what each database is now (read after the rollback)."""
        names = [n for n in (live, previous, new) if n]
        try:
            found = pg_cli.database_oids(self.psql, names)
        except PgError as err:
            found, seen = {}, f" (and they could not be read again: {err.msg})"
        else:
            seen = ""
        now = ", ".join(f"{n} {'OID ' + str(found[n]) if found.get(n) is not None else 'missing'}" for n in found)
        wanted = ", ".join(f"{n} OID {oid}" for n, oid in expect.items())
        return SwapConflict(
            f"the swap was rolled back, nothing was changed: after the renames the databases were not the ones this "
            f"run saw (wanted {wanted}; before the swap: {now}{seen}) - another recovery or an operator changed "
            f"{live} meanwhile.",
            found=found,
        )

    def _swap(self, live, previous, new, expect):
        """Rename live to previous (when there is one) and new to live, in one transaction that commits
        only if, after the renames, every name of expect ({name: OID}) is the database this run saw:
        a compare-and-swap. Otherwise it rolls back and raises SwapConflict saying what it found."""
        terminate = (
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "  # noqa: S608 - literals are quoted
            f"WHERE datname IN ({quote_literal(live)}, {quote_literal(new)}) AND pid <> pg_backend_pid();\n"
        )
        if previous is None:
            renames = f"ALTER DATABASE {quote_ident(new)} RENAME TO {quote_ident(live)};\n"
        else:
            renames = (
                f"ALTER DATABASE {quote_ident(live)} RENAME TO {quote_ident(previous)};\n"
                f"ALTER DATABASE {quote_ident(new)} RENAME TO {quote_ident(live)};\n"
            )
        sql = terminate + "BEGIN;\n" + renames + cas_sql(expect)
        last = None
        # The one step that touches the live database is never cut in two: a signal waits until the
        # transaction has committed or rolled back (self.swapped says which), then it is raised.
        with leftovers.deferred_signals():
            for attempt in range(1, SWAP_ATTEMPTS + 1):
                try:
                    out = self.psql.run_sql(sql, self.conn.maintenance_db, what="swapping the databases")
                    if CAS_MISMATCH in out:
                        raise self._swap_conflict(live, previous, new, expect)
                    self.swapped = True
                    return attempt
                except PgError as err:
                    last = err
                    if "being accessed by other users" not in (err.stderr or "") + err.msg:
                        raise
                    time.sleep(0.5 * attempt)
        raise PgError(
            f"could not swap {new} in: clients kept reconnecting to {live} ({last.msg if last else ''}). "
            "Stop the applications and retry."
        )

    def _swap_explained(self, previous, new, expect, what, holds):
        """_swap of new in as the live database; a signal after the commit says what the live database holds."""
        try:
            return self._swap(self.database, previous, new, expect)
        except leftovers.Interrupted as err:
            if self.swapped:
                err.msg = (
                    f"the {what} was interrupted by {err.signame} after the swap had committed: {self.database} "
                    f"now holds {holds}."
                )
                err.explained = True
            raise

    # -- run -------------------------------------------------------------------
    def _refuse(self, entry, previous_name):
        if self.mode == "swap":
            kept = f" (the current database would be kept as {previous_name})" if previous_name else ""
            return PgError(
                f"Refusing to swap {entry} in as {self.database} without confirmation{kept}. Nothing was changed. "
                "To go ahead, set confirm: true (module option), or -e confirm=true for the playbooks."
            )
        if self.mode == "revert":
            kept = f" (the current database would be kept as {previous_name})" if previous_name else ""
            return PgError(
                f"Refusing to revert database {self.database} to {entry} without confirmation{kept}. Nothing was "
                "changed. To go ahead, set confirm: true (module option), or -e confirm=true for the playbooks."
            )
        if self.mode == "replace":
            what = (
                f"replace database {self.database} with backup {entry['name']} "
                f"(the current database would be kept as {previous_name})"
            )
        else:
            what = f"restore backup {entry['name']} into the new database {self.database}"
        return PgError(
            f"Refusing to {what} without confirmation. Nothing was changed. To go ahead, set confirm: true "
            "(module option), or -e confirm=true for the playbooks.",
            backup=entry["path"],
        )

    def _plan(self, entry, ts):
        """Names and properties: (target, previous or None, props). Mode stage names no previous database:
        mode swap picks it when it swaps."""
        if self.mode in ("replace", "stage"):
            live_props = database_properties(self.psql, self.database)
            self.live_oid = pg_cli.database_oids(self.psql, [self.database])[self.database]
            self._expect_live(self.live_oid, "replace it" if self.mode == "replace" else "stage a restore of it")
            target = self._free_name(RESTORE_SCRATCH + ts, claim=not self.check_mode)
            previous = self._free_name(PRE_RESTORE + ts) if live_props and self.mode == "replace" else None
        else:
            if self._exists(self.database):
                raise PgError(
                    f"database {self.database} already exists: mode into restores only into a new database. "
                    "Drop it first, or use mode replace to swap the backup in."
                )
            live_props = None
            target = self.database
            previous = None
        if live_props:
            return target, previous, live_props
        return target, previous, self._manifest_properties(entry)

    def _manifest_properties(self, entry):
        """The manifest's database properties without what a manifest may not bring back (a warning each)."""
        props = (entry.get("manifest") or {}).get("database_properties") or {}
        if not props.get("settings"):
            return props
        rows = self.psql.query_json(NON_USER_SETTINGS_SQL, self.conn.maintenance_db, what="reading pg_settings")
        props, skipped = restorable_properties(props, {row["name"].lower() for row in rows})
        for item in skipped:
            self.warnings.append(
                f"the backup's database setting {item} was not restored: a manifest may not set parameters that "
                "load code, change identity or need a superuser. Set it again by hand if it is wanted."
            )
        return props

    def run(self):
        if self.mode not in MODES:
            raise PgError("mode must be replace, into or revert")
        if self.mode == "revert":
            return self.revert()
        if self.mode == "swap":
            return self.swap_staged()
        if self.mode == "discard":
            return self.discard_staged()
        started = time.monotonic()
        ts = stamp(catalog.utcnow())
        entry = self.resolve()
        if not self.p.get("confirm") and not self.check_mode:
            raise self._refuse(entry, derived_name(self.database, PRE_RESTORE + ts))
        self._check_source(entry)
        self._preflight(entry)
        self.lock_dir = self.lock_dir or entry["directory"]
        self._clean(entry)
        hold = catalog.hold_backup(entry, f"restore of {self.database}")
        if hold.warning:
            self.warnings.append(hold.warning)
        try:
            return self._run_held(entry, ts, started)
        finally:
            self._release_claim()  # still held: the run failed before creating its scratch database
            hold.release()

    def _clean(self, entry):
        """First of all: remove what interrupted runs left (leftovers.Janitor) - this database's stale
        ``__restore_`` scratch databases, stale staging directories where restores make them."""
        self.janitor = leftovers.Janitor(self.psql, self.lock_dir, log=self.log, check_mode=self.check_mode)
        directories = [self.lock_dir, self.p.get("work_dir"), tempfile.gettempdir()]
        if entry is not None:
            directories.insert(1, os.path.dirname(os.path.abspath(entry["path"])))
        # What the recovery in progress staged (mode stage) waits for its swap; a dead run's is dropped.
        running, _note = recovery.in_progress(self.lock_dir, self.database) if self.lock_dir else (None, None)
        keep_since = int(running["started_at"]) if running else None
        self.leftovers = self.janitor.clean(
            scratch=[(self.database, RESTORE_SCRATCH)], directories=directories, keep_since=keep_since
        )

    def _keep_previous(self):
        """keep_previous after a swap (leftovers.plan_keep_previous); a problem is a warning, never a failure."""
        try:
            self.kept_databases = self.janitor.keep_previous(
                self.database,
                self.lock_dir,
                keep=self.keep_previous,
                keep_days=self.keep_previous_days,
                keys=self.keys,
            )
        except (PgError, catalog.CatalogError, OSError) as err:
            self.warnings.append(f"keep_previous was not applied: {getattr(err, 'msg', err)}")

    def _summary(self):
        """What the run removed and dropped besides its own work, for its message."""
        parts = []
        removed = leftovers.removed_summary(self.leftovers)
        if removed:
            parts.append(
                ("would remove" if self.check_mode else "removed") + f" leftovers of interrupted runs: {removed}"
            )
        dropped = [k["name"] for k in self.kept_databases if k["action"] == "dropped"]
        if dropped:
            parts.append(f"dropped kept databases (keep_previous): {', '.join(dropped)}")
        return "".join("; " + part for part in parts)

    def _run_held(self, entry, ts, started):
        timings = {}
        mark = time.monotonic()
        self.verify(entry)
        timings["verify"] = round(time.monotonic() - mark, 3)
        self.log(f"{entry['name']}: checksums verified in {timings['verify']:.1f} s")
        target, previous, props = self._plan(entry, ts)
        result = {
            "changed": True,
            "database": self.database,
            "mode": self.mode,
            "backup": catalog.public_entry(entry),
            "backup_path": entry["path"],
            "restored_database": self.database,
            "previous_database": previous,
            "staging_database": target if self.mode in ("replace", "stage") else None,
            "verified": self.verified,
            "assertions": self.assertion_results,
            "warnings": self.warnings,
            "leftovers": self.leftovers,
            "kept_databases": self.kept_databases,
        }
        if self.check_mode:
            checks = f" and check {len(self.assertions)} assertion(s)" if self.assertions else ""
            result["msg"] = f"check mode: would restore {entry['name']} into {self.database}{checks}{self._summary()}"
            self.warnings.extend(self.janitor.warnings)
            return result
        tables, rows, attempts = self._restore_checked(entry, target, previous, props, timings)
        kept = f" (previous database kept as {previous})" if previous else ""
        self.warnings.extend(self.janitor.warnings)
        result.update(tables=tables, rows=rows, duration=round(time.monotonic() - started, 3), timings=timings)
        result["restored_oid"] = self.restored_oid
        if self.mode == "stage":
            result.update(
                restored_database=None,
                live_oid=self.live_oid,
                msg=f"restored {entry['name']} into {target} and checked it; {self.database} was not touched - "
                f"mode swap swaps it in{self._summary()}",
            )
            return result
        result.update(
            swap_attempts=attempts,
            kept_databases=self.kept_databases,
            previous_oid=self.live_oid if previous else None,
            msg=f"restored {entry['name']} into {self.database}{kept}{self._summary()}",
        )
        return result

    def _restore_checked(self, entry, target, previous, props, timings):
        """Create, load, check, ANALYZE, carry properties, swap, keep_previous.

        Drops target on any failure before the swap, an interrupting signal included (its children are
        stopped first); the claim on target is let go once target is gone (swapped in or dropped).
        """
        created = False
        dropped = None
        try:
            self.psql.run_command(
                create_database_sql(target, props), self.conn.maintenance_db, what=f"creating database {target}"
            )
            created = True
            self.restored_oid = pg_cli.database_oids(self.psql, [target])[target]
            self.log(f"restoring {entry['name']} into {target}")
            mark = time.monotonic()
            self._load(entry, target)
            timings["load"] = round(time.monotonic() - mark, 3)
            self.log(f"loaded in {timings['load']:.1f} s; checking tables and row counts")
            mark = time.monotonic()
            tables, rows = self._check_and_analyze(entry, target)
            self.log(f"{tables} tables with the manifest's row counts ({rows} rows)")
            extra = properties_sql(target, props, include_owner=True)
            if extra:
                self.psql.run_command(extra, self.conn.maintenance_db, what="carrying the database's settings over")
            timings["check_analyze_settings"] = round(time.monotonic() - mark, 3)
            if self.assertions:
                mark = time.monotonic()
                self._run_assertions(target)
                timings["assertions"] = round(time.monotonic() - mark, 3)
            mark = time.monotonic()
            attempts = None
            if self.mode == "replace":
                expect = {self.database: self.restored_oid}
                if previous is not None:
                    expect[previous] = self.live_oid
                attempts = self._swap(self.database, previous, target, expect)
            timings["swap"] = round(time.monotonic() - mark, 3)
            if self.mode == "replace":
                kept = f", previous kept as {previous}" if previous else ""
                self.log(f"swapped {target} in as {self.database}{kept}")
            # A staged database's lock file stays (free): once the recovery that staged it is over, the next
            # restore's cleanup finds it and drops the database.
            self._release_claim(remove=self.mode != "stage")
            if self.swapped:
                self._keep_previous()
        except BaseException as err:
            if created and not self.swapped:
                dropped = self._drop(target)
            self._release_claim(remove=dropped is not False)
            if isinstance(err, leftovers.Interrupted):
                self._explain_interruption(err, entry, target, previous, created=created, dropped=dropped)
            elif isinstance(err, PgError) and "was dropped" not in err.msg:
                done = "was dropped" if dropped is not False else "could not be dropped (the next run drops it)"
                err.msg += f" The incomplete database {target} {done}"
                untouched = self.mode in ("replace", "stage")
                err.msg += f"; the live database {self.database} was not touched." if untouched else "."
            raise
        return tables, rows, attempts

    def _explain_interruption(self, err, entry, target, previous, *, created, dropped):
        """The operator's message of a run cut short by a signal: what was stopped, dropped, left as it was."""
        sig = err.signame
        stopped = ""
        if self.stopped:
            stopped = ", ".join(self.stopped) + (" was" if len(self.stopped) == 1 else " were") + " stopped, "
        gone = (
            "was dropped" if dropped is not False else "could not be dropped (the next restore or backup run drops it)"
        )
        if self.swapped:
            kept = f"; the previous database is kept as {previous}" if previous else ""
            err.msg = (
                f"the restore was interrupted by {sig} after the swap had committed: {self.database} now holds "
                f"backup {entry['name']}{kept}."
            )
        elif not created:
            err.msg = (
                f"the restore was interrupted by {sig} before {target} was created: nothing was changed, the live "
                f"database {self.database} is as it was."
            )
        elif self.mode == "replace":
            err.msg = (
                f"the restore was interrupted by {sig}: {stopped}the scratch database {target} {gone} and the "
                f"live database {self.database} is as it was."
            )
        else:
            err.msg = (
                f"the restore was interrupted by {sig}: {stopped}the incomplete database {target} {gone}; "
                "nothing else was touched."
            )
        err.explained = True

    # -- stage, swap, discard ---------------------------------------------------------
    def _connect(self):
        self.psql = Psql(self.conn)
        self.server = server_info(self.psql)
        self.smajor = int(self.server["server_version_num"]) // 10000

    def _staged(self):
        """(name, OID wanted, {name: OID now}) of the database mode stage made, as staging_database and
        staged_oid name it: only a scratch name of this database is ever accepted."""
        name = self.p.get("staging_database")
        scratch = derived_name(self.database, RESTORE_SCRATCH)
        if not name or not leftovers.derived_databases([name], self.database, RESTORE_SCRATCH):
            raise PgError(
                f"staging_database must be a scratch database of {self.database} ({scratch}<timestamp>, as mode "
                f"stage returned it in staging_database); got {name!r}. Nothing was changed."
            )
        wanted = self.p.get("staged_oid")
        if wanted is None:
            raise PgError(
                f"staged_oid is required with mode {self.mode}: the restored_oid mode stage returned. Nothing was "
                "changed."
            )
        return name, int(wanted), pg_cli.database_oids(self.psql, [self.database, name])

    def _forget_claim(self, name):
        """Remove the free lock file a staged database kept (it was swapped in or dropped)."""
        if not self.lock_dir:
            return
        lock = locks.FileLock(leftovers.db_lock_path(self.lock_dir, name), f"restore of {self.database}")
        try:
            if lock.try_acquire(create=False):
                lock.release(remove=True)
        except OSError:
            pass

    def swap_staged(self):
        """Swap the database mode stage made in as the live one (compare-and-swap on both OIDs); the live
        one is kept as ``__pre_restore_<ts>``."""
        started = time.monotonic()
        self._connect()
        name, wanted, oids = self._staged()
        if oids[name] is None:
            raise PgError(
                f"the staged database {name} does not exist on {self.conn.describe()}: there is nothing to swap in. "
                f"Nothing was changed; {self.database} is as it was."
            )
        if oids[name] != wanted:
            raise SwapConflict(
                f"refusing to swap {name} in: it (OID {oids[name]}) is not the database this recovery staged "
                f"(OID {wanted}). Nothing was changed.",
                found=oids,
            )
        self.live_oid = oids[self.database]
        self._expect_live(self.live_oid, f"swap {name} in")
        ts = stamp(catalog.utcnow())
        previous = self._free_name(PRE_RESTORE + ts) if self.live_oid is not None else None
        if not self.p.get("confirm") and not self.check_mode:
            raise self._refuse(name, previous)
        kept = f" (the previous database kept as {previous})" if previous else ""
        result = {
            "changed": True,
            "database": self.database,
            "mode": "swap",
            "restored_database": self.database,
            "staging_database": name,
            "previous_database": previous,
            "verified": self.verified,
            "assertions": [],
            "warnings": self.warnings,
            "leftovers": [],
            "kept_databases": [],
        }
        if self.check_mode:
            result["msg"] = f"check mode: would swap {name} in as {self.database}{kept}"
            return result
        expect = {self.database: wanted}
        if previous is not None:
            expect[previous] = self.live_oid
        attempts = self._swap_explained(previous, name, expect, "swap", f"what {name} held{kept}")
        self.restored_oid = wanted
        self._forget_claim(name)
        self.janitor = leftovers.Janitor(self.psql, self.lock_dir, log=self.log)
        self._keep_previous()
        self.warnings.extend(self.janitor.warnings)
        result.update(
            duration=round(time.monotonic() - started, 3),
            swap_attempts=attempts,
            kept_databases=self.kept_databases,
            restored_oid=wanted,
            previous_oid=self.live_oid if previous else None,
            msg=f"swapped {name} in as {self.database}{kept}{self._summary()}",
        )
        return result

    def discard_staged(self):
        """Drop the database mode stage made (a recovery that stops before its swap): only that one."""
        self._connect()
        name, wanted, oids = self._staged()
        out = {
            "changed": False,
            "database": self.database,
            "mode": "discard",
            "staging_database": name,
            "dropped": None,
            "warnings": self.warnings,
        }
        if oids[name] is None:
            return dict(out, msg=f"{name} is not there: nothing to discard")
        if oids[name] != wanted:
            raise SwapConflict(
                f"refusing to drop {name}: it (OID {oids[name]}) is not the database this recovery staged "
                f"(OID {wanted}). Nothing was changed.",
                found=oids,
            )
        if self.check_mode:
            return dict(out, changed=True, msg=f"check mode: would drop the staged database {name}")
        if not self._drop(name):
            raise PgError(f"the staged database {name} could not be dropped: {'; '.join(self.warnings)}")
        self._forget_claim(name)
        return dict(
            out, changed=True, dropped=name, msg=f"dropped the staged database {name}; {self.database} was not touched"
        )

    # -- revert ----------------------------------------------------------------
    def _kept_databases(self):
        """This database's ``__pre_restore_<ts>`` databases on the server, newest first."""
        rows = self.psql.query_json(
            "SELECT json_build_object('name', datname) FROM pg_database;",
            self.conn.maintenance_db,
            what="listing the kept databases",
        )
        found = leftovers.derived_databases([row["name"] for row in rows], self.database, PRE_RESTORE)
        return [item["name"] for item in found]

    def revert(self):
        """Swap a kept previous database back in; the current one is kept as ``__failed_restore_<ts>``."""
        started = time.monotonic()
        self._connect()
        kept = self.p.get("previous_database")
        if not kept:
            candidates = self._kept_databases()
            if not candidates:
                raise PgError(
                    f"no previous database of {self.database} to revert to: there is no "
                    f"{derived_name(self.database, PRE_RESTORE)}<timestamp> database on {self.conn.describe()} "
                    "(a restore in mode replace keeps one). Nothing was changed. Name another one with "
                    "previous_database."
                )
            kept = candidates[0]
        if kept == self.database:
            raise PgError(f"previous_database must differ from database ({self.database}). Nothing was changed.")
        if not self._exists(kept):
            raise PgError(
                f"database {kept} does not exist on {self.conn.describe()}: there is nothing to revert "
                f"{self.database} to. Nothing was changed."
            )
        ts = stamp(catalog.utcnow())
        failed = self._free_name(FAILED_RESTORE + ts) if self._exists(self.database) else None
        oids = pg_cli.database_oids(self.psql, [self.database, kept])
        self._expect_live(oids[self.database], f"revert {self.database} to {kept}")
        wanted = self.p.get("previous_oid")
        if wanted is not None and oids[kept] != wanted:
            raise SwapConflict(
                f"refusing to revert {self.database} to {kept}: {kept} (OID {oids[kept]}) is not the database the "
                f"recovery kept (OID {wanted}). Nothing was changed.",
                found=oids,
            )
        if not self.p.get("confirm") and not self.check_mode:
            raise self._refuse(kept, failed)
        self._clean(None)
        result = {
            "changed": True,
            "database": self.database,
            "mode": "revert",
            "restored_database": self.database,
            "previous_database": failed,
            "reverted_from": kept,
            "staging_database": None,
            "verified": self.verified,
            "assertions": [],
            "warnings": self.warnings,
            "leftovers": self.leftovers,
            "kept_databases": self.kept_databases,
        }
        moves = (f"rename {self.database} to {failed} and " if failed else "") + f"rename {kept} to {self.database}"
        if self.check_mode:
            result["msg"] = f"check mode: would {moves}{self._summary()}"
            self.warnings.extend(self.janitor.warnings)
            return result
        kept_as = f" (the database it replaced is kept as {failed})" if failed else ""
        expect = {self.database: oids[kept]}
        if failed:
            expect[failed] = oids[self.database]
        attempts = self._swap_explained(failed, kept, expect, "revert", f"what {kept} held{kept_as}")
        self._keep_previous()
        self.warnings.extend(self.janitor.warnings)
        result.update(
            duration=round(time.monotonic() - started, 3),
            swap_attempts=attempts,
            kept_databases=self.kept_databases,
            restored_oid=oids[kept],
            previous_oid=oids[self.database] if failed else None,
            msg=f"reverted {self.database} to {kept}{kept_as}{self._summary()}",
        )
        return result


CAS_MISMATCH = "tokotani-compare-and-swap-mismatch"


class SwapConflict(PgError):
    """The databases are not the ones the run saw: the swap rolled back and changed nothing."""


def cas_sql(expect):
    """The end of the swap transaction: COMMIT when every name of expect ({name: OID}) is that database
    after the renames, else ROLLBACK and print CAS_MISMATCH (psql's \\gset and \\if; names are quoted
    literals, OIDs integers)."""
    checks = " AND ".join(
        f"(SELECT oid FROM pg_database WHERE datname = {quote_literal(name)})"  # noqa: S608 - a quoted literal
        f" IS NOT DISTINCT FROM {int(oid)}::oid"
        for name, oid in expect.items()
    )
    return (
        f"SELECT ({checks or 'true'}) AS tokotani_cas_ok \\gset\n"
        "\\if :tokotani_cas_ok\nCOMMIT;\n\\else\nROLLBACK;\n"
        f"\\echo {CAS_MISMATCH}\n\\endif\n"
    )


def check_assertions(assertions):
    """The assertions option as a list of {name, sql}; raises PgError naming what is wrong."""
    checked = []
    for index, item in enumerate(assertions or []):
        if not isinstance(item, dict):
            raise PgError(f"assertions[{index}] must be a dict with name and sql, not {item!r}")
        name, sql = item.get("name"), item.get("sql")
        if not isinstance(name, str) or not name.strip():
            raise PgError(f"assertions[{index}] has no name")
        if not isinstance(sql, str) or not sql.strip().rstrip(";").strip():
            raise PgError(f"assertion '{name}' has no sql")
        checked.append({"name": name, "sql": sql})
    return checked


# The assertion's session: read-only at the server from its first statement, a time limit, and
# literals read as standard SQL whatever the restored database's own settings say.
ASSERTION_OPTIONS = (
    "-c default_transaction_read_only=on "
    f"-c statement_timeout={ASSERTION_STATEMENT_TIMEOUT} "
    "-c standard_conforming_strings=on -c client_min_messages=notice"
)


def assertion_sql(sql, marker):
    """One DO statement that evaluates the assertion query and reports its row count and first row.

    The query reaches the server only as a string literal inside the DO block's literal, so nothing
    in it ends the statement; plpgsql opens it as a cursor, which takes exactly one query that
    returns rows (no second statement, no SET, no COPY); the session is read-only at the server.
    The result comes back as a NOTICE that starts with marker (unique per run). ``row_to_json`` keeps
    the columns' order, so the first column is the first key.
    """
    body = sql.strip()
    while body.endswith(";"):
        body = body[:-1].rstrip()
    query = f"SELECT row_to_json(a)::text AS j FROM (\n{body}\n) a"  # noqa: S608 - the operator's own query
    code = (
        "DECLARE r record; n bigint := 0; first text; BEGIN "
        f"FOR r IN EXECUTE {quote_literal(query)} LOOP "
        "n := n + 1; IF n = 1 THEN first := r.j; END IF; END LOOP; "
        f"RAISE NOTICE '%', {quote_literal(marker + ' ')} || n || ' ' || coalesce(first, ''); "
        "END"
    )
    return "DO " + quote_literal(code)


def assertion_outcome(out, marker=None):
    """What assertion_sql's NOTICE says: None for one row whose first column is true, else the problem."""
    lines = [line for line in out.splitlines() if line.strip()]
    if marker is not None:
        found = [line.split(marker + " ", 1)[1] for line in lines if (marker + " ") in line]
        lines = [line for line in found[-1:] if line.strip()]
    count, _sep, first = (lines[-1] if lines else "0 ").partition(" ")
    if count != "1":
        return "returned no row" if count == "0" else f"returned {count} rows, expected one"
    pairs = json.loads(first, object_pairs_hook=list)
    value = pairs[0][1] if pairs else None
    if value is True:
        return None
    if value is False or value is None:
        return "returned {}".format("false" if value is False else "NULL")
    return f"returned {json.dumps(value)}, not a boolean"


def sql_error_text(err):
    """The server's ERROR line of a failed psql run (without psql's location prefix), else the message."""
    for line in (err.stderr or "").splitlines():
        if "ERROR:" in line or "FATAL:" in line:
            return " ".join(_PSQL_PREFIX_RE.sub("", line).split())
    return err.msg


def restore(params, check_mode=False, log=None):
    """Run one restore with module-style params; returns the result dict, raises PgError/CatalogError."""
    conn = Connection.from_params(params)
    engine = None
    try:
        with leftovers.interruptible():
            engine = RestoreEngine(conn, params, check_mode=check_mode, log=log)
            return engine.run()
    except PgError as err:
        if isinstance(err, leftovers.Interrupted) and not err.explained:
            what = params.get("mode") if params.get("mode") in ("revert", "swap") else "restore"
            if engine is not None and engine.swapped:
                err.msg = (
                    f"the {what} of {params['database']} was interrupted by {err.signame} after its swap had "
                    f"committed: {params['database']} holds the database it swapped in."
                )
            else:
                err.msg = (
                    f"the {what} of {params['database']} was interrupted by {err.signame} before it changed "
                    f"anything: the live database {params['database']} is as it was."
                )
        # What held before the failure (checksums, row counts, assertions): the verification record needs it.
        if engine is not None and engine.verified:
            err.details.setdefault("verified", list(engine.verified))
        raise
    except OSError as err:
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        raise PgError(f"{err.strerror or err}{where}") from err


def check(params, check_mode=False, log=None):
    """Check an existing database (row counts against a backup's manifest, assertions); changes nothing."""
    conn = Connection.from_params(params)
    engine = RestoreEngine(conn, dict(params, mode="into"), check_mode=check_mode, log=log)
    try:
        return engine.check_existing()
    except PgError as err:
        err.details.setdefault("verified", list(engine.verified))
        err.details.setdefault("assertions", list(engine.assertion_results))
        err.details.setdefault("table_counts", engine.table_counts)
        raise
