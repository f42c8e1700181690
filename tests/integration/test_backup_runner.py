"""The host-side runner of the daily backup (``tokotani-dr backup``) against a real PostgreSQL and a real S3 API.

The runner runs as on a server: a subprocess with the collection's engines copied into a directory
laid out like ``/usr/local/lib/tokotani-dr`` (the files the role copies, from its own list), the
role's launcher template, ``python -I`` and Ansible made unimportable. The S3 keys and the database
password reach it only through the environment, as systemd's EnvironmentFile gives them; the tests
check that neither ever shows up in what it prints.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from backup_support import ROOT, copy_backup, drop_db, files_in, load_shop
from helpers import free_port
from s3_support import REGION, serve_moto

DB = "runner_shop"
ROLE = ROOT / "roles" / "backup"
UTILS = ROOT / "plugins" / "module_utils"
OLD_STAMPS = ["2020-01-01_02-00-00", "2020-01-02_02-00-00", "2020-01-03_02-00-00"]
# Ansible's own package is made unimportable: the runner must work on a host without it.
BOOT = "import sys; sys.modules['ansible'] = None; sys.argv[0] = 'tokotani-dr'; exec(open(sys.argv.pop(1)).read())"


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    yield from serve_moto(tmp_path_factory.mktemp("runner_moto"))


@pytest.fixture(scope="module")
def shop(pg_cluster):
    load_shop(pg_cluster, DB, fidelity=False)
    yield DB
    drop_db(pg_cluster, DB)


def host_modules() -> list[str]:
    """The files the role installs: what the lookup tokotani.dr.runner_files returns, read from the runner's code."""
    proc = subprocess.run(
        [sys.executable, "-I", "-c", HOST_LIST, str(ROOT / ".collections")],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout)


HOST_LIST = (
    "import json, sys; sys.modules['ansible'] = None; sys.path.insert(0, sys.argv[1]); "
    "from ansible_collections.tokotani.dr.plugins.module_utils.jobs import runner; "
    "print(json.dumps(runner.HOST_MODULES))"
)


@pytest.fixture(scope="module")
def launcher(tmp_path_factory) -> Path:
    """The runner as the role installs it: the engines under <lib>/ansible_collections/... and the launcher."""
    lib = tmp_path_factory.mktemp("tokotani-dr-lib")
    target = lib / "ansible_collections" / "tokotani" / "dr" / "plugins" / "module_utils"
    for name in host_modules():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(UTILS / name, target / name)
    lines = (ROLE / "templates" / "tokotani-dr.j2").read_text().splitlines(keepends=True)
    assert lines[0] == "{{ '#!' }}{{ __backup_runner_python }} -I\n", lines[0]
    text = "".join(line for line in lines[1:] if not line.startswith("{#"))
    text = text.replace("{{ ansible_managed }}", "test copy").replace("{{ __backup_runner_lib_dir }}", str(lib))
    assert "{{" not in text, text
    path = lib / "tokotani-dr"
    path.write_text(text)
    return path


class Runner:
    """One runner setup: a backup directory, a status file, a prefix in the bucket, the secrets' environment."""

    def __init__(self, launcher, cluster, moto, bucket, base: Path):
        self.launcher = launcher
        self.cluster = cluster
        self.moto = moto
        self.bucket = bucket
        self.backup_dir = base / "backups"
        self.status_file = base / "state" / "backup-status.json"
        self.config_file = base / "backup.json"
        self.prefix = base.name

    def config(self, offsite=True, endpoint=None, **backup):
        doc = {
            "status_file": str(self.status_file),
            "backup": {
                "database": DB,
                "backup_dir": str(self.backup_dir),
                "login_host": self.cluster.host,
                "login_port": self.cluster.port,
                "login_user": self.cluster.superuser,
                "pg_bindir": str(self.cluster.bindir),
                "keep_days": 14,
                "keep_min": 2,
                "label": "daily",
            },
            "offsite": None,
        }
        doc["backup"].update(backup)
        if offsite:
            doc["offsite"] = {
                "bucket": self.bucket,
                "prefix": self.prefix,
                "region": REGION,
                "endpoint_url": endpoint or self.moto.url,
                "keep_days": 14,
                "keep_min": 2,
                "retries": 1,
                "connect_timeout": 2,
            }
        return doc

    def env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PG"))}
        env.update(
            AWS_ACCESS_KEY_ID=self.moto.access_key,
            AWS_SECRET_ACCESS_KEY=self.moto.secret_key,
            PGPASSWORD=self.cluster.password,
        )
        return env

    def run(self, config, check=False):
        self.config_file.write_text(json.dumps(config) if isinstance(config, dict) else config)
        argv = [sys.executable, "-I", "-c", BOOT, str(self.launcher), "backup", "--config", str(self.config_file)]
        if check:
            argv.append("--check")
        proc = subprocess.run(argv, capture_output=True, text=True, env=self.env(), timeout=300, check=False)
        for secret in (self.moto.secret_key, self.cluster.password):
            assert secret not in proc.stdout and secret not in proc.stderr, "a secret was printed"
        return proc

    def result(self, proc):
        try:
            return json.loads(proc.stdout)
        except ValueError as err:
            raise AssertionError(f"no JSON result (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}") from err

    def status(self):
        return json.loads(self.status_file.read_text())

    def local(self):
        if not self.backup_dir.exists():
            return []
        return sorted(n[: -len(".manifest.json")] for n in files_in(self.backup_dir) if n.endswith(".manifest.json"))

    def offsite(self):
        keys = self.moto.keys(self.bucket, self.prefix + "/")
        names = sorted(k.split("/")[-1][: -len(".manifest.json")] for k in keys if k.endswith(".manifest.json"))
        return names, keys


@pytest.fixture
def runner(launcher, pg_cluster, moto, shop, tmp_path):
    return Runner(launcher, pg_cluster, moto, moto.bucket(), tmp_path)


def verified(directory: Path, name: str) -> bool:
    """The backup checked by the catalog with checksums recomputed (the same check backup_info verify does)."""
    sys.path.insert(0, str(ROOT / ".collections"))
    from ansible_collections.tokotani.dr.plugins.module_utils import backup_catalog  # noqa: PLC0415

    entry = backup_catalog.verify_entry(backup_catalog.managed_entry(str(directory), f"{name}.manifest.json"))
    return entry["valid"] and entry["verified"]


def test_a_run_backs_up_pushes_offsite_and_writes_the_status(runner):
    proc = runner.run(runner.config())
    assert proc.returncode == 0, proc.stderr
    result = runner.result(proc)
    summary = result["summary"]
    name = summary["name"]
    assert runner.local() == [name]
    assert verified(runner.backup_dir, name)
    manifest = json.loads((runner.backup_dir / f"{name}.manifest.json").read_text())
    assert manifest["label"] == "daily"
    assert summary["sha256"] == manifest["sha256"]
    assert summary["size"] == manifest["size"] > 0
    assert summary["duration"] > 0
    names, keys = runner.offsite()
    assert names == [name]
    for rel in manifest["files"]:
        assert f"{runner.prefix}/{manifest['data']}/{rel}" in keys, rel
    assert summary["offsite"] == {
        "pushed": True,
        "key": f"{runner.prefix}/{manifest['data']}/",
        "caught_up": [],
        "pruned": [],
        "error": None,
    }
    doc = runner.status()
    assert doc["last_run"]["ok"] is True
    assert doc["last_success"] == doc["last_run"]
    assert doc["last_success"]["summary"] == summary
    assert f"backup {name} of {DB}" in result["msg"]
    assert proc.stderr.splitlines()[0].startswith("tokotani-dr backup: started")
    assert "tokotani-dr backup: ok in" in proc.stderr
    # The configuration the runner read holds no secret: they came from the environment.
    assert runner.moto.secret_key not in runner.config_file.read_text()


def test_offsite_endpoint_down_fails_keeps_the_local_backup_and_the_last_success(runner):
    assert runner.run(runner.config()).returncode == 0
    first = runner.status()["last_success"]
    down = f"http://127.0.0.1:{free_port()}"
    proc = runner.run(runner.config(endpoint=down))
    assert proc.returncode == 1
    result = runner.result(proc)
    name = result["summary"]["name"]
    assert result["failed"] is True
    assert f"the local backup {name} is fine" in result["msg"]
    assert "and was kept, but the offsite copy failed" in result["msg"]
    assert f"the S3 endpoint {down} is unreachable" in result["msg"]
    assert f"FAILED: the local backup {name} is fine" in proc.stderr
    # Nothing lost: the new backup is there and valid, the status keeps the previous success.
    assert name in runner.local()
    assert verified(runner.backup_dir, name)
    doc = runner.status()
    assert doc["last_success"] == first
    assert doc["last_run"]["ok"] is False
    assert doc["last_run"]["summary"]["offsite"]["error"] == "endpoint_unreachable"
    assert doc["last_run"]["summary"]["offsite"]["pushed"] is False
    # The endpoint is back: the next run pushes its own backup and catches up the one that missed it.
    proc = runner.run(runner.config())
    assert proc.returncode == 0, proc.stderr
    summary = runner.result(proc)["summary"]
    assert summary["offsite"]["caught_up"] == [name]
    names, _keys = runner.offsite()
    assert set(runner.local()) == set(names)
    assert len(names) == 3


def test_a_damaged_older_backup_fails_the_catch_up_but_not_the_new_backup_or_the_retention(runner):
    # A backup made while offsite copies were off, then damaged on disk (same size, one byte changed).
    assert runner.run(runner.config(offsite=False)).returncode == 0
    damaged = runner.local()[0]
    toc = runner.backup_dir / f"{damaged}.dir" / "toc.dat"
    data = bytearray(toc.read_bytes())
    data[-1] ^= 0xFF
    toc.write_bytes(bytes(data))
    proc = runner.run(runner.config())
    assert proc.returncode == 1
    result = runner.result(proc)
    name = result["summary"]["name"]
    assert result["msg"].startswith(f"the backup {name} is fine, locally (")
    assert f"and offsite (s3://{runner.bucket}/{runner.prefix}/{name}.dir/)" in result["msg"]
    assert (
        f"but catching up the older backup {damaged} on s3://{runner.bucket}/{runner.prefix}/ failed" in result["msg"]
    )
    assert "does not match its manifest" in result["msg"]
    assert result["summary"]["offsite"]["error"] == "checksum_mismatch"
    # The new backup is offsite, the damaged one is not (its uploaded data was removed), both stay local.
    names, keys = runner.offsite()
    assert names == [name]
    # (by path component: a backup taken in the same second is named <damaged>_1)
    assert not [k for k in keys if f"/{damaged}." in k]
    assert runner.local() == sorted([damaged, name])
    assert runner.status()["last_run"]["ok"] is False


def test_retention_prunes_old_backups_locally_and_offsite_but_keeps_keep_min(runner):
    assert runner.run(runner.config()).returncode == 0
    newest = runner.local()[0]
    old = ["backup_" + stamp for stamp in OLD_STAMPS]
    for stamp in OLD_STAMPS:
        copy_backup(runner.backup_dir, newest, runner.backup_dir, f"backup_{stamp}", stamp[:10] + "T02:00:00Z")
    # A run without retention: the catch-up pushes the aged copies too (they are within its keep_days).
    config = runner.config(keep_days=99999, keep_min=10)
    config["offsite"].update(keep_days=99999, keep_min=10)
    proc = runner.run(config)
    assert proc.returncode == 0, proc.stderr
    assert sorted(runner.result(proc)["summary"]["offsite"]["caught_up"]) == old
    assert len(runner.local()) == 5
    assert runner.offsite()[0] == runner.local()
    # The real retention: 14 days, and the newest 4 kept whatever their age.
    config = runner.config(keep_days=14, keep_min=4)
    config["offsite"].update(keep_days=14, keep_min=4)
    proc = runner.run(config)
    assert proc.returncode == 0, proc.stderr
    summary = runner.result(proc)["summary"]
    local = runner.local()
    assert len(local) == 4
    assert local[0] == old[-1]  # the newest aged copy is among the newest 4
    assert sorted(summary["pruned"]) == old[:-1]
    assert sorted(summary["offsite"]["pruned"]) == old[:-1]
    assert runner.offsite()[0] == local
    assert all(verified(runner.backup_dir, name) for name in local)


def test_a_failed_backup_exits_1_writes_nothing_and_keeps_the_last_success(runner):
    assert runner.run(runner.config()).returncode == 0
    first = runner.status()["last_success"]
    before = files_in(runner.backup_dir)
    proc = runner.run(runner.config(database="no_such_database"))
    assert proc.returncode == 1
    result = runner.result(proc)
    assert "no_such_database" in result["msg"]
    assert "FAILED:" in proc.stderr and "no_such_database" in proc.stderr
    assert files_in(runner.backup_dir) == before
    doc = runner.status()
    assert doc["last_success"] == first
    assert doc["last_run"]["ok"] is False


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c.update(extra=1), r"invalid configuration: unsupported top-level key\(s\): extra"),
        (lambda c: c["backup"].pop("backup_dir"), "invalid configuration: backup: missing required option: backup_dir"),
        (lambda c: c["offsite"].update(mode="pull"), "invalid configuration: offsite: mode cannot be set here"),
        (lambda c: c["offsite"].update(multipart_chunksize="big"), "offsite: multipart_chunksize: not a size: 'big'"),
    ],
)
def test_a_bad_configuration_exits_2_with_a_clear_message_and_backs_up_nothing(runner, mutate, message):
    config = runner.config()
    mutate(config)
    proc = runner.run(config)
    assert proc.returncode == 2
    assert runner.result(proc)["msg"].startswith("invalid configuration: ")
    assert re.search(message, proc.stderr), proc.stderr
    assert runner.local() == []


def test_unreadable_configuration_exits_2(runner):
    proc = runner.run("{ not json")
    assert proc.returncode == 2
    assert f"the configuration {runner.config_file} is not valid JSON" in proc.stderr
    assert proc.stdout == ""


def test_check_mode_plans_and_writes_nothing(runner):
    proc = runner.run(runner.config(), check=True)
    assert proc.returncode == 0, proc.stderr
    assert "check mode: would back up" in runner.result(proc)["msg"]
    assert not runner.backup_dir.exists()
    assert not runner.status_file.exists()
    assert runner.offsite()[0] == []


def test_with_no_backup_here_the_guard_compares_with_the_offsite_copy(runner, pg_cluster):
    """A rebuilt server whose local backups are gone: the first backup of a database that lost half a table is
    compared with the newest offsite copy, and marked suspicious."""
    db = "runner_shrunk"
    load_shop(pg_cluster, db, fidelity=False, seed=11)
    try:
        config = runner.config(database=db, label="daily")
        first = runner.result(runner.run(config))
        assert first["failed"] is False and first["summary"]["offsite"]["pushed"], first
        shutil.rmtree(runner.backup_dir)  # the server's disk is gone; the offsite copies are not
        pg_cluster.psql("DELETE FROM order_items WHERE id % 2 = 0;", db=db)
        # backups are named to the second: one started within the first's second would take its name
        time.sleep(1.1)
        proc = runner.run(config)
        assert proc.returncode == 0, proc.stderr
        second = runner.result(proc)
        name = second["summary"]["name"]
        assert f"no backup of {db} here: comparing the new one with the offsite copy {first['summary']['name']}" in (
            proc.stderr
        )
        manifest = json.loads((runner.backup_dir / f"{name}.manifest.json").read_text())
        assert manifest["suspicious"]["compared_with"] == first["summary"]["name"]
        assert re.search(r"public\.order_items has \d+ rows, 50% fewer than \d+", manifest["suspicious"]["reason"])
    finally:
        drop_db(pg_cluster, db)
