"""Unit tests of leftovers.py: which names are scratch or kept databases, keep_previous, stale directories,
signals turned into Interrupted (and held during the swap), children that die with their run.

Directories, locks, signals and processes are real; only the database listing is a plain list of names.
"""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.tokotani.dr.plugins.module_utils import leftovers, locks, pg_cli  # noqa: E402

UTC = datetime.UTC
NOW = datetime.datetime(2026, 1, 20, 2, 0, 0, tzinfo=UTC).timestamp()
DAY = 86400


def stamp_ago(seconds):
    return leftovers.stamp(datetime.datetime.fromtimestamp(NOW - seconds, UTC))


# --------------------------------------------------------------------------- names


def test_only_names_of_exactly_the_restores_form_are_scratch_databases():
    names = [
        "shop",
        "shop__restore_20260105_020000",
        "shop__restore_20260105_020000_2",
        "shop__restore_20260106_030000",
        "shop__pre_restore_20260105_020000",  # kept, not scratch
        "shop__failed_restore_20260105_020000",
        "shop2__restore_20260105_020000",  # another database
        "xshop__restore_20260105_020000",
        "shop__restore_2026010_020000",  # not a stamp
        "shop__restore_20261399_020000",  # not a date
        "shop__restore_20260105_020000x",
        "shop__restore_20260105_020000_2_3",
        "shop__restore_",
    ]
    found = leftovers.derived_databases(names, "shop", leftovers.RESTORE_SCRATCH)
    assert [item["name"] for item in found] == [
        "shop__restore_20260106_030000",
        "shop__restore_20260105_020000_2",
        "shop__restore_20260105_020000",
    ]
    assert found[0]["made_at"] == datetime.datetime(2026, 1, 6, 3, 0, 0, tzinfo=UTC).timestamp()
    kept = leftovers.derived_databases(names, "shop", leftovers.PRE_RESTORE)
    assert [item["name"] for item in kept] == ["shop__pre_restore_20260105_020000"]


def test_long_database_names_are_matched_as_derived_name_cuts_them():
    long_name = "t" * 60
    scratch = leftovers.derived_name(long_name, "__restore_20260105_020000")
    assert len(scratch.encode()) <= 63
    names = [long_name, scratch, "t" * 30 + "__restore_20260105_020000"]
    assert [i["name"] for i in leftovers.derived_databases(names, long_name, "__restore_")] == [scratch]
    # The verification's scratch databases: <scratch>_<stamp>.
    names = ["shop__verify_20260105_020000", "shop__verify", "shop__verify_x_20260105_020000"]
    assert [i["name"] for i in leftovers.derived_databases(names, "shop__verify", "_")] == [names[0]]


# --------------------------------------------------------------------------- keep_previous


def kept(name, age_days, kind="pre_restore", seq=1):
    return {"name": name, "kind": kind, "made_at": NOW - age_days * DAY, "seq": seq}


def decide(items, held=None, **kw):
    return [
        (item["name"], action, reason)
        for item, action, reason in leftovers.plan_keep_previous(items, held or {}, NOW, **kw)
    ]


def test_the_newest_two_within_seven_days_stay_both_kinds_together():
    items = [kept("p1", 3), kept("p2", 2), kept("f1", 1, kind="failed_restore"), kept("p0", 4)]
    out = decide(items)
    assert [(name, action) for name, action, _r in out] == [
        ("f1", "keep"),
        ("p2", "keep"),
        ("p1", "archive"),
        ("p0", "archive"),
    ]
    assert out[0][2] == "among the newest 2 and at most 7 days old"
    assert out[2][2] == "beyond the newest 2; no backup holds its data yet"


def test_older_than_keep_previous_days_goes_even_among_the_newest():
    out = decide([kept("p1", 8), kept("p2", 1)])
    assert [(n, a) for n, a, _r in out] == [("p2", "keep"), ("p1", "archive")]
    assert out[1][2].startswith("older than 7 days")


def test_only_a_backup_of_the_kept_database_itself_lets_it_be_dropped():
    # What p1 alone holds (written after the last backup, before the restore) is in no backup of the
    # database: only a backup of p1 itself holds it.
    items = [kept("p3", 1), kept("p2", 2), kept("p1", 3)]
    out = decide(items, held={"p1": "backup_2026-01-19_02-00-00"})
    assert [(n, a) for n, a, _r in out] == [("p3", "keep"), ("p2", "keep"), ("p1", "drop")]
    assert out[2][2] == "beyond the newest 2; the backup backup_2026-01-19_02-00-00 holds its data"
    assert decide(items, held={"p3": "b"})[0][1] == "keep", "a backup never shortens the window"


def test_what_holds_a_kept_database_is_a_valid_backup_of_it_taken_after_it_was_set_aside():
    def entry(name, database, age_days, valid=True):
        return {"name": name, "database": database, "timestamp": NOW - age_days * DAY, "valid": valid}

    items = [kept("shop__pre_restore_a", 3), kept("shop__pre_restore_b", 3)]
    entries = [  # newest first, as the catalog lists them
        entry("b_new_damaged", "shop__pre_restore_a", 1, valid=False),
        entry("b_of_shop", "shop", 1),
        entry("b_a", "shop__pre_restore_a", 2),
        entry("b_a_older", "shop__pre_restore_a", 2.5),
        entry("b_b_before", "shop__pre_restore_b", 4),  # before b was set aside: not its data
    ]
    held = leftovers.held_by(items, entries)
    assert {name: e["name"] for name, e in held.items()} == {"shop__pre_restore_a": "b_a"}


def test_keep_previous_zero_and_same_second_copies():
    out = decide([kept("p1", 1, seq=1), kept("p1_2", 1, seq=2)], keep=0)
    assert [(n, a) for n, a, _r in out] == [("p1_2", "archive"), ("p1", "archive")]
    out = decide([kept("p1", 1, seq=1), kept("p1_2", 1, seq=2)], keep=1)
    assert [(n, a) for n, a, _r in out] == [("p1_2", "keep"), ("p1", "archive")]


# --------------------------------------------------------------------------- work directories


def held_dir(parent, name):
    """A directory whose run is alive: (path, the FileLock this test holds on it)."""
    path = make_dir(parent, name, lock="free")
    return path, locks.FileLock(str(path) + ".lock", "restore of shop").acquire(0)


def make_dir(parent, name, *, lock=None, age=0):
    """A directory as a run leaves it, with a lock file nobody holds (lock="free") or none."""
    path = parent / name
    path.mkdir()
    (path / "toc.dat").write_text("x")
    if lock is not None:
        (parent / (name + ".lock")).write_text("")
    if age:
        os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_stale_directories_are_removed_and_live_or_young_ones_left(tmp_path):
    dead = make_dir(tmp_path, ".tokotani-restore-dead0001", lock="free")
    live, holder = held_dir(tmp_path, ".tokotani-restore-live0001")
    young = make_dir(tmp_path, ".tokotani-verify-young001", age=3600)
    old = make_dir(tmp_path, ".tokotani-verify-old00001", age=2 * DAY)
    other = make_dir(tmp_path, "tokotani-restore-not-ours", age=2 * DAY)
    (tmp_path / ".tokotani-restore-link").symlink_to(other)
    orphan = tmp_path / ".tokotani-restore-gone0001.lock"
    orphan.write_text("")
    os.utime(orphan, (time.time() - 3600, time.time() - 3600))
    try:
        janitor = leftovers.Janitor(None, str(tmp_path))
        report = {item["name"]: item for item in janitor.clean(directories=[str(tmp_path), str(tmp_path)])}
        assert report[dead.name]["action"] == "removed" and "no process holds its lock" in report[dead.name]["reason"]
        assert report[old.name]["action"] == "removed" and "no lock file" in report[old.name]["reason"]
        assert report[live.name]["action"] == "left" and "in use" in report[live.name]["reason"]
        assert report[live.name]["holders"][0].endswith(": restore of shop")
        assert report[young.name]["action"] == "left" and "younger than 24 hours" in report[young.name]["reason"]
        assert report[orphan.name]["action"] == "removed" and report[orphan.name]["kind"] == "lock_file"
        assert set(report) == {dead.name, old.name, live.name, young.name, orphan.name}, "links are never touched"
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [live.name, live.name + ".lock", young.name, other.name, ".tokotani-restore-link"]
        )
        assert (other / "toc.dat").exists()
    finally:
        holder.release()


def test_check_mode_only_reports(tmp_path):
    dead = make_dir(tmp_path, ".tokotani-restore-dead0001", lock="free")
    report = leftovers.Janitor(None, str(tmp_path), check_mode=True).clean(directories=[str(tmp_path)])
    assert [(item["name"], item["action"]) for item in report] == [(dead.name, "would_remove")]
    assert dead.exists()


def test_a_work_dir_is_claimed_for_its_whole_life(tmp_path):
    work = leftovers.WorkDir(str(tmp_path), "restore", "restore of shop: staging")
    assert os.path.basename(work.path).startswith(".tokotani-restore-")
    assert (os.stat(work.path).st_mode & 0o777) == 0o700
    assert locks.probe(work.path + ".lock") == locks.HELD
    report = leftovers.Janitor(None, str(tmp_path)).clean(directories=[str(tmp_path)])
    assert [item["action"] for item in report] == ["left"] and os.path.isdir(work.path)
    work.remove()
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- signals


def test_a_signal_becomes_interrupted_once_and_the_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM)
    cleaned = []
    with pytest.raises(leftovers.Interrupted) as err, leftovers.interruptible():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        finally:
            os.kill(os.getpid(), signal.SIGHUP)  # a second signal must not cut the cleanup short
            cleaned.append("done")
    assert err.value.signame == "SIGTERM" and err.value.details["interrupted_by"] == "SIGTERM"
    assert cleaned == ["done"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_signal_during_the_swap_waits_until_it_is_over():
    steps = []
    with pytest.raises(leftovers.Interrupted) as err, leftovers.interruptible():
        with leftovers.deferred_signals():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            steps.append("the swap committed")
        steps.append("never")
    assert steps == ["the swap committed"] and err.value.signame == "SIGINT"


def test_nested_guards_share_one_state():
    with pytest.raises(leftovers.Interrupted), leftovers.interruptible():
        with leftovers.interruptible():
            pass
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)


# --------------------------------------------------------------------------- children

PARENT = (
    "import subprocess, sys; sys.path.insert(0, sys.argv[1]); "
    "from ansible_collections.tokotani.dr.plugins.module_utils import leftovers; "
    "child = subprocess.Popen(leftovers.child_argv(['sleep', '600'])); print(child.pid, flush=True); "
    "child.wait()"
)


def test_children_die_with_their_run_even_on_kill_9():
    if leftovers.child_argv(["x"]) == ["x"]:
        pytest.skip("setpriv --pdeathsig is not available here")
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(ROOT / ".collections")], stdout=subprocess.PIPE, text=True
    )
    child = int(parent.stdout.readline())
    deadline = time.monotonic() + 10
    # Killed before setpriv has set the death signal (a few microseconds), the child would live on.
    while not Path(f"/proc/{child}/cmdline").read_bytes().startswith(b"sleep") and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and "Z" not in _state(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists() or "Z" in _state(child), "the child outlived its killed parent"


def _state(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_stop_process_terminates_then_kills():
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(15, signal.SIG_IGN); print('ready', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert stubborn.stdout.readline().strip() == "ready"
    started = time.monotonic()
    assert pg_cli.stop_process(stubborn, timeout=0.3) is True
    assert stubborn.returncode == -signal.SIGKILL and time.monotonic() - started < 5
    assert pg_cli.stop_process(stubborn) is False


@pytest.mark.parametrize(("timeout", "ask", "returncode"), [(0, True, -signal.SIGKILL), (10, False, 0)])
def test_stop_process_kills_at_once_or_waits_for_a_child_that_was_told_to_finish(timeout, ask, returncode):
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    if not ask:
        child.stdin.close()  # told to finish: it exits on its own, no signal
    assert pg_cli.stop_process(child, timeout=timeout, ask=ask) is True
    assert child.returncode == returncode
    if ask:
        child.stdin.close()
