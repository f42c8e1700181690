"""tokotani.dr.dotenv_secret on real files, through ansible: a secret set, generated, rotated or removed in an app's
.env atomically (0600, owner kept, the other lines kept byte for byte), never shown (result, diff, -vvv), and the
files an intruder could leave (a link, a non-UTF-8 or huge file, a value or key that would add a line) refused
with the file left as it was."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
from backup_support import ROOT, module_argv, module_env, parse_result

TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")  # 32 random bytes, base64url without padding: what the app generates
APP_ENV = (
    "# {{ ansible_managed }} by tokotani.dr.tokotani_app: secrets, keep this file 0600.\n"
    "NODE_ENV=production\n"
    "DATABASE_URL=postgres://tokotani:pw%2Fx@127.0.0.1:5432/tokotani\n"
    "NEXTAUTH_SECRET=Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0MTIzNDU\n"
    "ADMIN_TOKEN=admin-token-before-the-breach-0123456789\n"
    "\n"
    "HEARTBEAT_INTERVAL_MS=5000\n"
)


@pytest.fixture
def env_file(tmp_path):
    path = tmp_path / "current" / ".env"
    path.parent.mkdir()
    path.write_text(APP_ENV)
    path.chmod(0o600)
    return path


def values(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().split("\n"):
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out[key] = value
    return out


def others(path: Path, key: str) -> list[str]:
    return [line for line in path.read_text().split("\n") if not line.startswith(f"{key}=")]


def run(path: Path, check: bool = False, diff: bool = False, verbosity: int = 0, **args) -> tuple[dict, str]:
    """The module's result and the whole output of ansible (to look for values in)."""
    argv = module_argv("dotenv_secret", {"path": str(path), **args}, check=check, verbosity=verbosity)
    if diff:
        argv.append("--diff")
    proc = subprocess.run(argv, capture_output=True, text=True, env=module_env(), timeout=120, check=False, cwd=ROOT)
    return parse_result(proc.stdout), proc.stdout + proc.stderr


def test_rotated_replaces_the_value_and_keeps_every_other_line(env_file):
    before = values(env_file)
    result, output = run(env_file, key="ADMIN_TOKEN", state="rotated")
    assert result["changed"] and result["outcome"] == "rotated" and result["existed"], result
    assert result["msg"] == f"ADMIN_TOKEN rotated in {env_file}"
    after = values(env_file)
    assert TOKEN.match(after["ADMIN_TOKEN"]) and after["ADMIN_TOKEN"] != before["ADMIN_TOKEN"]
    kept = [line for line in APP_ENV.split("\n") if not line.startswith("ADMIN_TOKEN=")]
    assert others(env_file, "ADMIN_TOKEN") == kept
    assert after["ADMIN_TOKEN"] not in output and before["ADMIN_TOKEN"] not in output
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    # a second rotation is a change again, with another value
    again = run(env_file, key="ADMIN_TOKEN", state="rotated")[0]
    assert again["changed"] and values(env_file)["ADMIN_TOKEN"] != after["ADMIN_TOKEN"]


def test_present_generates_only_a_missing_key_and_then_keeps_it(env_file):
    first, output = run(env_file, key="SESSION_PEPPER")
    assert first["changed"] and first["outcome"] == "generated" and not first["existed"], first
    value = values(env_file)["SESSION_PEPPER"]
    assert TOKEN.match(value) and value not in output
    assert env_file.read_text().endswith(f"HEARTBEAT_INTERVAL_MS=5000\nSESSION_PEPPER={value}\n")
    second = run(env_file, key="SESSION_PEPPER")[0]
    assert not second["changed"] and second["outcome"] == "unchanged", second
    assert values(env_file)["SESSION_PEPPER"] == value


def test_a_given_value_is_set_once_and_never_shown_even_at_vvv(env_file):
    url = "postgres://tokotani:N3w-P4ss%2Fw0rd-after-breach@127.0.0.1:5432/tokotani"
    result, output = run(env_file, verbosity=3, key="DATABASE_URL", value=url)
    assert result["changed"] and result["outcome"] == "set", result
    assert values(env_file)["DATABASE_URL"] == url
    assert "N3w-P4ss" not in output, "the value given must not appear in the -vvv output"
    again, output = run(env_file, verbosity=3, key="DATABASE_URL", value=url)
    assert not again["changed"] and again["outcome"] == "unchanged", again
    assert "N3w-P4ss" not in output


def test_every_line_of_the_key_becomes_one_as_the_app_writes_it(env_file):
    env_file.write_text(APP_ENV + "export ADMIN_TOKEN='second-copy-of-the-token-000'\n  ADMIN_TOKEN = third\n")
    result = run(env_file, key="ADMIN_TOKEN", state="rotated")[0]
    assert result["changed"], result
    lines = env_file.read_text().split("\n")
    assert [line for line in lines if "ADMIN_TOKEN" in line] == [f"ADMIN_TOKEN={values(env_file)['ADMIN_TOKEN']}"]
    assert lines.index(f"ADMIN_TOKEN={values(env_file)['ADMIN_TOKEN']}") == 4, "in the place of the first one"


def test_absent_removes_the_key_and_a_missing_file_is_no_change(env_file, tmp_path):
    result = run(env_file, key="ADMIN_TOKEN", state="absent")[0]
    assert result["changed"] and result["outcome"] == "removed", result
    assert "ADMIN_TOKEN" not in env_file.read_text()
    again = run(env_file, key="ADMIN_TOKEN", state="absent")[0]
    assert not again["changed"] and again["msg"] == f"ADMIN_TOKEN is not in {env_file}"
    missing = run(tmp_path / "nothing" / ".env", key="ADMIN_TOKEN", state="absent")[0]
    assert not missing.get("failed") and not missing["changed"], missing


def test_check_mode_and_diff_say_what_would_change_without_values(env_file):
    before = env_file.read_bytes()
    result, output = run(env_file, check=True, diff=True, key="NEXTAUTH_SECRET", state="rotated")
    assert result["changed"] and result["outcome"] == "rotated", result
    assert result["msg"] == f"NEXTAUTH_SECRET rotated in {env_file} (check mode: nothing was written)"
    assert env_file.read_bytes() == before
    assert result["diff"] == {
        "before_header": str(env_file),
        "after_header": str(env_file),
        "before": "NEXTAUTH_SECRET=<hidden>\n",
        "after": "NEXTAUTH_SECRET=<hidden, new>\n",
    }
    assert values(env_file)["NEXTAUTH_SECRET"] not in output


def test_the_owner_is_kept_and_a_loose_mode_made_0600(env_file):
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    os.chown(env_file, 65534, 65534)
    env_file.chmod(0o644)
    result = run(env_file, key="ADMIN_TOKEN", state="rotated")[0]
    assert result["changed"] and result["mode_before"] == "0644", result
    assert result["msg"] == f"ADMIN_TOKEN rotated in {env_file}; its mode 0644 was made 0600"
    info = env_file.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (65534, 65534, 0o600)
    assert not [name for name in os.listdir(env_file.parent) if name != ".env"], "no temporary file left"


def test_a_missing_file_fails_unless_create(tmp_path):
    path = tmp_path / ".env"
    result = run(path, key="ADMIN_TOKEN")[0]
    assert result.get("failed") and not result["changed"]
    assert result["msg"] == f"{path} does not exist: nothing was written (create=true makes a new one, mode 0600)"
    created = run(path, key="ADMIN_TOKEN", create=True)[0]
    assert created["changed"] and created["outcome"] == "generated", created
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and TOKEN.match(values(path)["ADMIN_TOKEN"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"key": "ADMIN_TOKEN; touch /tmp/x"}, "key must be a variable name (letters, digits, _; not a digit first)"),
        ({"key": "1ADMIN"}, "key must be a variable name"),
        (
            {"key": "ADMIN_TOKEN", "value": "abc\nNODE_OPTIONS=--require /tmp/evil.js"},
            "the value given for ADMIN_TOKEN has a line break or another control character: one line only",
        ),
        ({"key": "ADMIN_TOKEN", "value": ""}, "the value given for ADMIN_TOKEN is empty"),
        ({"key": "ADMIN_TOKEN", "value": " padded "}, "starts or ends with whitespace"),
        ({"key": "ADMIN_TOKEN", "value": "x" * 20, "state": "rotated"}, "value is only for state=present"),
        ({"key": "ADMIN_TOKEN", "bytes": 8}, "bytes must be between 16 and 512"),
    ],
)
def test_a_bad_input_is_refused_and_the_file_left_as_it_was(env_file, args, message):
    before = env_file.read_bytes()
    result, output = run(env_file, **args)
    assert result.get("failed") and not result["changed"], result
    assert message in result["msg"], result["msg"]
    assert env_file.read_bytes() == before
    assert "/tmp/evil.js" not in output


def test_a_link_planted_in_place_of_the_env_is_not_followed(env_file, tmp_path):
    target = tmp_path / "shadow"
    target.write_text("root:x:0:0\n")
    env_file.unlink()
    env_file.symlink_to(target)
    result = run(env_file, key="ADMIN_TOKEN", state="rotated")[0]
    assert result.get("failed") and "is a symbolic link: not followed, nothing was written" in result["msg"]
    assert target.read_text() == "root:x:0:0\n" and env_file.is_symlink()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"ADMIN_TOKEN=\xff\xfe\n", "is not UTF-8 text: nothing was written"),
        (b"A=" + b"x" * (1024 * 1024) + b"\n", "more than a .env holds"),
    ],
)
def test_a_file_that_is_no_env_is_refused(env_file, content, message):
    env_file.write_bytes(content)
    result = run(env_file, key="ADMIN_TOKEN", state="rotated")[0]
    assert result.get("failed") and message in result["msg"], result
    assert env_file.read_bytes() == content


def test_a_line_break_the_app_does_not_know_is_no_line_break_here(env_file):
    # U+2028 splits a line for Python's splitlines, not for the app: the key hidden behind it is not a key
    env_file.write_text("NODE_ENV=production\u2028ADMIN_TOKEN=planted-by-an-intruder-000\n")
    result = run(env_file, key="ADMIN_TOKEN")[0]
    assert result["outcome"] == "generated" and not result["existed"], result
    assert env_file.read_text().startswith("NODE_ENV=production\u2028ADMIN_TOKEN=planted-by-an-intruder-000\n")
