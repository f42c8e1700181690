"""The module tokotani.dr.dr_job: the timers' jobs run from a playbook, against a real PostgreSQL and a real S3 API.

The roles' entry points ``now`` call it with the configuration their timers read, so each test runs the
same configuration through the module and through the runner and compares what they did. Secrets reach
the job only through the module's no_log options; the tests look for them in everything ansible printed,
at -vvv too.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from backup_support import (
    MIGRATION_SQL,
    ROOT,
    conn_args,
    databases,
    drop_db,
    load_shop,
    module_argv,
    module_env,
    parse_result,
    run_job,
    run_module,
)
from s3_support import REGION, serve_moto

DB = "djm_shop"
KEY = "dr-job-module-test-key-0123456789abcdef"
ASSERTIONS = [{"name": "migrations applied", "sql": "SELECT EXISTS (SELECT 1 FROM _prisma_migrations)"}]


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    yield from serve_moto(tmp_path_factory.mktemp("djm_moto"))


@pytest.fixture(scope="module")
def shop(pg_cluster):
    load_shop(pg_cluster, DB, fidelity=False, seed=11)
    pg_cluster.psql(MIGRATION_SQL, db=DB)
    yield DB
    for db in databases(pg_cluster, "djm_"):
        drop_db(pg_cluster, db)


def connection(cluster):
    args = conn_args(cluster)
    args.pop("login_password")  # given to the job as a secret, never in its configuration
    return dict(args, pg_bindir=str(cluster.bindir))


def backup_config(cluster, moto, bucket, tmp_path, prefix):
    return {
        "status_file": str(tmp_path / "state" / "backup-status.json"),
        "backup": dict(connection(cluster), database=DB, backup_dir=str(tmp_path / "backups"), label="manual"),
        "offsite": {
            "bucket": bucket,
            "prefix": prefix,
            "region": REGION,
            "endpoint_url": moto.url,
            "keep_days": 14,
            "keep_min": 2,
            "retries": 1,
        },
    }


def secrets(cluster, moto):
    return {
        "backup_key": KEY,
        "login_password": cluster.password,
        "access_key": moto.access_key,
        "secret_key": moto.secret_key,
    }


def run_dr_job(args, verbosity=0):
    """Run the module with ansible at the given verbosity; returns (host result, everything ansible printed)."""
    proc = subprocess.run(
        module_argv("dr_job", args, verbosity=verbosity),
        capture_output=True,
        text=True,
        env=module_env(),
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    return parse_result(proc.stdout), proc.stdout + proc.stderr


def test_a_backup_run_is_the_timers_run_and_prints_no_secret(pg_cluster, shop, moto, tmp_path):
    bucket = moto.bucket()
    config = backup_config(pg_cluster, moto, bucket, tmp_path, "djm")
    result, printed = run_dr_job(dict(job="backup", config=config, **secrets(pg_cluster, moto)), verbosity=3)
    assert not result.get("failed"), result
    for secret in (KEY, pg_cluster.password, moto.secret_key):
        assert secret not in printed, "a secret was printed"
    name = result["summary"]["name"]
    assert result["backup"]["name"] == name and result["changed"] is True
    assert result["offsite"]["pushed"] is True and result["summary"]["offsite"]["error"] is None
    assert f"backup {name} of {DB}" in result["msg"] and "offsite s3://" in result["msg"]
    assert any(line.startswith("backing up database") for line in result["log"])
    manifest = json.loads((tmp_path / "backups" / f"{name}.manifest.json").read_text())
    assert manifest["label"] == "manual" and manifest["signature"]["key_id"]
    status = json.loads(Path(config["status_file"]).read_text())
    assert status["last_success"]["summary"] == result["summary"]

    # The runner, given the same configuration and the same secrets by environment, makes the same kind of run:
    # a second backup with the same keys in its summary, and the module's backup still offsite.
    env = {"TOKOTANI_BACKUP_KEY": KEY, "PGPASSWORD": pg_cluster.password}
    env.update(AWS_ACCESS_KEY_ID=moto.access_key, AWS_SECRET_ACCESS_KEY=moto.secret_key)
    proc = run_job("backup", config, tmp_path / "backup.json", env)
    assert proc.returncode == 0, proc.stderr
    timer = json.loads(proc.stdout)
    assert sorted(timer["summary"]) == sorted(result["summary"])
    assert sorted(timer["offsite"]) == sorted(result["offsite"])
    listing = run_module(
        "backup_offsite",
        dict(
            mode="list",
            bucket=bucket,
            prefix="djm",
            database=DB,
            region=REGION,
            endpoint_url=moto.url,
            access_key=moto.access_key,
            secret_key=moto.secret_key,
            backup_key=KEY,
        ),
    )
    assert {b["name"] for b in listing["backups"] if b["valid"]} == {name, timer["summary"]["name"]}, listing


def test_a_backup_whose_push_fails_fails_saying_the_local_backup_is_kept(pg_cluster, shop, moto, tmp_path):
    config = backup_config(pg_cluster, moto, moto.bucket(), tmp_path, "djm-down")
    config["offsite"]["endpoint_url"] = "http://127.0.0.1:9"
    config["offsite"]["connect_timeout"] = 2
    result, _printed = run_dr_job(dict(job="backup", config=config, **secrets(pg_cluster, moto)))
    assert result["failed"] is True
    name = result["summary"]["name"]
    assert result["msg"].startswith(f"the local backup {name} is fine"), result["msg"]
    assert "and was kept, but the offsite copy failed" in result["msg"]
    assert (tmp_path / "backups" / f"{name}.manifest.json").is_file()
    assert json.loads(Path(config["status_file"]).read_text())["last_run"]["ok"] is False


def test_a_configuration_the_specs_refuse_fails_before_anything_is_done(pg_cluster, shop, moto, tmp_path):
    config = backup_config(pg_cluster, moto, moto.bucket(), tmp_path, "djm-bad")
    config["offsite"]["backup_dir"] = "/elsewhere"
    result, _printed = run_dr_job(dict(job="backup", config=config, **secrets(pg_cluster, moto)))
    assert result["failed"] is True and result["changed"] is False
    assert result["msg"] == (
        "invalid configuration: offsite: backup_dir cannot be set here: the job pushes the new backup of the "
        "'backup' section (its database and backup_dir) and prunes that database's copies"
    )
    assert not (tmp_path / "backups").exists()
    # Monitoring sees the failed run, as it sees a timer's.
    assert json.loads(Path(config["status_file"]).read_text())["last_run"]["ok"] is False


def test_a_secret_in_the_configuration_is_used_with_the_timers_warning(pg_cluster, shop, moto, tmp_path):
    config = backup_config(pg_cluster, moto, moto.bucket(), tmp_path, "djm-secret")
    config["offsite"]["secret_key"] = moto.secret_key
    args = {"job": "backup", "config": config, "login_password": pg_cluster.password, "access_key": moto.access_key}
    result, _printed = run_dr_job(args)
    assert not result.get("failed"), result
    assert any("offsite.secret_key is set in the configuration file" in w for w in result["warnings"]), result


def verify_config(cluster, directory, tmp_path, assertions):
    return {
        "status_file": str(tmp_path / "state" / "verify-status.json"),
        "source": "local",
        "scratch_database": "djm_shop__verify",
        "restore": dict(connection(cluster), source_database=DB, backup_dir=str(directory), assertions=assertions),
    }


@pytest.fixture
def signed_backups(pg_cluster, shop, tmp_path):
    directory = tmp_path / "backups"
    args = conn_args(pg_cluster, database=DB, backup_dir=str(directory), backup_key=KEY)
    made = run_module("postgresql_backup", args)
    assert not made.get("failed"), made
    return directory, made["name"]


def test_a_verification_passes_is_recorded_via_the_playbook_and_leaves_no_scratch_database(
    pg_cluster, signed_backups, tmp_path
):
    directory, stem = signed_backups
    config = verify_config(pg_cluster, directory, tmp_path, ASSERTIONS)
    pg_cluster.createdb("djm_shop__verify_20200101_000000")  # what a killed run left
    args = {"job": "verify", "config": config, "backup_key": KEY, "login_password": pg_cluster.password}
    result, printed = run_dr_job(args, verbosity=3)
    assert not result.get("failed"), result
    assert KEY not in printed and pg_cluster.password not in printed
    assert result["result"] == "pass" and result["backup"] == stem
    assert f"backup {stem} of {DB} verified" in result["msg"]
    assert any("of an interrupted run" in line for line in result["log"]), result["log"]
    # The restore engine says what it does, as it does it (the journal of the timer gets the same lines).
    assert any(line.startswith(f"restoring {stem} into djm_shop__verify_") for line in result["log"]), result["log"]
    assert any("tables with the manifest's row counts" in line for line in result["log"]), result["log"]
    record = json.loads((directory / f"{stem}.verify.json").read_text())
    assert record["via"] == "playbook" and record["result"] == "pass"
    assert databases(pg_cluster, "djm_shop__verify") == []


def test_a_failing_verification_fails_naming_the_check(pg_cluster, signed_backups, tmp_path):
    directory, stem = signed_backups
    assertions = [*ASSERTIONS, {"name": "no customers", "sql": "SELECT count(*) = 0 FROM users"}]
    config = verify_config(pg_cluster, directory, tmp_path, assertions)
    args = {"job": "verify", "config": config, "backup_key": KEY, "login_password": pg_cluster.password}
    result, _printed = run_dr_job(args)
    assert result["failed"] is True
    assert f"verification of backup {stem} of {DB} FAILED (check: assertion 'no customers')" in result["msg"]
    assert result["failed_check"] == "assertion 'no customers'"
    assert json.loads((directory / f"{stem}.verify.json").read_text())["via"] == "playbook"
    assert databases(pg_cluster, "djm_shop__verify") == []

    # With another key than the one that signed it, the backup is refused, and the message says which key to give.
    args["backup_key"] = "another-key-that-did-not-sign-it-0123456789"
    result, _printed = run_dr_job(args)
    assert result["failed"] is True and "FAILED (check: backup present)" in result["msg"], result["msg"]
    assert "give the key that signed it in backup_previous_keys" in result["msg"], result["msg"]
