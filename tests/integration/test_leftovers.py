"""No leftovers, shared locks (issue #12, items 6 and 7) against a real PostgreSQL 15, through ansible and the runner.

- A real restore of a database big enough that pg_restore runs for seconds is stopped mid pg_restore, by
  SIGTERM (the restore cleans up itself) and by kill -9 (the next run cleans up): the scratch database,
  pg_restore and the staging directory are gone, the run says what it removed, and the live database has
  exactly its rows.
- What a killed run left is judged by its lock: a stale scratch database is dropped (its connections cut),
  one a live run holds, or a young one without a lock file, is left - and nothing of another name is touched.
- Retention skips a backup a restore is reading, says so, and removes it on a later run.
- keep_previous drops a kept database only once a backup of it holds its data; backup_info reports them.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from backup_support import (
    conn_args,
    copy_backup,
    databases,
    drop_db,
    finish_module,
    load_shop,
    pids_with,
    run_job,
    run_module,
    start_module,
    table_checksums,
)
from helpers import wait_until

BIG = "lo_big"  # the live database the kill tests restore over
SMALL = "lo_small"  # the tiny shop of the lock and retention tests
BIG_ROWS = 1_500_000
BIG_SQL = """
CREATE TABLE items (id bigint PRIMARY KEY, a text NOT NULL, b text NOT NULL, at timestamptz NOT NULL);
INSERT INTO items SELECT g, md5(g::text), md5((g * 7)::text), '2026-01-01'::timestamptz + g * interval '1 s'
  FROM generate_series(1, 1500000) g;
CREATE INDEX items_a ON items (a);
CREATE TABLE orders (id int PRIMARY KEY, note text);
INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 1000) g;
ANALYZE;
"""
HOLD_LOCK = (
    "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600); "
    "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'pid %d on here since now: a restore\\n' % os.getpid()); "
    "print('held', flush=True); time.sleep(600)"
)


def fingerprint(cluster, db):
    """Row count and a hash over every row of every table: equal means the same rows."""
    out = cluster.psql(
        "SELECT 'items ' || count(*) || ' ' || sum(hashtext(t::text)::bigint) FROM items t "
        "UNION ALL SELECT 'orders ' || count(*) || ' ' || sum(hashtext(o::text)::bigint) FROM orders o;",
        db=db,
    )
    return sorted(out.split("\n")[:2])


def hidden(directory: Path, prefix: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(prefix))


@pytest.fixture(scope="module")
def big(pg_cluster, tmp_path_factory):
    pg_cluster.createdb(BIG)
    pg_cluster.psql(BIG_SQL, db=BIG)
    backups = tmp_path_factory.mktemp("lo_big")
    made = run_module("postgresql_backup", conn_args(pg_cluster, database=BIG, backup_dir=str(backups)))
    assert not made.get("failed"), made
    yield {"dir": backups, "backup": made, "rows": fingerprint(pg_cluster, BIG)}
    for db in databases(pg_cluster, BIG):
        drop_db(pg_cluster, db)


@pytest.fixture(scope="module")
def small(pg_cluster, tmp_path_factory):
    load_shop(pg_cluster, SMALL, fidelity=False, seed=3)
    backups = tmp_path_factory.mktemp("lo_small")
    made = run_module("postgresql_backup", conn_args(pg_cluster, database=SMALL, backup_dir=str(backups)))
    assert not made.get("failed"), made
    yield {"dir": backups, "backup": made}
    for db in databases(pg_cluster, SMALL):
        drop_db(pg_cluster, db)


def _parent(pid):
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def restore_mid_pg_restore(cluster, big_fixture):
    """Start a restore over BIG; return (ansible process, scratch database, module pid, pg_restore pids) once
    pg_restore is copying rows into the scratch database."""
    proc = start_module(
        "postgresql_restore", conn_args(cluster, database=BIG, backup_dir=str(big_fixture["dir"]), confirm=True)
    )
    marker = f"{BIG}__restore_"

    def copying():
        pids = pids_with(marker, "pg_restore")
        if not pids:
            return None
        rows = cluster.psql(
            "SELECT datname FROM pg_stat_activity WHERE starts_with(datname, '" + marker + "') "  # noqa: S608
            "AND state = 'active' AND query LIKE 'COPY public.items%';"
        ).split()
        return (rows[0], pids) if rows else None

    scratch, pids = wait_until(copying, timeout=120, interval=0.05, message="pg_restore copying rows")
    leader = next(pid for pid in pids if _parent(pid) not in pids)
    return proc, scratch, _parent(leader), pids


def alive(pids):
    return [pid for pid in pids if Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)]


def _state(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_sigterm_mid_pg_restore_stops_it_and_drops_the_scratch_database(pg_cluster, big):
    proc, scratch, module_pid, pids = restore_mid_pg_restore(pg_cluster, big)
    staging = hidden(big["dir"], ".tokotani-restore-")
    assert staging and scratch in databases(pg_cluster, BIG), "mid-restore: the scratch database and staging exist"
    os.kill(module_pid, signal.SIGTERM)
    result = finish_module(proc)
    assert result["failed"] and result["interrupted_by"] == "SIGTERM", result
    assert result["msg"] == (
        f"the restore was interrupted by SIGTERM: pg_restore was stopped, the scratch database {scratch} was dropped "
        f"and the live database {BIG} is as it was."
    )
    # All of it was done by the restore itself before it exited.
    assert alive(pids) == [], "pg_restore (and its workers) outlived the restore"
    assert databases(pg_cluster, BIG) == [BIG]
    assert hidden(big["dir"], ".tokotani-restore-") == [] and hidden(big["dir"], ".tokotani-db.") == []
    assert fingerprint(pg_cluster, BIG) == big["rows"]


def test_kill_9_mid_pg_restore_is_cleaned_up_by_the_next_run(pg_cluster, big):
    proc, scratch, module_pid, pids = restore_mid_pg_restore(pg_cluster, big)
    os.kill(module_pid, signal.SIGKILL)
    result = finish_module(proc)
    assert result["failed"], result
    # What a kill -9 leaves: the scratch database, the staging directory and their (free) lock files.
    staging = hidden(big["dir"], ".tokotani-restore-")
    assert scratch in databases(pg_cluster, BIG) and len(staging) == 2, staging  # the directory and its .lock
    assert len(hidden(big["dir"], ".tokotani-db.")) == 1
    # pg_restore runs with --pdeathsig KILL: it does not go on restoring without its parent.
    wait_until(lambda: not alive(pids), timeout=30, message="pg_restore died with the killed restore")

    after = run_module("postgresql_backup", conn_args(pg_cluster, database=BIG, backup_dir=str(big["dir"])))
    assert not after.get("failed"), after
    removed = {(i["kind"], i["name"]): i for i in after["leftovers"] if i["action"] == "removed"}
    assert ("scratch_database", scratch) in removed, after["leftovers"]
    assert (
        "its run ended without removing it (no process holds its lock)"
        in removed[("scratch_database", scratch)]["reason"]
    )
    directory = next(name for name in staging if not name.endswith(".lock"))
    assert ("work_directory", directory) in removed
    assert databases(pg_cluster, BIG) == [BIG]
    assert hidden(big["dir"], ".tokotani-restore-") == [] and hidden(big["dir"], ".tokotani-db.") == []
    assert pids_with(scratch, "pg_restore") == []
    assert fingerprint(pg_cluster, BIG) == big["rows"]
    assert after["rows"] == BIG_ROWS + 1000, "the backup after the cleanup holds every row"


def run_verify(cluster, tmp_path, backup_dir):
    config = {
        "status_file": str(tmp_path / "verify-status.json"),
        "restore": {
            "source_database": SMALL,
            "backup_dir": str(backup_dir),
            "login_host": cluster.host,
            "login_port": cluster.port,
            "login_user": cluster.superuser,
        },
    }
    proc = run_job("verify", config, tmp_path / "verify.json", {"PGPASSWORD": cluster.password})
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def test_stale_scratch_databases_are_judged_by_their_lock_and_connections_are_cut(pg_cluster, small, tmp_path):
    backup_dir = small["dir"]
    now = datetime.datetime.now(datetime.UTC)

    def name(hours_ago, suffix="__restore_"):
        return f"{SMALL}{suffix}{(now - datetime.timedelta(hours=hours_ago)).strftime('%Y%m%d_%H%M%S')}"

    in_use, killed, old, young = name(1), name(2), name(72), name(3)
    verify_killed = name(4, "__verify_")
    untouchable = [f"{SMALL}__pre_restore_20200101_000000", f"{SMALL}x__restore_20200101_000000"]
    for db in (in_use, killed, old, young, verify_killed, *untouchable):
        pg_cluster.createdb(db)

    def lock_file(db):
        return backup_dir / f".tokotani-db.{db}.lock"

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock_file(in_use))], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    lock_file(killed).write_text("pid 1 on here since then: a restore killed with -9\n")
    lock_file(verify_killed).write_text("")
    # An orphaned client of the killed restore, still connected to its scratch database.
    orphan = subprocess.Popen(
        [str(pg_cluster.bindir / "psql"), "-X", "-d", killed, "-c", "SELECT pg_sleep(600);"],
        env=pg_cluster.env(killed),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(
        lambda: (
            pg_cluster.psql(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{killed}';").strip()  # noqa: S608
            == "1"
        ),
        message="the orphan is connected",
    )
    try:
        rc, result, stderr = run_verify(pg_cluster, tmp_path, backup_dir)
    finally:
        holder.kill()
        holder.wait()
    assert rc == 0, stderr
    report = {item["name"]: item for item in result["leftovers"]}
    assert report[killed]["action"] == "removed" and "1 connection(s) to it" in report[killed]["reason"]
    assert report[old]["action"] == "removed" and "no lock file and is older than 24 hours" in report[old]["reason"]
    assert report[verify_killed]["action"] == "removed"
    assert report[in_use]["action"] == "left" and report[in_use]["holders"] == [
        f"pid {holder.pid} on here since now: a restore"
    ]
    assert report[young]["action"] == "left" and "younger than 24 hours" in report[young]["reason"]
    assert f"dropped the scratch database {killed} of an interrupted run" in stderr
    assert orphan.wait(timeout=30) != 0 and "terminat" in orphan.stderr.read()
    assert databases(pg_cluster, SMALL) == sorted([SMALL, in_use, young, *untouchable]), "nothing else was dropped"
    assert not lock_file(killed).exists() and lock_file(in_use).exists()
    assert result["result"] == "pass", "the verification itself ran on"
    for db in (in_use, young, *untouchable):
        drop_db(pg_cluster, db)


def test_retention_skips_a_backup_a_restore_reads_and_removes_it_on_a_later_run(pg_cluster, small, tmp_path):
    now = datetime.datetime.now(datetime.UTC)
    old_when = now - datetime.timedelta(days=20)
    old = old_when.strftime("backup_%Y-%m-%d_%H-%M-%S")
    copy_backup(small["dir"], small["backup"]["name"], tmp_path, old, old_when.strftime("%Y-%m-%dT%H:%M:%S.000000Z"))
    copy_backup(
        small["dir"],
        small["backup"]["name"],
        tmp_path,
        now.strftime("backup_%Y-%m-%d_%H-%M-%S"),
        now.strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
    )
    # The restore's assertion waits until the test opens the gate (a file the server stats): it holds its
    # shared lock on the backup meanwhile, as any restore does while it reads.
    gate = pg_cluster.datadir / "lo_gate"
    gate.unlink(missing_ok=True)
    wait_sql = (
        "WITH RECURSIVE g(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM g WHERE n < 1200 "  # noqa: S608
        f"AND (pg_stat_file('{gate}', true)).size IS NULL AND (SELECT true FROM pg_sleep(0.1 + 0 * n))) "
        "SELECT max(n) >= 0 FROM g"
    )
    target = f"{SMALL}_old_copy"
    reader = start_module(
        "postgresql_restore",
        conn_args(
            pg_cluster,
            database=target,
            mode="into",
            backup=str(tmp_path / f"{old}.dir"),
            confirm=True,
            assertions=[{"name": "gate", "sql": wait_sql}],
        ),
    )
    try:

        def reading():
            if reader.poll() is not None:
                raise AssertionError(f"the restore ended early: {finish_module(reader)}")
            waiting = "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%pg_stat_file%';"
            return pg_cluster.psql(waiting).strip() == "2"  # the assertion, and this query

        wait_until(reading, timeout=120, message="the restore is reading")
        during = run_module(
            "postgresql_backup",
            conn_args(pg_cluster, database=SMALL, backup_dir=str(tmp_path), keep_days=14, keep_min=1),
        )
    finally:
        gate.write_text("open")
    assert not during.get("failed"), during
    assert during["pruned"] == [] and [s["name"] for s in during["retention"]["in_use"]] == [old]
    assert during["retention"]["in_use"][0]["in_use_by"].endswith(f": restore of {target}")
    assert any(
        f"retention skipped {old} (older than 14 days): it is in use by pid " in w and "a later run removes it" in w
        for w in during["warnings"]
    ), during["warnings"]
    assert (tmp_path / f"{old}.dir").is_dir() and (tmp_path / f"{old}.manifest.json").is_file()
    restored = finish_module(reader)
    assert not restored.get("failed"), restored
    assert table_checksums(pg_cluster, target) == table_checksums(pg_cluster, SMALL), "the reader read it whole"

    later = run_module(
        "postgresql_backup", conn_args(pg_cluster, database=SMALL, backup_dir=str(tmp_path), keep_days=14, keep_min=1)
    )
    assert not later.get("failed"), later
    assert [p["name"] for p in later["pruned"]] == [old] and later["retention"]["in_use"] == []
    assert not (tmp_path / f"{old}.dir").exists() and hidden(tmp_path, ".tokotani-use.") == []
    drop_db(pg_cluster, target)
    gate.unlink()


def test_keep_previous_drops_a_kept_database_only_once_a_backup_holds_it(pg_cluster, tmp_path):
    db = "lo_kp"
    load_shop(pg_cluster, db, fidelity=False, seed=4)
    try:
        first = run_module("postgresql_backup", conn_args(pg_cluster, database=db, backup_dir=str(tmp_path)))
        assert not first.get("failed"), first
        # Written after the backup: only the database the first restore sets aside holds it.
        pg_cluster.psql("CREATE TABLE after_backup (note text); INSERT INTO after_backup VALUES ('only here');", db=db)
        kept = []
        for _restore in range(3):
            result = run_module(
                "postgresql_restore", conn_args(pg_cluster, database=db, backup_dir=str(tmp_path), confirm=True)
            )
            assert not result.get("failed"), result
            kept.append(result["previous_database"])
            # A restore drops nothing no backup holds: every kept database stays.
            assert all(k["action"] == "kept" for k in result["kept_databases"]), result["kept_databases"]
        assert sorted(databases(pg_cluster, db + "__pre_restore_")) == sorted(kept)
        last = result["kept_databases"][-1]
        assert last["name"] == kept[0] and last["reason"] == (
            f"beyond the newest 2; no backup holds its data yet; the next backup run of {db} backs it up, then drops it"
        )

        info = run_module(
            "backup_info", conn_args(pg_cluster, backup_dir=str(tmp_path), database=db, kept_databases=True)
        )
        assert not info.get("failed"), info
        assert [(k["name"], k["action"]) for k in info["kept_databases"]] == [
            (kept[2], "kept"),
            (kept[1], "kept"),
            (kept[0], "would_drop"),
        ]

        backup = run_module("postgresql_backup", conn_args(pg_cluster, database=db, backup_dir=str(tmp_path)))
        assert not backup.get("failed"), backup
        dropped = [k for k in backup["kept_databases"] if k["action"] == "dropped"]
        assert [k["name"] for k in dropped] == [kept[0]] and dropped[0]["backup"]
        assert (
            dropped[0]["reason"]
            == f"beyond the newest 2; no backup holds its data yet; backed up first as {dropped[0]['backup']}"
        )
        assert sorted(databases(pg_cluster, db + "__pre_restore_")) == sorted(kept[1:])
        # Nothing was lost: the archive restores with what only the dropped database held.
        archive = json.loads((tmp_path / f"{dropped[0]['backup']}.manifest.json").read_text())
        assert archive["database"] == kept[0] and archive["label"] == "keep_previous archive"
        back = run_module(
            "postgresql_restore",
            conn_args(
                pg_cluster,
                database=f"{db}_salvage",
                mode="into",
                backup=str(tmp_path / archive["data"]),
                source_database=kept[0],
                confirm=True,
            ),
        )
        assert not back.get("failed"), back
        assert pg_cluster.psql("SELECT note FROM after_backup;", db=f"{db}_salvage").strip() == "only here"

        # An operator's backup of a kept database lets a restore drop it - once it passes its checksums.
        own = run_module("postgresql_backup", conn_args(pg_cluster, database=kept[1], backup_dir=str(tmp_path)))
        assert not own.get("failed"), own
        damaged = max(Path(own["path"]).glob("*.zst"), key=lambda p: p.stat().st_size)
        raw = bytearray(damaged.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        damaged.write_bytes(bytes(raw))
        args = conn_args(pg_cluster, database=db, backup_dir=str(tmp_path), confirm=True, keep_previous=1)
        restored = run_module("postgresql_restore", args)
        assert not restored.get("failed"), restored
        decision = {k["name"]: k for k in restored["kept_databases"]}[kept[1]]
        assert (
            decision["action"] == "kept"
            and "but that backup fails its checksums (checksum mismatch" in decision["reason"]
        )
        assert kept[1] in databases(pg_cluster, db + "__pre_restore_")
        # The backup run backs it up again (its own backup is damaged), then drops it.
        backup = run_module(
            "postgresql_backup", conn_args(pg_cluster, database=db, backup_dir=str(tmp_path), keep_previous=1)
        )
        assert not backup.get("failed"), backup
        decision = {k["name"]: k for k in backup["kept_databases"]}[kept[1]]
        assert decision["action"] == "dropped" and decision["backup"] not in (None, own["name"]), decision
        assert databases(pg_cluster, db + "__pre_restore_") == [restored["previous_database"]]
    finally:
        for name in databases(pg_cluster, db):
            drop_db(pg_cluster, name)
