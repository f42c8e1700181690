"""The weekly verification job (``tokotani-dr verify``) against a real PostgreSQL 15 and a real S3 API (moto).

The runner runs as a process, as systemd starts it: the collection's dr_runner with a JSON
configuration, the password in the environment. Every failure asserts the message (which names the
failed check), the exit status, the record beside the manifest, and that no scratch database is left.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
from backup_support import MIGRATION_SQL, conn_args, copy_backup, databases, drop_db, load_shop, run_job, run_module
from s3_support import serve_moto

DB = "vj_src"
SCRATCH_PREFIX = f"{DB}__verify"
PLAN_ASSERTIONS = [
    {"name": "migrations applied", "sql": "SELECT EXISTS (SELECT 1 FROM _prisma_migrations)"},
    {"name": "sessions table present", "sql": "SELECT to_regclass('public.sessions') IS NOT NULL"},
]


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    yield from serve_moto(tmp_path_factory.mktemp("vj_moto"))


@pytest.fixture(scope="module")
def source(pg_cluster, tmp_path_factory):
    load_shop(pg_cluster, DB, fidelity=False, seed=9)
    pg_cluster.psql(MIGRATION_SQL, db=DB)
    backups = tmp_path_factory.mktemp("vj_backups")
    made = run_module("postgresql_backup", conn_args(pg_cluster, database=DB, backup_dir=str(backups)))
    assert not made.get("failed"), made
    yield {"dir": backups, "backup": made}
    for db in databases(pg_cluster, "vj_"):
        drop_db(pg_cluster, db)


def fresh_dir(source, tmp_path, stems=()):
    """A backup directory with copies of the source backup under the given (stem, age in hours) names."""
    directory = tmp_path / "backups"
    directory.mkdir(mode=0o700)
    now = datetime.datetime.now(datetime.UTC)
    for stem_age in stems:
        when = now - datetime.timedelta(hours=stem_age)
        stem = when.strftime("backup_%Y-%m-%d_%H-%M-%S")
        started_at = when.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
        copy_backup(source["dir"], source["backup"]["name"], directory, stem, started_at)
    return directory


def newest_stem(directory: Path) -> str:
    return sorted(p.name[: -len(".manifest.json")] for p in directory.glob("*.manifest.json"))[-1]


def run_verify(pg_cluster, tmp_path, directory, *, assertions=None, extra=None, env=None):
    """Run ``tokotani-dr verify`` with a configuration like the role's; returns (rc, result, stderr, status)."""
    config = {
        "status_file": str(tmp_path / "status" / "verify-status.json"),
        "source": "local",
        "restore": {
            "source_database": DB,
            "backup_dir": str(directory),
            "login_host": pg_cluster.host,
            "login_port": pg_cluster.port,
            "login_user": pg_cluster.superuser,
            "assertions": PLAN_ASSERTIONS if assertions is None else assertions,
        },
    }
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = dict(config[key], **value)
        else:
            config[key] = value
    proc = run_job("verify", config, tmp_path / "verify.json", {"PGPASSWORD": pg_cluster.password, **(env or {})})
    result = json.loads(proc.stdout) if proc.stdout.strip() else {}
    status_file = Path(config["status_file"])
    status = json.loads(status_file.read_text()) if status_file.exists() else None
    assert pg_cluster.password not in proc.stdout + proc.stderr
    return proc.returncode, result, proc.stderr, status


def scratch_databases(pg_cluster):
    return databases(pg_cluster, SCRATCH_PREFIX)


def test_a_good_backup_passes_and_is_recorded(pg_cluster, source, tmp_path):
    directory = fresh_dir(source, tmp_path, stems=(30, 2))
    stem = newest_stem(directory)
    # A scratch database a killed run left two days ago is cleaned up; a recent one is left to its run.
    pg_cluster.createdb(f"{SCRATCH_PREFIX}_20200101_000000")
    recent = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)).strftime("%Y%m%d_%H%M%S")
    pg_cluster.createdb(f"{SCRATCH_PREFIX}_{recent}")
    rc, result, stderr, status = run_verify(pg_cluster, tmp_path, directory)
    assert rc == 0, stderr
    assert result["result"] == "pass" and result["backup"] == stem and result["failed_check"] is None
    assert f"backup {stem} of {DB} verified" in result["msg"] and "2 assertion(s) hold" in result["msg"]
    assert [a["name"] for a in result["assertions"]] == [a["name"] for a in PLAN_ASSERTIONS]
    assert any("sha256" in c for c in result["checks"]) and any("row counts" in c for c in result["checks"])
    record = json.loads((directory / f"{stem}.verify.json").read_text())
    assert record["result"] == "pass" and record["ok"] and record["backup"] == stem
    assert record["rows"] == source["backup"]["rows"] and record["duration"] > 0 and record["finished_at"]
    assert (directory / f"{stem}.verify.json").stat().st_mode & 0o777 == 0o600
    assert status["last_run"]["ok"] and status["last_success"]["summary"]["result"] == "pass"
    assert "dropped the scratch database vj_src__verify_20200101_000000 of an interrupted run" in stderr
    assert scratch_databases(pg_cluster) == [f"{SCRATCH_PREFIX}_{recent}"]
    drop_db(pg_cluster, f"{SCRATCH_PREFIX}_{recent}")
    # The record is ignored by the catalog (the listing still has exactly the two backups).
    listing = run_module("backup_info", {"backup_dir": str(directory), "database": DB})
    assert listing["count"] == 2 and listing["valid_count"] == 2, listing


def test_a_corrupted_backup_fails_naming_the_check(pg_cluster, source, tmp_path):
    directory = fresh_dir(source, tmp_path, stems=(30, 2))
    good = newest_stem(directory)
    rc, _result, stderr, _status = run_verify(pg_cluster, tmp_path, directory)
    assert rc == 0, stderr
    # A newer copy with one flipped byte in a data file; its manifest is kept as it was.
    bad_when = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    bad = bad_when.strftime("backup_%Y-%m-%d_%H-%M-%S")
    copy_backup(directory, good, directory, bad, bad_when.strftime("%Y-%m-%dT%H:%M:%S.000000Z"))
    data = sorted((directory / f"{bad}.dir").glob("*.zst"), key=lambda p: p.stat().st_size)[-1]
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data.write_bytes(bytes(raw))

    rc, result, stderr, status = run_verify(pg_cluster, tmp_path, directory)
    assert rc == 1
    assert result["result"] == "fail" and result["backup"] == bad and result["failed_check"] == "backup integrity"
    assert result["msg"].startswith(f"verification of backup {bad} of {DB} FAILED (check: backup integrity): ")
    assert "checksum mismatch" in result["msg"] and data.name in result["msg"]
    assert f"tokotani-dr verify: FAILED: verification of backup {bad}" in stderr
    record = json.loads((directory / f"{bad}.verify.json").read_text())
    assert record["result"] == "fail" and record["failed_check"] == "backup integrity"
    assert json.loads((directory / f"{good}.verify.json").read_text())["result"] == "pass"
    assert not status["last_run"]["ok"] and status["last_success"]["summary"]["backup"] == good
    assert scratch_databases(pg_cluster) == []


def test_a_failing_assertion_is_named_and_the_scratch_database_dropped(pg_cluster, source, tmp_path):
    directory = fresh_dir(source, tmp_path, stems=(2,))
    stem = newest_stem(directory)
    assertions = [*PLAN_ASSERTIONS, {"name": "no abandoned sessions", "sql": "SELECT count(*) = 0 FROM sessions"}]
    rc, result, stderr, _status = run_verify(pg_cluster, tmp_path, directory, assertions=assertions)
    assert rc == 1, stderr
    assert result["failed_check"] == "assertion 'no abandoned sessions'"
    assert (
        "FAILED (check: assertion 'no abandoned sessions'): assertion 'no abandoned sessions' failed: "
        in (result["msg"])
    )
    assert "returned false" in result["msg"] and "was dropped" in result["msg"]
    assert [a["ok"] for a in result["assertions"]] == [True, True, False]
    assert any("row counts" in c for c in result["checks"]), "the checks that held are recorded"
    record = json.loads((directory / f"{stem}.verify.json").read_text())
    assert record["failed_check"] == "assertion 'no abandoned sessions'" and record["result"] == "fail"
    assert scratch_databases(pg_cluster) == []


def test_row_counts_that_differ_from_the_manifest_fail_after_the_restore(pg_cluster, source, tmp_path):
    directory = fresh_dir(source, tmp_path, stems=(2,))
    stem = newest_stem(directory)
    manifest_path = directory / f"{stem}.manifest.json"
    manifest = json.loads(manifest_path.read_text())
    orders = next(t for t in manifest["tables"] if t["name"] == "orders")
    orders["rows"] += 1
    manifest_path.write_text(json.dumps(manifest))
    rc, result, _stderr, _status = run_verify(pg_cluster, tmp_path, directory)
    assert rc == 1 and result["failed_check"] == "row counts"
    assert f"public.orders has {orders['rows'] - 1} rows, the manifest says {orders['rows']}" in result["msg"]
    assert scratch_databases(pg_cluster) == []


def test_no_backup_and_a_bad_configuration(pg_cluster, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, result, _stderr, _status = run_verify(pg_cluster, tmp_path, empty)
    assert rc == 1 and result["failed_check"] == "backup present"
    assert f"verification of the backups of {DB} FAILED (check: backup present): no valid backup" in result["msg"]

    rc, result, stderr, _status = run_verify(pg_cluster, tmp_path, empty, extra={"restore": {"mode": "replace"}})
    assert rc == 2 and "restore: mode cannot be set here" in result["msg"], stderr
    rc, result, _stderr, _status = run_verify(pg_cluster, tmp_path, empty, extra={"source": "tape"})
    assert rc == 2 and "source: 'tape' is not one of local, offsite" in result["msg"]
    rc, result, _stderr, _status = run_verify(
        pg_cluster, tmp_path, empty, assertions=[{"name": "x", "sql": "SELECT true", "oops": 1}]
    )
    assert rc == 2 and "assertions[0]: unsupported option(s): oops" in result["msg"]


def test_offsite_source_pulls_into_a_temporary_directory(pg_cluster, source, moto, tmp_path):
    bucket = moto.bucket()
    pushed = run_module(
        "backup_offsite",
        moto.args(bucket, prefix="srv1", mode="push", backup_dir=str(source["dir"]), database=DB),
    )
    assert not pushed.get("failed"), pushed
    stem = source["backup"]["name"]
    offsite = {"bucket": bucket, "prefix": "srv1", "endpoint_url": moto.url, "region": "us-east-1", "retries": 1}
    keys = {"AWS_ACCESS_KEY_ID": moto.access_key, "AWS_SECRET_ACCESS_KEY": moto.secret_key}

    # No local copy: the backup is pulled, verified and removed; nothing to record beside.
    local = tmp_path / "local"
    local.mkdir(mode=0o700)
    rc, result, stderr, status = run_verify(
        pg_cluster, tmp_path, local, extra={"source": "offsite", "offsite": offsite}, env=keys
    )
    assert rc == 0, stderr
    assert result["result"] == "pass" and result["source"] == "offsite" and result["backup"] == stem
    assert result["record"] is None and status["last_success"]["summary"]["backup"] == stem
    assert f"pulled {stem}" in stderr
    assert list(local.iterdir()) == [], "the temporary pull directory is removed"

    # With the same backup kept locally, the record goes beside the local manifest.
    copy = tmp_path / "copy"
    copy.mkdir(mode=0o700)
    started_at = json.loads((source["dir"] / f"{stem}.manifest.json").read_text())["started_at"]
    copy_backup(source["dir"], stem, copy, stem, started_at)
    rc, result, stderr, _status = run_verify(
        pg_cluster, tmp_path, copy, extra={"source": "offsite", "offsite": offsite}, env=keys
    )
    assert rc == 0, stderr
    assert result["record"] == str(copy / f"{stem}.verify.json")
    assert json.loads((copy / f"{stem}.verify.json").read_text())["source"] == "offsite"
    assert sorted(p.name for p in copy.iterdir() if p.name.startswith(".tokotani-verify-")) == []

    # A missing bucket names the offsite step.
    missing = {"source": "offsite", "offsite": dict(offsite, bucket="vj-missing")}
    rc, result, _stderr, _status = run_verify(pg_cluster, tmp_path, local, extra=missing, env=keys)
    assert rc == 1 and result["failed_check"] == "offsite copy" and "vj-missing" in result["msg"]
    assert scratch_databases(pg_cluster) == []
