# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The application backup of plan 1.2, taken before a deployment changes anything.

``<base>/.deploy-backups/<timestamp>_<from-version>/`` (0700) holds ``record.json`` (the live release's name,
version, commit, build id and live-since, what ``current`` pointed to, the hash of its ``package-lock.json``, the
files kept and their hashes, the version being deployed and the paired database backup's name), a copy of the
release's ``.env`` (0600, never shown) and of its ``ecosystem.config.js``. The newest ``keep`` records are kept,
and so is the newest one of the live release.

Everything read back (the release through app_release, the files copied, the records pruned) is treated as
written by an intruder: files are opened without following links, must be regular and small, names are confined
to this tool's pattern, and nothing read goes into SQL or a shell.
"""

from __future__ import annotations

import hashlib
import os
import re

from ansible_collections.tokotani.dr.plugins.module_utils import app_release
from ansible_collections.tokotani.dr.plugins.module_utils import backup_catalog as catalog
from ansible_collections.tokotani.dr.plugins.module_utils.errors import DrError

BACKUPS_DIR = ".deploy-backups"
RECORD = "record.json"
# the release's files kept beside the record: (name, mode of the copy, at most bytes)
KEPT_FILES = ((".env", 0o600, 1024 * 1024), ("ecosystem.config.js", 0o644, 1024 * 1024))
LOCK_MAX = 64 * 1024 * 1024
NAME_RE = re.compile(r"^\d{8}T\d{6}Z(?:_(\d+))?_[A-Za-z0-9._-]{1,64}$")
RECORD_FORMAT = 1


class AppBackupError(DrError):
    """The application backup could not be taken; nothing of the live release was changed."""


def backup_name(now, version, sequence=1):
    """<UTC timestamp>[_<sequence>]_<version made plain>: sorts by time."""
    plain = re.sub(r"[^A-Za-z0-9._-]", "_", version or "unknown")[:64].lstrip(".") or "unknown"
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}{f'_{sequence}' if sequence > 1 else ''}_{plain}"


def _backups_dir(base, check_mode):
    where = os.path.join(base, BACKUPS_DIR)
    if os.path.islink(where) or (os.path.lexists(where) and not os.path.isdir(where)):
        raise AppBackupError(f"{where} is not a directory: refusing to write the application backup there")
    if not os.path.isdir(where) and not check_mode:
        os.mkdir(where, catalog.DIR_MODE)
    return where


def _order(name):
    """Oldest first: the time, then the sequence of backups taken in the same second."""
    match = NAME_RE.match(name)
    return (name[:16], int(match.group(1) or 1)) if match else ("", 0)


def _records(where, live_name):
    """[(name, whether its record is the live release's)] of the backups in where, oldest first; names not
    this tool's are left out (never pruned)."""
    if not os.path.isdir(where):
        return []
    found = []
    for name in sorted(os.listdir(where), key=_order):
        path = os.path.join(where, name)
        if not NAME_RE.match(name) or os.path.islink(path) or not os.path.isdir(path):
            continue
        record, _problem = app_release.read_record(os.path.join(path, RECORD))
        release = (record or {}).get("release")
        release_name = release.get("name") if isinstance(release, dict) else None
        found.append((name, live_name is not None and release_name == live_name))
    return found


def take(params, check_mode=False):
    """tokotani.dr.app_backup: the record of the live release, its files, then the retention."""
    releases = app_release.Releases(params["base_dir"]).scan()
    keep = params.get("keep", 10)
    if keep < 1:
        raise AppBackupError("keep must be at least 1: the backup just taken is always kept")
    result = {"changed": False, "path": None, "name": None, "record": None, "removed": []}
    if releases.live is None:
        result["msg"] = f"no release is live in {releases.base} ({releases.current_problem}): nothing to back up"
        return result
    entry = releases.entry(releases.live)
    if entry["problems"]:
        raise AppBackupError(
            f"the live release {entry['name']} cannot be backed up: {'; '.join(entry['problems'])}. "
            "Nothing was changed."
        )
    files = {}
    contents = {}
    for kept, mode, limit in KEPT_FILES:
        data, problem = app_release.read_regular(os.path.join(entry["path"], kept), limit)
        if problem:
            raise AppBackupError(f"the live release's {problem}: nothing was backed up")
        files[kept] = None if data is None else hashlib.sha256(data).hexdigest()
        if data is not None:
            contents[kept] = (data, mode)
    lock, problem = app_release.read_regular(os.path.join(entry["path"], "package-lock.json"), LOCK_MAX)
    if problem:
        raise AppBackupError(f"the live release's {problem}: nothing was backed up")
    where = _backups_dir(releases.base, check_mode)
    now = catalog.utcnow()
    name = backup_name(now, entry["version"])
    existing = _records(where, entry["name"])
    sequence = 1
    while os.path.lexists(os.path.join(where, name)):
        sequence += 1
        name = backup_name(now, entry["version"], sequence)
    path = os.path.join(where, name)
    record = {
        "format": RECORD_FORMAT,
        "created_at": catalog.iso(now),
        "base_dir": releases.base,
        "current": entry["path"],
        "release": {key: entry[key] for key in ("name", "version", "commit", "build_id", "live_since", "path")},
        "package_lock_sha256": None if lock is None else hashlib.sha256(lock).hexdigest(),
        "files": files,
        "deploying": params.get("deploying"),
        "database_backup": params.get("database_backup"),
        "database": params.get("database"),
    }
    result.update(changed=True, path=path, name=name, record=record)
    # the newest keep backups stay, counting this one, and so does the newest one of the live release
    protected = next((n for n, is_live in reversed(existing) if is_live), None)
    excess = len(existing) + 1 - keep
    removable = [n for n, _is_live in existing if n != protected][: max(0, excess)]
    result["removed"] = [os.path.join(where, n) for n in removable]
    if check_mode:
        result["msg"] = f"would back up release {entry['name']} ({entry['version']}) into {path}"
        return result
    os.mkdir(path, catalog.DIR_MODE)
    try:
        for kept, (data, mode) in contents.items():
            catalog.write_atomic(os.path.join(path, kept), data, mode=mode, sync_dir=False)
        catalog.write_atomic(os.path.join(path, RECORD), catalog.json_text(record), mode=0o600)
    except BaseException:
        catalog.remove_path(path)
        raise
    catalog.fsync_path(where)
    for gone in result["removed"]:
        catalog.remove_path(gone)
    kept_text = ", ".join(k for k in files if files[k]) or "no files"
    result["msg"] = (
        f"release {entry['name']} ({entry['version']}) backed up into {path} (record, {kept_text})"
        + (f"; the paired database backup is {params['database_backup']}" if params.get("database_backup") else "")
        + (f"; {len(result['removed'])} older backup(s) removed (keep {keep})" if result["removed"] else "")
    )
    return result
