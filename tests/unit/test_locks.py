"""Unit tests of the lock primitive (locks.py) and the per-backup locks built on it (backup_catalog).

Real flocks on real files, held by this process (two open files conflict like two processes do) and
by child processes that are killed: the kernel, not the code, decides what is held.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.tokotani.dr.plugins.module_utils import backup_catalog as catalog  # noqa: E402
from ansible_collections.tokotani.dr.plugins.module_utils import locks  # noqa: E402

HOLD = (
    "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600); "
    "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'pid %d on elsewhere since 2026-01-01T00:00:00Z: test\\n' "
    "% os.getpid()); print('held', flush=True); time.sleep(600)"
)


def holder_process(path):
    """A child process that holds an exclusive flock on path until it is killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_shared_holders_do_not_block_each_other_and_exclude_a_writer(tmp_path):
    path = str(tmp_path / "x.lock")
    first = locks.FileLock(path, "restore of shop").acquire(0, shared=True)
    second = locks.FileLock(path, "offsite push").acquire(0, shared=True)
    try:
        assert not locks.FileLock(path, "retention").try_acquire()
        assert locks.probe(path) == locks.HELD
        described = locks.holders(path)
        assert len(described) == 2 and all(f"pid {os.getpid()} on " in line for line in described)
        assert described[0].endswith(": restore of shop") and described[1].endswith(": offsite push")
    finally:
        first.release()
        second.release()
    assert locks.probe(path) == locks.FREE
    assert locks.holders(path) == [], "released holders are not named any more"
    writer = locks.FileLock(path, "retention")
    assert writer.try_acquire()
    try:
        assert not locks.FileLock(path).try_acquire(shared=True)
        assert [line.split(": ", 1)[1] for line in locks.holders(path)] == ["retention"]
    finally:
        writer.release()


def test_acquire_waits_then_names_the_holder(tmp_path):
    path = tmp_path / "x.lock"
    holder = holder_process(path)
    try:
        started = time.monotonic()
        with pytest.raises(locks.LockBusy) as err:
            locks.FileLock(str(path)).acquire(0.3)
        assert time.monotonic() - started >= 0.3
        # A line of another host is kept as it is: only this host's processes can be checked.
        assert "on elsewhere since 2026-01-01T00:00:00Z: test" in err.value.msg
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holder_leaves_a_free_lock_behind(tmp_path):
    path = tmp_path / "x.lock"
    holder = holder_process(path)
    assert locks.probe(str(path)) == locks.HELD
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert locks.probe(str(path)) == locks.FREE
    assert path.exists(), "kill -9 leaves the file; the kernel released the lock"


def test_probe_never_creates_and_tells_absent_and_unreadable(tmp_path):
    path = tmp_path / "missing.lock"
    assert locks.probe(str(path)) == locks.ABSENT
    assert not path.exists()
    with pytest.raises(FileNotFoundError):
        locks.FileLock(str(path)).try_acquire(create=False)
    assert not path.exists()
    link = tmp_path / "link.lock"
    link.symlink_to(tmp_path / "elsewhere.lock")
    assert locks.probe(str(link)) == locks.UNKNOWN, "a symbolic link is never followed"


def test_release_alone_removes_the_file_only_when_nobody_else_holds_it(tmp_path):
    path = str(tmp_path / "x.lock")
    mine = locks.FileLock(path).acquire(0, shared=True)
    other = locks.FileLock(path).acquire(0, shared=True)
    mine.release(remove="alone")
    assert os.path.exists(path), "another reader still holds it"
    other.release(remove="alone")
    assert not os.path.exists(path)


def test_a_lock_file_removed_while_waiting_for_it_is_opened_again(tmp_path):
    path = str(tmp_path / "x.lock")
    holder = locks.FileLock(path, "retention").acquire(0)
    waiter = locks.FileLock(path, "restore of shop")
    done = threading.Event()
    thread = threading.Thread(target=lambda: (waiter.acquire(5, shared=True), done.set()))
    thread.start()
    time.sleep(0.3)  # the waiter has the old file open and polls it
    holder.release(remove=True)
    thread.join(10)
    try:
        assert done.is_set()
        held, current = os.fstat(waiter.fd), os.stat(path)
        assert (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino), "it holds the file at the path"
        assert not locks.FileLock(path).try_acquire(), "so a writer sees it"
    finally:
        waiter.release()


@pytest.mark.parametrize(
    ("state", "age", "stale", "words"),
    [
        (locks.HELD, 10 * 86400, False, "in use"),
        (locks.UNKNOWN, 10 * 86400, False, "cannot be read"),
        (locks.FREE, 5, True, "no process holds its lock"),
        (locks.ABSENT, 2 * 86400, True, "no lock file and is older than 24 hours"),
        (locks.ABSENT, 3600, False, "younger than 24 hours"),
    ],
)
def test_leftover_verdict(state, age, stale, words):
    now = 1_800_000_000
    verdict, reason = locks.leftover_verdict(state, now - age, now)
    assert verdict is stale and words in reason


# --------------------------------------------------------------------------- backups in use


def backup_entry(directory, stem="backup_2026-01-05_02-00-00"):
    data = directory / f"{stem}.sql.gz"
    data.write_bytes(b"data")
    manifest = directory / f"{stem}.manifest.json"
    manifest.write_text("{}")
    return {"directory": str(directory), "name": stem, "path": str(data), "manifest_path": str(manifest)}


def test_retention_skips_a_backup_a_reader_holds_and_removes_it_later(tmp_path):
    entry = backup_entry(tmp_path)
    reader = catalog.hold_backup(entry, "restore of shop")
    other = catalog.hold_backup(entry, "offsite push of backup_2026-01-05_02-00-00")
    try:
        holder = catalog.delete_unless_in_use(entry)
        assert "restore of shop" in holder and "offsite push" in holder
        assert os.path.exists(entry["path"]) and os.path.exists(entry["manifest_path"])
        assert len(catalog.in_use(entry)) == 2
    finally:
        reader.release()
        assert os.path.exists(catalog.use_lock_path(entry["directory"], entry["name"])), "the other still reads"
        other.release()
    assert not os.path.exists(catalog.use_lock_path(entry["directory"], entry["name"])), "the last reader removes it"
    assert catalog.in_use(entry) == []
    assert catalog.delete_unless_in_use(entry) is None
    assert not os.path.exists(entry["path"]) and not os.path.exists(entry["manifest_path"])
    assert not os.path.exists(catalog.use_lock_path(entry["directory"], entry["name"])), "the lock file went too"


def test_a_reader_of_a_removed_backup_fails_saying_so(tmp_path):
    entry = backup_entry(tmp_path)
    assert catalog.delete_unless_in_use(entry) is None
    with pytest.raises(catalog.CatalogError, match=r"was removed from .* \(by retention\?\) before restore of shop"):
        catalog.hold_backup(entry, "restore of shop")
    assert not os.path.exists(catalog.use_lock_path(entry["directory"], entry["name"]))


def test_a_reader_waits_while_retention_deletes_then_fails(tmp_path):
    entry = backup_entry(tmp_path)
    holder = holder_process(catalog.use_lock_path(entry["directory"], entry["name"]))
    try:
        with pytest.raises(catalog.CatalogError, match=r"is being removed .* waited 0 s: pick another backup"):
            catalog.hold_backup(entry, "restore of shop", wait=0.2)
    finally:
        holder.kill()
        holder.wait()


def test_a_backup_whose_lock_file_cannot_be_made_is_read_unlocked_with_a_warning(tmp_path):
    entry = backup_entry(tmp_path)
    # What a read-only backup directory does to os.open (as root, too): no lock file can be made.
    os.mkdir(catalog.use_lock_path(entry["directory"], entry["name"]))
    lock = catalog.hold_backup(entry, "restore of shop")
    assert not lock.held and "retention elsewhere could remove it while it is read" in lock.warning
    lock.release()


def test_dir_lock_keeps_its_interface(tmp_path):
    lock = catalog.DirLock(str(tmp_path), "shop").acquire(0)
    try:
        assert lock.holder().startswith(f"pid {os.getpid()} on ") and lock.holder().endswith(": lock shop")
        assert lock.key == "shop" and lock.fd is not None
    finally:
        lock.release()
    assert catalog.DirLock(str(tmp_path), "shop").holder() is None
