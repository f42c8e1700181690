"""One recovery at a time (tokotani.dr.recovery_run), the compare-and-swap of the restore, and the backup
job standing aside during a recovery - against a real PostgreSQL 15, through ansible.

Every test asserts the message an operator reads and the state of every database afterwards.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from backup_support import ROOT, conn_args, databases, drop_db, load_shop, run_job, run_module

DB = "rr_live"
KEY = "recovery-run-test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def shop(pg_cluster):
    load_shop(pg_cluster, DB, fidelity=False, seed=23)
    yield DB
    for db in databases(pg_cluster, "rr_"):
        drop_db(pg_cluster, db)


def oid(cluster, name):
    out = cluster.psql(f"SELECT oid FROM pg_database WHERE datname = '{name}';").strip()  # noqa: S608
    return int(out) if out else None


def rows(cluster, db=DB):
    return int(cluster.psql("SELECT count(*) FROM order_items;", db=db).strip())


def recovery(cluster, state_dir, **args):
    return run_module("recovery_run", conn_args(cluster, database=DB, state_dir=str(state_dir), **args))


def record(state_dir):
    return json.loads((Path(state_dir) / f".tokotani-recovery.{DB}.json").read_text())


def test_a_second_recovery_refuses_at_once_naming_the_first(pg_cluster, shop, tmp_path):
    first = recovery(pg_cluster, tmp_path, state="started", step="identify", operator="alice", controller="ctl-a")
    assert not first.get("failed"), first
    assert first["live_oid"] == oid(pg_cluster, DB)
    second = recovery(pg_cluster, tmp_path, state="started", step="identify", operator="bob", controller="ctl-b")
    assert second["failed"]
    assert second["msg"].startswith(
        f"another recovery of {DB} is in progress: run {first['run_id']} of recover_db by alice from ctl-a, started "
    )
    assert "at step identify since" in second["msg"]
    assert "Nothing was changed and the application was not touched." in second["msg"]
    assert second["holder"]["run_id"] == first["run_id"]
    assert record(tmp_path)["run_id"] == first["run_id"], "the refused run changed the record"

    # break_lock takes over from a run that is only quiet (no restore of it runs), saying so
    third = recovery(pg_cluster, tmp_path, state="started", step="identify", operator="carol", break_lock=True)
    assert not third.get("failed"), third
    assert third["previous_run"]["why_stale"] == "break_lock was set"
    assert third["previous_run"]["left_behind"] == [
        f"the live database {DB} is the one it started from (OID {first['live_oid']}): untouched"
    ]
    # ... and the run that was taken over stops at its next step instead of acting on databases it no longer owns
    late = recovery(pg_cluster, tmp_path, state="step", run_id=first["run_id"], step="stop")
    assert late["failed"]
    assert late["msg"].startswith(
        f"this run ({first['run_id']}) no longer holds the recovery of {DB}: it is now held by run "
    )
    assert "this run stops here and changes nothing more" in late["msg"]


def test_a_dead_run_is_recognised_and_what_it_left_is_checked(pg_cluster, shop, tmp_path):
    scratch = f"{DB}__restore_20260105_020000"
    pg_cluster.createdb(scratch)
    try:
        dead = recovery(pg_cluster, tmp_path, state="started", step="identify", operator="alice")
        assert not dead.get("failed"), dead
        moved = recovery(
            pg_cluster,
            tmp_path,
            state="step",
            run_id=dead["run_id"],
            step="restore",
            databases={"scratch": scratch, "previous": f"{DB}__pre_restore_x"},
            check_databases=False,
        )
        assert not moved.get("failed"), moved
        time.sleep(2.2)
        status = recovery(pg_cluster, tmp_path, state="status", stale_after=2)
        assert status["stale"] is True and status["in_progress"] is False
        assert status["msg"].startswith(f"the recovery run {dead['run_id']} of recover_db by alice")
        assert re.search(r"never finished \(no step was recorded for \d+ s \(more than 2 s\)", status["msg"]), status
        taken = recovery(pg_cluster, tmp_path, state="started", step="identify", stale_after=2)
        assert not taken.get("failed"), taken
        assert taken["previous_run"]["left_behind"] == [
            f"the live database {DB} is the one it started from (OID {dead['live_oid']}): untouched",
            f"its scratch database {scratch} is still there",
            f"its previous database {DB}__pre_restore_x is not there",
        ]
        assert any("never finished" in w for w in taken.get("warnings", [])), taken
    finally:
        drop_db(pg_cluster, scratch)


HOLD = (
    "import sys, time; sys.path.insert(0, sys.argv[1]); "
    "from ansible_collections.tokotani.dr.plugins.module_utils import leftovers; "
    "lock = leftovers.claim_database(sys.argv[2], sys.argv[3], f'restore of {sys.argv[4]} into {sys.argv[3]}'); "
    "print('held', flush=True); time.sleep(120)"
)


def test_break_lock_never_takes_over_while_the_restore_still_runs(pg_cluster, shop, tmp_path):
    first = recovery(pg_cluster, tmp_path, state="started", step="restore", stale_after=1)
    assert not first.get("failed"), first
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(ROOT / ".collections"), str(tmp_path), f"{DB}__restore_1", DB],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        time.sleep(1.5)
        second = recovery(pg_cluster, tmp_path, state="started", step="identify", stale_after=1, break_lock=True)
        assert second["failed"]
        assert "it is alive because a restore of its database is running on this server (pid " in second["msg"]
        assert f"restore of {DB} into {DB}__restore_1" in second["msg"]
    finally:
        holder.kill()
        holder.wait()
    third = recovery(pg_cluster, tmp_path, state="started", step="identify", stale_after=1)
    assert not third.get("failed"), third


def test_a_crafted_record_is_set_aside_never_trusted(pg_cluster, shop, tmp_path):
    path = tmp_path / f".tokotani-recovery.{DB}.json"
    path.write_text(
        json.dumps(
            {
                "schema": 1,
                "state": "running",
                "run_id": "x'; DROP DATABASE rr_live; --",
                "database": DB,
                "databases": {"previous": "rr_live"},
            }
        )
    )
    result = recovery(pg_cluster, tmp_path, state="started", step="identify")
    assert not result.get("failed"), result
    assert any(
        "is not one this collection wrote (" in w
        and "the recovery record's run_id \"x'; DROP DATABASE rr_live; --\" is not of the allowed form" in w
        for w in result["warnings"]
    ), result["warnings"]
    assert [p.name for p in tmp_path.glob("*.invalid-*")], "the crafted record was not kept aside"
    assert oid(pg_cluster, DB) == result["live_oid"], "the live database was touched"


def test_the_closed_run_returns_the_timeline_of_every_step(pg_cluster, shop, tmp_path):
    run = recovery(pg_cluster, tmp_path, state="started", step="identify")
    for step in ("stop", "restore"):
        assert not recovery(pg_cluster, tmp_path, state="step", run_id=run["run_id"], step=step).get("failed")
    closed = recovery(pg_cluster, tmp_path, state="finished", run_id=run["run_id"], outcome="recovered")
    assert not closed.get("failed"), closed
    assert [s["step"] for s in closed["timeline"]] == ["identify", "stop", "restore"]
    assert closed["timeline"][-1]["finished_at"] == closed["finished_at"]
    assert closed["duration"] == pytest.approx(sum(s["seconds"] for s in closed["timeline"]), abs=0.05)
    assert record(tmp_path)["state"] == "recovered"
    again = recovery(pg_cluster, tmp_path, state="started", step="identify")
    assert not again.get("failed") and again["previous_run"]["state"] == "recovered"


@pytest.fixture(scope="module")
def backup(pg_cluster, shop, tmp_path_factory):
    where = tmp_path_factory.mktemp("rr_backups")
    made = run_module("postgresql_backup", conn_args(pg_cluster, database=DB, backup_dir=str(where), backup_key=KEY))
    assert not made.get("failed"), made
    return {"dir": where, "path": made["path"]}


def restore(cluster, backup, **args):
    return run_module(
        "postgresql_restore",
        conn_args(cluster, database=DB, backup=backup["path"], mode="replace", confirm=True, backup_key=KEY, **args),
    )


def test_a_restore_refuses_when_the_live_database_is_not_the_one_the_run_saw(pg_cluster, backup):
    before = (oid(pg_cluster, DB), rows(pg_cluster), databases(pg_cluster, "rr_"))
    result = restore(pg_cluster, backup, expected_oid=before[0] + 100000)
    assert result["failed"]
    assert result["msg"] == (
        f"refusing to replace it: the live database {DB} (OID {before[0]}) is not the one this recovery saw at its "
        f"start (OID {before[0] + 100000}) - another run swapped a database in since. Nothing was changed."
    )
    assert (oid(pg_cluster, DB), rows(pg_cluster), databases(pg_cluster, "rr_")) == before


def test_the_swap_and_the_swap_back_are_compare_and_swaps(pg_cluster, backup):
    live = oid(pg_cluster, DB)
    done = restore(pg_cluster, backup, expected_oid=live)
    assert not done.get("failed"), done
    assert done["previous_oid"] == live and done["restored_oid"] == oid(pg_cluster, DB) != live
    kept = done["previous_database"]
    args = conn_args(pg_cluster, database=DB, mode="revert", previous_database=kept, confirm=True)
    wrong_kept = run_module("postgresql_restore", dict(args, expected_oid=done["restored_oid"], previous_oid=live + 1))
    assert wrong_kept["failed"]
    assert wrong_kept["msg"] == (
        f"refusing to revert {DB} to {kept}: {kept} (OID {live}) is not the database the recovery kept "
        f"(OID {live + 1}). Nothing was changed."
    )
    wrong_live = run_module("postgresql_restore", dict(args, expected_oid=live, previous_oid=live))
    assert wrong_live["failed"] and wrong_live["msg"].startswith(
        f"refusing to revert {DB} to {kept}: the live database"
    )
    assert oid(pg_cluster, DB) == done["restored_oid"] and oid(pg_cluster, kept) == live, "a refusal changed something"
    back = run_module("postgresql_restore", dict(args, expected_oid=done["restored_oid"], previous_oid=live))
    assert not back.get("failed"), back
    assert oid(pg_cluster, DB) == live and back["restored_oid"] == live


def test_the_backup_job_stands_aside_while_a_recovery_is_in_progress(pg_cluster, shop, tmp_path):
    backups = tmp_path / "backups"
    backups.mkdir()
    run = recovery(pg_cluster, backups, state="started", step="restore", operator="alice")
    assert not run.get("failed"), run
    args = conn_args(pg_cluster, database=DB, backup_dir=str(backups))
    args.pop("login_password")
    config = {"status_file": str(tmp_path / "status.json"), "backup": args}
    env = {"PGPASSWORD": pg_cluster.password, "TOKOTANI_BACKUP_KEY": KEY}
    proc = run_job("backup", config, tmp_path / "backup.json", env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["skipped"] is True
    assert result["msg"].startswith(
        f"skipped: a recovery of {DB} is in progress (run {run['run_id']} of recover_db by alice"
    )
    assert "nothing was backed up" in result["msg"]
    assert not list(backups.glob("*.manifest.json")), "a backup was taken during the recovery"
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["last_run"]["skipped"] is True and status["last_success"] is None

    closed = recovery(pg_cluster, backups, state="finished", run_id=run["run_id"], outcome="recovered")
    assert not closed.get("failed"), closed
    proc = run_job("backup", config, tmp_path / "backup.json", env)
    assert proc.returncode == 0, proc.stderr
    assert len(list(backups.glob("*.manifest.json"))) == 1, "the backup after the recovery was not taken"


def test_a_backup_that_ends_during_a_recovery_is_suspicious_and_latest_skips_it(pg_cluster, shop, tmp_path):
    """The backup that was already running when a recovery started (or one taken by hand meanwhile) holds the
    database being recovered from: it is kept, marked suspicious, and never picked as latest."""
    backups = tmp_path / "backups"
    backups.mkdir()
    args = conn_args(pg_cluster, database=DB, backup_dir=str(backups), backup_key=KEY)
    good = run_module("postgresql_backup", args)
    assert not good.get("failed") and good["suspicious"] is None, good
    time.sleep(1.1)  # a new backup name
    run = recovery(pg_cluster, backups, state="started", step="restore", operator="alice")
    during = run_module("postgresql_backup", args)
    assert not during.get("failed"), during
    assert during["suspicious"]["compared_with"] is None and during["suspicious"]["recovery_run"] == run["run_id"]
    assert during["suspicious"]["reason"] == (
        f"taken while a recovery of {DB} was in progress (run {run['run_id']} by alice, at step restore): it may hold "
        "the database being recovered from"
    )
    assert any("marked suspicious" in w for w in during.get("warnings", [])), during
    listing = run_module("backup_info", conn_args(pg_cluster, backup_dir=str(backups), database=DB, backup_key=KEY))
    assert listing["newest"]["name"] == good["name"]
    assert listing["suspicious"] == [during["name"]]
    assert listing["recovery"]["state"] == "in_progress" and listing["recovery"]["run_id"] == run["run_id"]
    picked = run_module(
        "postgresql_restore",
        conn_args(pg_cluster, database=DB, backup_dir=str(backups), backup_key=KEY, mode="replace"),
        check=True,
    )
    assert picked["backup"]["name"] == good["name"], picked
    assert any(f"the newer backup {during['name']} is suspicious" in w for w in picked.get("warnings", [])), picked
    closed = recovery(pg_cluster, backups, state="finished", run_id=run["run_id"], outcome="recovered")
    assert not closed.get("failed"), closed
    ended = run_module("backup_info", conn_args(pg_cluster, backup_dir=str(backups), database=DB, backup_key=KEY))
    assert ended["recovery"]["state"] == "ended" and ended["recovery"]["outcome"] == "recovered"
