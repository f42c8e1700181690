# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The evidence of a breach, collected before anything is changed (plan 2.4): one tarball with a sha256 manifest
and who, when and where (tokotani.dr.evidence_bundle).

Everything read is the intruder's ground: files are read without following a symbolic link (a link is recorded
with its target, never read through), each up to a size cap, and a file that looks like a .env is withheld (its
keys and the sha256 of their values come through ``env_files``, never a value). Commands run from an argv list
(no shell), each with a timeout; their output is evidence as it is. The bundle is written to a 0600 temporary file
and renamed into place; its manifest lists the sha256 of every member (``MANIFEST.sha256`` checks with
``sha256sum -c`` in the unpacked directory)."""

from __future__ import annotations

import datetime
import getpass
import hashlib
import io
import json
import os
import re
import socket
import stat
import subprocess
import tarfile
import tempfile
import time

from ansible_collections.tokotani.dr.plugins.module_utils import backup_catalog, dotenv
from ansible_collections.tokotani.dr.plugins.module_utils.errors import DrError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
ENV_NAME = re.compile(r"(^|[._-])env$|^\.env([._-].*)?$")
MAX_LISTED = 20000


def _utc(epoch):
    return backup_catalog.iso(datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC))


def _looks_like_env(path):
    return ENV_NAME.search(os.path.basename(path)) is not None


class Bundle:
    """The members of a bundle in memory order: name -> bytes, with the manifest's record of each."""

    def __init__(self, name, max_file_bytes):
        self.name = name
        self.max_file_bytes = max_file_bytes
        self.members = {}
        self.records = []
        self.missing = []
        self.withheld = []
        self.errors = []

    def add(self, member, data, **record):
        self.members[member] = data
        self.records.append({"member": member, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data), **record})

    def add_file(self, path):
        """One file or directory given by the operator (a directory: its regular files, one level of links noted)."""
        path = os.path.abspath(path)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            self.missing.append(path)
            return
        except OSError as err:
            self.errors.append(f"{path}: {err.strerror}")
            return
        if stat.S_ISDIR(info.st_mode):
            for root, dirs, files in os.walk(path, followlinks=False):
                dirs.sort()
                for name in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
                    self._add_one(os.path.join(root, name))
            return
        self._add_one(path)

    def _add_one(self, path):
        member = "files/" + path.lstrip("/")
        try:
            info = os.lstat(path)
        except OSError as err:
            self.errors.append(f"{path}: {err.strerror}")
            return
        common = {
            "source": path,
            "mode": f"{stat.S_IMODE(info.st_mode):04o}",
            "uid": info.st_uid,
            "mtime": _utc(info.st_mtime),
        }
        if stat.S_ISLNK(info.st_mode):
            target = os.readlink(path)
            self.add(
                member + ".symlink",
                (target + "\n").encode("utf-8", "surrogateescape"),
                kind="symlink",
                target=target,
                **common,
            )
            return
        if not stat.S_ISREG(info.st_mode):
            self.errors.append(f"{path}: not a regular file, not collected")
            return
        if _looks_like_env(path):
            self.withheld.append(
                {"source": path, "why": "a .env holds secrets: its keys and value hashes go through env_files"}
            )
            return
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as handle:
                data = handle.read(self.max_file_bytes + 1)
        except OSError as err:
            self.errors.append(f"{path}: {err.strerror}")
            return
        truncated = len(data) > self.max_file_bytes
        self.add(
            member, data[: self.max_file_bytes], kind="file", truncated=truncated, file_size=info.st_size, **common
        )

    def add_command(self, name, argv, timeout):
        member = f"commands/{name}.txt"
        started = time.time()
        try:
            proc = subprocess.run(argv, capture_output=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
            rc, out, err = proc.returncode, proc.stdout, proc.stderr
        except FileNotFoundError:
            self.errors.append(f"command {name}: {argv[0]} is not installed")
            return
        except subprocess.TimeoutExpired as exc:
            rc, out, err = None, exc.stdout or b"", (exc.stderr or b"") + f"\n[timed out after {timeout} s]\n".encode()
        except OSError as exc:
            self.errors.append(f"command {name}: {exc.strerror}")
            return
        head = f"$ {' '.join(argv)}\n# rc={rc} started={_utc(started)} seconds={time.time() - started:.3f}\n".encode()
        self.add(member, head + out + (b"\n# stderr:\n" + err if err else b""), kind="command", argv=list(argv), rc=rc)

    def add_changed(self, directories, since):
        """Every entry under the directories modified or changed since the epoch: path, size, times, mode, owner
        and sha256 (node_modules directories skipped)."""
        listed, more = [], False
        for directory in directories:
            for root, dirs, files in os.walk(os.path.abspath(directory), followlinks=False):
                dirs[:] = sorted(d for d in dirs if d != "node_modules" or not os.path.isdir(os.path.join(root, d)))
                for name in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
                    path = os.path.join(root, name)
                    try:
                        info = os.lstat(path)
                    except OSError:
                        continue
                    # mtime can be set back (touch -d); ctime cannot: "ctime" alone is a file changed since
                    # whose modification time says otherwise (its metadata changed, or it was backdated)
                    which = [k for k, t in (("mtime", info.st_mtime), ("ctime", info.st_ctime)) if t >= since]
                    if not which:
                        continue
                    if len(listed) >= MAX_LISTED:
                        more = True
                        break
                    entry = {
                        "path": path,
                        "size": info.st_size,
                        "mode": f"{stat.S_IMODE(info.st_mode):04o}",
                        "uid": info.st_uid,
                        "mtime": _utc(info.st_mtime),
                        "ctime": _utc(info.st_ctime),
                        "changed": which,
                    }
                    if stat.S_ISLNK(info.st_mode):
                        entry["symlink"] = os.readlink(path)
                    elif stat.S_ISREG(info.st_mode):
                        entry["sha256"] = _sha256(path)
                    listed.append(entry)
        data = (
            json.dumps(
                {"since": _utc(since), "directories": directories, "entries": listed, "truncated": more},
                indent=2,
                sort_keys=True,
            )
            + "\n"
        )
        self.add("changed_files.json", data.encode(), kind="changed_files", entries=len(listed))
        return len(listed)

    def add_env_keys(self, paths):
        """The keys of each .env and the sha256 of their values: which secrets exist and whether they changed."""
        out = {}
        for path in paths:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                with os.fdopen(fd, "rb") as handle:
                    text = handle.read(dotenv.MAX_BYTES + 1).decode("utf-8", "replace")
            except FileNotFoundError:
                self.missing.append(path)
                continue
            except OSError as err:
                self.errors.append(f"{path}: {err.strerror}")
                continue
            out[path] = {
                key: hashlib.sha256(value.encode()).hexdigest() for key, value in sorted(dotenv.parse(text).items())
            }
        self.add("env_keys.json", (json.dumps(out, indent=2, sort_keys=True) + "\n").encode(), kind="env_keys")


def _sha256(path):
    try:
        return backup_catalog.sha256_file(path)
    except OSError:
        return None


def _check(params):
    name = params.get("name")
    if not isinstance(name, str) or NAME.match(name) is None:
        raise DrError(f"name must be 1 to 100 letters, digits, '.', '_' or '-' (not a path), got {name!r}")
    for command in params.get("commands") or []:
        if (
            not isinstance(command, dict)
            or not isinstance(command.get("name"), str)
            or NAME.match(command["name"]) is None
        ):
            raise DrError(f"each command needs a name (letters, digits, '.', '_', '-') and an argv, got {command!r}")
        argv = command.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(arg, str) for arg in argv):
            raise DrError(f"command {command['name']}: argv must be a non-empty list of strings (no shell)")
    if (params.get("max_file_bytes") or 0) <= 0:
        raise DrError("max_file_bytes must be more than 0")


def collect(params, check_mode=False):
    """tokotani.dr.evidence_bundle: the bundle written to <dest>/<name>.tar.gz (0600), its sha256 returned."""
    _check(params)
    dest, name = params["dest"], params["name"]
    path = os.path.join(dest, name + ".tar.gz")
    if os.path.lexists(path):
        raise DrError(f"{path} exists: evidence is never overwritten, give another name")
    since = params.get("since")
    bundle = Bundle(name, params["max_file_bytes"])
    started = time.time()
    for command in params.get("commands") or []:
        bundle.add_command(command["name"], command["argv"], params.get("command_timeout") or 60)
    for item in params.get("files") or []:
        bundle.add_file(item)
    changed = bundle.add_changed(params.get("changed_since") or [], since) if since is not None else None
    if params.get("env_files"):
        bundle.add_env_keys(params["env_files"])
    manifest = {
        "bundle": name,
        "host": socket.getfqdn(),
        "collected_by": params.get("operator") or getpass.getuser(),
        "run_as": getpass.getuser(),
        "started_at": _utc(started),
        "finished_at": _utc(time.time()),
        "since": None if since is None else _utc(since),
        "reason": params.get("reason"),
        "members": bundle.records,
        "missing": bundle.missing,
        "withheld": bundle.withheld,
        "errors": bundle.errors,
    }
    manifest_data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    sums = "".join(f"{r['sha256']}  {r['member']}\n" for r in bundle.records)
    sums += f"{hashlib.sha256(manifest_data).hexdigest()}  MANIFEST.json\n"
    result = {
        "changed": not check_mode,
        "path": path,
        "members": len(bundle.records),
        "changed_files": changed,
        "missing": bundle.missing,
        "withheld": [w["source"] for w in bundle.withheld],
        "errors": bundle.errors,
        "manifest_sha256": hashlib.sha256(manifest_data).hexdigest(),
    }
    if check_mode:
        result.update(sha256=None, size=None, msg=f"would write {path} with {len(bundle.records)} member(s)")
        return result
    data = _tarball(name, bundle.members, manifest_data, sums.encode(), started)
    _write_new(dest, path, data)
    digest = hashlib.sha256(data).hexdigest()
    result.update(
        sha256=digest,
        size=len(data),
        msg=f"evidence of {manifest['host']} in {path} ({len(bundle.records)} member(s), sha256 {digest})",
    )
    return result


def _tarball(name, members, manifest, sums, mtime):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for member, data in [*members.items(), ("MANIFEST.json", manifest), ("MANIFEST.sha256", sums)]:
            info = tarfile.TarInfo(f"{name}/{member}")
            info.size, info.mode, info.mtime = len(data), 0o600, int(mtime)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _write_new(dest, path, data):
    try:
        os.makedirs(dest, 0o700, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=".evidence.", suffix=".tmp", dir=dest)
    except OSError as err:
        raise DrError(f"cannot write into {dest}: {err.strerror}") from None
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temporary, path)  # never over an existing bundle, even one that appeared meanwhile
    except FileExistsError:
        raise DrError(f"{path} exists: evidence is never overwritten, give another name") from None
    except OSError as err:
        raise DrError(f"cannot write {path}: {err.strerror}") from None
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
