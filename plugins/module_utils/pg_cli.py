# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL client tools (psql, pg_dump, pg_restore) driven as subprocesses.

Pure standard library: no psycopg2 on the target, no Ansible imports, so the same code
runs inside a module and in a host-side runner (a systemd timer). Connection secrets go
to the tools through the environment (PGPASSWORD), never through argv.

Every child the engines start goes through here: ``run`` for a tool run to completion,
``spawn`` for the streaming pipelines (pg_dump into a compressor, a decompressor into psql,
a psql session), ``stop_process`` to stop one.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import re
import shutil
import subprocess
import threading
import time
from collections import deque

from ansible_collections.tokotani.dr.plugins.module_utils.errors import DrError
from ansible_collections.tokotani.dr.plugins.module_utils.manifest_schema import DATABASE_PRIVILEGES
from ansible_collections.tokotani.dr.plugins.module_utils.text import excerpt

TOOL_NAME = "tokotani.dr"
TOOL_VERSION = "0.1.0"
APPLICATION_NAME = "tokotani.dr"
STDERR_KEEP_LINES = 400

_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


class PgError(DrError):
    """A PostgreSQL failure an operator can act on (the message, and the command, rc and stderr behind it)."""


def quote_ident(name):
    """A PostgreSQL identifier, double-quoted."""
    return '"' + str(name).replace('"', '""') + '"'


def quote_literal(value):
    """A PostgreSQL string literal (standard_conforming_strings on, as since 9.1)."""
    return "'" + str(value).replace("'", "''") + "'"


def conninfo_dbname(dbname):
    """A libpq conninfo string naming only the database (safe for any name, even one with '=' or spaces)."""
    return "dbname='" + str(dbname).replace("\\", "\\\\").replace("'", "\\'") + "'"


class Connection:
    """How to reach the server. Holds the password; never put it in argv or in results."""

    def __init__(
        self,
        *,
        host=None,
        port=None,
        user=None,
        password=None,
        unix_socket=None,
        maintenance_db="postgres",
        ssl_mode=None,
        ca_cert=None,
        connect_timeout=10,
        bindir=None,
        os_user=None,
    ):
        self.host = host or None
        self.port = port
        self.user = user
        self.password = password
        self.unix_socket = unix_socket or None
        self.maintenance_db = maintenance_db or "postgres"
        self.ssl_mode = ssl_mode
        self.ca_cert = ca_cert
        self.connect_timeout = connect_timeout
        self.bindir = bindir
        # The operating system user psql runs as (peer authentication over the Unix socket, as
        # `become_user: postgres` gives a module), when this process is root and another user is named.
        self.os_user = os_user or None

    @classmethod
    def from_params(cls, params):
        """From a module's (or a runner's) option dict, keys as in the postgres doc fragment."""
        return cls(
            host=params.get("login_host"),
            port=params.get("login_port"),
            user=params.get("login_user"),
            password=params.get("login_password"),
            unix_socket=params.get("login_unix_socket"),
            maintenance_db=params.get("maintenance_db") or "postgres",
            ssl_mode=params.get("ssl_mode"),
            ca_cert=params.get("ca_cert"),
            connect_timeout=params.get("connect_timeout") or 10,
            bindir=params.get("pg_bindir"),
            os_user=params.get("login_os_user"),
        )

    def describe(self):
        """Where we connect, for messages (no secrets)."""
        where = self.host or self.unix_socket or "the default unix socket"
        port = self.port or 5432
        return "{} port {} as {}".format(where, port, self.user or "the current user")

    def env(self, extra=None):
        """os.environ plus the libpq variables for this connection."""
        env = dict(os.environ)
        host = self.host or self.unix_socket
        if host:
            env["PGHOST"] = str(host)
        if self.port:
            env["PGPORT"] = str(self.port)
        if self.user:
            env["PGUSER"] = str(self.user)
        if self.password is not None and self.password != "":
            env["PGPASSWORD"] = str(self.password)
        if self.ssl_mode:
            env["PGSSLMODE"] = self.ssl_mode
        if self.ca_cert:
            env["PGSSLROOTCERT"] = str(self.ca_cert)
        if self.connect_timeout:
            env["PGCONNECT_TIMEOUT"] = str(int(self.connect_timeout))
        env["PGAPPNAME"] = APPLICATION_NAME
        # psql must not read the operator's ~/.psqlrc (-X) nor page its output.
        env["PAGER"] = "cat"
        env.pop("PSQL_PAGER", None)
        identity = self._os_identity()
        if identity is not None:
            env.update(HOME=identity.pw_dir, USER=identity.pw_name, LOGNAME=identity.pw_name)
        if extra:
            env.update(extra)
        return env

    def _os_identity(self):
        """The passwd entry of os_user when the tools must switch to it, else None."""
        if not self.os_user:
            return None
        try:
            entry = pwd.getpwnam(self.os_user)
        except KeyError:
            raise PgError(f"the operating system user {self.os_user!r} does not exist on this host") from None
        if entry.pw_uid == os.geteuid():
            return None
        if os.geteuid() != 0:
            raise PgError(
                f"running psql as the operating system user {self.os_user!r} needs root: run the task with "
                f"become: true (or become {self.os_user!r} directly)"
            )
        return entry

    def process_identity(self):
        """subprocess keyword arguments that run a tool as os_user ({} when no switch is needed)."""
        entry = self._os_identity()
        if entry is None:
            return {}
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [], "cwd": "/"}

    def redact(self, text):
        """text with the password (if any) blanked out."""
        if text and self.password:
            return text.replace(str(self.password), "********")
        return text


def parse_tool_version(text):
    """(major, minor) from `pg_dump --version` output, or None."""
    match = _VERSION_RE.search(text or "")
    if not match:
        return None
    major = int(match.group(1))
    minor = int(match.group(2) or 0)
    return (major, minor)


def server_major(server_version_num):
    """15 from 150018 (9 for 90624: majors before 10 had two parts; 9 is enough for comparisons)."""
    return int(server_version_num) // 10000


def client_package(major):
    """The Debian/Ubuntu package that carries the client tools of a major version."""
    return f"postgresql-client-{major}"


def _installed_bindirs():
    """{major: bindir} of the Debian-style /usr/lib/postgresql/<major>/bin installations."""
    found = {}
    for path in glob.glob("/usr/lib/postgresql/*/bin"):
        name = os.path.basename(os.path.dirname(path))
        if name.isdigit():
            found[int(name)] = path
    return found


def find_tool(name, bindir=None, want_major=None):
    """The path of a client tool.

    bindir when given (and nothing else); otherwise the Debian installation of the server's
    major version, then the newest installed one that is not older, then PATH.
    """
    if bindir:
        path = os.path.join(bindir, name)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise PgError(f"{name} not found in pg_bindir {bindir}")
        return path
    installed = _installed_bindirs()
    candidates = []
    if want_major is not None and want_major in installed:
        candidates.append(installed[want_major])
    candidates.extend(installed[m] for m in sorted(installed, reverse=True) if want_major is None or m >= want_major)
    for directory in candidates:
        path = os.path.join(directory, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    path = shutil.which(name)
    if path:
        return path
    hint = client_package(want_major) if want_major else "postgresql-client"
    raise PgError(
        f"{name} not found: install the PostgreSQL client tools (Debian/Ubuntu: apt-get install {hint}) "
        "or set pg_bindir to the directory that holds them"
    )


def tool_version(path):
    """(major, minor, text) of a client tool."""
    argv = [path, "--version"]
    rc, out, err = run(argv, timeout=30)
    version = parse_tool_version(out)
    if rc != 0 or version is None:
        raise PgError(f"cannot tell the version of {path}", cmd=argv, rc=rc, stderr=excerpt(err or out))
    return version[0], version[1], out.strip()


def check_tool_not_older(tool, path, version, server_version_num, server_version):
    """Fail when a dump/restore tool's major is older than the server's, naming the package to install."""
    smajor = server_major(server_version_num)
    if version[0] < smajor:
        raise PgError(
            f"{tool} {version[0]}.{version[1]} ({path}) is older than the server (PostgreSQL {server_version}): "
            f"{tool} cannot {'dump' if tool == 'pg_dump' else 'restore into'} a newer server. "
            "Install the client tools of the server's version "
            f"(Debian/Ubuntu: apt-get install {client_package(smajor)}) "
            f"or set pg_bindir to their directory (e.g. /usr/lib/postgresql/{smajor}/bin).",
            tool_path=path,
            server_version=server_version,
        )


class StderrCollector:
    """Drains a process's stderr in a thread (so the pipe never fills), keeps the tail, feeds a callback."""

    def __init__(self, stream, on_line=None, keep=STDERR_KEEP_LINES):
        self.lines = deque(maxlen=keep)
        self._stream = stream
        self._on_line = on_line
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        for raw in iter(self._stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            if self._on_line is not None:
                with contextlib.suppress(Exception):
                    self._on_line(line)
        self._stream.close()

    def join(self, timeout=None):
        self._thread.join(timeout)

    def text(self):
        return "\n".join(self.lines)


# For spawn's stdin/stdout/stderr, so that the engines need no subprocess of their own.
PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL


def _env(conn, env_extra):
    """The environment of a child: the connection's (libpq variables, PGPASSWORD) with conn, else the host's."""
    if conn is not None:
        return conn.env(env_extra)
    return dict(os.environ, **env_extra) if env_extra else None


def run(argv, conn=None, input_text=None, timeout=None, env_extra=None, *, text=True):
    """Run a tool to completion; returns (rc, stdout, stderr). The one seam unit tests mock.

    With text false, input_text and the outputs are bytes (a compressor's sample).
    """
    identity = conn.process_identity() if conn is not None else {}
    try:
        result = subprocess.run(
            argv,
            input=input_text,
            capture_output=True,
            text=text,
            env=_env(conn, env_extra),
            timeout=timeout,
            check=False,
            **identity,
        )
    except subprocess.TimeoutExpired as err:
        raise PgError(f"{os.path.basename(argv[0])} did not finish within {timeout} s", cmd=argv) from err
    except OSError as err:
        raise PgError(f"cannot run {argv[0]}: {err}", cmd=argv) from err
    return result.returncode, result.stdout, result.stderr


def spawn(argv, conn=None, env_extra=None, **popen_kwargs):
    """Start a tool of a streaming pipeline (pg_dump into a compressor, a decompressor into psql, a
    psql session); returns its Popen. The seam's other half: nothing is buffered here.

    With conn, the child gets the connection's environment (the password as PGPASSWORD, never in
    argv) plus env_extra; without, the host's. The engines pass no env of their own.
    """
    if "env" in popen_kwargs:
        raise TypeError("spawn sets the environment itself: pass conn and env_extra")
    identity = conn.process_identity() if conn is not None else {}
    return subprocess.Popen(argv, env=_env(conn, env_extra), **identity, **popen_kwargs)


def stop_process(proc, timeout=5, *, ask=True):
    """Stop a child: SIGTERM (pg_restore then stops its workers), SIGKILL after timeout seconds.

    timeout 0 kills at once. With ask false no SIGTERM is sent: the child was told to finish in its
    own way (psql's \\q) and gets the timeout to do so. Returns True when it was still running.
    """
    if proc is None or proc.poll() is not None:
        return False
    try:
        if timeout:
            if ask:
                proc.terminate()
            proc.wait(timeout)
            return True
    except subprocess.TimeoutExpired:
        pass
    except OSError:
        return True
    try:
        proc.kill()
        proc.wait()
    except OSError:
        pass
    return True


# What PostgreSQL says when the data itself is damaged (a read of a page, a TOAST chunk, a commit log
# entry): an operator should look at the disk and recover the database, not at the tooling.
CORRUPTION_MARKERS = (
    "invalid page in block",
    "could not read block",
    "page verification failed",
    "checksum verification failed",
    "unexpected zero page",
    "missing chunk number",
    "unexpected chunk number",
    "invalid memory alloc request size",
    "could not access status of transaction",
    "found xmin",
    "uncommitted xmin",
    "invalid compressed data",
)
# Errors that only follow another one (a parallel worker's snapshot gone because the leader aborted).
CONSEQUENTIAL_ERRORS = ("invalid snapshot identifier", "terminating connection because of crash", "canceling statement")


def first_real_error(stderr):
    """(the line an operator should read first, corruption: bool) from a client tool's stderr.

    The server's own message ("Error message from server: ERROR: ...", "ERROR: ...") is preferred over the
    tool's summary, and errors that only follow another (a parallel worker's "invalid snapshot identifier"
    after the leader failed) are read last. Data corruption is named as such.
    """
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line or "error" in line or "FATAL" in line]
    for line in lines:
        if any(marker in line for marker in CORRUPTION_MARKERS):
            return line, True
    primary = [line for line in errors if not any(c in line for c in CONSEQUENTIAL_ERRORS)]
    server = [line for line in primary if "ERROR:" in line or "FATAL:" in line]
    for pool in (server, primary, errors):
        if pool:
            return pool[0], False
    return (lines[-1] if lines else ""), False


def corruption_advice(database):
    """What to do about damaged data (a sentence)."""
    return (
        f"This is data corruption in database {database} on the server (a damaged page or row), not a problem of the "
        "tooling: check the disk and the server's log, and recover the database from the last good backup "
        "(playbooks/recover_db.yml -e confirm=true)."
    )


# Where Debian's pg_ctlcluster sends a cluster's log when the logging collector is off (its default):
# postgresql-<version>-<cluster>.log, the cluster being what cluster_name says ("15/main").
DEBIAN_LOG_DIR = "/var/log/postgresql"
_CLUSTER_NAME_RE = re.compile(r"^(\d+)/([A-Za-z0-9_.-]+)$")
SERVER_LOG_READ = 256 * 1024
SERVER_LOG_LINE = 400
# A session that lost its server (a backend killed, a crash) reads that before the postmaster has
# reaped the process and logged why: the log is read again for up to this long, every SERVER_LOG_POLL.
SERVER_LOG_WAIT = 5.0
SERVER_LOG_POLL = 0.1
_CONNECTION_LOST = (
    "server closed the connection unexpectedly",
    "terminating connection because of crash of another server process",
    "connection to server was lost",
    "SSL SYSCALL error: EOF detected",
    "no connection to the server",
)
# A log line's level as PostgreSQL writes it after its prefix: the word, a colon, two spaces.
_LOG_LEVEL_RE = re.compile(r"\b(PANIC|FATAL|ERROR|WARNING|LOG|DETAIL|HINT|CONTEXT|STATEMENT|NOTICE|INFO|DEBUG\d?):  ")
# LOG lines of the postmaster that say why every session died (a crash, the OOM killer).
_LOG_CAUSES = ("terminated by signal", "terminated by exception", "exited with exit code", "No space left on device")
# FATAL lines that follow another failure (sessions refused during the crash recovery, the tool gone).
_LOG_CONSEQUENCES = (
    "the database system is in recovery mode",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is not yet accepting connections",
    "connection to client lost",
    "could not send data to client",
)


def log_cause(lines):
    """(the server's log line that says why, corruption: bool) among lines, or (None, False).

    Read in this order: damaged data, a PANIC, the postmaster saying a server process died (and how),
    then the first ERROR or FATAL that is not a consequence of another. The line is returned from its
    level on (the prefix dropped), cut to SERVER_LOG_LINE characters. The text is only ever shown.
    """
    entries = []
    for line in lines:
        match = _LOG_LEVEL_RE.search(line)
        if match:
            entries.append((match.group(1), " ".join(line[match.start() :].split())[:SERVER_LOG_LINE]))
    picks = (
        lambda level, text: level in ("PANIC", "FATAL", "ERROR") and any(m in text for m in CORRUPTION_MARKERS),
        lambda level, text: level == "PANIC",
        lambda level, text: level == "LOG" and any(c in text for c in _LOG_CAUSES),
        lambda level, text: (
            level in ("ERROR", "FATAL") and not any(c in text for c in CONSEQUENTIAL_ERRORS + _LOG_CONSEQUENCES)
        ),
    )
    for pick in picks:
        for level, text in entries:
            if pick(level, text):
                return text, any(m in text for m in CORRUPTION_MARKERS)
    return None, False


class ServerLog:
    """The PostgreSQL server's log file, read from where it ended when a tool started (mark) for the
    server's own reason of a failure that the tool's stderr does not carry (a crash, the OOM killer,
    a full disk under the server). Read only, at most SERVER_LOG_READ bytes, shown only."""

    def __init__(self, path):
        self.path = path
        self.offset = None

    @classmethod
    def locate(cls, psql, info, path=None, warnings=None):
        """The log: path when given, else the logging collector's current file (a superuser login), else
        the Debian cluster's log; marked. None when none of them can be read here (a warning into
        warnings when path was given)."""
        candidates = [path] if path else []
        if not path and info.get("logging_collector") == "on" and info.get("is_superuser"):
            try:
                rows = psql.query_json(CURRENT_LOGFILE_SQL, psql.conn.maintenance_db, what="locating the server log")
            except PgError:
                rows = []
            found = rows[0] if rows and isinstance(rows[0], dict) else {}
            if isinstance(found.get("file"), str) and isinstance(found.get("data_directory"), str):
                candidates.append(os.path.join(found["data_directory"], found["file"]))
        match = None if path else _CLUSTER_NAME_RE.match(str(info.get("cluster_name") or ""))
        if match:
            candidates.append(os.path.join(DEBIAN_LOG_DIR, f"postgresql-{match.group(1)}-{match.group(2)}.log"))
        for candidate in candidates:
            if os.path.isfile(candidate) and os.access(candidate, os.R_OK):
                log = cls(candidate)
                log.mark()
                return log
        if path and warnings is not None:
            warnings.append(f"server_log {path} cannot be read here: failures will not quote the server's own log")
        return None

    def mark(self):
        try:
            stat = os.stat(self.path)
            self.offset = (stat.st_ino, stat.st_size)
        except OSError:
            self.offset = None

    def cause(self, wait=0.0):
        """log_cause() of what the log got since mark() (all of it when it was rotated since: another
        file, or shorter than at the mark); read again for up to wait seconds while it names none."""
        deadline = time.monotonic() + wait
        found = self._read_cause()
        while found[0] is None and time.monotonic() < deadline:
            time.sleep(SERVER_LOG_POLL)
            found = self._read_cause()
        return found

    def _read_cause(self):
        try:
            with open(self.path, "rb") as handle:
                stat = os.fstat(handle.fileno())
                inode, size = self.offset or (None, 0)
                start = size if inode == stat.st_ino and size <= stat.st_size else 0
                handle.seek(start)
                data = handle.read(SERVER_LOG_READ)
        except OSError:
            return None, False
        return log_cause(data.decode("utf-8", "replace").splitlines())


def explain_failure(stderr, server_log=None, redact=None):
    """(first, corrupt, logged) of a client tool's failure: first_real_error() of its stderr and, when the
    server's log since the tool started names a cause that stderr does not carry, the sentence that quotes
    that line (" The server's log (<path>) says: <line>.", passed through redact), else ''."""
    first, corrupt = first_real_error(stderr)
    lost = any(marker in (stderr or "") for marker in _CONNECTION_LOST)
    logged, logged_corrupt = (None, False)
    if server_log is not None:
        logged, logged_corrupt = server_log.cause(wait=SERVER_LOG_WAIT if lost else 0.0)
    said = " ".join((logged or "").split(":", 1)[-1].split())
    if not logged or (said and said in " ".join((stderr or "").split())):
        return first, corrupt, ""
    sentence = f" The server's log ({server_log.path}) says: {logged.rstrip('.')}."
    return first, corrupt or logged_corrupt, redact(sentence) if redact else sentence


def connection_failure_message(conn, dbname, stderr):
    """An operator-facing sentence for the usual libpq failures."""
    text = stderr or ""
    where = conn.describe()
    if "password authentication failed" in text:
        return f"authentication failed for {where} (database {dbname}): check login_user/login_password"
    if "no password supplied" in text:
        return f"the server at {where} asks for a password and none was given (login_password or PGPASSWORD)"
    if "does not exist" in text and "database" in text and "FATAL" in text:
        return f"database {dbname} does not exist on {where}"
    if "Connection refused" in text or "could not connect" in text or "timeout expired" in text:
        return f"cannot connect to PostgreSQL at {where}: is the server running and reachable?"
    if "could not translate host name" in text:
        return f"cannot resolve the database host of {where}"
    return None


class Psql:
    """psql as a query runner: every result row is one JSON document per line."""

    def __init__(self, conn, path=None):
        self.conn = conn
        self.path = path or find_tool("psql", conn.bindir)

    def argv(self, dbname, extra=None):
        argv = [self.path, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", conninfo_dbname(dbname)]
        if extra:
            argv.extend(extra)
        return argv

    def run_sql(self, sql, dbname, variables=None, timeout=None, what="query"):
        """Run an SQL script (stdin) in dbname; returns stdout. variables are psql -v settings (for :'name')."""
        extra = []
        for key, value in (variables or {}).items():
            extra.extend(["-v", f"{key}={value}"])
        argv = self.argv(dbname, [*extra, "-f", "-"])
        rc, out, err = run(argv, self.conn, input_text=sql, timeout=timeout)
        if rc != 0:
            raise self._failure(what, dbname, argv, rc, err)
        return out

    def _failure(self, what, dbname, argv, rc, err):
        err = self.conn.redact(err)
        message = connection_failure_message(self.conn, dbname, err)
        if message is None:
            message = f"{what} failed on database {dbname}: {excerpt(err, 3) or f'psql rc {rc}'}"
        return PgError(message, cmd=argv, rc=rc, stderr=excerpt(err))

    def run_command(self, sql, dbname, timeout=None, what="statement", env_extra=None):
        """Send sql to the server as one query string (psql -c): psql reads none of it, so no
        backslash meta-command and no :variable in it is ever interpreted. Returns stdout."""
        if sql.lstrip().startswith("\\"):
            raise PgError(f"{what}: refusing to send a psql meta-command")
        argv = self.argv(dbname, ["-c", sql])
        extra = dict(env_extra or {})
        # quote_literal relies on it: a database-level 'off' must not change how literals read.
        extra["PGOPTIONS"] = ("-c standard_conforming_strings=on " + extra.get("PGOPTIONS", "")).strip()
        rc, out, err = run(argv, self.conn, timeout=timeout, env_extra=extra)
        if rc != 0:
            raise self._failure(what, dbname, [*argv[:-1], "<sql>"], rc, err)
        return out, err

    def query_json(self, sql, dbname, variables=None, timeout=None, what="query"):
        """Rows of a query whose single column is json: a list of parsed documents."""
        out = self.run_sql(sql, dbname, variables=variables, timeout=timeout, what=what)
        rows = []
        for raw in out.splitlines():
            line = raw.strip()
            if line:
                rows.append(json.loads(line))
        return rows


SERVER_INFO_SQL = """
SELECT json_build_object(
  'server_version', current_setting('server_version'),
  'server_version_num', current_setting('server_version_num')::int,
  'current_user', current_user,
  'is_superuser', (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
  'in_recovery', pg_is_in_recovery(),
  'cluster_name', current_setting('cluster_name'),
  'logging_collector', current_setting('logging_collector'));
"""
# Superusers only (pg_current_logfile is not granted to PUBLIC).
CURRENT_LOGFILE_SQL = """
SELECT json_build_object('file', pg_current_logfile(), 'data_directory', current_setting('data_directory'));
"""

# Everything that makes a database what it is, outside what pg_dump (without --create) writes:
# owner, encoding and locale, ACL, connection limit, comment, ALTER DATABASE/ROLE ... SET.
# to_jsonb(d) keeps this independent of the server's pg_database columns (datlocprovider is 15+).
DATABASE_PROPERTIES_SQL = """
SELECT json_build_object(
  'name', d.datname,
  'oid', d.oid,
  'owner', pg_get_userbyid(d.datdba),
  'encoding', pg_encoding_to_char(d.encoding),
  'row', to_jsonb(d) - 'datacl',
  'connection_limit', d.datconnlimit,
  'comment', shobj_description(d.oid, 'pg_database'),
  'acl_is_default', d.datacl IS NULL,
  'acl', COALESCE((
      SELECT json_agg(json_build_object(
               'grantee', CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
               'privilege', a.privilege_type,
               'grantable', a.is_grantable)
             ORDER BY a.grantee, a.privilege_type)
        FROM aclexplode(d.datacl) a), '[]'::json),
  'settings', COALESCE((
      SELECT json_agg(json_build_object(
               'role', CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END,
               'config', s.setconfig)
             ORDER BY s.setrole)
        FROM pg_db_role_setting s WHERE s.setdatabase = d.oid), '[]'::json),
  'size', pg_database_size(d.oid))
FROM pg_database d
WHERE d.datname = :'dbname';
"""


def database_properties(psql, dbname):
    """The properties of database dbname (read through the maintenance database), or None if it is missing."""
    rows = psql.query_json(
        DATABASE_PROPERTIES_SQL,
        psql.conn.maintenance_db,
        variables={"dbname": dbname},
        what=f"reading the properties of database {dbname}",
    )
    if not rows:
        return None
    props = rows[0]
    row = props.pop("row", {}) or {}
    props["collate"] = row.get("datcollate")
    props["ctype"] = row.get("datctype")
    props["locale_provider"] = row.get("datlocprovider")
    props["icu_locale"] = row.get("daticulocale")
    props["is_template"] = row.get("datistemplate")
    props["allow_connections"] = row.get("datallowconn")
    return props


def database_oids(psql, names):
    """{name: OID, or None when there is no such database} (names reach psql as variables, never as SQL)."""
    out = {}
    for name in names:
        rows = psql.query_json(
            "SELECT json_build_object('oid', (SELECT oid FROM pg_database WHERE datname = :'n'));",
            psql.conn.maintenance_db,
            variables={"n": name},
            what="reading the databases' OIDs",
        )
        value = rows[0]["oid"] if rows else None
        out[name] = int(value) if value is not None else None
    return out


def server_info(psql):
    """Server version, current user, recovery state (from the maintenance database)."""
    rows = psql.query_json(SERVER_INFO_SQL, psql.conn.maintenance_db, what="connecting")
    return rows[0]


# GUCs whose stored values are lists that pg_dumpall writes unquoted (GUC_LIST_QUOTE).
_LIST_GUCS = {
    "search_path",
    "temp_tablespaces",
    "session_preload_libraries",
    "shared_preload_libraries",
    "local_preload_libraries",
    "unix_socket_directories",
}
# Settings a manifest may never carry, whatever the server says about them: they load code
# (libraries), switch the session's identity, or turn off integrity checks.
FORBIDDEN_SETTINGS = {
    "session_preload_libraries",
    "shared_preload_libraries",
    "local_preload_libraries",
    "dynamic_library_path",
    "unix_socket_directories",
    "role",
    "session_authorization",
    "session_replication_role",
    "zero_damaged_pages",
    "ignore_checksum_failure",
    "ignore_system_indexes",
    "allow_system_table_mods",
    "lo_compat_privileges",
    "jit_provider",
    "standard_conforming_strings",
    "backslash_quote",
}
_SETTING_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(?:\.[A-Za-z_][A-Za-z0-9_$]*)*$")
_LIST_ELEMENT_RE = re.compile(r'\s*(?:"((?:[^"]|"")*)"|([^",\s]+))\s*(,|$)')


def split_list_setting(value):
    """The elements of a list setting as pg_db_role_setting stores it ('"$user", public'); raises PgError."""
    elements = []
    pos = 0
    text = value.strip()
    while pos < len(text):
        match = _LIST_ELEMENT_RE.match(text, pos)
        if not match or match.end() == pos:
            raise PgError(f"cannot read the list value {value!r}")
        quoted, bare, _sep = match.groups()
        elements.append(quoted.replace('""', '"') if quoted is not None else bare)
        pos = match.end()
    return elements


def setting_sql(config_item):
    """'k=v' from pg_db_role_setting as the right-hand side 'k TO v' of ALTER ... SET.

    The name must be a parameter name as PostgreSQL spells one; the value is quoted as a literal,
    and a list setting (search_path) element by element, so nothing in either can end the statement.
    """
    key, sep, value = config_item.partition("=")
    if not sep or not _SETTING_NAME_RE.match(key):
        raise PgError(f"the setting {config_item!r} does not name a parameter")
    if key.lower() in _LIST_GUCS:
        elements = split_list_setting(value)
        return "{} TO {}".format(key, ", ".join(quote_literal(e) for e in elements) if elements else "''")
    return f"{key} TO {quote_literal(value)}"


def properties_problems(props):
    """What in a database's properties (from a manifest) cannot be rendered as SQL safely: a setting
    that names no parameter, a list value that does not parse. Types are the manifest schema's job."""
    problems = []
    for setting in (props or {}).get("settings") or []:
        for item in setting.get("config") or []:
            try:
                setting_sql(item)
            except PgError as err:
                problems.append(err.msg)
    return problems


NON_USER_SETTINGS_SQL = "SELECT json_build_object('name', name) FROM pg_settings WHERE context <> 'user';"


def restorable_properties(props, privileged):
    """props without the settings a manifest may not bring back: FORBIDDEN_SETTINGS, and the names in
    privileged (parameters only a superuser may set, from NON_USER_SETTINGS_SQL). Returns (props, skipped)
    where skipped lists 'role/database: name=value' of what was left out."""
    kept = dict(props or {})
    skipped = []
    settings = []
    for setting in kept.get("settings") or []:
        config = []
        for item in setting.get("config") or []:
            key = item.partition("=")[0].lower()
            if key in FORBIDDEN_SETTINGS or key in privileged:
                where = f"role {setting['role']}" if setting.get("role") else "the database"
                skipped.append(f"{item} (for {where})")
            else:
                config.append(item)
        if config:
            settings.append(dict(setting, config=config))
    kept["settings"] = settings
    return kept, skipped


def properties_sql(target, props, include_owner=True):
    """SQL that gives database target the owner, ACL, settings, comment and connection limit in props."""
    db = quote_ident(target)
    statements = []
    if include_owner and props.get("owner"):
        statements.append("ALTER DATABASE {} OWNER TO {};".format(db, quote_ident(props["owner"])))
    if props.get("connection_limit") is not None and int(props["connection_limit"]) != -1:
        statements.append(f"ALTER DATABASE {db} CONNECTION LIMIT {int(props['connection_limit'])};")
    if props.get("comment") is not None:
        statements.append("COMMENT ON DATABASE {} IS {};".format(db, quote_literal(props["comment"])))
    if not props.get("acl_is_default", True):
        # Start from nothing (not even the owner's implicit rights), then grant exactly the source's ACL.
        owner = props.get("owner")
        statements.append(f"REVOKE ALL ON DATABASE {db} FROM PUBLIC;")
        if owner:
            statements.append(f"REVOKE ALL ON DATABASE {db} FROM {quote_ident(owner)};")
        for item in props.get("acl") or []:
            if item.get("privilege") not in DATABASE_PRIVILEGES:
                raise PgError(f"the database privilege {item.get('privilege')!r} is not one of {DATABASE_PRIVILEGES}")
            grantee = "PUBLIC" if item["grantee"] == "PUBLIC" else quote_ident(item["grantee"])
            statements.append(
                "GRANT {} ON DATABASE {} TO {}{};".format(
                    item["privilege"], db, grantee, " WITH GRANT OPTION" if item.get("grantable") else ""
                )
            )
    for setting in props.get("settings") or []:
        for item in setting.get("config") or []:
            if setting.get("role"):
                statements.append(
                    "ALTER ROLE {} IN DATABASE {} SET {};".format(quote_ident(setting["role"]), db, setting_sql(item))
                )
            else:
                statements.append(f"ALTER DATABASE {db} SET {setting_sql(item)};")
    return "\n".join(statements)


def create_database_sql(name, props):
    """CREATE DATABASE name with the encoding, locale and owner of props (from template0)."""
    parts = [f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0"]
    if props:
        if props.get("owner"):
            parts.append("OWNER {}".format(quote_ident(props["owner"])))
        if props.get("encoding"):
            parts.append("ENCODING {}".format(quote_literal(props["encoding"])))
        if props.get("collate"):
            parts.append("LC_COLLATE {}".format(quote_literal(props["collate"])))
        if props.get("ctype"):
            parts.append("LC_CTYPE {}".format(quote_literal(props["ctype"])))
        if props.get("locale_provider") == "i" and props.get("icu_locale"):
            parts.append("LOCALE_PROVIDER icu ICU_LOCALE {}".format(quote_literal(props["icu_locale"])))
    return " ".join(parts) + ";"
