"""A backup of a database with a damaged page, against a real PostgreSQL 15: the operator reads the server's
"invalid page" and that it is data corruption (with what to do), not a tooling error - and nothing is written.
The server's log says the same and is not quoted again.

The page is damaged on disk after a CHECKPOINT and the cluster restarted, so that PostgreSQL reads it back.
"""

from __future__ import annotations

import os
import subprocess

from backup_support import conn_args, drop_db, run_module

DB = "cor_live"
KEY = "corrupt-data-test-key-0123456789abcdef"


def restart(cluster):
    argv = [str(cluster.bindir / "pg_ctl"), "-D", str(cluster.datadir), "-m", "fast", "-w", "-t", "60", "restart"]
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    subprocess.run([*argv, "-l", str(cluster.logfile)], capture_output=True, timeout=120, check=True)


def test_a_backup_of_a_damaged_page_names_the_corruption_and_writes_nothing(pg_cluster, tmp_path):
    pg_cluster.createdb(DB)
    try:
        pg_cluster.psql(
            "CREATE TABLE order_items (id int PRIMARY KEY, note text); "
            "INSERT INTO order_items SELECT g, repeat('x', 200) FROM generate_series(1, 5000) g; CHECKPOINT;",
            db=DB,
        )
        relpath = pg_cluster.psql("SELECT pg_relation_filepath('order_items');", db=DB).strip()
        restart(pg_cluster)  # nothing of order_items stays in shared buffers
        with open(pg_cluster.datadir / relpath, "r+b") as heap:
            heap.seek(8192 * 3)  # the header of block 3
            heap.write(b"\xff" * 24)
        backups = tmp_path / "backups"
        result = run_module(
            "postgresql_backup",
            conn_args(
                pg_cluster, database=DB, backup_dir=str(backups), backup_key=KEY, server_log=str(pg_cluster.logfile)
            ),
        )
        assert result["failed"], result
        assert "invalid page in block 3 of relation" in result["msg"], result["msg"]
        assert "invalid snapshot identifier" not in result["msg"]
        assert f"This is data corruption in database {DB} on the server" in result["msg"]
        assert "playbooks/recover_db.yml -e confirm=true" in result["msg"]
        assert "no backup was written" in result["msg"]
        # the server's log says the same as pg_dump's output here: it is not quoted twice
        assert "The server's log" not in result["msg"], result["msg"]
        assert not list(backups.glob("backup_*")), "a backup of the damaged database was left"
    finally:
        drop_db(pg_cluster, DB)
