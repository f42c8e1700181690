"""tokotani.dr.app_backup on a real release tree (the layout tokotani_app builds), through ansible: the record of
the live release and the copies of its files, the retention, and what it does with files an intruder replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from backup_support import run_module
from test_app_release import release

SECRET = "nextauth-secret-of-the-live-release-0123456789"


@pytest.fixture
def tree(tmp_path):
    """v1 live, with its .env and package-lock.json."""
    base = tmp_path / "app"
    v1 = release(base, "v1.0.0-11111111", "v1.0.0", "1" * 40)
    (v1 / ".env").write_text(f"NEXTAUTH_SECRET={SECRET}\n")
    (v1 / ".env").chmod(0o600)
    (v1 / "package-lock.json").write_text('{"lockfileVersion": 3}\n')
    assert run_module("app_release", {"base_dir": str(base), "version": "v1.0.0-11111111"})["changed"]
    return base


def backups(base: Path) -> list[str]:
    where = base / ".deploy-backups"
    return sorted(p.name for p in where.iterdir()) if where.exists() else []


def test_the_live_release_is_backed_up_with_its_files_and_the_paired_database_backup(tree):
    args = {
        "base_dir": str(tree),
        "deploying": "v1.1.0",
        "database": "tokotani",
        "database_backup": "backup_2026-12-04_05-30-00.dir",
    }
    done = run_module("app_backup", args)
    assert done["changed"] and not done.get("failed"), done
    path = Path(done["path"])
    assert path.parent == tree / ".deploy-backups" and path.name == done["name"]
    assert done["name"].endswith("_v1.0.0")
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert stat.S_IMODE((path / ".env").stat().st_mode) == 0o600
    assert (path / ".env").read_text() == f"NEXTAUTH_SECRET={SECRET}\n"
    assert (path / "ecosystem.config.js").read_text() == "module.exports = { apps: [] };\n"
    record = json.loads((path / "record.json").read_text())
    assert record == done["record"]
    assert record["release"] == {
        "name": "v1.0.0-11111111",
        "version": "v1.0.0",
        "commit": "1" * 40,
        "build_id": "build_11111111",
        "live_since": record["release"]["live_since"],
        "path": str(tree / "releases" / "v1.0.0-11111111"),
    }
    assert record["release"]["live_since"]
    assert record["current"] == str(tree / "releases" / "v1.0.0-11111111")
    assert record["package_lock_sha256"] == hashlib.sha256(b'{"lockfileVersion": 3}\n').hexdigest()
    assert (record["deploying"], record["database"], record["database_backup"]) == (
        "v1.1.0",
        "tokotani",
        "backup_2026-12-04_05-30-00.dir",
    )
    assert done["msg"] == (
        f"release v1.0.0-11111111 (v1.0.0) backed up into {path} (record, .env, ecosystem.config.js); "
        "the paired database backup is backup_2026-12-04_05-30-00.dir"
    )
    # the secret is copied, never shown
    assert SECRET not in json.dumps(done)


def test_the_newest_backups_are_kept_and_so_is_the_live_releases(tree):
    first = run_module("app_backup", {"base_dir": str(tree)})
    # v2 goes live, then two more backups (of v2) with keep=2: v1's goes only when it is no longer live's
    release(tree, "v2.0.0-22222222", "v2.0.0", "2" * 40)
    assert run_module("app_release", {"base_dir": str(tree), "version": "v2.0.0-22222222"})["changed"]
    second = run_module("app_backup", {"base_dir": str(tree), "keep": 2})
    assert second["removed"] == [], second
    third = run_module("app_backup", {"base_dir": str(tree), "keep": 2})
    assert third["removed"] == [first["path"]], third
    assert backups(tree) == sorted([second["name"], third["name"]])
    assert third["msg"].endswith("; 1 older backup(s) removed (keep 2)")

    # back on v1 (its backup is gone), then v2's backups are pruned but the newest of the live release is kept
    assert run_module("app_release", {"base_dir": str(tree), "version": "v1.0.0-11111111"})["changed"]
    fourth = run_module("app_backup", {"base_dir": str(tree), "keep": 1})
    assert sorted(fourth["removed"]) == sorted([second["path"], third["path"]]), fourth
    assert backups(tree) == [fourth["name"]]
    # a directory this module does not name is never touched, whatever it holds
    (tree / ".deploy-backups" / "keep-me").mkdir()
    fifth = run_module("app_backup", {"base_dir": str(tree), "keep": 1})
    assert fifth["removed"] == [], fifth  # the fourth is the newest earlier backup of the live release: kept
    assert backups(tree) == sorted([fourth["name"], fifth["name"], "keep-me"])
    sixth = run_module("app_backup", {"base_dir": str(tree), "keep": 1})
    assert sixth["removed"] == [fourth["path"]], sixth
    assert (tree / ".deploy-backups" / "keep-me").is_dir()


def test_check_mode_and_no_live_release_write_nothing(tree, tmp_path):
    checked = run_module("app_backup", {"base_dir": str(tree)}, check=True)
    assert checked["changed"] and not checked.get("failed"), checked
    assert checked["msg"].startswith("would back up release v1.0.0-11111111 (v1.0.0) into ")
    assert not (tree / ".deploy-backups").exists()

    fresh = tmp_path / "fresh"
    release(fresh, "v1.0.0-11111111", "v1.0.0", "1" * 40)
    none = run_module("app_backup", {"base_dir": str(fresh)})
    assert not none["changed"] and not none.get("failed"), none
    assert none["msg"] == (
        f"no release is live in {fresh} ({fresh}/current does not exist: no release is live): nothing to back up"
    )


def test_files_an_intruder_replaced_are_refused_and_nothing_is_written(tree, tmp_path):
    live = tree / "releases" / "v1.0.0-11111111"
    elsewhere = tmp_path / "shadow"
    elsewhere.write_text("root:x:0:0::/root:/bin/bash\n")
    (live / ".env").unlink()
    os.symlink(elsewhere, live / ".env")
    refused = run_module("app_backup", {"base_dir": str(tree)})
    assert refused["failed"], refused
    assert refused["msg"] == (
        "the live release's .env is a symbolic link (refused: it could point anywhere): nothing was backed up"
    )
    assert backups(tree) == []

    (live / ".env").unlink()
    (live / ".env").write_text("A=1\n")
    (tree / ".deploy-backups").symlink_to(tmp_path)
    refused = run_module("app_backup", {"base_dir": str(tree)})
    assert refused["failed"], refused
    assert refused["msg"] == (
        f"{tree}/.deploy-backups is not a directory: refusing to write the application backup there"
    )
    assert not list(tmp_path.glob("2026*")), "written through the link"
