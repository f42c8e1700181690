# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Locks on files: shared or exclusive ``flock``, who holds them, and whether anyone does.

One primitive for every lock of the collection:

- ``FileLock`` takes a lock file shared (readers: restore, push, pull, verify; they never wait for
  each other) or exclusive (a backup of one database, retention deleting a backup, a run claiming
  what it creates), waiting up to a timeout or not at all. The kernel releases it when the holder
  dies, ``kill -9`` included, so a lock can never be left behind.
- Every holder writes a line ``pid <pid> on <host> since <time>: <what>`` into the file (an exclusive
  holder replaces the content, shared holders add theirs); ``holders`` reads the lines back and keeps
  those of the processes that really hold the lock now (``/proc/locks``), for messages such as
  "in use by pid 4711 on db1 since ...: restore of tokotani".
- ``probe`` tells, without waiting and without creating anything, whether a lock file is absent,
  free, held, or cannot be read.
- ``leftover_verdict`` decides whether something a run made (a staging directory, a scratch
  database) is stale: each run holds an exclusive lock on a lock file named after it for its whole
  life, so a leftover whose lock file exists and is free was left by a run that ended without
  removing it (a ``kill -9``, a crash, a reboot). One without a lock file (a run on another host, or
  of a version without these locks) is stale only once it is older than a grace period.

Pure standard library (no Ansible imports); Linux ``flock`` semantics (locks belong to the open file,
so two descriptors of one process conflict like two processes do).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import os
import re
import socket
import time

from ansible_collections.tokotani.dr.plugins.module_utils.errors import DrError

FILE_MODE = 0o600
ABSENT = "absent"
FREE = "free"
HELD = "held"
UNKNOWN = "unknown"
# A leftover without a lock file is stale once it is older than this (seconds): a day.
LOCKLESS_GRACE = 86400
_BUSY = (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)
_HOLDER_RE = re.compile(r"^pid (\d+) on (\S+) since ")


class LockBusy(DrError):
    """A lock someone else holds (``holders`` in the details names them)."""


def holder_line(what=""):
    """This process's description in a lock file."""
    since = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    line = f"pid {os.getpid()} on {socket.gethostname()} since {since}"
    return f"{line}: {what}" if what else line


def adopt_directory_owner(fd, directory):
    """A file root made in another user's directory (a backup directory owned by postgres) is given to
    that user, so that the runs acting as that user can still open, lock and replace it. A no-op unless
    this process is root and fd is still root's."""
    if os.geteuid() != 0:
        return
    try:
        owner = os.stat(directory)
        if os.fstat(fd).st_uid == 0 and owner.st_uid != 0:
            os.fchown(fd, owner.st_uid, owner.st_gid)
    except OSError:
        pass


class FileLock:
    """An flock on the file at path, shared or exclusive. ``what`` says what the holder does (for messages)."""

    warning = None

    def __init__(self, path, what=""):
        self.path = path
        self.what = what
        self.fd = None
        self.shared = None

    def _open(self, create):
        flags = os.O_RDWR | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        if create:
            flags |= os.O_CREAT
        fd = os.open(self.path, flags, FILE_MODE)
        if create:
            adopt_directory_owner(fd, os.path.dirname(os.path.abspath(self.path)))
        return fd

    def _take(self, fd, shared):
        """flock fd without waiting: True (fd is now self.fd), False while others hold it, None when the
        file was unlinked or replaced before the lock was taken (a holder removed it): open it again."""
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in _BUSY:
                return False
            raise
        try:
            if not self._same_file(fd):
                fcntl.flock(fd, fcntl.LOCK_UN)
                return None
            if not shared:
                os.ftruncate(fd, 0)
            with contextlib.suppress(OSError):  # a full disk: the lock holds without its description
                os.write(fd, (holder_line(self.what) + "\n").encode("utf-8"))
        except BaseException:
            fcntl.flock(fd, fcntl.LOCK_UN)
            raise
        self.fd = fd
        self.shared = shared
        return True

    def _same_file(self, fd):
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)

    def try_acquire(self, shared=False, create=True):
        """Take the lock without waiting: True, or False when another holder keeps it. Raises OSError
        when the file cannot be opened (FileNotFoundError when it is missing and create is false)."""
        while True:
            fd = self._open(create)
            try:
                taken = self._take(fd, shared)
            except BaseException:
                os.close(fd)
                raise
            if taken is None:
                os.close(fd)
                continue
            if not taken:
                os.close(fd)
            return taken

    def acquire(self, timeout=0.0, shared=False, poll=0.1, busy=None):
        """Wait up to timeout seconds for the lock; then raise busy(self) (a DrError), else LockBusy."""
        fd = self._open(True)
        deadline = time.monotonic() + max(0.0, float(timeout))
        try:
            while True:
                taken = self._take(fd, shared)
                if taken:
                    return self
                if taken is None:
                    os.close(fd)
                    fd = None
                    fd = self._open(True)
                    continue
                if time.monotonic() >= deadline:
                    if busy is not None:
                        raise busy(self)
                    who = "; ".join(holders(self.path)) or "another process"
                    raise LockBusy(
                        f"{self.path} is locked by {who}; waited {int(timeout)} s",
                        lock=self.path,
                        holders=holders(self.path),
                    )
                time.sleep(poll)
        except BaseException:
            if self.fd is None and fd is not None:
                os.close(fd)
            raise

    @property
    def held(self):
        return self.fd is not None

    def release(self, remove=False):
        """Let go of the lock; with remove, unlink the lock file first (only for names nobody reuses).

        remove="alone" unlinks it only when no other process holds it (the lock is taken exclusively
        without waiting first; that fails while others hold it).
        """
        if self.fd is None:
            return
        if remove == "alone":
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                remove = True
            except OSError:
                remove = False
        try:
            if remove:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


class Unlocked:
    """Stands in for a lock that could not be taken because no lock file can be made there (a read-only
    directory): the run goes on, and ``warning`` says what that risks."""

    held = False

    def __init__(self, warning):
        self.warning = warning

    def release(self, remove=False):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def probe(path):
    """ABSENT, FREE, HELD or UNKNOWN (the file cannot be opened, e.g. another user's): never waits, never creates."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return ABSENT
    except OSError:
        return UNKNOWN
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        return HELD if err.errno in _BUSY else UNKNOWN
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return FREE
    finally:
        os.close(fd)


def _flock_pids(st):
    """Pids holding a flock on the file of stat result st (from /proc/locks), or None when unreadable."""
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    pids = set()
    for line in lines:
        fields = line.split()
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK":
            continue  # a waiter, or another kind of lock
        parts = fields[5].split(":")
        try:
            same = (int(parts[0], 16), int(parts[1], 16), int(parts[2])) == (
                os.major(st.st_dev),
                os.minor(st.st_dev),
                st.st_ino,
            )
            if same:
                pids.add(int(fields[4]))
        except (ValueError, IndexError):
            continue
    return pids


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holders(path):
    """The descriptions of the processes holding the lock at path now (empty when none, or unknown).

    Lines of processes of this host that no longer hold it (they released it, or died) are left out.
    Never waits and never takes the lock.
    """
    try:
        st = os.stat(path)
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = [line.strip() for line in handle.read().splitlines() if line.strip()]
    except OSError:
        return []
    pids = _flock_pids(st)
    host = socket.gethostname()
    found = []
    for line in lines:
        match = _HOLDER_RE.match(line)
        if match and match.group(2) == host:
            pid = int(match.group(1))
            if (pids is not None and pid not in pids) or (pids is None and not _alive(pid)):
                continue
        if line not in found:
            found.append(line)
    return found


def leftover_verdict(state, made_at, now, grace=LOCKLESS_GRACE):
    """Whether a leftover guarded by a lock file in state (see probe) is stale: (stale, reason).

    made_at and now are epoch seconds (made_at None when unknown). A pure decision.
    """
    if state == HELD:
        return False, "in use: the run that made it holds its lock"
    if state == UNKNOWN:
        return False, "its lock file cannot be read (another user's run?): left alone"
    if state == FREE:
        return True, "its run ended without removing it (no process holds its lock)"
    if made_at is None or now - made_at > grace:
        return True, f"it has no lock file and is older than {int(grace // 3600)} hours"
    return False, (
        f"it has no lock file here and is younger than {int(grace // 3600)} hours: left to the run that made it "
        "(on another host, or of a version without locks)"
    )
