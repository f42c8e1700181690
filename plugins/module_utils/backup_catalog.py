# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup catalog: names, manifests, checksums, listing, retention, locks.

A backup is ``backup_YYYY-MM-DD_HH-mm-ss[_N].<ext>`` (a file, or a directory for the
directory format) with ``backup_YYYY-MM-DD_HH-mm-ss[_N].manifest.json`` beside it. The
manifest is written (fsynced, renamed) first and the data is renamed into place last, so
the data's rename is the commit point: a crash leaves a ``.partial`` (never listed as a
backup, removed by the next run) or a manifest whose data is missing (listed as invalid).
Plain ``backup_*.sql.gz`` files without a manifest come from the team's earlier scripts
and are listed as *legacy* backups, valid when the gzip stream is intact.

Pure standard library (no Ansible imports): modules, roles and a host-side timer share it.
"""

from __future__ import annotations

import calendar
import concurrent.futures
import datetime
import gzip
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import zlib

from ansible_collections.tokotani.dr.plugins.module_utils import backup_keys, locks
from ansible_collections.tokotani.dr.plugins.module_utils.errors import DrError
from ansible_collections.tokotani.dr.plugins.module_utils.manifest_schema import is_relpath, schema_problems
from ansible_collections.tokotani.dr.plugins.module_utils.pg_cli import properties_problems
from ansible_collections.tokotani.dr.plugins.module_utils.text import human_duration

MANIFEST_VERSION = 1
MANIFEST_SUFFIX = ".manifest.json"
# The result of the last restore test of a backup (tokotani.dr.backup_verify), beside its manifest.
VERIFY_SUFFIX = ".verify.json"
PARTIAL_SUFFIX = ".partial"
LOCK_PREFIX = ".tokotani-backup."
LOCK_SUFFIX = ".lock"
# Per backup: readers hold it shared, retention takes it exclusively (see hold_backup).
USE_PREFIX = ".tokotani-use."
# How long a reader waits while retention is deleting the backup it wants.
USE_WAIT = 60
HASH_CHUNK = 1 << 20
HASH_WORKERS = min(4, os.cpu_count() or 1)
FILE_MODE = 0o600
DIR_MODE = 0o700

NAME_RE = re.compile(
    r"^backup_(?P<date>\d{4}-\d{2}-\d{2})_(?P<time>\d{2}-\d{2}-\d{2})(?:_(?P<seq>\d+))?\.(?P<ext>[A-Za-z0-9.]+)$"
)

# (format, compression) -> extension of the data file or directory.
EXTENSIONS = {
    ("plain", "gzip"): "sql.gz",
    ("plain", "zstd"): "sql.zst",
    ("plain", "none"): "sql",
    ("custom", "gzip"): "dump",
    ("custom", "none"): "dump",
    ("directory", "zstd"): "dir",
    ("directory", "gzip"): "dir",
    ("directory", "none"): "dir",
}
LEGACY_EXTENSIONS = ("sql.gz",)

# How far in the future a manifest's started_at may lie (clock skew between hosts), in seconds.
FUTURE_TOLERANCE = 300


class CatalogError(DrError):
    """A catalog problem with an operator-facing message."""


# --------------------------------------------------------------------------- time


def utcnow():
    return datetime.datetime.now(datetime.UTC)


def iso(dt):
    """2026-01-05T02:00:00.123456Z"""
    return dt.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(value):
    """An aware UTC datetime from ISO 8601 (Z or offset; naive means UTC), a backup name, or epoch seconds."""
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _from_epoch(value, value)
    text = str(value).strip()
    if re.match(r"^\d+(\.\d+)?$", text):
        return _from_epoch(float(text), value)
    match = re.match(r"^(?:backup_)?(\d{4}-\d{2}-\d{2})_(\d{2})-(\d{2})-(\d{2})", text)
    if match:
        text = "{}T{}:{}:{}".format(*match.groups())
    if text.endswith("Z") or text.endswith("z"):
        text = text[:-1] + "+00:00"
    text = text.replace(" ", "T", 1) if "T" not in text and " " in text else text
    try:
        dt = datetime.datetime.fromisoformat(text)
    except ValueError as err:
        raise CatalogError(
            f"cannot read the timestamp {value!r}: use ISO 8601 such as 2026-01-05T02:00:00Z "
            "or a backup name such as backup_2026-01-05_02-00-00"
        ) from err
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.UTC)
    return dt.astimezone(datetime.UTC)


def _from_epoch(seconds, shown):
    try:
        return datetime.datetime.fromtimestamp(float(seconds), datetime.UTC)
    except (OverflowError, OSError, ValueError):
        raise CatalogError(
            f"the timestamp {shown!r} is out of range: give epoch seconds between 0 and 253402300799, "
            "ISO 8601 such as 2026-01-05T02:00:00Z, or a backup name such as backup_2026-01-05_02-00-00"
        ) from None


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value):
    """Seconds from 3600, '3600', '90m', '26h', '2d', '1w', '1d12h'."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip().lower().replace(" ", "")
    if re.match(r"^\d+(\.\d+)?$", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhdw])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise CatalogError(f"cannot read the duration {value!r}: use seconds or a form such as 90m, 26h, 2d, 1w")
    return float(sum(float(n) * _DURATION_UNITS[u] for n, u in parts))


# --------------------------------------------------------------------------- names


def extension(fmt, compression):
    try:
        return EXTENSIONS[(fmt, compression)]
    except KeyError:
        raise CatalogError(f"format {fmt} cannot be compressed with {compression}") from None


def stem_for(dt, seq=0):
    """backup_2026-01-05_02-00-00 (UTC), with _N for the Nth clash within one second."""
    base = dt.astimezone(datetime.UTC).strftime("backup_%Y-%m-%d_%H-%M-%S")
    return base if not seq else f"{base}_{seq}"


def parse_name(name):
    """{'stem', 'timestamp' (aware datetime), 'seq', 'ext'} for a backup name, or None."""
    match = NAME_RE.match(name)
    if not match:
        return None
    try:
        dt = datetime.datetime.strptime(
            "{}_{}".format(match.group("date"), match.group("time")), "%Y-%m-%d_%H-%M-%S"
        ).replace(tzinfo=datetime.UTC)
    except ValueError:
        return None
    seq = int(match.group("seq") or 0)
    stem = stem_for(dt, seq)
    return {"stem": stem, "timestamp": dt, "seq": seq, "ext": match.group("ext")}


def manifest_name(stem):
    return stem + MANIFEST_SUFFIX


def verify_name(stem):
    return stem + VERIFY_SUFFIX


def reserve_name(directory, dt, ext, max_tries=1000):
    """Pick a free stem for dt and claim it by creating the manifest's .partial exclusively.

    Returns (stem, data_name, manifest_partial_fd). The claim makes two backups started in the
    same second (even of different databases sharing the directory) take different names.
    """
    for seq in range(max_tries):
        stem = stem_for(dt, seq)
        data = f"{stem}.{ext}"
        taken = any(
            os.path.lexists(os.path.join(directory, candidate))
            for candidate in (data, data + PARTIAL_SUFFIX, manifest_name(stem))
        )
        if taken or any(n.startswith(stem + ".") for n in _listdir(directory)):
            continue
        path = os.path.join(directory, manifest_name(stem) + PARTIAL_SUFFIX)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileExistsError:
            continue
        return stem, data, fd
    raise CatalogError(f"no free backup name for {stem_for(dt)} in {directory}")


def _listdir(directory):
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []


# --------------------------------------------------------------------------- files


def fsync_path(path):
    """fsync a file or a directory."""
    flags = os.O_RDONLY
    if os.path.isdir(path):
        flags |= getattr(os, "O_DIRECTORY", 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path):
    """fsync every file of a directory tree and the directories themselves (or one file)."""
    if os.path.isdir(path):
        for root, _dirs, files in os.walk(path):
            for name in files:
                fsync_path(os.path.join(root, name))
            fsync_path(root)
    else:
        fsync_path(path)


def remove_path(path):
    """Remove a file or a directory tree; silent when it is already gone."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


def commit_fd(fd, partial, path, data):
    """Write data (bytes, or str as UTF-8) to fd, the open descriptor of partial, fsync it and rename
    partial to path. partial is removed when any of that fails."""
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(partial, path)
    except BaseException:
        remove_path(partial)
        raise


def write_atomic(path, data, mode=FILE_MODE, *, unique=False, sync_dir=True):
    """Write data (bytes, or str as UTF-8) beside path, fsync, rename into place; fsync the directory
    too unless sync_dir is false (a caller that commits more renames syncs it once at the end).

    The file gets exactly mode, whatever the umask. The temporary file is ``<path>.partial`` (a stale
    one is replaced), or with unique a hidden ``.<name>.<random>.tmp`` of its own, for paths that
    concurrent writers may share.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if unique:
        fd, partial = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    else:
        partial = path + PARTIAL_SUFFIX
        remove_path(partial)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        locks.adopt_directory_owner(fd, directory)
    except BaseException:
        os.close(fd)
        remove_path(partial)
        raise
    commit_fd(fd, partial, path, data)
    if sync_dir:
        fsync_path(directory)


def json_text(data):
    """The catalog's JSON documents as written: indented, keys sorted, UTF-8 as it is, a final newline."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_json_fd(fd, path, data):
    """Write data as JSON to an open (exclusive, 0600) descriptor of path.partial, fsync, rename to path."""
    commit_fd(fd, path + PARTIAL_SUFFIX, path, json_text(data))


def write_json_atomic(path, data):
    """Write JSON beside, fsync, rename into place, fsync the directory. Mode 0600."""
    write_atomic(path, json_text(data))


def ensure_directory(path):
    """Create the backup directory 0700 (parents too); tighten an existing one. Returns a warning or None."""
    if not os.path.isdir(path):
        os.makedirs(path, DIR_MODE, exist_ok=True)
        os.chmod(path, DIR_MODE)
        return None
    mode = os.stat(path).st_mode & 0o777
    if mode & 0o077:
        os.chmod(path, DIR_MODE)
        return f"tightened the mode of {path} from {mode:04o} to 0700: backups hold all of the shop's data"
    return None


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def sha256_file(path):
    """The sha256 of a regular file; a symbolic link is refused (O_NOFOLLOW), never followed."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def confined_join(base, rel):
    """base/rel for a name read back from a manifest, a bucket key or a listing, refused unless rel is a
    plain relative path (no absolute path, '..', empty or NUL part, backslash) and nothing on the way
    from base to it is a symbolic link. Nothing is created; raises CatalogError."""
    if not is_relpath(rel):
        raise CatalogError(f"refusing the file name {rel!r}: not a plain relative path inside the backup")
    path = base
    for part in rel.split("/"):
        path = os.path.join(path, part)
        if os.path.islink(path):
            raise CatalogError(f"refusing {path}: a symbolic link inside a backup is never followed")
    root = os.path.realpath(base)
    if os.path.commonpath([root, os.path.realpath(path)]) != root:
        raise CatalogError(f"refusing the file name {rel!r}: it leads outside {base}")
    return path


def tree_specials(path):
    """Sorted relative paths of what under path is not a directory or a regular file (symbolic links,
    named pipes, devices): a backup made by this tool holds none, and none is ever followed."""
    found = []
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(root, name)
            mode = os.lstat(full).st_mode
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                found.append(os.path.relpath(full, path))
    return sorted(found)


def tree_files(path):
    """Sorted relative paths of the regular files under path."""
    found = []
    for root, _dirs, files in os.walk(path):
        for name in files:
            found.append(os.path.relpath(os.path.join(root, name), path))
    return sorted(found)


def listing_digest(files):
    """The sha256 of a directory backup: over its sorted 'sha256  size  path' listing."""
    digest = hashlib.sha256()
    for rel in sorted(files):
        info = files[rel]
        digest.update(f"{info['sha256']}  {info['size']}  {rel}\n".encode())
    return digest.hexdigest()


def digest_tree(path, workers=HASH_WORKERS):
    """(sha256, files) of a directory backup; files maps relative path -> {size, sha256}.

    The files are hashed ``workers`` at a time (hashlib releases the GIL on large buffers), the
    largest first, so a backup of a few big tables is not hashed one core at a time.
    """
    rels = sorted(tree_files(path), key=lambda rel: os.path.getsize(os.path.join(path, rel)), reverse=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        sums = dict(zip(rels, pool.map(lambda rel: sha256_file(os.path.join(path, rel)), rels), strict=True))
    files = {rel: {"size": os.path.getsize(os.path.join(path, rel)), "sha256": sums[rel]} for rel in sorted(rels)}
    return listing_digest(files), files


def data_size(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(path, rel)) for rel in tree_files(path))
    return os.path.getsize(path)


def gzip_intact(path):
    """(ok, problem) after reading the whole gzip stream (CRC and length checked)."""
    try:
        with gzip.open(path, "rb") as handle:
            while handle.read(4 * HASH_CHUNK):
                pass
    except (OSError, EOFError, zlib.error) as err:
        return False, f"gzip stream damaged: {err}"
    return True, None


def gzip_magic(path):
    try:
        with open(path, "rb") as handle:
            head = handle.read(2)
        return head == b"\x1f\x8b" and os.path.getsize(path) > 20
    except OSError:
        return False


# --------------------------------------------------------------------------- manifests


def manifest_problems(doc, now=None):
    """What is wrong with a manifest document (an empty list when it is well-formed).

    The types and forms of every field come from the one schema (manifest_schema); on top of it:
    the version is one this tool reads, the data name is the backup's name with the extension of
    its format and compression (so it is a plain name in the backup's own directory), started_at
    falls in the second its name says, and it does not lie more than FUTURE_TOLERANCE seconds
    ahead of now (a manifest dated 2099 would otherwise be "latest" for ever).
    """
    problems = schema_problems(doc)
    if problems:
        return problems
    if doc["manifest_version"] > MANIFEST_VERSION:
        problems.append(
            f"manifest version {doc['manifest_version']} is newer than this tool understands "
            f"({MANIFEST_VERSION}): upgrade tokotani.dr"
        )
    if (doc["format"], doc["compression"]) not in EXTENSIONS:
        problems.append("unknown format/compression {}/{}".format(doc["format"], doc["compression"]))
    elif doc["data"] != "{}.{}".format(doc["name"], EXTENSIONS[(doc["format"], doc["compression"])]):
        problems.append(
            "the manifest's data name {!r} is not {}.{}".format(
                doc["data"], doc["name"], EXTENSIONS[(doc["format"], doc["compression"])]
            )
        )
    if doc["format"] == "directory" and not isinstance(doc.get("files"), dict):
        problems.append("a directory backup's manifest has no file list")
    if doc["format"] != "directory" and doc.get("files") is not None:
        problems.append(f"a {doc['format']} backup's manifest has a file list")
    problems.extend(_time_problems(doc, now or utcnow()))
    problems.extend(properties_problems(doc.get("database_properties")))
    return problems


def _time_problems(doc, now):
    parsed = parse_name(doc["name"] + ".x")
    try:
        started = parse_timestamp(doc["started_at"])
        parse_timestamp(doc["finished_at"])
    except CatalogError:
        return ["the manifest's started_at or finished_at is not a timestamp"]
    problems = []
    if parsed is None:
        problems.append(f"the manifest's name {doc['name']} holds no valid date")
    elif int(started.timestamp()) != int(parsed["timestamp"].timestamp()):
        problems.append(
            f"the manifest's started_at {doc['started_at']} is not the time in its name {doc['name']} "
            "(a manifest edited or renamed by someone else)"
        )
    if started.timestamp() > now.timestamp() + FUTURE_TOLERANCE:
        problems.append(
            f"the manifest's started_at {doc['started_at']} lies in the future (now {iso(now)}): "
            "a clock far ahead, or a forged manifest"
        )
    return problems


def load_manifest(path):
    """The parsed manifest at path; raises CatalogError naming what is wrong."""
    try:
        with open(path, encoding="utf-8") as handle:
            doc = json.load(handle)
    except FileNotFoundError:
        raise CatalogError(f"manifest {path} does not exist") from None
    except (OSError, ValueError) as err:
        raise CatalogError(f"manifest {path} cannot be read: {err}") from err
    problems = manifest_problems(doc)
    if problems:
        raise CatalogError("manifest {} is not valid: {}".format(path, "; ".join(problems)), problems=problems)
    return doc


# --------------------------------------------------------------------------- entries


def blank_entry(stem, **fields):
    """A catalog entry before its manifest is read (local here, offsite in s3_offsite): the fields every
    entry has, its time from its name, not valid yet; ``fields`` are the ones of its kind."""
    parsed = parse_name(stem + ".x") or {}
    ts = parsed.get("timestamp")
    entry = {
        "name": stem,
        "database": None,
        "format": None,
        "compression": None,
        "size": None,
        "sha256": None,
        "label": None,
        "started_at": iso(ts) if ts else None,
        "finished_at": None,
        "timestamp": ts.timestamp() if ts else None,
        "valid": False,
        "signed": False,
        "signed_by": None,
        "suspicious": None,
        "problems": [],
        "manifest": None,
    }
    entry.update(fields)
    return entry


def _entry_base(directory, stem, kind):
    return blank_entry(stem, kind=kind, directory=directory, path=None, manifest_path=None, verified=False, tables=None)


def fill_from_manifest(entry, doc, stem, stored_as):
    """What a catalog entry (local, or offsite in s3_offsite) takes from its manifest: the backup's
    fields, its timestamp, and the problems of a manifest stored under another name."""
    entry.update(
        database=doc["database"],
        format=doc["format"],
        compression=doc["compression"],
        size=doc["size"],
        sha256=doc["sha256"],
        label=doc.get("label"),
        started_at=doc["started_at"],
        finished_at=doc["finished_at"],
        suspicious=doc.get("suspicious"),
    )
    try:
        entry["timestamp"] = parse_timestamp(doc["started_at"]).timestamp()
    except CatalogError:
        entry["problems"].append("the manifest's started_at is not a timestamp")
    if doc["name"] != stem:
        entry["problems"].append(f"the manifest names {doc['name']} but is stored as {stored_as}")


def managed_entry(directory, manifest_file):
    """The catalog entry of a manifest file, checked structurally (no checksums yet)."""
    stem = manifest_file[: -len(MANIFEST_SUFFIX)]
    entry = _entry_base(directory, stem, "managed")
    entry["manifest_path"] = os.path.join(directory, manifest_file)
    try:
        doc = load_manifest(entry["manifest_path"])
    except CatalogError as err:
        entry["problems"].append(err.msg)
        return entry
    entry["manifest"] = doc
    data_path = os.path.join(directory, doc["data"])
    fill_from_manifest(entry, doc, stem, manifest_file)
    entry.update(path=data_path, tables=len(doc["tables"]))
    entry["problems"].extend(_data_problems(doc, data_path))
    entry["valid"] = not entry["problems"]
    return entry


def _data_problems(doc, data_path):
    """What is wrong with a backup's data compared with its manifest (sizes and file list, no checksums)."""
    data = doc["data"]
    if not os.path.lexists(data_path):
        if os.path.lexists(data_path + PARTIAL_SUFFIX):
            return [f"incomplete: only {data}{PARTIAL_SUFFIX} exists (an interrupted backup)"]
        return [f"the data {data} is missing"]
    if os.path.islink(data_path):
        return [f"the data {data} is a symbolic link: refused, never followed"]
    is_dir = os.path.isdir(data_path)
    if is_dir != (doc["format"] == "directory"):
        return [f"the data {data} is not a {'file' if is_dir else 'directory'}"]
    if not is_dir:
        size = os.path.getsize(data_path)
        return [] if size == doc["size"] else [f"{data} has {size} bytes, the manifest says {doc['size']} (truncated?)"]
    return _tree_problems(doc, data_path)


def _tree_problems(doc, data_path):
    """What is wrong with a directory backup's tree: anything but plain files, files missing or extra, sizes."""
    data = doc["data"]
    specials = tree_specials(data_path)
    if specials:
        return [
            f"{data} holds what a backup never does (symbolic links or special files, refused, never followed): "
            + ", ".join(specials[:10])
        ]
    present = set(tree_files(data_path))
    listed = set(doc["files"])
    problems = []
    if listed - present:
        problems.append(f"files missing from {data}: {', '.join(sorted(listed - present)[:10])}")
    if present - listed:
        problems.append(f"unexpected files in {data}: {', '.join(sorted(present - listed)[:10])}")
    for rel in sorted(listed & present) if not problems else []:
        size = os.path.getsize(os.path.join(data_path, rel))
        if size != doc["files"][rel].get("size"):
            problems.append(f"{data}/{rel} has {size} bytes, the manifest says {doc['files'][rel].get('size')}")
    return problems


def legacy_entry(directory, name):
    """A plain .sql.gz from the team's earlier scripts: no manifest, valid when it looks like gzip.

    Its time is the one in its name (backup_YYYY-MM-DD_HH-mm-ss, UTC), else the file's mtime.
    """
    parsed = parse_name(name)
    path = os.path.join(directory, name)
    if parsed:
        entry = _entry_base(directory, parsed["stem"], "legacy")
    else:
        entry = _entry_base(directory, name[: -len(".sql.gz")] if name.endswith(".sql.gz") else name, "legacy")
        mtime = os.path.getmtime(path)
        entry["timestamp"] = mtime
        entry["started_at"] = epoch_to_iso(mtime)
    if os.path.islink(path):
        entry.update(path=path, format="plain", compression="gzip", size=None)
        entry["problems"].append(f"{name} is a symbolic link: refused, never followed")
        return entry
    entry.update(path=path, format="plain", compression="gzip", size=os.path.getsize(path))
    if not gzip_magic(path):
        entry["problems"].append(f"{name} is not a gzip file")
    entry["valid"] = not entry["problems"]
    return entry


def verify_entry(entry):
    """Re-verify an entry's content: sha256 against the manifest, or the gzip stream of a legacy file.

    Updates and returns the entry (valid, verified, problems).
    """
    if entry["kind"] == "managed":
        if entry["manifest"] is None or not os.path.lexists(entry["path"] or ""):
            entry["valid"] = False
            return entry
        doc = entry["manifest"]
        if os.path.isdir(entry["path"]):
            problems = _verify_tree(entry["path"], doc)
        else:
            digest = sha256_file(entry["path"])
            problems = []
            if digest != doc["sha256"]:
                problems.append(
                    f"checksum mismatch: {doc['data']} has sha256 {digest}, the manifest says {doc['sha256']}"
                )
        entry["problems"] = [p for p in entry["problems"] if "checksum" not in p] + problems
    else:
        ok, problem = gzip_intact(entry["path"])
        if not ok:
            entry["problems"].append(problem)
    entry["verified"] = True
    entry["valid"] = not entry["problems"]
    return entry


def _verify_tree(path, doc):
    """Checksum problems of a directory backup: every file's sha256, and the listing's."""
    problems = []
    actual = {}
    for rel in tree_files(path):
        full = os.path.join(path, rel)
        actual[rel] = {"size": os.path.getsize(full), "sha256": sha256_file(full)}
    for rel, info in sorted(doc["files"].items()):
        got = actual.get(rel)
        if got is None:
            problems.append(f"{doc['data']}/{rel} is missing")
        elif got["sha256"] != info.get("sha256"):
            problems.append(
                f"checksum mismatch: {doc['data']}/{rel} (sha256 {got['sha256']}, manifest {info.get('sha256')})"
            )
    problems.extend(f"unexpected file {doc['data']}/{rel}" for rel in sorted(set(actual) - set(doc["files"])))
    if not problems and listing_digest(actual) != doc["sha256"]:
        problems.append(f"checksum mismatch: the listing of {doc['data']} does not match the manifest's sha256")
    return problems


def scan(directory, database=None, include_legacy=True, keys=None):
    """Every backup in directory (newest first), and the stale/in-progress partials.

    Returns {"backups": [...], "partials": [...]} where each backup is an entry dict (see
    _entry_base). database filters managed backups by their manifest's database; legacy
    files carry no database and are kept when include_legacy is true. keys (a
    backup_keys.KeyRing, or None) checks each manifest's signature: a refused one makes its
    entry invalid, with the reason.
    """
    names = _listdir(directory)
    manifests = set(n for n in names if n.endswith(MANIFEST_SUFFIX) and parse_name(n))
    entries = []
    claimed = set()
    for manifest_file in sorted(manifests):
        entry = backup_keys.check_entry(managed_entry(directory, manifest_file), keys)
        if entry["manifest"] is not None:
            claimed.add(entry["manifest"]["data"])
        if database is not None and entry["database"] not in (None, database):
            continue
        entries.append(entry)
    if include_legacy:
        for name in sorted(names):
            parsed = parse_name(name)
            if not parsed or parsed["ext"] not in LEGACY_EXTENSIONS or name in claimed:
                continue
            if manifest_name(parsed["stem"]) in manifests:
                continue
            if not os.path.isfile(os.path.join(directory, name)):
                continue
            entries.append(legacy_entry(directory, name))
    entries.sort(key=lambda e: (e["timestamp"] or 0, e["name"]), reverse=True)
    partials = sorted(n for n in names if n.startswith("backup_") and n.endswith(PARTIAL_SUFFIX))
    return {"backups": entries, "partials": partials}


def epoch_of(value):
    """Epoch seconds of a timestamp (parse_timestamp), or None when there is none or it cannot be read."""
    if value in (None, ""):
        return None
    try:
        return parse_timestamp(value).timestamp()
    except CatalogError:
        return None


def public_entry(entry, now=None):
    """An entry as modules return it (no internal fields; the manifest stays out unless asked), with
    ``finished_at_epoch`` - the end of the backup, its recovery point - so that no caller re-parses it."""
    out = {k: v for k, v in entry.items() if k not in ("manifest", "directory")}
    out["finished_at_epoch"] = epoch_of(entry.get("finished_at"))
    if entry.get("timestamp") is not None:
        now = now or utcnow()
        out["age_seconds"] = max(0, int(now.timestamp() - entry["timestamp"]))
    return out


def ended_at(entry):
    """Epoch seconds of a backup's end (its manifest's finished_at), else of its start: when it was done."""
    end = epoch_of(entry.get("finished_at"))
    return end if end is not None else entry["timestamp"]


def newest(entries, before=None, accept_suspicious=False, skipped=None):
    """The newest valid entry (optionally one that ended strictly before a datetime), or None.

    before is a time the backup must be done by, not only started: a backup still running when a breach
    began ran on the intruder's ground (ended_at). A suspicious entry (its manifest says a table shrank
    sharply: pg_backup's guard) is passed over unless accept_suspicious; each one passed over is appended to
    the list skipped, when given.
    """
    for entry in entries:
        if not entry["valid"] or entry["timestamp"] is None:
            continue
        if before is not None and ended_at(entry) >= before.timestamp():
            continue
        if entry.get("suspicious") and not accept_suspicious:
            if skipped is not None:
                skipped.append(entry)
            continue
        return entry
    return None


def suspicious_warning(entry):
    """What an operator reads about a suspicious backup that latest passed over."""
    reason = (entry.get("suspicious") or {}).get("reason") or "a table shrank sharply"
    return (
        f"the newer backup {entry['name']} is suspicious ({reason}): skipped. Name it (backup=) or set "
        "accept_suspicious to restore it anyway"
    )


# --------------------------------------------------------------------------- retention


def plan_retention(entries, database, now, *, keep_days=14, keep_min=3, prune_legacy=False):
    """Which backups retention removes. A pure decision, tested without files.

    - Only valid, complete backups of ``database`` made by this tool are candidates; invalid or
      incomplete ones, other databases' and foreign files are never touched.
    - The newest ``keep_min`` valid backups of the database that are not suspicious are always kept,
      whatever their age: backups of a damaged database never push the last good ones out.
    - Others are removed when they started more than ``keep_days`` days before now.
    - Legacy ``.sql.gz`` files (no manifest, no database) are removed only with prune_legacy, only
      when older than keep_days, and only while ``keep_min`` valid managed backups exist.

    Returns (prune, keep): lists of (entry, reason).
    """
    cutoff = now.timestamp() - keep_days * 86400
    managed = [e for e in entries if e["kind"] == "managed" and e["database"] == database]
    managed.sort(key=lambda e: (e["timestamp"] or 0, e["name"]), reverse=True)
    valid = [e for e in managed if e["valid"]]
    good = [e for e in valid if not e.get("suspicious")]
    protected = {id(e) for e in good[:keep_min]}
    prune = []
    keep = []
    for entry in valid:
        if id(entry) in protected:
            keep.append((entry, f"among the newest {keep_min} that are not suspicious (keep_min)"))
        elif entry["timestamp"] is not None and entry["timestamp"] < cutoff:
            prune.append((entry, f"older than {keep_days} days"))
        else:
            keep.append((entry, f"within {keep_days} days"))
    for entry in managed:
        if not entry["valid"]:
            keep.append((entry, "invalid or incomplete: never pruned"))
    legacy = [e for e in entries if e["kind"] == "legacy"]
    for entry in legacy:
        if not prune_legacy:
            keep.append((entry, "legacy file: pruned only with prune_legacy"))
        elif len(good) < keep_min:
            keep.append((entry, "legacy file kept: fewer than keep_min valid backups exist"))
        elif entry["timestamp"] is not None and entry["timestamp"] < cutoff:
            prune.append((entry, f"legacy file older than {keep_days} days"))
        else:
            keep.append((entry, f"legacy file within {keep_days} days"))
    return prune, keep


def delete_entry(entry):
    """Remove a backup: its data first, then its manifest (a crash in between leaves an invalid entry).

    The result of its last verification (``<stem>.verify.json``) goes with it.
    """
    if entry.get("path"):
        remove_path(entry["path"])
    if entry.get("manifest_path"):
        remove_path(entry["manifest_path"])
    if entry.get("directory") and entry.get("name"):
        remove_path(os.path.join(entry["directory"], verify_name(entry["name"])))
    if entry.get("directory"):
        fsync_path(entry["directory"])


# --------------------------------------------------------------------------- locks


def lock_path(directory, key, prefix=LOCK_PREFIX):
    """The lock file of one database's backups in directory (the name is made filesystem-safe).

    With another prefix, the lock file of something else named key (USE_PREFIX: one backup).
    """
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", key)
    if safe != key:
        safe = "{}-{}".format(safe, hashlib.sha256(key.encode("utf-8")).hexdigest()[:8])
    return os.path.join(directory, prefix + safe + LOCK_SUFFIX)


class DirLock(locks.FileLock):
    """An exclusive flock on a lock file; the kernel releases it when the holder dies."""

    def __init__(self, directory, key):
        super().__init__(lock_path(directory, key), f"lock {key}")
        self.key = key

    def holder(self):
        return "; ".join(locks.holders(self.path)) or None

    def acquire(self, timeout, poll=0.2):
        """Wait up to timeout seconds; raises CatalogError naming the holder."""
        return super().acquire(timeout, poll=poll, busy=lambda _lock: self._busy(timeout))

    def _busy(self, timeout):
        return CatalogError(
            f"another backup of database {self.key} is running in {os.path.dirname(self.path)} "
            f"(lock {self.path} held by {self.holder() or 'another process'}); waited {int(timeout)} s. "
            "Let it finish, or raise lock_timeout.",
            lock=self.path,
        )


def other_lock_held(directory, own_path=None):
    """True when some lock file in directory (other than own_path) is held by a running process."""
    for name in _listdir(directory):
        if not (name.startswith(LOCK_PREFIX) and name.endswith(LOCK_SUFFIX)):
            continue
        path = os.path.join(directory, name)
        if own_path and os.path.abspath(path) == os.path.abspath(own_path):
            continue
        if locks.probe(path) == locks.HELD:
            return True
    return False


# --------------------------------------------------------------------------- backups in use


def use_lock_path(directory, stem):
    """The lock file readers of one backup share and retention takes exclusively."""
    return lock_path(directory, stem, prefix=USE_PREFIX)


def hold_backup(entry, what, wait=USE_WAIT, must_exist=True):
    """A shared lock on a backup for as long as a run reads it (restore, push, pull, verify).

    Readers never wait for each other; retention (delete_unless_in_use) skips a backup while any
    reader holds it. A reader waits up to wait seconds while retention is deleting it, and then fails
    saying so, as it does when the backup is gone once the lock is taken (unless must_exist is false:
    a pull, about to write it). Returns the lock: its release() also removes the lock file when no
    other run holds it. When the directory is read-only, a locks.Unlocked whose ``warning`` says that
    retention could remove the backup meanwhile.
    """
    directory, stem = entry["directory"], entry["name"]
    lock = _UseLock(use_lock_path(directory, stem), what)
    try:
        lock.acquire(wait, shared=True, busy=lambda _lock: _being_removed(entry, wait))
    except OSError as err:
        return locks.Unlocked(
            f"cannot lock the backup {stem} in {directory} ({err.strerror}): retention elsewhere could remove it "
            "while it is read"
        )
    if must_exist and (
        not os.path.lexists(entry.get("path") or "")
        or (entry.get("manifest_path") and not os.path.lexists(entry["manifest_path"]))
    ):
        lock.release()
        raise CatalogError(
            f"the backup {stem} was removed from {directory} (by retention?) before {what} could read it: "
            "pick another backup"
        )
    return lock


class _UseLock(locks.FileLock):
    """A reader's lock on one backup; the last reader to let go removes the lock file (a reader that opened
    it meanwhile notices, FileLock opens it again), so that nothing is left in the directory."""

    def release(self, remove="alone"):
        super().release(remove=remove)


def _being_removed(entry, wait):
    holder = "; ".join(locks.holders(use_lock_path(entry["directory"], entry["name"]))) or "another process"
    return CatalogError(
        f"the backup {entry['name']} in {entry['directory']} is being removed ({holder}); waited {int(wait)} s: "
        "pick another backup"
    )


def in_use(entry):
    """Who holds a backup now (readers, or retention deleting it): their descriptions, or an empty list."""
    return locks.holders(use_lock_path(entry["directory"], entry["name"]))


def delete_unless_in_use(entry):
    """Retention's delete: take the backup's lock exclusively without waiting and delete it, or leave it.

    Returns None when the backup was deleted, else who holds it (so that retention can say so; a later
    run removes it).
    """
    lock = locks.FileLock(use_lock_path(entry["directory"], entry["name"]), "retention: removing the backup")
    try:
        taken = lock.try_acquire()
    except OSError:
        taken = None  # no lock file can be made (read-only directory): nobody can hold one either
    if taken is False:
        return "; ".join(locks.holders(lock.path)) or "another process"
    try:
        delete_entry(entry)
    finally:
        lock.release(remove=True)
    return None


def stale_partials(directory):
    """(partials, orphan_manifests): leftovers of interrupted runs.

    An orphan manifest is one whose data is missing while the data's .partial exists (the
    crash came between the manifest's rename and the data's).
    """
    names = set(_listdir(directory))
    partials = sorted(n for n in names if n.startswith("backup_") and n.endswith(PARTIAL_SUFFIX))
    orphans = []
    for name in sorted(names):
        if not (name.endswith(MANIFEST_SUFFIX) and parse_name(name)):
            continue
        try:
            with open(os.path.join(directory, name), encoding="utf-8") as handle:
                data = json.load(handle).get("data")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(data, str) and data not in names and (data + PARTIAL_SUFFIX) in names:
            orphans.append(name)
    return partials, orphans


def clean_stale(directory, own_lock_path, check_mode=False):
    """Remove leftovers of interrupted runs, only while no other lock in directory is held.

    Returns (removed, skipped_reason).
    """
    partials, orphans = stale_partials(directory)
    if not partials and not orphans:
        return [], None
    if other_lock_held(directory, own_lock_path):
        return [], f"another backup in {directory} is running: its .partial files are left alone"
    removed = []
    for name in orphans + partials:
        if not check_mode:
            remove_path(os.path.join(directory, name))
        removed.append(name)
    if removed and not check_mode:
        fsync_path(directory)
    return removed, None


def epoch_to_iso(value):
    if value is None:
        return None
    return iso(datetime.datetime.fromtimestamp(value, datetime.UTC))


def timegm(dt):
    return calendar.timegm(dt.utctimetuple())


# --------------------------------------------------------------------------- backup_info


def collect_info(params, now=None):
    """What tokotani.dr.backup_info reports. Returns (result, failure message or None). Read-only."""
    directory = params["backup_dir"]
    if not os.path.isdir(directory):
        raise CatalogError(f"backup_dir {directory} does not exist (or is not a directory)")
    now = now or utcnow()
    before = parse_timestamp(params.get("before")) if params.get("before") else None
    max_age = parse_duration(params.get("max_age")) if params.get("max_age") else None
    listing = scan(
        directory,
        database=params.get("database"),
        include_legacy=params.get("include_legacy", True),
        keys=backup_keys.keyring(params),
    )
    entries = listing["backups"]
    if params.get("verify"):
        for entry in entries:
            if entry["valid"]:
                verify_entry(entry)
    public = []
    for entry in entries:
        item = public_entry(entry, now)
        if params.get("include_manifest"):
            item["manifest"] = entry["manifest"]
        public.append(item)
    by_name = {item["name"] + "\0" + (item["path"] or ""): item for item in public}

    def pick(entry):
        return by_name[entry["name"] + "\0" + (entry["path"] or "")] if entry else None

    latest = newest(entries)
    result = {
        "backups": public,
        "count": len(public),
        "valid_count": len([e for e in entries if e["valid"]]),
        "suspicious": [e["name"] for e in entries if e["valid"] and e.get("suspicious")],
        "newest": pick(latest),
        "newest_age_seconds": pick(latest)["age_seconds"] if latest else None,
        "partials": listing["partials"],
        "stale": False,
    }
    if before is not None:
        result["newest_before"] = pick(newest(entries, before=before))
    failure = None
    if max_age is not None:
        what = f"of database {params['database']} " if params.get("database") else ""
        if latest is None:
            result["stale"] = True
            failure = f"no valid backup {what}in {directory}: backups are stale (max_age {human_duration(max_age)})"
        elif result["newest_age_seconds"] > max_age:
            result["stale"] = True
            failure = (
                f"the newest valid backup {what}in {directory} ({latest['name']}) is "
                f"{human_duration(result['newest_age_seconds'])} old, older than max_age {human_duration(max_age)}: "
                "has the nightly backup stopped?"
            )
    return result, failure
