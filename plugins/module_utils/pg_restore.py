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
import datetime
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time

from ansible_collections.tokotani.dr.plugins.module_utils import backup_catalog as catalog
from ansible_collections.tokotani.dr.plugins.module_utils import backup_keys
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

MODES = ("replace", "into", "revert")
NAMEDATALEN = 63
SWAP_ATTEMPTS = 5
DEFAULT_MAINTENANCE_WORK_MEM = "256MB"
ASSERTION_STATEMENT_TIMEOUT = "5min"
ASSERTION_RELATION = "tokotani_assertion"
PRE_RESTORE = "__pre_restore_"
FAILED_RESTORE = "__failed_restore_"
_KEPT_RE = re.compile(r"__pre_restore_(\d{8}_\d{6})(?:_(\d+))?$")
_PSQL_PREFIX_RE = re.compile(r"^psql:[^:]*:\d+:\s*")


def derived_name(database, suffix):
    """database + suffix, cutting database so that the whole fits PostgreSQL's 63-byte names."""
    room = NAMEDATALEN - len(suffix.encode("utf-8"))
    base = database.encode("utf-8")[:room].decode("utf-8", "ignore")
    return base + suffix


def stamp(dt):
    return dt.astimezone(datetime.UTC).strftime("%Y%m%d_%H%M%S")


class ZstdStage:
    """A directory pg_restore reads like an uncompressed directory backup.

    pg_restore accepts only regular files in a directory archive (recent minor releases, 15.20
    for one, refuse symlinks and named pipes): toc.dat and the uncompressed
    files are hard-linked (copied when the staging directory is on another filesystem) and the
    ``.zst`` files are decompressed, ``jobs`` at a time, largest first, before pg_restore starts.
    """

    def __init__(self, source, stage, zstd, jobs=2):
        self.source = source
        self.stage = stage
        self.zstd = zstd
        self.jobs = max(1, jobs)

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
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.jobs) as pool:
            for future in [pool.submit(self._decompress, src, dest) for _size, src, dest in compressed]:
                future.result()

    def _decompress(self, src, dest):
        argv = [self.zstd, "-q", "-d", "-f", "-o", dest, src]
        result = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        if result.returncode != 0:
            raise PgError(
                f"zstd cannot decompress {src} into {os.path.dirname(dest)} (full? set work_dir to a "
                "filesystem with room for the uncompressed data)",
                cmd=argv,
                rc=result.returncode,
                stderr=excerpt(result.stderr.decode("utf-8", "replace")),
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
        self.created = None
        self.assertions = check_assertions(self.p.get("assertions"))
        self.assertion_results = []
        self.keys = backup_keys.keyring(self.p)

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
        entry = catalog.newest(listing["backups"], before=before)
        for skipped in listing["backups"]:
            if entry is not None and skipped is entry:
                break
            if not skipped["valid"] and (before is None or (skipped["timestamp"] or 0) < before.timestamp()):
                self.warnings.append(
                    f"the newer backup {skipped['name']} is not valid ({'; '.join(skipped['problems'])}): skipped"
                )
        if entry is None:
            what = f"before {catalog.iso(before)} " if before else ""
            why = ""
            if listing["backups"]:
                first = listing["backups"][0]
                why = f"; the newest, {first['name']}: {'; '.join(first['problems'])}"
            raise PgError(
                f"no valid backup of database {source} {what}in {directory} "
                f"({len(listing['backups'])} entries, none valid{why})",
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
        if expected is None and self.mode == "replace":
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

    def _free_name(self, suffix):
        """database + suffix (+ _2, _3 ... when taken), within PostgreSQL's name length."""
        name = derived_name(self.database, suffix)
        seq = 1
        while self._exists(name):
            seq += 1
            name = derived_name(self.database, f"{suffix}_{seq}")
        return name

    def _drop(self, name):
        force = " WITH (FORCE)" if self.smajor >= 13 else ""
        try:
            self.psql.run_sql(
                f"DROP DATABASE IF EXISTS {quote_ident(name)}{force};",
                self.conn.maintenance_db,
                what=f"dropping the incomplete database {name}",
            )
        except PgError as err:
            self.warnings.append(f"could not drop {name}: {err.msg}")

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
        stage_dir = None
        proc = None
        try:
            if entry["format"] == "directory" and any(f.endswith(".zst") for f in catalog.tree_files(source)):
                zstd = shutil.which("zstd")
                if not zstd:
                    raise PgError(f"zstd is needed to restore {entry['name']} (Debian/Ubuntu: apt-get install zstd)")
                parent = stage_parent(self.p.get("work_dir"), source)
                stage_dir = tempfile.mkdtemp(prefix=".tokotani-restore-", dir=parent)
                ZstdStage(source, stage_dir, zstd, self.jobs).prepare()
                source = stage_dir
            argv = [self.pg_restore, "--exit-on-error", "--no-password", "-j", str(self.jobs)]
            argv += ["-d", conninfo_dbname(target), source]
            env = self.conn.env(self._restore_env())
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
            errors = StderrCollector(proc.stderr)
            rc = proc.wait()
            errors.join(10)
            if rc != 0:
                raise self._restore_error("pg_restore", argv, rc, errors.text())
        except BaseException:
            _kill_all([proc])
            raise
        finally:
            if stage_dir:
                shutil.rmtree(stage_dir, ignore_errors=True)

    def _load_plain(self, entry, target):
        """psql -v ON_ERROR_STOP=1, fed by gzip/zstd -dc for compressed scripts."""
        psql = find_tool("psql", self.conn.bindir, self.smajor)
        argv = [psql, "-X", "-q", "-w", "-v", "ON_ERROR_STOP=1", "-d", conninfo_dbname(target), "-f"]
        env = self.conn.env(self._restore_env())
        decomp = proc = None
        try:
            if entry["compression"] == "none":
                argv.append(entry["path"])
                proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
            else:
                name = "pigz" if entry["compression"] == "gzip" and shutil.which("pigz") else entry["compression"]
                tool = shutil.which(name)
                if not tool:
                    raise PgError(f"{entry['compression']} is needed to restore {entry['name']}")
                dargv = [tool, "-d", "-c", entry["path"]]
                decomp = subprocess.Popen(dargv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                derr = StderrCollector(decomp.stderr)
                argv.append("-")
                proc = subprocess.Popen(
                    argv, stdin=decomp.stdout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
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
            _kill_all([decomp, proc])
            raise

    def _restore_error(self, tool, argv, rc, stderr):
        stderr = self.conn.redact(stderr)
        lines = [line for line in stderr.splitlines() if "ERROR" in line or "error" in line or "FATAL" in line]
        first = lines[0] if lines else (excerpt(stderr, 1) or f"rc {rc}")
        return PgError(
            f"{tool} failed: {first.strip()}.",
            cmd=argv,
            rc=rc,
            stderr=excerpt(stderr),
            failed_check="restore without SQL errors",
        )

    def _check(self, entry, target):
        """Tables present, row counts equal to the manifest's. Returns (tables, rows)."""
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
        present_sql = "\nUNION ALL\n".join(
            f"SELECT json_build_object('i', {i}, 'present', "
            f"to_regclass({quote_literal(quote_ident(t['schema']) + '.' + quote_ident(t['name']))}) IS NOT NULL)"
            for i, t in enumerate(tables)
        )
        present = {
            r["i"]: r["present"] for r in self.psql.query_json(present_sql + ";", target, what="checking tables")
        }
        missing = ["{}.{}".format(t["schema"], t["name"]) for i, t in enumerate(tables) if not present.get(i)]
        if missing:
            raise PgError(
                f"the restored database lacks {len(missing)} table(s) of the manifest: {', '.join(missing[:20])}",
                missing_tables=missing,
                failed_check="tables present",
            )
        count_sql = "\nUNION ALL\n".join(
            f"SELECT json_build_object('i', {i}, 'rows', count(*)) "  # noqa: S608 - identifiers are quoted
            f"FROM {quote_ident(t['schema'])}.{quote_ident(t['name'])}"
            for i, t in enumerate(tables)
        )
        counts = {r["i"]: r["rows"] for r in self.psql.query_json(count_sql + ";", target, what="counting rows")}
        wrong = []
        for i, table in enumerate(tables):
            if counts.get(i) != table["rows"]:
                wrong.append(
                    f"{table['schema']}.{table['name']} has {counts.get(i)} rows, the manifest says {table['rows']}"
                )
        if wrong:
            raise PgError(
                "row counts differ from the manifest: " + "; ".join(wrong[:20]),
                row_mismatches=wrong,
                failed_check="row counts",
            )
        total = sum(t["rows"] for t in tables)
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
                proc = subprocess.Popen(
                    argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=self.conn.env()
                )
        try:
            checked = self._check(entry, target)
        except BaseException:
            _kill_all([proc])
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

    def check_existing(self):
        """The restore's own checks on an existing database, changing nothing (tokotani.dr.postgresql_check).

        With a backup: every table of its manifest is there with the manifest's row count (the
        manifest is checked first, its signature included). Then every assertion, read-only.
        """
        self.psql = Psql(self.conn)
        self.server = server_info(self.psql)
        if not self._exists(self.database):
            raise PgError(f"the database {self.database} does not exist: nothing to check", failed_check="database")
        entry = None
        tables = rows = None
        if self.p.get("backup"):
            entry = self.resolve()
            if not entry["valid"]:
                raise PgError(
                    f"backup {entry['name']} is not valid: {'; '.join(entry['problems'])}. Nothing was checked.",
                    problems=entry["problems"],
                    failed_check="backup integrity",
                )
            if entry["kind"] == "managed":
                self.verified.append(backup_keys.signature_line(entry, self.keys))
                tables, rows = self._check(entry, self.database)
        self._run_assertions(self.database)
        return {
            "changed": False,
            "database": self.database,
            "backup": catalog.public_entry(entry) if entry else None,
            "tables": tables,
            "rows": rows,
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

    def _swap(self, live, previous, new):
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
        sql = terminate + "BEGIN;\n" + renames + "COMMIT;\n"
        last = None
        for attempt in range(1, SWAP_ATTEMPTS + 1):
            try:
                self.psql.run_sql(sql, self.conn.maintenance_db, what="swapping the databases")
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

    # -- run -------------------------------------------------------------------
    def _refuse(self, entry, previous_name):
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
        """Names and properties: (target, previous or None, props)."""
        if self.mode == "replace":
            live_props = database_properties(self.psql, self.database)
            target = self._free_name("__restore_" + ts)
            previous = self._free_name("__pre_restore_" + ts) if live_props else None
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
        started = time.monotonic()
        ts = stamp(catalog.utcnow())
        entry = self.resolve()
        if not self.p.get("confirm") and not self.check_mode:
            raise self._refuse(entry, derived_name(self.database, "__pre_restore_" + ts))
        self._check_source(entry)
        self._preflight(entry)
        timings = {}
        mark = time.monotonic()
        self.verify(entry)
        timings["verify"] = round(time.monotonic() - mark, 3)
        target, previous, props = self._plan(entry, ts)
        result = {
            "changed": True,
            "database": self.database,
            "mode": self.mode,
            "backup": catalog.public_entry(entry),
            "backup_path": entry["path"],
            "restored_database": self.database,
            "previous_database": previous,
            "staging_database": target if self.mode == "replace" else None,
            "verified": self.verified,
            "assertions": self.assertion_results,
            "warnings": self.warnings,
        }
        if self.check_mode:
            checks = f" and check {len(self.assertions)} assertion(s)" if self.assertions else ""
            result["msg"] = f"check mode: would restore {entry['name']} into {self.database}{checks}"
            return result
        tables, rows, attempts = self._restore_checked(entry, target, previous, props, timings)
        kept = f" (previous database kept as {previous})" if previous else ""
        result.update(
            tables=tables,
            rows=rows,
            duration=round(time.monotonic() - started, 3),
            timings=timings,
            swap_attempts=attempts,
            msg=f"restored {entry['name']} into {self.database}{kept}",
        )
        return result

    def _restore_checked(self, entry, target, previous, props, timings):
        """Create, load, check, ANALYZE, carry properties, swap. Drops target on any failure before the swap."""
        created = False
        try:
            self.psql.run_command(
                create_database_sql(target, props), self.conn.maintenance_db, what=f"creating database {target}"
            )
            created = True
            mark = time.monotonic()
            self._load(entry, target)
            timings["load"] = round(time.monotonic() - mark, 3)
            mark = time.monotonic()
            tables, rows = self._check_and_analyze(entry, target)
            extra = properties_sql(target, props, include_owner=True)
            if extra:
                self.psql.run_command(extra, self.conn.maintenance_db, what="carrying the database's settings over")
            timings["check_analyze_settings"] = round(time.monotonic() - mark, 3)
            if self.assertions:
                mark = time.monotonic()
                self._run_assertions(target)
                timings["assertions"] = round(time.monotonic() - mark, 3)
            mark = time.monotonic()
            attempts = self._swap(self.database, previous, target) if self.mode == "replace" else None
            timings["swap"] = round(time.monotonic() - mark, 3)
        except BaseException as err:
            if created:
                self._drop(target)
            if isinstance(err, PgError) and "was dropped" not in err.msg:
                err.msg += f" The incomplete database {target} was dropped"
                err.msg += f"; the live database {self.database} was not touched." if self.mode == "replace" else "."
            raise
        return tables, rows, attempts

    # -- revert ----------------------------------------------------------------
    def _kept_databases(self):
        """This database's ``__pre_restore_<ts>`` databases on the server, newest first."""
        rows = self.psql.query_json(
            "SELECT json_build_object('name', datname) FROM pg_database WHERE strpos(datname, :'marker') > 0;",
            self.conn.maintenance_db,
            variables={"marker": PRE_RESTORE},
            what="listing the kept databases",
        )
        found = []
        for row in rows:
            name = row["name"]
            match = _KEPT_RE.search(name)
            if match and name == derived_name(self.database, name[match.start() :]):
                found.append(((match.group(1), int(match.group(2) or 1)), name))
        return [name for _key, name in sorted(found, reverse=True)]

    def revert(self):
        """Swap a kept previous database back in; the current one is kept as ``__failed_restore_<ts>``."""
        started = time.monotonic()
        self.psql = Psql(self.conn)
        self.server = server_info(self.psql)
        self.smajor = int(self.server["server_version_num"]) // 10000
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
        if not self.p.get("confirm") and not self.check_mode:
            raise self._refuse(kept, failed)
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
        }
        moves = (f"rename {self.database} to {failed} and " if failed else "") + f"rename {kept} to {self.database}"
        if self.check_mode:
            result["msg"] = f"check mode: would {moves}"
            return result
        attempts = self._swap(self.database, failed, kept)
        kept_as = f" (the database it replaced is kept as {failed})" if failed else ""
        result.update(
            duration=round(time.monotonic() - started, 3),
            swap_attempts=attempts,
            msg=f"reverted {self.database} to {kept}{kept_as}",
        )
        return result


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


def _kill_all(procs):
    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


def restore(params, check_mode=False, log=None):
    """Run one restore with module-style params; returns the result dict, raises PgError/CatalogError."""
    conn = Connection.from_params(params)
    engine = None
    try:
        engine = RestoreEngine(conn, params, check_mode=check_mode, log=log)
        return engine.run()
    except PgError as err:
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
        raise
