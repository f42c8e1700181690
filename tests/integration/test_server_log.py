"""The server's own reason of a failure, read from its log, against a real PostgreSQL 15: a server process of the
restore killed (what the OOM killer does) makes every session of the cluster lose its connection, and pg_restore
says only "server closed the connection unexpectedly". The failure quotes the server's log line that says why,
the live database stays as it was, and nothing of the password shows.

The backup's table has a CHECK constraint that sleeps 2 ms a row when app.slow_restore is on (set on the role for
the restore only), so that the restore's COPY lasts long enough to find its server process and kill it.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from backup_support import conn_args, databases, drop_db, finish_module, run_module, start_module
from helpers import wait_until

DB = "slog_live"
KEY = "server-log-test-key-0123456789abcdef"
ROWS = 3000  # the INSERT below

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="killing a server process of the cluster needs root")


def ready(cluster):
    try:
        return cluster.psql("SELECT 1;").strip() == "1"
    except Exception:  # any failure means not ready yet
        return False


def test_a_server_process_killed_during_the_restore_is_named_from_the_servers_log(pg_cluster, tmp_path):
    pg_cluster.createdb(DB)
    role = pg_cluster.superuser
    backups = tmp_path / "backups"
    try:
        pg_cluster.psql(
            "CREATE FUNCTION slow_ok(int) RETURNS boolean LANGUAGE sql AS $$ SELECT CASE WHEN "
            "current_setting('app.slow_restore', true) = 'on' THEN pg_sleep(0.002) IS NOT NULL ELSE true END $$; "
            "CREATE TABLE order_items (id int PRIMARY KEY CHECK (slow_ok(id)), note text); "
            "INSERT INTO order_items SELECT g, 'item ' || g FROM generate_series(1, 3000) g; "
            "CREATE TABLE written_after (note text);",
            db=DB,
        )
        backup = run_module(
            "postgresql_backup", conn_args(pg_cluster, database=DB, backup_dir=str(backups), backup_key=KEY)
        )
        assert not backup.get("failed"), backup
        pg_cluster.psql("INSERT INTO written_after VALUES ('after the backup');", db=DB)
        pg_cluster.psql(f'ALTER ROLE "{role}" SET app.slow_restore = on;')

        proc = start_module(
            "postgresql_restore",
            conn_args(
                pg_cluster,
                database=DB,
                backup_dir=str(backups),
                backup_key=KEY,
                confirm=True,
                jobs=1,
                server_log=str(pg_cluster.logfile),
            ),
        )
        find = (
            "SELECT pid FROM pg_stat_activity WHERE datname LIKE 'slog\\_live\\_\\_restore\\_%' "
            "AND query LIKE 'COPY %order_items%' LIMIT 1;"
        )
        pids = []

        def copying():
            pids[:] = [int(p) for p in pg_cluster.psql(find).split()]
            return bool(pids) or proc.poll() is not None

        wait_until(copying, timeout=120, message="the restore's COPY of order_items")
        assert pids, f"the restore ended before its COPY was seen: {finish_module(proc)}"
        time.sleep(0.5)
        os.kill(pids[0], signal.SIGKILL)
        result = finish_module(proc)
        wait_until(lambda: ready(pg_cluster), timeout=60, message="the cluster back after its crash recovery")

        assert result["failed"], result
        msg = result["msg"]
        assert "pg_restore failed:" in msg, msg
        assert f"The server's log ({pg_cluster.logfile}) says: LOG: server process (PID {pids[0]})" in msg, msg
        assert "was terminated by signal 9: Killed" in msg, msg
        assert pg_cluster.password not in str(result)
        # nothing lost: the live database is the one from before, with what was written after the backup
        pg_cluster.psql(f'ALTER ROLE "{role}" RESET app.slow_restore;')
        counts = pg_cluster.psql("SELECT count(*) FROM order_items; SELECT note FROM written_after;", db=DB).split()
        assert counts[:2] == [str(ROWS), "after"], counts
    finally:
        wait_until(lambda: ready(pg_cluster), timeout=60, message="the cluster ready")
        pg_cluster.psql(f'ALTER ROLE "{role}" RESET app.slow_restore;')
        for name in databases(pg_cluster, f"{DB}__"):
            drop_db(pg_cluster, name)
        drop_db(pg_cluster, DB)
