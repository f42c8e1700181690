"""Unit tests of the PostgreSQL engines: argv building, versions, SQL generation, psql parsing (run is mocked)."""

from __future__ import annotations

import os
import pwd
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.tokotani.dr.plugins.module_utils import pg_backup, pg_cli, pg_restore  # noqa: E402
from ansible_collections.tokotani.dr.plugins.module_utils.pg_cli import Connection, PgError  # noqa: E402


def engine(**params):
    base = {"database": "shop", "backup_dir": "/srv/backups", "jobs": 2, "keep_days": 14, "keep_min": 3}
    base.update(params)
    eng = pg_backup.BackupEngine(Connection(host="db", port=5432, user="postgres", password="s3cret"), base)
    eng._validate()
    eng.pg_dump = "/usr/lib/postgresql/15/bin/pg_dump"
    eng.compressor = "/usr/bin/" + ("zstd" if eng.compression == "zstd" else "gzip")
    return eng


def test_default_is_directory_zstd_with_parallel_uncompressed_pg_dump():
    eng = engine()
    assert (eng.format, eng.compression, eng.ext) == ("directory", "zstd", "dir")
    argv = eng._dump_argv("00000003-0000001B-1", "/srv/backups/x.dir.partial")
    assert argv == [
        "/usr/lib/postgresql/15/bin/pg_dump",
        "--no-password",
        "--snapshot=00000003-0000001B-1",
        "-Fd",
        "-j",
        "2",
        "-f",
        "/srv/backups/x.dir.partial",
        "-Z",
        "0",
        "-d",
        "dbname='shop'",
    ]


def test_plain_gzip_pipes_to_gzip_level_6():
    eng = engine(format="plain")
    assert eng.compression == "gzip" and eng.ext == "sql.gz"
    argv = eng._dump_argv("snap", "/t")
    assert "-Fp" in argv and "-f" not in argv
    assert eng._compressor_argv() == ["/usr/bin/gzip", "-c", "-6"]
    eng.level = 1
    assert eng._compressor_argv() == ["/usr/bin/gzip", "-c", "-1"]


def test_plain_zstd_uses_the_text_profile_with_threads():
    eng = engine(format="plain", compression="zstd", jobs=4)
    assert eng._compressor_argv() == ["/usr/bin/zstd", "-q", "-c", "-T4", "-3", "--zstd=mml=7"]


def test_custom_and_directory_gzip_use_pg_dumps_own_compression():
    argv = engine(format="custom")._dump_argv("s", "/t.dump")
    assert argv[argv.index("-Fc") :] == ["-Fc", "-f", "/t.dump", "-Z", "6", "-d", "dbname='shop'"]
    argv = engine(format="directory", compression="gzip", compression_level=1, jobs=3)._dump_argv("s", "/t.dir")
    assert argv[argv.index("-j") : argv.index("-j") + 2] == ["-j", "3"] and argv[argv.index("-Z") + 1] == "1"
    argv = engine(format="plain", compression="none")._dump_argv("s", "/t.sql")
    assert argv[-4:] == ["-f", "/t.sql", "-d", "dbname='shop'"]


def test_password_never_in_argv_but_in_env():
    eng = engine()
    argv = eng._dump_argv("s", "/t")
    assert not any("s3cret" in part for part in argv)
    env = eng.conn.env()
    assert env["PGPASSWORD"] == "s3cret" and env["PGHOST"] == "db" and env["PGPORT"] == "5432"
    assert env["PGAPPNAME"] == "tokotani.dr"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"format": "custom", "compression": "zstd"}, "cannot be compressed with zstd"),
        ({"format": "tar"}, "format must be one of"),
        ({"compression_level": 42}, "between 0 and 19"),
        ({"format": "plain", "compression_level": 10}, "between 0 and 9"),
        ({"keep_min": 0}, "keep_min must be at least 1"),
    ],
)
def test_invalid_options(params, message):
    with pytest.raises(PgError, match=message):
        engine(**params)


def test_database_names_are_safe_in_conninfo_and_sql():
    assert pg_cli.conninfo_dbname("shop") == "dbname='shop'"
    assert pg_cli.conninfo_dbname("a'b\\c d=e") == "dbname='a\\'b\\\\c d=e'"
    assert pg_cli.quote_ident('we"ird') == '"we""ird"'
    assert pg_cli.quote_literal("it's") == "'it''s'"


def test_count_sql_quotes_identifiers():
    sql = pg_backup.count_sql([{"schema": "toko_δ", "name": 'pel"anggan'}])
    assert 'FROM "toko_δ"."pel""anggan"' in sql and "'pel\"anggan'::text" in sql


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)", (15, 18)),
        ("pg_restore (PostgreSQL) 16.2", (16, 2)),
        ("psql (PostgreSQL) 17devel", (17, 0)),
        ("nonsense", None),
    ],
)
def test_parse_tool_version(text, version):
    assert pg_cli.parse_tool_version(text) == version


def test_older_pg_dump_names_the_package_to_install():
    with pytest.raises(PgError) as err:
        pg_cli.check_tool_not_older("pg_dump", "/usr/bin/pg_dump", (15, 4), 160002, "16.2")
    assert "apt-get install postgresql-client-16" in err.value.msg
    assert "/usr/lib/postgresql/16/bin" in err.value.msg
    pg_cli.check_tool_not_older("pg_dump", "/usr/bin/pg_dump", (16, 0), 150018, "15.18")


def test_find_tool_in_bindir(tmp_path):
    tool = tmp_path / "pg_dump"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert pg_cli.find_tool("pg_dump", str(tmp_path)) == str(tool)
    with pytest.raises(PgError, match="pg_restore not found in pg_bindir"):
        pg_cli.find_tool("pg_restore", str(tmp_path))


def test_psql_query_json_and_error_messages(monkeypatch):
    calls = []

    def fake_run(argv, conn=None, input_text=None, timeout=None, env_extra=None):
        calls.append((argv, input_text))
        if "fail" in input_text:
            return (
                2,
                "",
                'psql: error: connection to server at "db" (10.0.0.1), port 5432 failed: FATAL:  '
                'password authentication failed for user "postgres" s3cret',
            )
        return 0, '{"a": 1}\n\n{"a": 2}\n', ""

    monkeypatch.setattr(pg_cli, "run", fake_run)
    psql = pg_cli.Psql(Connection(host="db", port=5432, user="postgres", password="s3cret"), path="/bin/psql")
    assert psql.query_json("SELECT 1", "shop", variables={"dbname": "x"}) == [{"a": 1}, {"a": 2}]
    argv = calls[0][0]
    assert argv[:9] == ["/bin/psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", "dbname='shop'"]
    assert argv[9:11] == ["-v", "dbname=x"]
    with pytest.raises(PgError) as err:
        psql.query_json("fail", "shop")
    assert err.value.msg.startswith("authentication failed for db port 5432 as postgres")
    assert "s3cret" not in err.value.stderr


def test_properties_sql_carries_owner_acl_settings_comment_limit():
    props = {
        "owner": "app",
        "connection_limit": 50,
        "comment": "Toko's db",
        "acl_is_default": False,
        "acl": [
            {"grantee": "app", "privilege": "CONNECT", "grantable": False},
            {"grantee": "reader", "privilege": "CONNECT", "grantable": True},
        ],
        "settings": [
            {"role": None, "config": ['search_path="$user", public', "statement_timeout=5min"]},
            {"role": "reader", "config": ["work_mem=8MB"]},
        ],
    }
    sql = pg_cli.properties_sql("shop__restore", props)
    assert 'ALTER DATABASE "shop__restore" OWNER TO "app";' in sql
    assert 'ALTER DATABASE "shop__restore" CONNECTION LIMIT 50;' in sql
    assert "COMMENT ON DATABASE \"shop__restore\" IS 'Toko''s db';" in sql
    assert 'REVOKE ALL ON DATABASE "shop__restore" FROM PUBLIC;' in sql
    assert 'GRANT CONNECT ON DATABASE "shop__restore" TO "reader" WITH GRANT OPTION;' in sql
    assert """ALTER DATABASE "shop__restore" SET search_path TO '$user', 'public';""" in sql
    assert "ALTER DATABASE \"shop__restore\" SET statement_timeout TO '5min';" in sql
    assert 'ALTER ROLE "reader" IN DATABASE "shop__restore" SET work_mem TO \'8MB\';' in sql
    assert pg_cli.properties_sql("x", {"owner": None, "connection_limit": -1, "acl_is_default": True}) == ""


def test_create_database_sql():
    sql = pg_cli.create_database_sql(
        "shop__restore", {"owner": "app", "encoding": "UTF8", "collate": "C.UTF-8", "ctype": "C.UTF-8"}
    )
    assert sql == (
        'CREATE DATABASE "shop__restore" TEMPLATE template0 OWNER "app" ENCODING \'UTF8\' '
        "LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8';"
    )
    icu = pg_cli.create_database_sql("x", {"locale_provider": "i", "icu_locale": "id-ID"})
    assert "LOCALE_PROVIDER icu ICU_LOCALE 'id-ID'" in icu


def test_restore_names_fit_postgres_limits():
    long_name = "a" * 60
    name = pg_restore.derived_name(long_name, "__pre_restore_20260105_020000")
    assert len(name.encode()) <= 63 and name.endswith("__pre_restore_20260105_020000")
    assert pg_restore.derived_name("shop", "__restore_20260105_020000") == "shop__restore_20260105_020000"
    multibyte = pg_restore.derived_name("δ" * 40, "__restore_20260105_020000")
    assert len(multibyte.encode()) <= 63
    multibyte.encode().decode()


def test_os_user_switches_only_when_needed_and_only_as_root():
    me = pwd.getpwuid(os.geteuid()).pw_name
    assert Connection(os_user=None).process_identity() == {}
    assert Connection(os_user=me).process_identity() == {}
    assert "HOME" not in Connection(os_user=me).env() or Connection(os_user=me).env()["HOME"] == os.environ.get("HOME")
    with pytest.raises(PgError, match="'tokotani-nobody-such' does not exist on this host"):
        Connection(os_user="tokotani-nobody-such").process_identity()
    other = "nobody" if me != "nobody" else "root"
    if os.geteuid() == 0:
        entry = pwd.getpwnam(other)
        assert Connection(os_user=other).process_identity() == {
            "user": entry.pw_uid,
            "group": entry.pw_gid,
            "extra_groups": [],
            "cwd": "/",
        }
        assert Connection(os_user=other).env()["HOME"] == entry.pw_dir
    else:
        with pytest.raises(PgError, match="needs root"):
            Connection(os_user=other).process_identity()


# --------------------------------------------------------------------------- the first real error

PARALLEL_DUMP_STDERR = """\
pg_dump: error: could not set snapshot: ERROR:  invalid snapshot identifier: "00000003-0000001B-1"
pg_dump: error: Dumping the contents of table "order_items" failed: PQgetResult() failed.
pg_dump: detail: Error message from server: ERROR:  invalid page in block 100 of relation base/16384/16410
pg_dump: detail: Command was: COPY public.order_items (id, order_id) TO stdout;
pg_dump: error: a worker process died unexpectedly
"""


def test_a_corrupt_page_is_named_before_the_workers_that_died_of_it():
    line, corrupt = pg_cli.first_real_error(PARALLEL_DUMP_STDERR)
    assert corrupt is True
    assert (
        line
        == "pg_dump: detail: Error message from server: ERROR:  invalid page in block 100 of relation base/16384/16410"
    )
    assert pg_cli.corruption_advice("shop").startswith("This is data corruption in database shop on the server")


def test_the_servers_message_comes_before_the_tools_summary():
    stderr = (
        'pg_restore: error: could not execute query: ERROR:  relation "x" already exists\n'
        "pg_restore: warning: errors ignored on restore: 1\n"
    )
    assert pg_cli.first_real_error(stderr) == (
        'pg_restore: error: could not execute query: ERROR:  relation "x" already exists',
        False,
    )
    assert pg_cli.first_real_error("pg_dump: error: invalid snapshot identifier\n") == (
        "pg_dump: error: invalid snapshot identifier",
        False,
    )
    assert pg_cli.first_real_error("") == ("", False)


# --------------------------------------------------------------------------- the server's log

CRASH_LOG = """\
2026-12-04 01:00:00.100 UTC [900] LOG:  statement: SELECT 'ERROR:  not a level'
2026-12-04 01:00:01.000 UTC [901] postgres@shop ERROR:  canceling statement due to user request
2026-12-04 01:00:02.000 UTC [1] LOG:  server process (PID 1234) was terminated by signal 9: Killed
2026-12-04 01:00:02.000 UTC [1] DETAIL:  Failed process was running: COPY public.order_items (id) FROM stdin;
2026-12-04 01:00:02.001 UTC [1] LOG:  terminating any other active server processes
2026-12-04 01:00:02.300 UTC [1300] postgres@shop FATAL:  the database system is in recovery mode
"""


def test_the_log_names_the_postmasters_reason_not_its_consequences():
    line, corrupt = pg_cli.log_cause(CRASH_LOG.splitlines())
    assert line == "LOG: server process (PID 1234) was terminated by signal 9: Killed"
    assert corrupt is False


def test_the_log_puts_damaged_data_and_panics_first_and_cuts_long_lines():
    lines = [
        '2026-12-04 [7] ERROR:  duplicate key value violates unique constraint "orders_pkey"',
        '2026-12-04 [8] PANIC:  could not write to file "pg_wal/xlogtemp.8": No space left on device',
        "2026-12-04 [9] ERROR:  invalid page in block 3 of relation base/16384/16410",
    ]
    assert pg_cli.log_cause(lines) == ("ERROR: invalid page in block 3 of relation base/16384/16410", True)
    assert pg_cli.log_cause(lines[:2])[0].startswith("PANIC: could not write to file")
    assert pg_cli.log_cause(lines[:1])[0].startswith("ERROR: duplicate key value")
    long_line = "x [1] ERROR:  " + "y" * 5000
    assert len(pg_cli.log_cause([long_line])[0]) == pg_cli.SERVER_LOG_LINE
    assert pg_cli.log_cause(["no level here", "\x00\xff junk"]) == (None, False)


class _NoQuery:
    conn = None

    def query_json(self, *args, **kwargs):
        raise AssertionError("only a superuser login with the logging collector on asks the server")


def test_the_server_log_is_found_given_or_as_debian_names_it_and_read_from_the_mark(tmp_path, monkeypatch):
    monkeypatch.setattr(pg_cli, "DEBIAN_LOG_DIR", str(tmp_path))
    debian = tmp_path / "postgresql-15-main.log"
    debian.write_text("2026-12-04 [5] ERROR:  before the tool started, " + "x" * 200 + "\n")
    info = {"cluster_name": "15/main", "logging_collector": "off", "is_superuser": False}
    log = pg_cli.ServerLog.locate(_NoQuery(), info)
    assert log.path == str(debian)
    assert log.cause() == (None, False)  # what was there before the mark is not this failure's
    with debian.open("a") as handle:
        handle.write(CRASH_LOG)
    assert log.cause()[0].endswith("was terminated by signal 9: Killed")
    debian.write_text("2026-12-04 [6] FATAL:  terminating connection due to administrator command\n")  # rotated
    assert log.cause()[0] == "FATAL: terminating connection due to administrator command"

    # a crafted cluster_name never leaves the Debian log directory
    for name in ("../../etc/15/main", "15/../../etc/passwd", "15/main/../x", ""):
        assert pg_cli.ServerLog.locate(_NoQuery(), {**info, "cluster_name": name}) is None

    warnings = []
    assert pg_cli.ServerLog.locate(_NoQuery(), info, str(tmp_path / "missing.log"), warnings) is None
    assert warnings == [
        f"server_log {tmp_path / 'missing.log'} cannot be read here: failures will not quote the server's own log"
    ]


def test_a_logged_cause_the_tools_output_already_carries_is_not_repeated(tmp_path):
    path = tmp_path / "postgresql.log"
    path.write_text("")
    log = pg_cli.ServerLog(str(path))
    log.mark()
    path.write_text('2026-12-04 [7] postgres@shop ERROR:  relation "x" already exists\n')
    stderr = 'pg_restore: error: could not execute query: ERROR:  relation "x" already exists\n'
    assert pg_cli.explain_failure(stderr, log) == (stderr.strip(), False, "")
    lost = "pg_restore: error: could not execute query: server closed the connection unexpectedly\n"
    path.write_text(CRASH_LOG)
    first, corrupt, logged = pg_cli.explain_failure(lost, log)
    assert (first, corrupt) == (lost.strip(), False)
    assert logged == (
        f" The server's log ({path}) says: LOG: server process (PID 1234) was terminated by signal 9: Killed."
    )
    # the quoted line goes through the connection's redaction (the login password masked)
    path.write_text("2026-12-04 [8] postgres@shop FATAL:  password authentication failed: s3cret\n")
    masked = Connection(host="db", port=5432, user="postgres", password="s3cret").redact
    assert pg_cli.explain_failure(lost, log, masked)[2] == (
        f" The server's log ({path}) says: FATAL: password authentication failed: ********."
    )


def test_a_lost_connection_waits_briefly_for_the_postmasters_line(tmp_path, monkeypatch):
    """The session sees its server gone before the postmaster has reaped the process and logged why:
    the log is read again until the line is there (bounded), and not at all for an ordinary error."""
    path = tmp_path / "postgresql.log"
    path.write_text("")
    log = pg_cli.ServerLog(str(path))
    log.mark()
    writer = threading.Timer(0.3, lambda: path.write_text(CRASH_LOG))
    writer.start()
    lost = 'pg_restore: error: COPY failed for table "t": server closed the connection unexpectedly\n'
    try:
        logged = pg_cli.explain_failure(lost, log)[2]
    finally:
        writer.join()
    assert logged.endswith("says: LOG: server process (PID 1234) was terminated by signal 9: Killed.")

    path.write_text("")
    log.mark()
    reads = []
    real_read = log._read_cause
    monkeypatch.setattr(log, "_read_cause", lambda: reads.append(1) or real_read())
    monkeypatch.setattr(pg_cli, "SERVER_LOG_WAIT", 0.3)
    assert pg_cli.explain_failure(lost, log)[2] == ""  # nothing logged: given up after the wait
    assert len(reads) > 1
    reads.clear()
    ordinary = 'pg_restore: error: could not execute query: ERROR:  relation "x" already exists\n'
    assert pg_cli.explain_failure(ordinary, log)[2] == ""
    assert len(reads) == 1  # an ordinary error reads the log once, without waiting
