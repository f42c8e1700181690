"""tokotani.dr.postgresql_backup against a real PostgreSQL 15, through ansible.

Every fault test asserts the operator-facing message AND that nothing was lost: no backup
appears, no .partial is left, older backups still verify.
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from backup_support import (
    conn_args,
    copy_backup,
    drop_db,
    files_in,
    finish_module,
    load_shop,
    module_argv,
    module_env,
    pids_with,
    run_module,
    start_module,
)
from helpers import free_port, wait_until

DB = "bk_src"
LOCK_FILE = f".tokotani-backup.{DB}.lock"


@pytest.fixture(scope="module")
def shop(pg_cluster):
    load_shop(pg_cluster, DB)
    yield DB
    drop_db(pg_cluster, DB)


def backup(cluster, backup_dir, **options):
    args = conn_args(cluster, database=DB, backup_dir=str(backup_dir))
    args.update(options)
    return run_module("postgresql_backup", args)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verified_names(backup_dir) -> list[str]:
    info = run_module("backup_info", {"backup_dir": str(backup_dir), "verify": True})
    assert not info.get("failed"), info
    return sorted(b["name"] for b in info["backups"] if b["valid"] and b["verified"])


def test_default_backup_manifest_modes_and_row_counts(pg_cluster, shop, tmp_path):
    backup_dir = tmp_path / "backups"
    result = backup(pg_cluster, backup_dir, label="nightly")
    assert result["changed"] and not result.get("failed"), result
    path = Path(result["path"])
    manifest_path = Path(result["manifest_path"])
    assert path.name == result["name"] + ".dir" and path.is_dir()
    assert manifest_path.name == result["name"] + ".manifest.json"
    assert datetime.datetime.strptime(result["name"], "backup_%Y-%m-%d_%H-%M-%S")
    # 0700 directories, 0600 files, nothing else but the lock file.
    assert backup_dir.stat().st_mode & 0o777 == 0o700
    assert path.stat().st_mode & 0o777 == 0o700
    assert manifest_path.stat().st_mode & 0o777 == 0o600
    assert all((f.stat().st_mode & 0o777) == 0o600 for f in path.iterdir())
    assert files_in(backup_dir) == sorted([LOCK_FILE, path.name, manifest_path.name])

    manifest = json.loads(manifest_path.read_text())
    assert manifest == result["manifest"]
    for key in (
        "database",
        "format",
        "compression",
        "size",
        "sha256",
        "started_at",
        "finished_at",
        "duration",
        "server",
        "pg_dump",
        "host",
        "tables",
        "label",
        "tool_version",
        "database_properties",
    ):
        assert key in manifest, key
    assert manifest["database"] == DB and manifest["label"] == "nightly"
    assert manifest["format"] == "directory" and manifest["compression"] == "zstd"
    assert manifest["server"]["version_num"] // 10000 == 15
    assert manifest["pg_dump"]["version"].startswith("15.")
    # Per-file hashes, and the backup's sha256 over the sorted listing.
    listing = ""
    for rel in sorted(manifest["files"]):
        info = manifest["files"][rel]
        assert sha256_of(path / rel) == info["sha256"]
        listing += f"{info['sha256']}  {info['size']}  {rel}\n"
    assert hashlib.sha256(listing.encode()).hexdigest() == manifest["sha256"] == result["sha256"]
    assert manifest["size"] == sum(f.stat().st_size for f in path.iterdir()) == result["size"]
    # Exact row counts of every table, as the database has them.
    counts = {f"{t['schema']}.{t['name']}": t["rows"] for t in manifest["tables"]}
    for table in ("public.users", "public.orders", "public.order_items", "toko_δ.pelanggan_ü", "public.events_2025"):
        schema, name = table.split(".")
        actual = int(pg_cluster.psql(f'SELECT count(*) FROM "{schema}"."{name}";', db=DB))  # noqa: S608
        assert counts[table] == actual > 0, table
    assert result["rows"] == sum(counts.values())
    assert manifest["database_properties"]["connection_limit"] == 50
    assert manifest["database_properties"]["comment"] == "TokoTani → uji cadangan"
    assert result["pruned"] == [] and result["removed_partials"] == []


def test_plain_sql_gz_is_the_plans_format(pg_cluster, shop, tmp_path):
    result = backup(pg_cluster, tmp_path, format="plain", compression="gzip")
    assert not result.get("failed"), result
    path = Path(result["path"])
    assert path.name.endswith(".sql.gz") and path.stat().st_mode & 0o777 == 0o600
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        sql = handle.read()
    assert "COPY public.order_items" in sql and "toko_δ" in sql
    assert result["sha256"] == sha256_of(path) and result["size"] == path.stat().st_size


def test_custom_format(pg_cluster, shop, tmp_path):
    result = backup(pg_cluster, tmp_path, format="custom")
    assert not result.get("failed"), result
    assert result["path"].endswith(".dump") and result["sha256"] == sha256_of(Path(result["path"]))


def test_check_mode_writes_nothing(pg_cluster, shop, tmp_path):
    backup_dir = tmp_path / "not-yet"
    args = conn_args(pg_cluster, database=DB, backup_dir=str(backup_dir))
    result = run_module("postgresql_backup", args, check=True)
    assert result["changed"] and not result.get("failed"), result
    assert result["path"].startswith(str(backup_dir) + "/backup_") and result["path"].endswith(".dir")
    assert result["pruned"] == []
    assert not backup_dir.exists()


def test_retention_keeps_newest_and_never_touches_incomplete_or_foreign(pg_cluster, shop, tmp_path):
    seed = tmp_path / "seed"
    first = backup(pg_cluster, seed)
    assert not first.get("failed"), first
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir(mode=0o700)
    now = datetime.datetime.now(datetime.UTC)
    aged = {}
    for days in (30, 20, 16, 3):
        when = now - datetime.timedelta(days=days)
        stem = when.strftime("backup_%Y-%m-%d_%H-%M-%S")
        copy_backup(seed, first["name"], backup_dir, stem, when.strftime("%Y-%m-%dT%H:%M:%S.000000Z"))
        aged[days] = stem
    # An incomplete backup (its data never got renamed into place) and a manifest without data, both old.
    old = now - datetime.timedelta(days=40)
    incomplete = old.strftime("backup_%Y-%m-%d_%H-%M-%S")
    copy_backup(seed, first["name"], backup_dir, incomplete, old.strftime("%Y-%m-%dT%H:%M:%S.000000Z"))
    (backup_dir / f"{incomplete}.dir").rename(backup_dir / f"{incomplete}.dir.orphaned")
    # A legacy .sql.gz from the earlier scripts and someone else's file, both old.
    legacy = backup_dir / (old - datetime.timedelta(days=1)).strftime("backup_%Y-%m-%d_%H-%M-%S.sql.gz")
    legacy.write_bytes(gzip.compress(b"SELECT 1;\n"))
    foreign = backup_dir / "notes.txt"
    foreign.write_text("not a backup")
    os.utime(foreign, (old.timestamp(), old.timestamp()))

    result = backup(pg_cluster, backup_dir, keep_days=14, keep_min=3)
    assert not result.get("failed"), result
    pruned = sorted(p["name"] for p in result["pruned"])
    # Newest three valid: the new one, 3 days, 16 days (older than 14 days but within keep_min). 20 and 30 go.
    assert pruned == sorted([aged[20], aged[30]])
    names = files_in(backup_dir)
    for days in (16, 3):
        assert f"{aged[days]}.dir" in names and f"{aged[days]}.manifest.json" in names
    for days in (20, 30):
        assert f"{aged[days]}.dir" not in names and f"{aged[days]}.manifest.json" not in names
    assert f"{incomplete}.manifest.json" in names and f"{incomplete}.dir.orphaned" in names
    assert legacy.exists() and foreign.exists()
    assert result["retention"] == {"keep_days": 14, "keep_min": 3, "kept": 3, "in_use": []}

    # keep_min larger than what exists: nothing goes, however old. prune_legacy removes the old legacy file.
    again = backup(pg_cluster, backup_dir, keep_days=0, keep_min=10, prune_legacy=True)
    assert not again.get("failed"), again
    assert again["pruned"] == [], "fewer than keep_min valid backups: legacy files are kept too"
    last = backup(pg_cluster, backup_dir, keep_days=14, keep_min=1, prune_legacy=True)
    assert not last.get("failed"), last
    assert sorted(p["name"] for p in last["pruned"]) == sorted([aged[16], legacy.name[: -len(".sql.gz")]])
    assert not legacy.exists() and foreign.exists() and (backup_dir / f"{incomplete}.manifest.json").exists()
    assert set(verified_names(backup_dir)) >= {aged[3], result["name"], again["name"], last["name"]}


def test_stale_partials_are_removed_and_never_listed(pg_cluster, shop, tmp_path):
    stale_dir = tmp_path / "backup_2026-01-01_00-00-00.dir.partial"
    stale_dir.mkdir(parents=True)
    (stale_dir / "1234.dat").write_text("half a table")
    (tmp_path / "backup_2026-01-01_00-00-00.manifest.json.partial").write_text("{")
    info = run_module("backup_info", {"backup_dir": str(tmp_path)})
    assert info["count"] == 0 and len(info["partials"]) == 2 and not info["changed"]
    result = backup(pg_cluster, tmp_path)
    assert not result.get("failed"), result
    assert sorted(result["removed_partials"]) == sorted(
        ["backup_2026-01-01_00-00-00.dir.partial", "backup_2026-01-01_00-00-00.manifest.json.partial"]
    )
    assert not stale_dir.exists()


def test_pg_dump_older_than_server_names_the_package(pg_cluster, shop, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("psql", "pg_restore"):
        (bindir / tool).symlink_to(pg_cluster.bindir / tool)
    fake = bindir / "pg_dump"
    fake.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 14.10'\n")
    fake.chmod(0o755)
    result = backup(pg_cluster, tmp_path / "backups", pg_bindir=str(bindir))
    assert result["failed"]
    assert "pg_dump 14.10" in result["msg"] and "older than the server" in result["msg"]
    assert "apt-get install postgresql-client-15" in result["msg"]
    assert not (tmp_path / "backups").exists()


def test_wrong_password_and_unreachable_server(pg_cluster, shop, tmp_path):
    wrong = backup(pg_cluster, tmp_path, login_password="not-the-password")
    assert wrong["failed"] and "authentication failed" in wrong["msg"], wrong
    port = free_port()
    down = backup(pg_cluster, tmp_path, login_port=port, connect_timeout=3)
    assert down["failed"] and "cannot connect to PostgreSQL" in down["msg"] and str(port) in down["msg"], down
    assert files_in(tmp_path) == []


def test_secrets_never_in_output_even_with_vvv(pg_cluster, shop, tmp_path):
    runs = [
        ("postgresql_backup", {"database": DB, "backup_dir": str(tmp_path)}),
        ("postgresql_restore", {"database": "bk_never", "backup_dir": str(tmp_path), "source_database": DB}),
    ]
    for (module, options), password in [(run, pw) for run in runs for pw in (pg_cluster.password, "wrong-pw")]:
        args = conn_args(pg_cluster, login_password=password, **options)
        proc = subprocess.run(
            module_argv(module, args, check=module == "postgresql_restore", verbosity=3),
            capture_output=True,
            text=True,
            env=module_env({"ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default"}),
            timeout=120,
            check=False,
        )
        output = proc.stdout + proc.stderr
        assert "login_password" in output  # the option is shown, its value masked
        assert password not in output
        assert pg_cluster.password not in output


def _hold_table_lock(pg_cluster):
    conn = pg_cluster.connect(DB)
    cur = conn.cursor()
    cur.execute("BEGIN; LOCK TABLE public.orders IN ACCESS EXCLUSIVE MODE;")
    return conn


def test_pg_dump_killed_midway_leaves_nothing(pg_cluster, shop, tmp_path):
    older = backup(pg_cluster, tmp_path)
    assert not older.get("failed"), older
    before = files_in(tmp_path)
    lock = _hold_table_lock(pg_cluster)  # pg_dump blocks on its lock: it is "mid-way" while we look
    try:
        proc = start_module("postgresql_backup", conn_args(pg_cluster, database=DB, backup_dir=str(tmp_path)))
        dumps = wait_until(lambda: pids_with(str(tmp_path), "pg_dump"), timeout=60, message="pg_dump started")
        assert any(n.endswith(".partial") for n in files_in(tmp_path))
        os.kill(dumps[0], signal.SIGKILL)
        result = finish_module(proc)
    finally:
        lock.rollback()
        lock.close()
    assert result["failed"], result
    assert "pg_dump was killed by signal 9" in result["msg"]
    assert "partial was removed" in result["msg"] and "older backups are intact" in result["msg"]
    assert files_in(tmp_path) == before
    assert verified_names(tmp_path) == [older["name"]]


def test_two_backups_at_once_second_fails_clearly(pg_cluster, shop, tmp_path):
    lock = _hold_table_lock(pg_cluster)
    try:
        first = start_module("postgresql_backup", conn_args(pg_cluster, database=DB, backup_dir=str(tmp_path)))
        wait_until(lambda: pids_with(str(tmp_path), "pg_dump"), timeout=60, message="first backup running")
        second = backup(pg_cluster, tmp_path, lock_timeout=2)
        assert second["failed"], second
        assert "another backup of database bk_src is running" in second["msg"] and "lock_timeout" in second["msg"]
    finally:
        lock.rollback()
        lock.close()
    result = finish_module(first)
    assert not result.get("failed"), result
    assert verified_names(tmp_path) == [result["name"]]


@pytest.fixture
def small_tmpfs(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=160k,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"cannot mount a small tmpfs for the disk-full test (needs root): {proc.stderr}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_during_backup(pg_cluster, shop, small_tmpfs):
    pg_cluster.psql("CREATE DATABASE bk_tiny;")
    try:
        pg_cluster.psql("CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2);", db="bk_tiny")
        args = conn_args(pg_cluster, database="bk_tiny", backup_dir=str(small_tmpfs), space_check_ratio=0)
        older = run_module("postgresql_backup", args)
        assert not older.get("failed"), older
    finally:
        drop_db(pg_cluster, "bk_tiny")
    before = files_in(small_tmpfs)

    # The free-space check refuses first, writing nothing.
    refused = backup(pg_cluster, small_tmpfs)
    assert refused["failed"] and "not enough free space" in refused["msg"] and "space_check_ratio" in refused["msg"]
    assert files_in(small_tmpfs) == sorted([*before, LOCK_FILE])

    # Without it, the disk fills up mid-way: the partial goes, the older backup stays.
    full = backup(pg_cluster, small_tmpfs, space_check_ratio=0)
    assert full["failed"], full
    assert "full" in full["msg"] and "No space left on device" in full["msg"] + full.get("stderr", "")
    assert "older backups are intact" in full["msg"]
    assert files_in(small_tmpfs) == sorted([*before, LOCK_FILE])
    assert verified_names(small_tmpfs) == [older["name"]]


def test_backup_of_missing_database(pg_cluster, tmp_path):
    args = conn_args(pg_cluster, database="bk_no_such_db", backup_dir=str(tmp_path / "b"))
    result = run_module("postgresql_backup", args)
    assert result["failed"] and "database bk_no_such_db does not exist" in result["msg"], result
    assert not (tmp_path / "b").exists()


def test_same_second_names_do_not_clash(pg_cluster, shop, tmp_path):
    # Another backup already holds every name of the next minute: this one gets the suffix _1.
    start = time.time()
    for offset in range(60):
        name = time.strftime("backup_%Y-%m-%d_%H-%M-%S", time.gmtime(start + offset))
        (tmp_path / f"{name}.manifest.json").write_text("{}")
    result = backup(pg_cluster, tmp_path)
    assert not result.get("failed"), result
    assert result["name"].endswith("_1"), result["name"]
    assert (tmp_path / f"{result['name']}.dir").is_dir()
