# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup engine behind tokotani.dr.postgresql_backup (and the host-side backup timer).

Formats (``format``/``compression``):

- ``directory``/``zstd`` (the default): ``pg_dump -Fd -Z0 -j N`` into ``<name>.dir.partial``
  while a pool of followers compresses every table's file with zstd *as pg_dump writes it*
  (tail-follow; a file is complete when no pg_dump process holds it open any more). Restores
  in parallel with ``pg_restore -j N`` (after a parallel decompression, see pg_restore.ZstdStage).
- ``directory``/``gzip`` and ``none``: pg_dump's own ``-Fd -j N -Z level``.
- ``custom``/``gzip`` and ``none``: ``pg_dump -Fc -Z level``.
- ``plain``/``gzip``: the plan's ``pg_dump | gzip`` (``.sql.gz``), ``plain``/``zstd`` and ``none``.

Every run: version check of pg_dump against the server, a per-database lock, removal of stale
partials, a free-space check, per-table row counts taken in the dump's own snapshot (an exported
snapshot held open in a psql session, handed to ``pg_dump --snapshot``), fsync, sha256, the
manifest, then the atomic rename, then retention.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import queue
import re
import shutil
import socket
import threading
import time

from ansible_collections.tokotani.dr.plugins.module_utils import backup_catalog as catalog
from ansible_collections.tokotani.dr.plugins.module_utils import (
    backup_keys,
    db_checks,
    leftovers,
    pg_cli,
    recovery_run,
    specs,
)
from ansible_collections.tokotani.dr.plugins.module_utils.pg_cli import (
    TOOL_NAME,
    TOOL_VERSION,
    Connection,
    PgError,
    Psql,
    StderrCollector,
    check_tool_not_older,
    connection_failure_message,
    conninfo_dbname,
    database_properties,
    excerpt,
    find_tool,
    quote_ident,
    quote_literal,
    server_info,
    tool_version,
)

FORMATS = ("directory", "custom", "plain")
COMPRESSIONS = ("zstd", "gzip", "none")
DEFAULT_COMPRESSION = {"directory": "zstd", "custom": "gzip", "plain": "gzip"}
DEFAULT_GZIP_LEVEL = 6

# zstd profiles measured on the generated shop database (see docs/modules and bench/README.md):
# level 1 wins on numeric and hex tables, level 3 with a minimum match of 7 on text; "auto"
# compresses the first SAMPLE_BYTES of each table with both and keeps the smaller.
ZSTD_PROFILES = {"fast": ["-1"], "text": ["-3", "--zstd=mml=7"]}
ZSTD_DEFAULT_PROFILE = "text"
SAMPLE_BYTES = 4 << 20
RAW_THRESHOLD = 64 << 10  # files smaller than this stay uncompressed
FOLLOW_POLL = 0.05
READ_CHUNK = 1 << 20

# Free space needed, as a fraction of pg_database_size, when space_check_ratio is not given.
SPACE_RATIOS = {"none": 1.2, "gzip": 0.5, "zstd": 0.5}
SPACE_RATIO_ZSTD_DIRECTORY = 0.75  # the table being written sits uncompressed until it is complete
# With a previous backup, the estimate is its size times this margin (plus, for zstd directories, the
# largest table, which sits uncompressed until it is complete), not a ratio of the database's size.
SPACE_MARGIN = 1.25
# From the catalog (relpages, as of the last VACUUM or ANALYZE), so that it takes no lock: a table locked by
# a long transaction must block pg_dump, which says so, not this estimate.
LARGEST_TABLE_SQL = (
    "SELECT json_build_object('bytes', coalesce(max(c.relpages), 0)::bigint * current_setting('block_size')::bigint) "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'm') "
    "AND n.nspname NOT IN ('pg_catalog', 'information_schema');"
)

LIST_TABLES_SQL = """
SELECT json_build_object('schema', n.nspname, 'name', c.relname, 'oid', c.oid)
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r'
   AND c.relpersistence <> 't'
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg\\_toast%'
   AND n.nspname NOT LIKE 'pg\\_temp\\_%'
   AND NOT EXISTS (SELECT 1 FROM pg_depend d
                    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
 ORDER BY n.nspname, c.relname;
"""

END_MARKER = "__tokotani_dr_end__"
# The label of the backup keep_previous takes of a kept database before it drops it.
ARCHIVE_LABEL = "keep_previous archive"
TOC_DATA_RE = re.compile(r"^(\d+); 0 (\d+) TABLE DATA ")


# Raised in the main thread when the process gets SIGTERM/SIGINT/SIGHUP (leftovers.interruptible).
Interrupted = leftovers.Interrupted


def count_sql(tables):
    """One query returning a JSON row {schema, name, rows} per table (exact counts)."""
    parts = []
    for table in tables:
        parts.append(
            # Identifiers and literals are quoted: table names cannot inject SQL.
            f"SELECT json_build_object('schema', {quote_literal(table['schema'])}::text, "  # noqa: S608
            f"'name', {quote_literal(table['name'])}::text, 'rows', count(*)) "
            f"FROM {quote_ident(table['schema'])}.{quote_ident(table['name'])}"
        )
    return "\nUNION ALL\n".join(parts) + ";\n"


class SnapshotSession:
    """A psql session holding a REPEATABLE READ transaction whose snapshot pg_dump imports.

    The row counts of the manifest are taken in this same snapshot, so they are exactly the rows
    the dump holds.
    """

    def __init__(self, psql, dbname):
        self.psql = psql
        self.dbname = dbname
        self.proc = None
        self.errors = None

    def start(self):
        argv = self.psql.argv(self.dbname, ["-w"])
        self.proc = pg_cli.spawn(argv, self.psql.conn, stdin=pg_cli.PIPE, stdout=pg_cli.PIPE, stderr=pg_cli.PIPE)
        self.errors = StderrCollector(self.proc.stderr)
        return self

    def _exchange(self, sql, what):
        try:
            self.proc.stdin.write((sql + "\n\\echo " + END_MARKER + "\n").encode("utf-8"))
            self.proc.stdin.flush()
        except OSError:
            pass
        lines = []
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if line == END_MARKER:
                return lines
            if line:
                lines.append(line)
        # psql ended: ON_ERROR_STOP or a connection failure.
        self.proc.wait()
        self.errors.join(5)
        err = self.psql.conn.redact(self.errors.text())
        message = connection_failure_message(self.psql.conn, self.dbname, err)
        raise PgError(
            message or f"{what} failed on database {self.dbname}: {excerpt(err, 3)}",
            cmd=self.proc.args,
            rc=self.proc.returncode,
            stderr=excerpt(err),
        )

    def export(self):
        lines = self._exchange(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\nSELECT pg_export_snapshot();",
            "exporting a snapshot",
        )
        if not lines:
            raise PgError(f"exporting a snapshot on database {self.dbname} returned nothing")
        return lines[-1].strip()

    def tables(self):
        return [json.loads(line) for line in self._exchange(LIST_TABLES_SQL, "listing tables")]

    def counts(self, tables):
        if not tables:
            return []
        return [json.loads(line) for line in self._exchange(count_sql(tables), "counting rows")]

    def abort(self):
        """Kill the session (its transaction rolls back)."""
        pg_cli.stop_process(self.proc, timeout=0)
        self.close()

    def close(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b"COMMIT;\n\\q\n")
                self.proc.stdin.close()
            except OSError:
                pass
            pg_cli.stop_process(self.proc, timeout=30, ask=False)
        self.errors.join(5)
        for stream in (self.proc.stdout,):
            with contextlib.suppress(OSError):
                stream.close()


# --------------------------------------------------------------------------- directory + zstd


class LineCounter:
    """Rows of a COPY text stream as pg_dump's directory format writes it (rows, then a \\. line).

    A data row can never be exactly ``\\.`` (COPY escapes the backslash), so the rows are the
    lines before that terminator line; None when the stream has no terminator.
    """

    def __init__(self):
        self.newlines = 0
        self.bytes = 0
        self.tail = b""

    def feed(self, chunk):
        self.newlines += chunk.count(b"\n")
        self.bytes += len(chunk)
        self.tail = (self.tail + chunk[-256:])[-256:]

    def rows(self):
        tail = self.tail
        if self.bytes == len(tail):
            tail = b"\n" + tail  # the whole stream is in tail: the terminator may be its first line
        index = tail.rfind(b"\n\\.\n")
        if index < 0:
            return None
        return self.newlines - tail[index + 1 :].count(b"\n")


def copy_rows(data):
    counter = LineCounter()
    counter.feed(data)
    return counter.rows()


def _pids_of_tree(root_pid):
    """root_pid and its direct children (pg_dump's parallel workers are forked children)."""
    pids = [root_pid]
    try:
        entries = os.listdir("/proc")
    except OSError:
        return pids
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read().decode("ascii", "replace")
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(root_pid):
            pids.append(int(name))
    return pids


def _open_files_under(pids, directory):
    """Names of the files under directory that any of pids holds open (None when /proc is unreadable)."""
    prefix = os.path.abspath(directory) + os.sep
    names = set()
    readable = False
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        readable = True
        for fd in fds:
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if target.startswith(prefix):
                names.add(target[len(prefix) :])
    return names if readable else None


class ZstdFollower:
    """Compress pg_dump's directory-format files with zstd while they are being written.

    The main loop calls poll() while pg_dump runs: new ``*.dat`` files are queued to a pool
    of ``workers`` threads, and files that no pg_dump process holds open any more are marked
    complete. A worker follows its file (like tail -f) into a zstd process writing
    ``<file>.zst``, drains it once complete, checks zstd's exit code and removes the raw file.
    Files under RAW_THRESHOLD stay as they are.
    """

    def __init__(self, directory, zstd_path, level=None, workers=2, threads=1):
        self.directory = directory
        self.zstd = zstd_path
        self.level = level
        self.workers = max(1, workers)
        self.threads = max(1, threads)
        self.seen = set()
        self.complete = set()
        self.all_complete = threading.Event()
        self.abort = threading.Event()
        self.lock = threading.Lock()
        self.tasks = queue.Queue()
        self.errors = []
        self.procs = set()
        self.choices = {}
        self.rows = {}
        self.open_seen = set()
        self.raw_bytes = 0
        self._pool = [threading.Thread(target=self._work, daemon=True) for _worker in range(self.workers)]
        self._children = []
        self._children_at = 0.0
        for thread in self._pool:
            thread.start()

    # main thread -----------------------------------------------------------
    def poll(self, dump_pid=None):
        """Queue new files; mark complete those no process of dump_pid's tree holds open any more."""
        try:
            names = [n for n in os.listdir(self.directory) if n.endswith(".dat") and n != "toc.dat"]
        except FileNotFoundError:
            return
        open_now = None
        if dump_pid is not None:
            now = time.monotonic()
            if now - self._children_at > 0.25 or any(n not in self.seen for n in names):
                self._children = _pids_of_tree(dump_pid)
                self._children_at = now
            open_now = _open_files_under(self._children, self.directory)
        with self.lock:
            for name in names:
                if name not in self.seen:
                    self.seen.add(name)
                    self.tasks.put(name)
                if open_now is None:
                    continue
                # Complete = seen open by pg_dump before, and not open now. A file never seen open
                # (written and closed between two polls) completes when pg_dump exits.
                if name in open_now:
                    self.open_seen.add(name)
                elif name in self.open_seen:
                    self.complete.add(name)

    def finish(self):
        """pg_dump exited successfully: every file is complete; pick up the last ones and wait."""
        self.poll()
        with self.lock:
            self.complete.update(self.seen)
        self.all_complete.set()
        for _thread in self._pool:
            self.tasks.put(None)
        for thread in self._pool:
            thread.join()
        if self.errors:
            raise self.errors[0]

    def stop(self):
        """Abort: stop the workers and kill their zstd processes."""
        self.abort.set()
        self.all_complete.set()
        for _thread in self._pool:
            self.tasks.put(None)
        with self.lock:
            procs = list(self.procs)
        for proc in procs:
            pg_cli.stop_process(proc, timeout=0)
        for thread in self._pool:
            thread.join(10)

    def failed(self):
        return bool(self.errors)

    # workers ---------------------------------------------------------------
    def _is_complete(self, name):
        with self.lock:
            return name in self.complete or self.all_complete.is_set()

    def _work(self):
        while True:
            name = self.tasks.get()
            if name is None or self.abort.is_set():
                return
            try:
                self._compress(name)
            except Exception as err:
                if not isinstance(err, PgError):
                    err = PgError(f"compressing {name} failed: {err}")
                self.errors.append(err)
                self.abort.set()
                return

    def _wait_for(self, handle, want):
        """Read until want bytes are buffered or the file is complete; returns the bytes read."""
        buf = bytearray()
        while len(buf) < want and not self.abort.is_set():
            chunk = handle.read(min(READ_CHUNK, want - len(buf)))
            if chunk:
                buf += chunk
                continue
            if self._is_complete_for(handle):
                rest = handle.read(want - len(buf))
                if rest:
                    buf += rest
                    continue
                break
            time.sleep(FOLLOW_POLL)
        return bytes(buf)

    def _is_complete_for(self, handle):
        return self._is_complete(os.path.basename(handle.name))

    def _choose(self, sample, complete):
        if self.level is not None:
            return [f"-{self.level}"], f"level {self.level}"
        if complete and len(sample) < SAMPLE_BYTES:
            return ZSTD_PROFILES[ZSTD_DEFAULT_PROFILE], ZSTD_DEFAULT_PROFILE
        best = None
        for profile, args in ZSTD_PROFILES.items():
            argv = [self.zstd, "-q", "-c", *args]
            rc, out, err = pg_cli.run(argv, input_text=sample, text=False)
            if rc != 0:
                raise PgError(
                    "zstd failed while sampling", cmd=argv, rc=rc, stderr=excerpt(err.decode("utf-8", "replace"))
                )
            size = len(out)
            if best is None or size < best[0]:
                best = (size, profile, args)
        return best[2], best[1]

    def _compress(self, name):
        path = os.path.join(self.directory, name)
        want = max(SAMPLE_BYTES, RAW_THRESHOLD)
        with open(path, "rb") as handle:
            head = self._wait_for(handle, want)
            if self.abort.is_set():
                return
            # _wait_for stops short of `want` only at the end of a complete file: head is all of it.
            complete = len(head) < want
            if complete and len(head) < RAW_THRESHOLD:
                with self.lock:
                    self.choices[name] = "raw"
                    self.rows[name] = copy_rows(head)
                return
            args, choice = self._choose(head, complete)
            counter = self._pipe_to_zstd(name, handle, head, args)
        if counter is None:
            return
        os.unlink(path)
        with self.lock:
            self.choices[name] = choice
            self.raw_bytes += counter.bytes
            self.rows[name] = counter.rows()

    def _pipe_to_zstd(self, name, handle, head, args):
        """Feed head and the rest of the growing file to zstd writing <name>.zst; returns the LineCounter."""
        out_fd = os.open(
            os.path.join(self.directory, name + ".zst"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, catalog.FILE_MODE
        )
        argv = [self.zstd, "-q", f"-T{self.threads}", *args, "-c"]
        try:
            proc = pg_cli.spawn(argv, stdin=pg_cli.PIPE, stdout=out_fd, stderr=pg_cli.PIPE)
        finally:
            os.close(out_fd)
        with self.lock:
            self.procs.add(proc)
        errors = StderrCollector(proc.stderr)
        counter = LineCounter()
        try:
            proc.stdin.write(head)
            counter.feed(head)
            self._follow(name, handle, proc.stdin, counter)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        rc = proc.wait()
        errors.join(5)
        with self.lock:
            self.procs.discard(proc)
        if self.abort.is_set():
            return None
        if rc != 0:
            raise PgError(
                f"zstd failed compressing {name}: {excerpt(errors.text(), 2)}",
                cmd=argv,
                rc=rc,
                stderr=excerpt(errors.text()),
            )
        return counter

    def _follow(self, name, handle, sink, counter):
        """Copy the file to sink as it grows, in bounded chunks, until it is complete and fully read."""
        while not self.abort.is_set():
            chunk = handle.read(READ_CHUNK)
            if chunk:
                sink.write(chunk)
                counter.feed(chunk)
                continue
            if self._is_complete(name):
                chunk = handle.read(READ_CHUNK)
                while chunk:
                    sink.write(chunk)
                    counter.feed(chunk)
                    chunk = handle.read(READ_CHUNK)
                return
            time.sleep(FOLLOW_POLL)


# --------------------------------------------------------------------------- the engine


class BackupEngine:
    """One backup run. Options as in the postgresql_backup module (see its documentation)."""

    def __init__(self, conn, params, check_mode=False, log=None):
        self.conn = conn
        self.p = dict(params)
        self.check_mode = check_mode
        self.log = log or (lambda msg: None)
        self.warnings = []
        self.server_log = None
        self.database = self.p["database"]
        self.directory = os.path.abspath(self.p["backup_dir"])
        self.format = self.p.get("format") or "directory"
        self.compression = self.p.get("compression") or DEFAULT_COMPRESSION.get(self.format, "gzip")
        self.level = self.p.get("compression_level")
        self.jobs = max(1, int(self.p.get("jobs") or 2))
        self.procs = []
        self._cleanup = []
        self.keys = backup_keys.keyring(self.p)

    # -- preflight -----------------------------------------------------------
    def _validate(self):
        if self.format not in FORMATS:
            raise PgError("format must be one of {}".format(", ".join(FORMATS)))
        if self.compression not in COMPRESSIONS:
            raise PgError("compression must be one of {}".format(", ".join(COMPRESSIONS)))
        if self.format == "custom" and self.compression == "zstd":
            raise PgError(
                "format custom cannot be compressed with zstd by PostgreSQL 15's pg_dump: "
                "use format directory (zstd, parallel restore) or compression gzip"
            )
        if self.level is not None:
            top = 19 if self.compression == "zstd" else 9
            if not 0 <= int(self.level) <= top:
                raise PgError(f"compression_level for {self.compression} must be between 0 and {top}")
        self.ext = catalog.extension(self.format, self.compression)
        if self.p.get("keep_min", 3) < 1:
            raise PgError("keep_min must be at least 1: the newest backup is never pruned")
        if self.p.get("keep_days", 14) < 0:
            raise PgError("keep_days cannot be negative")
        self.keep_previous, self.keep_previous_days = leftovers.keep_previous_settings(self.p)
        try:
            self.shrink = specs.shrink_settings(self.p)
        except specs.SpecError as err:
            raise PgError(str(err)) from None
        self.baseline = None

    def _find_baseline(self):
        """The newest valid backup of the database here that is not itself suspicious: what the new one's
        row counts are compared with, and what its size is estimated from. When there is none here (a new or
        rebuilt server), the offsite one the backup job found (params offsite_baseline), if any."""
        entry = local_baseline(self.directory, self.database, self.keys)
        return entry if entry is not None else self.p.get("offsite_baseline")

    def _preflight(self):
        self.psql = Psql(self.conn)
        info = server_info(self.psql)
        self.server = info
        self.server_log = pg_cli.ServerLog.locate(self.psql, info, self.p.get("server_log"), self.warnings)
        props = database_properties(self.psql, self.database)
        if props is None:
            raise PgError(f"database {self.database} does not exist on {self.conn.describe()}")
        self.props = props
        smajor = int(info["server_version_num"]) // 10000
        self.server_major = smajor
        self.pg_dump = find_tool("pg_dump", self.conn.bindir, smajor)
        major, minor, _text = tool_version(self.pg_dump)
        check_tool_not_older(
            "pg_dump", self.pg_dump, (major, minor), info["server_version_num"], info["server_version"]
        )
        self.pg_dump_version = f"{major}.{minor}"
        self.compressor = None
        native = self.compression == "none" or (self.compression == "gzip" and self.format != "plain")
        if not native:
            name = self.compression
            if name == "gzip" and self.jobs > 1 and _which("pigz"):
                name = "pigz"
            self.compressor = _which(name)
            if not self.compressor:
                raise PgError(
                    f"{self.compression} is not installed on this host "
                    f"(Debian/Ubuntu: apt-get install {self.compression}); or choose another compression"
                )

    def _space_needed(self):
        """(bytes needed, how it was estimated)."""
        ratio = self.p.get("space_check_ratio")
        if ratio is None and self.baseline is not None and self.baseline.get("size"):
            needed = int(self.baseline["size"] * SPACE_MARGIN)
            how = f"{_mb(self.baseline['size'])} of the previous backup {self.baseline['name']} x {SPACE_MARGIN}"
            if self.format == "directory" and self.compression == "zstd":
                rows = self.psql.query_json(LARGEST_TABLE_SQL, self.database, what="sizing the largest table")
                largest = int(rows[0]["bytes"]) if rows else 0
                needed += largest
                how += f" + {_mb(largest)} for the largest table, written uncompressed first"
            return needed, how
        if ratio is None:
            ratio = SPACE_RATIOS[self.compression]
            if self.format == "directory" and self.compression == "zstd":
                ratio = SPACE_RATIO_ZSTD_DIRECTORY
        ratio = float(ratio)
        return int(self.props["size"] * ratio), f"database size {_mb(self.props['size'])} x {ratio:.2f}"

    def _check_space(self):
        needed, how = self._space_needed()
        if needed <= 0:
            return None
        probe = self.directory if os.path.isdir(self.directory) else _existing_parent(self.directory)
        free = catalog.free_bytes(probe)
        if free < needed:
            raise PgError(
                f"not enough free space for a backup of {self.database} in {self.directory}: {_mb(free)} free, "
                f"about {_mb(needed)} needed ({how}). Free some space, move backup_dir, or set space_check_ratio "
                "(a fraction of the database size; 0 disables the check; the backup role's "
                "backup_space_check_ratio).",
                free_bytes=free,
                needed_bytes=needed,
            )
        return {"free_bytes": free, "needed_bytes": needed, "estimate": how}

    # -- dump ----------------------------------------------------------------
    def _dump_argv(self, snapshot, target):
        argv = [self.pg_dump, "--no-password", f"--snapshot={snapshot}"]
        level = self.level
        if self.format == "directory":
            argv += ["-Fd", "-j", str(self.jobs), "-f", target]
            if self.compression == "gzip":
                argv += ["-Z", str(DEFAULT_GZIP_LEVEL if level is None else level)]
            else:
                argv += ["-Z", "0"]
        elif self.format == "custom":
            argv += ["-Fc", "-f", target]
            argv += ["-Z", "0" if self.compression == "none" else str(DEFAULT_GZIP_LEVEL if level is None else level)]
        else:
            argv += ["-Fp"]
            if self.compression == "none":
                argv += ["-f", target]
        argv += ["-d", conninfo_dbname(self.database)]
        return argv

    def _compressor_argv(self):
        if self.compression == "gzip":
            argv = [self.compressor, "-c", f"-{DEFAULT_GZIP_LEVEL if self.level is None else self.level}"]
            if os.path.basename(self.compressor) == "pigz":
                argv += ["-p", str(self.jobs)]
            return argv
        level = [f"-{self.level}"] if self.level is not None else ZSTD_PROFILES[ZSTD_DEFAULT_PROFILE]
        return [self.compressor, "-q", "-c", f"-T{self.jobs}", *level]

    def _start_dump(self, argv, target):
        """Start pg_dump (and the compressor or follower) with umask 077. Returns (dump, comp, follower)."""
        comp = follower = out_fd = None
        old_umask = os.umask(0o077)
        try:
            if self.format == "plain" and self.compression != "none":
                out_fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, catalog.FILE_MODE)
                dump = pg_cli.spawn(argv, self.conn, stdout=pg_cli.PIPE, stderr=pg_cli.PIPE)
                self.procs.append(dump)
                comp = pg_cli.spawn(self._compressor_argv(), stdin=dump.stdout, stdout=out_fd, stderr=pg_cli.PIPE)
                self.procs.append(comp)
                dump.stdout.close()
            else:
                dump = pg_cli.spawn(argv, self.conn, stdout=pg_cli.DEVNULL, stderr=pg_cli.PIPE)
                self.procs.append(dump)
                if self.format == "directory" and self.compression == "zstd":
                    follower = ZstdFollower(target, self.compressor, level=self.level, workers=self.jobs)
                    self.follower = follower
        finally:
            os.umask(old_umask)
            if out_fd is not None:
                os.close(out_fd)
        return dump, comp, follower

    def _run_dump(self, snapshot, target, session, tables):
        """Run pg_dump (and the compressor) into target; count rows meanwhile. Returns the counts."""
        argv = self._dump_argv(snapshot, target)
        dump, comp, follower = self._start_dump(argv, target)
        dump_err = StderrCollector(dump.stderr)
        comp_err = StderrCollector(comp.stderr) if comp is not None else None
        # Count while pg_dump runs: same snapshot, so the counts are the dump's rows.
        counted = {}

        def count():
            try:
                counted["counts"] = session.counts(tables)
            except Exception as err:
                counted["error"] = err

        counter = threading.Thread(target=count, daemon=True)
        counter.start()
        try:
            self._wait_dump(dump, follower)
            dump_err.join(10)
            comp_rc = comp.wait() if comp is not None else 0
            if comp_err is not None:
                comp_err.join(10)
            if follower is not None and follower.failed():
                raise self._disk_aware(follower.errors[0])
            if dump.returncode != 0:
                # The counting session shares the dump's snapshot: when it failed first (a damaged page), pg_dump
                # only says its snapshot is gone - the session's error is the cause.
                counter.join(10)
                raise self._dump_error(argv, dump.returncode, dump_err.text(), counted.get("error"))
            if comp_rc != 0:
                text = comp_err.text()
                raise self._disk_aware(
                    PgError(
                        f"{os.path.basename(comp.args[0])} failed while writing {target}: {excerpt(text, 2)}",
                        cmd=comp.args,
                        rc=comp_rc,
                        stderr=excerpt(text),
                    )
                )
            if follower is not None:
                try:
                    follower.finish()
                except PgError as err:
                    raise self._disk_aware(err) from None
        except BaseException:
            if follower is not None:
                follower.stop()
            for proc in self.procs:
                pg_cli.stop_process(proc)
            raise
        counter.join()
        if "error" in counted:
            raise counted["error"]
        counts = counted.get("counts") or []
        if follower is not None:
            self._verify_rows(target, tables, counts, follower.rows)
        return counts

    def _wait_dump(self, dump, follower):
        while dump.poll() is None:
            if follower is not None:
                follower.poll(dump.pid)
                if follower.failed():
                    pg_cli.stop_process(dump)
                    break
            time.sleep(FOLLOW_POLL)
        dump.wait()

    def _verify_rows(self, target, tables, counts, file_rows):
        """Self-check of the zstd directory path: rows written per table == rows in the snapshot."""
        pg_restore = find_tool("pg_restore", self.conn.bindir, self.server_major)
        argv = [pg_restore, "-l", target]
        rc, out, err = pg_cli.run(argv)
        if rc != 0:
            raise PgError(
                "pg_restore -l cannot read the new backup's table of contents", cmd=argv, rc=rc, stderr=excerpt(err)
            )
        by_oid = {str(t["oid"]): (t["schema"], t["name"]) for t in tables}
        expected = {(c["schema"], c["name"]): int(c["rows"]) for c in counts}
        problems = []
        checked = 0
        for line in out.splitlines():
            match = TOC_DATA_RE.match(line)
            if not match:
                continue
            key = by_oid.get(match.group(2))
            if key is None or key not in expected:
                continue
            got = file_rows.get(match.group(1) + ".dat")
            checked += 1
            if got != expected[key]:
                problems.append(f"{key[0]}.{key[1]}: {got} rows written, {expected[key]} in the snapshot")
        if problems:
            raise PgError(
                "self-check failed, the backup was discarded: " + "; ".join(problems[:10]),
                mismatches=problems,
            )
        self.rows_checked = checked

    def _disk_aware(self, err):
        text = (err.stderr or "") + " " + err.msg
        if "No space left on device" in text or "ENOSPC" in text:
            err.msg = (
                f"the disk holding {self.directory} is full: {err.msg.rstrip('.')}. "
                "The partial backup was removed; older backups are intact."
            )
        return err

    def _dump_error(self, argv, rc, stderr, session_error=None):
        stderr = self.conn.redact(stderr)
        if isinstance(session_error, PgError):
            stderr = "\n".join(t for t in (session_error.stderr, session_error.msg, stderr) if t)
        first, corrupt, logged = pg_cli.explain_failure(stderr, self.server_log, self.conn.redact)
        what = f"was killed by signal {-rc}" if rc < 0 else f"failed (rc {rc}): {first or 'no message'}"
        msg = f"pg_dump {what}; no backup was written (the partial was removed, older backups are intact).{logged}"
        if corrupt:
            msg += " " + pg_cli.corruption_advice(self.database)
        return self._disk_aware(PgError(msg, cmd=argv, rc=rc, stderr=excerpt(stderr)))

    # -- run -----------------------------------------------------------------
    def run(self):
        self._validate()
        started_wall = catalog.utcnow()
        started = time.monotonic()
        self._preflight()
        result = {"changed": True, "database": self.database, "format": self.format, "compression": self.compression}
        if self.check_mode:
            return self._check_mode_result(result, started_wall)
        warning = catalog.ensure_directory(self.directory)
        if warning:
            self.warnings.append(warning)
        lock = catalog.DirLock(self.directory, self.database)
        lock.acquire(float(self.p.get("lock_timeout", 300)))
        try:
            removed, skipped = catalog.clean_stale(self.directory, lock.path)
            if skipped:
                self.warnings.append(skipped)
            result["removed_partials"] = removed
            janitor = self._janitor(result, check_mode=False)
            self.baseline = self._find_baseline()
            space = None
            if self.p.get("space_check", True):
                space = self._check_space()
            try:
                with leftovers.interruptible():
                    backup = self._backup(started_wall, started)
            except Interrupted as err:
                err.msg = (
                    f"the backup was interrupted by {err.signame}; the partial backup was removed, older backups are "
                    "intact"
                )
                raise
            result.update(backup)
            result["space"] = space
            result["pruned"], result["retention"] = self._retention(apply=True)
            self._keep_previous(janitor, result)
        finally:
            lock.release()
        result["warnings"] = self.warnings
        return result

    def _janitor(self, result, check_mode):
        """Remove (check mode: report) what interrupted restores left: result["leftovers"]."""
        janitor = leftovers.Janitor(self.psql, self.directory, log=self.log, check_mode=check_mode)
        scratch = [(self.database, leftovers.RESTORE_SCRATCH)]
        result["leftovers"] = janitor.clean(scratch=scratch, directories=[self.directory])
        return janitor

    def _keep_previous(self, janitor, result):
        """keep_previous on the databases restores kept of this database: result["kept_databases"]."""
        result["kept_databases"] = janitor.keep_previous(
            self.database,
            self.directory,
            keep=self.keep_previous,
            keep_days=self.keep_previous_days,
            archive=self._archive,
            keys=self.keys,
        )
        self.warnings.extend(janitor.warnings)

    def _archive(self, name):
        """Back up a kept database that keep_previous is about to drop (a backup then holds all of its data).

        A backup like this run's, of the database name, labelled ARCHIVE_LABEL; returns its name.
        """
        params = dict(self.p, database=name, label=ARCHIVE_LABEL)
        self.log(f"backing up the kept database {name} before keep_previous drops it")
        return BackupEngine(self.conn, params, log=self.log).run()["name"]

    def _check_mode_result(self, result, started_wall):
        stem = catalog.stem_for(started_wall)
        path = os.path.join(self.directory, f"{stem}.{self.ext}")
        self.baseline = self._find_baseline()
        needed, how = self._space_needed()
        result.update(
            path=path,
            manifest_path=os.path.join(self.directory, catalog.manifest_name(stem)),
            name=stem,
            database_size=self.props["size"],
            space={"needed_bytes": needed, "estimate": how},
            server_version=self.server["server_version"],
            pg_dump=self.pg_dump,
            pg_dump_version=self.pg_dump_version,
        )
        partials, orphans = catalog.stale_partials(self.directory) if os.path.isdir(self.directory) else ([], [])
        result["removed_partials"] = orphans + partials
        janitor = self._janitor(result, check_mode=True)
        result["pruned"], result["retention"] = self._retention(apply=False)
        self._keep_previous(janitor, result)
        result["warnings"] = self.warnings
        return result

    def _backup(self, started_wall, started):
        stem, data_name, manifest_fd = catalog.reserve_name(self.directory, started_wall, self.ext)
        names = {
            "stem": stem,
            "data": data_name,
            "data_path": os.path.join(self.directory, data_name),
            "partial": os.path.join(self.directory, data_name + catalog.PARTIAL_SUFFIX),
            "manifest_path": os.path.join(self.directory, catalog.manifest_name(stem)),
        }
        committed = manifest_written = False
        try:
            manifest = self._dump_and_describe(names, started_wall, started)
            catalog.write_json_fd(manifest_fd, names["manifest_path"], manifest)
            manifest_fd = None
            manifest_written = True
            # The commit point: the data takes its name after the manifest is in place.
            os.rename(names["partial"], names["data_path"])
            catalog.fsync_path(self.directory)
            committed = True
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise PgError(
                    f"the disk holding {self.directory} is full ({err}). "
                    "The partial backup was removed; older backups are intact."
                ) from None
            raise
        finally:
            if manifest_fd is not None:
                os.close(manifest_fd)
            if not committed:
                catalog.remove_path(names["partial"])
                catalog.remove_path(names["manifest_path"] + catalog.PARTIAL_SUFFIX)
                if manifest_written:
                    catalog.remove_path(names["manifest_path"])
                with contextlib.suppress(OSError):
                    catalog.fsync_path(self.directory)
        duration = time.monotonic() - started
        return {
            "path": names["data_path"],
            "manifest_path": names["manifest_path"],
            "name": stem,
            "size": manifest["size"],
            "sha256": manifest["sha256"],
            "duration": round(duration, 3),
            "database_size": self.props["size"],
            "throughput_mb_s": round(self.props["size"] / 1e6 / duration, 1) if duration > 0 else None,
            "tables": len(manifest["tables"]),
            "rows": sum(t["rows"] for t in manifest["tables"]),
            "signed": "signature" in manifest,
            "key_id": manifest.get("signature", {}).get("key_id"),
            "suspicious": manifest.get("suspicious"),
            "manifest": manifest,
        }

    def _dump_and_describe(self, names, started_wall, started):
        """Dump into the partial, fsync it, checksum it; returns the manifest."""
        session = SnapshotSession(self.psql, self.database)
        try:
            session.start()
            snapshot = session.export()
            tables = session.tables()
            self.log(f"dumping {self.database} to {names['partial']}")
            counts = self._run_dump(snapshot, names["partial"], session, tables)
            session.close()
        except BaseException:
            session.abort()
            raise
        run = {
            "finished": catalog.utcnow(),
            "dump_seconds": time.monotonic() - started,
            "snapshot": snapshot,
            "counts": counts,
        }
        partial = names["partial"]
        catalog.fsync_tree(partial)
        if os.path.isdir(partial):
            run["sha256"], run["files"] = catalog.digest_tree(partial)
            run["size"] = sum(info["size"] for info in run["files"].values())
        else:
            run["sha256"], run["files"] = catalog.sha256_file(partial), None
            run["size"] = os.path.getsize(partial)
        manifest = self._manifest(names, started_wall, run)
        manifest["duration"] = round(time.monotonic() - started, 3)
        return self.keys.sign(manifest) if self.keys else manifest

    def _level_label(self):
        if self.level is not None:
            return self.level
        return {"zstd": "auto", "gzip": DEFAULT_GZIP_LEVEL}.get(self.compression, 0)

    def _manifest(self, names, started_wall, run):
        props = dict(self.props)
        props.pop("oid", None)
        manifest = {
            "manifest_version": catalog.MANIFEST_VERSION,
            "tool": TOOL_NAME,
            "tool_version": TOOL_VERSION,
            "name": names["stem"],
            "data": names["data"],
            "database": self.database,
            "label": self.p.get("label") or "",
            "format": self.format,
            "compression": self.compression,
            "compression_level": self._level_label(),
            "jobs": self.jobs,
            "size": run["size"],
            "sha256": run["sha256"],
            "started_at": catalog.iso(started_wall),
            "finished_at": catalog.iso(run["finished"]),
            "dump_seconds": round(run["dump_seconds"], 3),
            "host": socket.gethostname(),
            "server": {
                "host": self.conn.host or self.conn.unix_socket or "",
                "port": self.conn.port or 5432,
                "version": self.server["server_version"],
                "version_num": int(self.server["server_version_num"]),
            },
            "pg_dump": {"path": self.pg_dump, "version": self.pg_dump_version},
            "database_size": self.props["size"],
            "database_properties": props,
            "snapshot": run["snapshot"],
            "row_counts": "exact, in the dump's snapshot",
            "tables": [{"schema": c["schema"], "name": c["name"], "rows": int(c["rows"])} for c in run["counts"]],
        }
        if run["files"] is not None:
            manifest["files"] = run["files"]
        if getattr(self, "follower", None) is not None:
            manifest["zstd_choices"] = dict(sorted(self.follower.choices.items()))
        suspicious = self._during_recovery() or self._suspicious(manifest["tables"])
        if suspicious:
            manifest["suspicious"] = suspicious
        return manifest

    def _during_recovery(self):
        """A backup that ends while a recovery of its database is in progress (tokotani.dr.recovery_run) holds
        the database being recovered from - or one half swapped in - and must not become latest: suspicious.
        (The backup job stands aside when the recovery started first; this is the backup that was already
        running, or one taken by hand.)"""
        running, _note = recovery_run.in_progress(self.directory, self.database)
        if running is None:
            return None
        reason = (
            f"taken while a recovery of {self.database} was in progress (run {running['run_id']} by "
            f"{recovery_run.clean_text(running['operator'])}, at step {running.get('step') or '?'}): it may hold the "
            "database being recovered from"
        )
        self.warnings.append(
            f"this backup is marked suspicious ({reason}): a recovery of latest skips it unless it is named or "
            "accept_suspicious is set."
        )
        return {"compared_with": None, "reason": reason, "tables": [], "recovery_run": running["run_id"]}

    def _suspicious(self, tables):
        """The suspicious-backup guard: tables that shrank sharply against the baseline (db_checks.shrinkage)."""
        if not self.p.get("shrink_check", True) or self.baseline is None or not self.baseline.get("manifest"):
            return None
        threshold, min_rows, per_table = self.shrink
        found = db_checks.shrinkage(
            self.baseline["manifest"]["tables"], tables, threshold=threshold, min_rows=min_rows, per_table=per_table
        )
        if not found:
            return None
        reason = db_checks.shrinkage_text(found, self.baseline["name"])
        self.warnings.append(
            f"this backup is marked suspicious ({reason}): a recovery of latest skips it unless it is named or "
            "accept_suspicious is set. If the shrink is expected (a purge), take one backup with shrink_check: false "
            "(the backup role's backup_shrink_check) to make it the new baseline."
        )
        return {"compared_with": self.baseline["name"], "reason": reason, "tables": found[:100]}

    def _retention(self, apply):
        if not os.path.isdir(self.directory):
            return [], {"kept": 0}
        listing = catalog.scan(self.directory, database=None, keys=self.keys)
        prune, keep = catalog.plan_retention(
            listing["backups"],
            self.database,
            catalog.utcnow(),
            keep_days=int(self.p.get("keep_days", 14)),
            keep_min=int(self.p.get("keep_min", 3)),
            prune_legacy=bool(self.p.get("prune_legacy", False)),
        )
        pruned = []
        in_use = []
        for entry, reason in prune:
            holder = catalog.delete_unless_in_use(entry) if apply else "; ".join(catalog.in_use(entry))
            if holder:
                in_use.append({"name": entry["name"], "path": entry["path"], "reason": reason, "in_use_by": holder})
                self.warnings.append(
                    f"retention skipped {entry['name']} ({reason}): it is in use by {holder}; a later run removes it"
                )
                continue
            pruned.append({"name": entry["name"], "path": entry["path"], "kind": entry["kind"], "reason": reason})
        summary = {
            "keep_days": int(self.p.get("keep_days", 14)),
            "keep_min": int(self.p.get("keep_min", 3)),
            "kept": len(
                [1 for e, _r in keep if e["kind"] == "managed" and e["database"] == self.database and e["valid"]]
            ),
            "in_use": in_use,
        }
        return pruned, summary


def _which(name):
    return shutil.which(name)


def _existing_parent(path):
    path = os.path.abspath(path)
    while not os.path.isdir(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _mb(value):
    return "%.1f MB" % (value / 1e6)


def local_baseline(directory, database, keys=None):
    """The newest valid, non-suspicious managed backup of database in directory, else None."""
    if not os.path.isdir(directory):
        return None
    for entry in catalog.scan(directory, database=database, keys=keys)["backups"]:
        if entry["kind"] == "managed" and entry["valid"] and not entry.get("suspicious"):
            return entry
    return None


def backup(params, check_mode=False, log=None):
    """Run one backup with module-style params; returns the result dict, raises PgError/CatalogError."""
    conn = Connection.from_params(params)
    try:
        return BackupEngine(conn, params, check_mode=check_mode, log=log).run()
    except OSError as err:
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        raise PgError(f"{err.strerror or err}{where}") from err
