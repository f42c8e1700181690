# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The app's .env: one place for how the collection reads it (tokotani.dr.tokotani_app keeps the secrets of the
live release, tokotani.dr.rebuild_server reads them from the old server when it still answers) and writes one key
of it (tokotani.dr.dotenv_secret: a secret set, generated or rotated, atomically).

The file may have been written by someone else (the app rotates its own secrets; an intruder may have been there),
so what is read is confined: only ``KEY=value`` lines with a shell-style name, one line per value, split as the app
splits them (nothing can add a line to the .env written from it), optional ``export``, the surrounding quotes
removed, no escape interpreted. ``secret_value`` says whether a value has the shape of a secret to write back.
Writing follows the app's own writer (lib/env.js writeDotenvValue): every line of the key replaced by one
``KEY=value``, appended when missing, the other lines kept as they are."""

from __future__ import annotations

import os
import re
import secrets
import stat
import tempfile

from ansible_collections.tokotani.dr.plugins.module_utils.errors import DrError

KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LINE = re.compile(r"^[ \t]*(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_]*)[ \t]*=[ \t]*(.*?)[ \t]*$")
# printable ASCII without space: no line, no whitespace, nothing outside what a generated token holds
SECRET = re.compile(r"^[!-~]{16,1024}$")


def _unquoted(value):
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def lines_of(text):
    """The lines as the app splits them (on LF, a CR before it dropped): not on the other line breaks Python knows
    (U+2028, form feed, ...), so that what is read here is what the app reads."""
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def parse(text, keys=None):
    """The KEY=value pairs of a .env's text (the last one wins, as dotenv does), only ``keys`` when given."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str):
        raise TypeError(f"the .env's text must be a string, not {type(text).__name__}")
    wanted = None if keys is None else {str(key) for key in keys}
    values = {}
    for line in lines_of(text):
        match = LINE.match(line)
        if match is None:
            continue
        key, value = match.group(1), _unquoted(match.group(2))
        if wanted is None or key in wanted:
            values[key] = value
    return values


def secret_value(value):
    """Whether value has the shape of a secret written back into a .env: 16 to 1024 printable ASCII, no whitespace."""
    return isinstance(value, str) and SECRET.match(value) is not None


# --------------------------------------------------------------------------- writing one key

MAX_BYTES = 1024 * 1024
STATES = ("present", "rotated", "absent")


def generate(nbytes=32):
    """A new secret as the app makes its own (crypto.randomBytes(n).toString('base64url')): URL-safe, no padding."""
    return secrets.token_urlsafe(nbytes)


def edited(text, key, value):
    """text with every line of key replaced by one KEY=value in the place of the first, or removed when value is
    None. The other lines are kept byte for byte; the file ends with a line feed."""
    pattern = re.compile(r"^[ \t]*(?:export[ \t]+)?" + re.escape(key) + r"[ \t]*=")
    out, placed = [], False
    for line in lines_of(text):
        if pattern.match(line) is None:
            out.append(line)
        elif value is not None and not placed:
            out.append(f"{key}={value}")
            placed = True
    if value is not None and not placed:
        out.append(f"{key}={value}")
    return ("\n".join(out) + "\n") if out else ""


def _check_value(key, value):
    if not isinstance(value, str) or value == "":
        raise DrError(f"the value given for {key} is empty: give a value, or generate one (without value)")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        raise DrError(f"the value given for {key} has a line break or another control character: one line only")
    if value != value.strip():
        raise DrError(f"the value given for {key} starts or ends with whitespace (the app would trim it)")


def _read(path):
    """(text, the file's lstat), or ("", None) when it is missing."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return "", None
    if stat.S_ISLNK(info.st_mode):
        raise DrError(f"{path} is a symbolic link: not followed, nothing was written (a .env is a regular file)")
    if not stat.S_ISREG(info.st_mode):
        raise DrError(f"{path} is not a regular file: nothing was written")
    if info.st_size > MAX_BYTES:
        raise DrError(f"{path} is {info.st_size} bytes, more than a .env holds ({MAX_BYTES}): nothing was written")
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as err:
        raise DrError(f"cannot read {path}: {err.strerror}") from None
    try:
        return data.decode("utf-8"), info
    except UnicodeDecodeError:
        raise DrError(f"{path} is not UTF-8 text: nothing was written") from None


def _write(path, text, info):
    """text into path in one rename: a 0600 temporary file beside it, the owner of the old file kept, fsynced."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        if info is not None and (info.st_uid, info.st_gid) != (os.geteuid(), os.getegid()):
            os.fchown(fd, info.st_uid, info.st_gid)
        with os.fdopen(fd, "wb") as handle:
            fd = None
            handle.write(text.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as err:
        if fd is not None:
            os.close(fd)
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise DrError(f"cannot write {path}: {err.strerror}; it was left as it was") from None
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def set_secret(params, check_mode=False):
    """tokotani.dr.dotenv_secret: the key set (value), kept or generated when missing (present), generated anew
    (rotated) or removed (absent). The result names the key and what happened, never a value; the diff shows
    the key's line with the value hidden."""
    path, key, state = params["path"], params["key"], params.get("state") or "present"
    value, nbytes = params.get("value"), params.get("bytes") or 32
    if not isinstance(key, str) or KEY.match(key) is None:
        raise DrError(f"key must be a variable name (letters, digits, _; not a digit first), got {key!r}")
    if state not in STATES:
        raise DrError(f"state must be one of {', '.join(STATES)}, got {state!r}")
    if value is not None and state != "present":
        raise DrError(f"value is only for state=present: state={state} generates or removes, it takes none")
    if value is None and not 16 <= nbytes <= 512:
        raise DrError(f"bytes must be between 16 and 512 (the size of a generated secret), got {nbytes}")
    if value is not None:
        _check_value(key, value)
    text, info = _read(path)
    if info is None and state == "absent":
        return _result(path, key, "unchanged", existed=False, mode=None, check_mode=check_mode)
    if info is None and not params.get("create"):
        raise DrError(f"{path} does not exist: nothing was written (create=true makes a new one, mode 0600)")
    before = parse(text, [key]).get(key)
    if state == "absent":
        action, new = ("removed" if before is not None else "unchanged"), None
    elif state == "rotated":
        action, new = ("rotated" if before is not None else "generated"), generate(nbytes)
    elif value is not None:
        action, new = ("unchanged" if before == value else "set"), value
    else:
        action, new = ("unchanged", before) if before is not None else ("generated", generate(nbytes))
    # a key kept is not rewritten (its quotes, its duplicates stay as they are): only the mode may change
    content = text if action == "unchanged" else edited(text, key, new)
    mode = None if info is None else stat.S_IMODE(info.st_mode)
    changed = content != text or info is None or mode != 0o600
    if changed and not check_mode:
        _write(path, content, info)
    return _result(path, key, action, existed=before is not None, mode=mode, check_mode=check_mode, changed=changed)


def _result(path, key, action, *, existed, mode, check_mode, changed=False):
    verb = {"set": "set", "generated": "generated", "rotated": "rotated", "removed": "removed", "unchanged": "kept"}
    msg = f"{key} {verb[action]} in {path}" if existed or action != "unchanged" else f"{key} is not in {path}"
    if mode is not None and mode != 0o600:
        msg += f"; its mode {mode:04o} {'would be' if check_mode else 'was'} made 0600"
    if check_mode and changed:
        msg += " (check mode: nothing was written)"
    after = "" if action == "removed" or (action == "unchanged" and not existed) else f"{key}=<hidden>\n"
    if action in ("set", "generated", "rotated"):
        after = f"{key}=<hidden, new>\n"
    return {
        "changed": changed,
        "path": path,
        "key": key,
        "outcome": action,
        "existed": existed,
        "mode_before": None if mode is None else f"{mode:04o}",
        "msg": msg,
        "diff": {
            "before_header": path,
            "after_header": path,
            "before": f"{key}=<hidden>\n" if existed else "",
            "after": after,
        },
    }
