"""Restore in two halves (postgresql_restore modes stage, swap, discard) and the commit of a recovery
(tokotani.dr.recovery_commit: stop, swap, restart as one call that a lost controller cannot cut in two),
against a real PostgreSQL 15 and a real pm2 daemon, through ansible.

Every test asserts the message an operator reads and the state of every database and process afterwards.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest
from backup_support import conn_args, databases, drop_db, load_shop, run_module, start_module
from helpers import free_port, wait_until
from pm2_support import pm2_daemon

DB = "rc_live"
KEY = "recovery-commit-test-key-0123456789abcdef"
APPS = ["web", "worker"]


@pytest.fixture(scope="module")
def shop(pg_cluster):
    load_shop(pg_cluster, DB, fidelity=False, seed=29)
    yield DB
    for db in databases(pg_cluster, "rc_"):
        drop_db(pg_cluster, db)


@pytest.fixture(scope="module")
def daemon():
    with pm2_daemon("recovery-commit") as pm2:
        pm2.pm2("start", "ecosystem.config.js", "--only", ",".join(APPS))
        yield pm2


@pytest.fixture(scope="module")
def backup(pg_cluster, shop, tmp_path_factory):
    where = tmp_path_factory.mktemp("rc-backups")
    made = run_module("postgresql_backup", conn_args(pg_cluster, database=DB, backup_dir=str(where), backup_key=KEY))
    assert not made.get("failed"), made
    return {"dir": where, "path": made["path"]}


def oid(cluster, name):
    out = cluster.psql(f"SELECT oid FROM pg_database WHERE datname = '{name}';").strip()  # noqa: S608
    return int(out) if out else None


def marker(cluster, present):
    """A table written after the backup: there in the live database until a restore replaces it."""
    if present:
        cluster.psql("CREATE TABLE IF NOT EXISTS after_backup (id int); INSERT INTO after_backup VALUES (1);", db=DB)
    out = cluster.psql("SELECT to_regclass('public.after_backup') IS NOT NULL;", db=DB).strip()
    return out == "t"


def stage(cluster, backup, **args):
    return run_module(
        "postgresql_restore",
        conn_args(
            cluster,
            database=DB,
            backup=backup["path"],
            backup_dir=str(backup["dir"]),
            mode="stage",
            confirm=True,
            backup_key=KEY,
            **args,
        ),
    )


def started_run(cluster, backup):
    run = run_module(
        "recovery_run",
        conn_args(
            cluster, database=DB, state="started", state_dir=str(backup["dir"]), step="identify", break_lock=True
        ),
    )
    assert not run.get("failed"), run
    return run


def close_run(cluster, backup, run, outcome="failed"):
    args = dict(state="finished", state_dir=str(backup["dir"]), run_id=run["run_id"], outcome=outcome)
    closed = run_module("recovery_run", conn_args(cluster, database=DB, **args))
    assert not closed.get("failed"), closed
    return closed


def commit_args(cluster, backup, daemon, run, staged, **extra):
    args = conn_args(
        cluster,
        database=DB,
        state_dir=str(backup["dir"]),
        run_id=run["run_id"],
        staging_database=staged["staging_database"],
        staged_oid=staged["restored_oid"],
        expected_oid=run["live_oid"],
        confirm=True,
        backup_key=KEY,
        app=daemon.options(ecosystem=str(daemon.apps / "ecosystem.config.js"), only=APPS, min_uptime=1),
    )
    args.update(extra)
    return args


def online(daemon):
    procs = daemon.jlist()
    return {name: procs.get(name, {}).get("status") for name in APPS}


def test_stage_leaves_the_live_database_alone_and_discard_drops_only_what_it_staged(pg_cluster, backup):
    marker(pg_cluster, True)
    live = oid(pg_cluster, DB)
    run = started_run(pg_cluster, backup)
    staged = stage(pg_cluster, backup)
    assert not staged.get("failed"), staged
    name = staged["staging_database"]
    assert name.startswith(f"{DB}__restore_") and staged["live_oid"] == live
    assert oid(pg_cluster, name) == staged["restored_oid"]
    assert staged["msg"].startswith(f"restored {Path(backup['path']).name.split('.')[0]} into {name} and checked it")
    assert oid(pg_cluster, DB) == live and marker(pg_cluster, False), "the stage touched the live database"

    # While the recovery that staged it is in progress, another restore's cleanup leaves it alone ...
    second = stage(pg_cluster, backup)
    assert not second.get("failed"), second
    left = [item for item in second["leftovers"] if item["name"] == name]
    assert left == [
        {
            "kind": "scratch_database",
            "name": name,
            "path": None,
            "reason": "staged by the recovery in progress, for its swap",
            "action": "left",
            "holders": [],
        }
    ], second["leftovers"]

    # ... discard refuses a name that is not a scratch database of this one, or the wrong OID ...
    args = conn_args(pg_cluster, database=DB, mode="discard", backup_dir=str(backup["dir"]), confirm=True)
    for hostile in (DB, "postgres", f'{DB}__restore_x"; DROP DATABASE {DB}; --'):
        refused = run_module("postgresql_restore", dict(args, staging_database=hostile, staged_oid=live))
        assert refused["failed"] and refused["msg"].startswith("staging_database must be a scratch database of"), (
            refused
        )
        assert "Nothing was changed." in refused["msg"]
    wrong = run_module("postgresql_restore", dict(args, staging_database=name, staged_oid=live))
    assert wrong["failed"]
    assert wrong["msg"] == (
        f"refusing to drop {name}: it (OID {staged['restored_oid']}) is not the database this recovery staged "
        f"(OID {live}). Nothing was changed."
    )
    assert oid(pg_cluster, name) == staged["restored_oid"] and oid(pg_cluster, DB) == live

    # ... and drops exactly the one it staged, checked gone.
    for done in (staged, second):
        dropped = run_module(
            "postgresql_restore",
            dict(args, staging_database=done["staging_database"], staged_oid=done["restored_oid"]),
        )
        assert not dropped.get("failed"), dropped
        assert dropped["dropped"] == done["staging_database"] and oid(pg_cluster, done["staging_database"]) is None
        assert dropped["msg"] == f"dropped the staged database {done['staging_database']}; {DB} was not touched"
    assert not list(backup["dir"].glob(f".tokotani-db.{DB}__restore_*.lock")), "a staged database's lock file stayed"
    assert oid(pg_cluster, DB) == live and marker(pg_cluster, False)
    close_run(pg_cluster, backup, run)


def test_a_staged_database_of_a_finished_recovery_is_dropped_by_the_next_restore(pg_cluster, backup):
    run = started_run(pg_cluster, backup)
    staged = stage(pg_cluster, backup)
    assert not staged.get("failed"), staged
    close_run(pg_cluster, backup, run)
    again = stage(pg_cluster, backup)
    assert not again.get("failed"), again
    cleaned = [item for item in again["leftovers"] if item["name"] == staged["staging_database"]]
    assert [item["action"] for item in cleaned] == ["removed"], again["leftovers"]
    assert oid(pg_cluster, staged["staging_database"]) is None
    drop_db(pg_cluster, again["staging_database"])


def test_the_commit_stops_swaps_and_restarts_recording_each_step(pg_cluster, backup, daemon):
    marker(pg_cluster, True)
    live = oid(pg_cluster, DB)
    run = started_run(pg_cluster, backup)
    staged = stage(pg_cluster, backup)
    pids = {name: daemon.jlist()[name]["pid"] for name in APPS}
    health_url = f"http://127.0.0.1:{daemon.port}/api/health"
    done = run_module(
        "recovery_commit", commit_args(pg_cluster, backup, daemon, run, staged, stop_first=True, health_url=health_url)
    )
    assert not done.get("failed"), done
    assert done["steps"] == ["stop", "swap", "restart", "health", "serving"]
    assert done["health"] == "/api/health 200, database ok (version pm2-test)"
    assert oid(pg_cluster, DB) == staged["restored_oid"] and not marker(pg_cluster, False)
    assert oid(pg_cluster, done["previous_database"]) == live and done["previous_oid"] == live
    assert done["msg"] == (
        f"swapped {staged['staging_database']} in as {DB} (the previous database kept as "
        f"{done['previous_database']}); the application was restarted"
    )
    assert online(daemon) == {"web": "online", "worker": "online"}
    assert all(daemon.jlist()[name]["pid"] != pids[name] for name in APPS), "the app was not restarted"
    status = run_module(
        "recovery_run", conn_args(pg_cluster, database=DB, state="status", state_dir=str(backup["dir"]))
    )
    steps = status["record"]["steps"]
    assert [s["step"] for s in steps] == ["identify", "stop", "swap", "restart", "health", "serving"]
    assert status["record"]["databases"]["restored_oid"] == staged["restored_oid"]
    # the downtime ends where the server saw the shop healthy (serving), not when the controller closed the run
    closed = close_run(pg_cluster, backup, run, outcome="recovered")
    at = {s["step"]: s["at"] for s in steps}
    assert closed["downtime"] == round(at["serving"] - at["stop"], 2)
    # The record stays the postgres-run modules' file: root wrote it, the directory's owner owns it.
    record = backup["dir"] / f".tokotani-recovery.{DB}.json"
    assert record.stat().st_uid == backup["dir"].stat().st_uid


def test_a_commit_whose_live_database_changed_swaps_nothing_and_starts_the_app_again(pg_cluster, backup, daemon):
    live = oid(pg_cluster, DB)
    run = started_run(pg_cluster, backup)
    staged = stage(pg_cluster, backup)
    failed = run_module(
        "recovery_commit", commit_args(pg_cluster, backup, daemon, run, staged, stop_first=True, expected_oid=live + 7)
    )
    # changed: the app was stopped and started again; no database was
    assert failed["failed"] and failed["swapped"] is False and failed["changed"] is True, failed
    assert failed["msg"] == (
        f"refusing to swap {staged['staging_database']} in: the live database {DB} (OID {live}) is not the one this "
        f"recovery saw at its start (OID {live + 7}) - another run swapped a database in since. Nothing was changed. "
        "The application was started again on the untouched database."
    )
    assert oid(pg_cluster, DB) == live and oid(pg_cluster, staged["staging_database"]) == staged["restored_oid"]
    assert online(daemon) == {"web": "online", "worker": "online"}
    drop_db(pg_cluster, staged["staging_database"])


def test_an_app_that_restarts_but_is_not_healthy_fails_the_commit_after_the_swap(pg_cluster, backup, daemon):
    """Online is not enough: a health URL that never answers healthy fails the commit with swapped true and the
    step that failed, so that the caller swaps the previous database back (db_recovery's revert)."""
    live = oid(pg_cluster, DB)
    run = started_run(pg_cluster, backup)
    staged = stage(pg_cluster, backup)
    nobody = f"http://127.0.0.1:{free_port()}/api/health"
    failed = run_module(
        "recovery_commit",
        commit_args(pg_cluster, backup, daemon, run, staged, stop_first=True, health_url=nobody, health_timeout=2),
    )
    assert failed["failed"] and failed["swapped"] is True and failed["failed_step"] == "health", failed
    assert failed["msg"].startswith(f"swapped {staged['staging_database']} in as {DB} (the previous database kept as ")
    assert " and the application restarted, but it is not healthy: /api/health: " in failed["msg"]
    assert failed["msg"].endswith(
        f"(for 2 s). {DB} holds the restored backup; the previous database is kept as {failed['previous_database']}."
    )
    # nothing lost: the restored copy is live, the one it replaced is kept by OID for the swap-back
    assert oid(pg_cluster, DB) == staged["restored_oid"] == failed["restored_oid"]
    assert oid(pg_cluster, failed["previous_database"]) == live == failed["previous_oid"]
    assert online(daemon) == {"web": "online", "worker": "online"}
    status = run_module(
        "recovery_run", conn_args(pg_cluster, database=DB, state="status", state_dir=str(backup["dir"]))
    )
    assert [s["step"] for s in status["record"]["steps"]][-2:] == ["restart", "health"]
    close_run(pg_cluster, backup, run)


def test_an_app_that_does_not_come_back_fails_the_commit_naming_what_to_swap_back(pg_cluster, backup, daemon):
    """A crash loop after the swap: the failure carries previous_database, previous_oid and restored_oid under the
    names a success returns, which db_recovery's swap-back reads."""
    live = oid(pg_cluster, DB)
    run = started_run(pg_cluster, backup)
    staged = stage(pg_cluster, backup)
    crash = daemon.options(
        ecosystem=str(daemon.apps / "crash" / "ecosystem.config.js"), only=["crasher"], min_uptime=1, wait_timeout=10
    )
    failed = run_module("recovery_commit", commit_args(pg_cluster, backup, daemon, run, staged, app=crash))
    assert failed["failed"] and failed["swapped"] is True and failed["failed_step"] == "restart", failed
    assert ", but the application did not come back: " in failed["msg"], failed["msg"]
    assert "FATAL: cannot reach the database (crash-at-start test app)" in failed["msg"]
    assert failed["msg"].endswith(
        f"{DB} holds the restored backup; the previous database is kept as {failed['previous_database']}."
    )
    assert oid(pg_cluster, DB) == staged["restored_oid"] == failed["restored_oid"]
    assert oid(pg_cluster, failed["previous_database"]) == live == failed["previous_oid"]
    daemon.pm2("delete", "crasher", check=False)
    close_run(pg_cluster, backup, run)


def children(pid):
    """{child pid: its command line} of the processes whose parent is pid (read from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found[int(entry.name)] = [part.decode(errors="replace") for part in cmdline if part]
    return found


def tree(pid):
    """{pid: command line} of every descendant of pid."""
    found = {}
    todo = [pid]
    while todo:
        for child, cmdline in children(todo.pop()).items():
            found[child] = cmdline
            todo.append(child)
    return found


def test_the_commit_runs_to_its_end_when_its_controller_dies(pg_cluster, backup, daemon):
    """The controller (ansible) is SIGKILLed and the module gets SIGINT, SIGTERM and SIGHUP, as a lost
    connection and a Ctrl-C give it: the commit still ends swapped with the app online, and its record says so."""
    marker(pg_cluster, True)
    live = oid(pg_cluster, DB)
    run = started_run(pg_cluster, backup)
    staged = stage(pg_cluster, backup)
    app = daemon.options(ecosystem=str(daemon.apps / "ecosystem.config.js"), only=APPS, min_uptime=4)
    proc = start_module(
        "recovery_commit", commit_args(pg_cluster, backup, daemon, run, staged, stop_first=True, app=app)
    )
    wait_until(lambda: online(daemon)["web"] == "stopped", timeout=60, message="the commit stopping the app")
    # the module: the python that the connection's shell runs (pipelining: no file name on its command line)
    module = [
        pid
        for pid, cmd in tree(proc.pid).items()
        if cmd and Path(cmd[0]).name.startswith("python") and "ansible" not in " ".join(cmd)
    ]
    assert len(module) == 1, tree(proc.pid)
    controller = [
        proc.pid,
        *(pid for pid in tree(proc.pid) if pid not in module and "ansible" in " ".join(tree(proc.pid).get(pid, []))),
    ]
    for pid in controller:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ProcessLookupError):
            os.kill(module[0], signum)
        time.sleep(0.2)
    wait_until(
        lambda: not Path(f"/proc/{module[0]}").exists() or "zombie" in Path(f"/proc/{module[0]}/status").read_text(),
        timeout=120,
        message="the orphaned commit ending",
    )
    assert oid(pg_cluster, DB) == staged["restored_oid"] and not marker(pg_cluster, False)
    assert online(daemon) == {"web": "online", "worker": "online"}
    status = run_module(
        "recovery_run", conn_args(pg_cluster, database=DB, state="status", state_dir=str(backup["dir"]))
    )
    assert [s["step"] for s in status["record"]["steps"]] == ["identify", "stop", "swap", "restart"]
    previous = status["record"]["databases"]["previous"]
    assert oid(pg_cluster, previous) == live, "the database the commit replaced is not kept"
