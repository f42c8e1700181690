"""Signed backups: with a backup key, only manifests signed by it (or a previous key) pass, locally and
offsite, against a real PostgreSQL 15 and moto server, through ansible.

Every refusal asserts the operator's message, that nothing was restored or pulled, and that the live
database is untouched.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from backup_support import (
    conn_args,
    databases,
    drop_db,
    load_shop,
    module_argv,
    module_env,
    run_module,
    table_checksums,
)
from s3_support import offsite, serve_moto

DB = "sg_live"
KEY = "sg-current-key-" + "c" * 32
OLD = "sg-previous-key-" + "p" * 32
INTRUDER = "sg-intruder-key-" + "i" * 32


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    yield from serve_moto(tmp_path_factory.mktemp("moto"))


@pytest.fixture(scope="module")
def signed(pg_cluster, tmp_path_factory):
    """A live shop database, and one directory backup of it signed with KEY."""
    load_shop(pg_cluster, DB, fidelity=False, seed=11)
    src = tmp_path_factory.mktemp("sg_backups")
    made = run_module("postgresql_backup", conn_args(pg_cluster, database=DB, backup_dir=str(src), backup_key=KEY))
    assert not made.get("failed"), made
    yield {"dir": src, "name": made["name"], "made": made, "rows": table_checksums(pg_cluster, DB)}
    for db in databases(pg_cluster, "sg_"):
        drop_db(pg_cluster, db)


def copy_backup(src: Path, name: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((src / f"{name}.manifest.json").read_text())
    shutil.copytree(src / manifest["data"], dest / manifest["data"])
    shutil.copy(src / f"{name}.manifest.json", dest / f"{name}.manifest.json")
    return dest / f"{name}.manifest.json"


def restore_into(cluster, target: str, directory: Path, **extra) -> dict:
    return run_module(
        "postgresql_restore",
        conn_args(
            cluster, database=target, source_database=DB, backup_dir=str(directory), mode="into", confirm=True, **extra
        ),
    )


def assert_nothing_restored(cluster, target: str, signed: dict) -> None:
    assert target not in databases(cluster, "sg_"), f"{target} was created"
    assert not [d for d in databases(cluster, "sg_") if "__restore_" in d], "a scratch database was left"
    assert table_checksums(cluster, DB) == signed["rows"]


def test_a_backup_with_a_key_carries_a_signature_that_backup_info_checks(signed):
    made = signed["made"]
    manifest = json.loads((signed["dir"] / f"{signed['name']}.manifest.json").read_text())
    assert made["signed"] is True and made["key_id"] == manifest["signature"]["key_id"]
    assert manifest["signature"]["algorithm"] == "HMAC-SHA256"
    checked = run_module("backup_info", {"backup_dir": str(signed["dir"]), "backup_key": KEY})
    assert checked["newest"]["signed"] is True and checked["newest"]["signed_by"] == made["key_id"], checked
    unchecked = run_module("backup_info", {"backup_dir": str(signed["dir"])})
    assert unchecked["newest"]["signed"] is None and unchecked["newest"]["valid"] is True


def test_restore_with_the_key_says_who_signed_and_restores(pg_cluster, signed):
    result = restore_into(pg_cluster, "sg_ok", signed["dir"], backup_key=KEY)
    assert not result.get("failed"), result
    assert f"the manifest of {signed['name']} is signed by backup key {signed['made']['key_id']}" in result["verified"]
    assert table_checksums(pg_cluster, "sg_ok") == signed["rows"]


def test_an_unsigned_backup_is_refused_with_a_key_and_accepted_with_allow_unsigned(pg_cluster, signed, tmp_path):
    manifest_path = copy_backup(signed["dir"], signed["name"], tmp_path / "unsigned")
    doc = json.loads(manifest_path.read_text())
    del doc["signature"]
    manifest_path.write_text(json.dumps(doc))

    refused = restore_into(pg_cluster, "sg_unsigned", tmp_path / "unsigned", backup_key=KEY)
    assert refused["failed"], refused
    assert refused["msg"].startswith(f"no valid backup of database {DB} in {tmp_path / 'unsigned'}"), refused
    assert (
        f"the newest, {signed['name']}: the manifest of backup {signed['name']} is not signed, and a backup key"
        in (refused["msg"])
    )
    named = restore_into(pg_cluster, "sg_unsigned", tmp_path / "unsigned", backup_key=KEY, backup=str(manifest_path))
    assert named["failed"]
    assert named["msg"] == (
        f"backup {signed['name']} is not valid: the manifest of backup {signed['name']} is not signed, and a backup "
        "key is configured: it was made without a key (or by someone else). If you know where it comes from, accept "
        "it with allow_unsigned=true. Nothing was changed."
    ), named
    assert_nothing_restored(pg_cluster, "sg_unsigned", signed)

    allowed = restore_into(pg_cluster, "sg_unsigned", tmp_path / "unsigned", backup_key=KEY, allow_unsigned=True)
    assert not allowed.get("failed"), allowed
    assert (
        f"the manifest of {signed['name']} is not signed: accepted because allow_unsigned is true"
        in (allowed["verified"])
    )
    assert allowed["backup"]["signed"] is False


def test_a_forged_manifest_is_refused_even_with_allow_unsigned(pg_cluster, signed, tmp_path):
    """An intruder who rewrites data and manifest (matching sha256) cannot re-sign without the key."""
    manifest_path = copy_backup(signed["dir"], signed["name"], tmp_path / "forged")
    doc = json.loads(manifest_path.read_text())
    doc["tables"][0]["rows"] += 1  # any change: the data's sha256 could be recomputed just as well
    manifest_path.write_text(json.dumps(doc))
    for extra in ({}, {"allow_unsigned": True}):
        result = restore_into(
            pg_cluster, "sg_forged", tmp_path / "forged", backup_key=KEY, backup=str(manifest_path), **extra
        )
        assert result["failed"], result
        assert "does not match its content: the manifest was changed after it was signed" in result["msg"], result
        assert result["msg"].endswith("Nothing was changed.")
    assert_nothing_restored(pg_cluster, "sg_forged", signed)


def test_a_wrong_key_names_the_key_that_signed_and_rotation_accepts_previous_keys(pg_cluster, signed):
    wrong = restore_into(pg_cluster, "sg_rot", signed["dir"], backup_key=INTRUDER, backup=signed["name"] + ".dir")
    assert wrong["failed"], wrong
    assert f"is signed with key {signed['made']['key_id']}, which is none of the keys given" in wrong["msg"], wrong
    assert "give the key that signed it in backup_previous_keys" in wrong["msg"]
    assert_nothing_restored(pg_cluster, "sg_rot", signed)

    rotated = restore_into(pg_cluster, "sg_rot", signed["dir"], backup_key=OLD, backup_previous_keys=[KEY])
    assert not rotated.get("failed"), rotated
    assert rotated["backup"]["signed_by"] == signed["made"]["key_id"]


def test_a_legacy_file_stays_accepted_with_a_key_and_is_flagged_unsigned(pg_cluster, signed, tmp_path):
    dump = subprocess.run(
        ["pg_dump", "--no-owner", "-d", pg_cluster.dsn(DB)], capture_output=True, check=True, timeout=120
    ).stdout
    legacy = tmp_path / "backup_2026-01-03_02-00-00.sql.gz"
    legacy.write_bytes(gzip.compress(dump))
    result = restore_into(pg_cluster, "sg_legacy", tmp_path, backup=str(legacy), backup_key=KEY)
    assert not result.get("failed"), result
    assert result["backup"]["kind"] == "legacy" and result["backup"]["signed"] is False
    assert "(legacy backup of the earlier scripts: no manifest, nothing signed)" in " ".join(result["verified"])


def test_offsite_a_newer_backup_signed_by_an_intruder_is_never_latest_nor_kept_for_keep_min(
    moto, pg_cluster, signed, tmp_path
):
    bucket = moto.bucket()
    conn = moto.args(bucket, prefix="shop", backup_key=KEY)
    pushed = offsite({**conn, "mode": "push", "backup_dir": str(signed["dir"])})
    assert not pushed.get("failed"), pushed

    # The intruder makes its own backup (its own data, matching sha256) and signs it with its own key.
    evil_dir = tmp_path / "evil"
    evil = run_module(
        "postgresql_backup", conn_args(pg_cluster, database=DB, backup_dir=str(evil_dir), backup_key=INTRUDER)
    )
    assert not evil.get("failed"), evil
    assert evil["name"] > signed["name"]
    assert not offsite({**moto.args(bucket, prefix="shop"), "mode": "push", "backup_dir": str(evil_dir)}).get("failed")

    listed = offsite({**conn, "mode": "list"})
    assert listed["newest"]["name"] == signed["name"], listed
    bad = next(b for b in listed["backups"] if b["name"] == evil["name"])
    assert not bad["valid"] and f"is signed with key {evil['key_id']}, which is none of the keys given" in " ".join(
        bad["problems"]
    )
    pulled = offsite({**conn, "mode": "pull", "backup_dir": str(tmp_path / "pulled")})
    assert pulled["status"] == "pulled" and pulled["name"] == signed["name"], pulled
    assert pulled["signed"] is True and pulled["signed_by"] == signed["made"]["key_id"]
    assert any(f"the newer offsite backup {evil['name']} is not valid" in w for w in pulled["warnings"])
    by_name = offsite({**conn, "mode": "pull", "backup_dir": str(tmp_path / "p2"), "backup": evil["name"]})
    assert by_name["failed"] and by_name["msg"].startswith(f"the offsite backup {evil['name']} is not valid"), by_name
    assert not (tmp_path / "p2").exists() or not any((tmp_path / "p2").iterdir())

    pruned = offsite({**conn, "mode": "prune", "keep_days": 0, "keep_min": 1})
    assert not pruned.get("failed"), pruned
    keys = moto.keys(bucket)
    assert f"shop/{signed['name']}.manifest.json" in keys, "the real newest backup was pruned"
    assert f"shop/{evil['name']}.manifest.json" in keys, (
        "an invalid entry is never pruned: it is kept for the post-mortem"
    )


def test_the_backup_key_never_shows_even_with_vvv(pg_cluster, signed, tmp_path):
    runs = [
        ("postgresql_backup", conn_args(pg_cluster, database=DB, backup_dir=str(tmp_path), backup_key=KEY), {}),
        (
            "backup_info",
            {"backup_dir": str(signed["dir"]), "backup_previous_keys": [OLD]},
            {"TOKOTANI_BACKUP_KEY": KEY},
        ),
        (
            "postgresql_restore",
            conn_args(pg_cluster, database=DB, backup_dir=str(signed["dir"]), backup_key="sg-too-short"),
            {},
        ),
    ]
    for module, args, env in runs:
        proc = subprocess.run(
            module_argv(module, args, check=module == "postgresql_restore", verbosity=3),
            capture_output=True,
            text=True,
            env=module_env({"ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default", **env}),
            timeout=300,
            check=False,
        )
        output = proc.stdout + proc.stderr
        assert KEY not in output and OLD not in output, module
        assert "sg-too-short" not in output, module
    assert table_checksums(pg_cluster, DB) == signed["rows"]
