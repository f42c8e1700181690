"""A backup named the way an operator types it: the stem, the data name, the manifest name or a path,
against a real PostgreSQL 15 (check mode: resolved and verified, nothing restored)."""

from __future__ import annotations

import gzip
import shutil

import pytest
from backup_support import conn_args, databases, drop_db, load_shop, run_module

DB = "nm_live"


@pytest.fixture(scope="module")
def made(pg_cluster, tmp_path_factory):
    load_shop(pg_cluster, DB, fidelity=False, seed=17)
    src = tmp_path_factory.mktemp("nm_backups")
    result = run_module("postgresql_backup", conn_args(pg_cluster, database=DB, backup_dir=str(src)))
    assert not result.get("failed"), result
    yield {"dir": src, "name": result["name"], "path": result["path"], "manifest": result["manifest_path"]}
    for db in databases(pg_cluster, "nm_"):
        drop_db(pg_cluster, db)


def resolve(cluster, made, backup, backup_dir=None):
    args = conn_args(cluster, database=DB, backup=backup)
    if backup_dir is not None:
        args["backup_dir"] = str(backup_dir)
    return run_module("postgresql_restore", args, check=True)


@pytest.mark.parametrize("form", ["stem", "data", "manifest", "path", "manifest path"])
def test_every_form_of_a_name_finds_the_same_local_backup(pg_cluster, made, form):
    backup, backup_dir = {
        "stem": (made["name"], made["dir"]),
        "data": (made["name"] + ".dir", made["dir"]),
        "manifest": (made["name"] + ".manifest.json", made["dir"]),
        "path": (made["path"], None),
        "manifest path": (made["manifest"], None),
    }[form]
    result = resolve(pg_cluster, made, backup, backup_dir)
    assert not result.get("failed"), result
    assert result["backup"]["name"] == made["name"] and result["backup_path"] == made["path"]


def test_a_stem_that_is_not_there_says_what_was_looked_for(pg_cluster, made):
    result = resolve(pg_cluster, made, "backup_2026-01-05_02-00-00", made["dir"])
    assert result["failed"], result
    assert result["msg"] == (
        f"no backup named backup_2026-01-05_02-00-00 in {made['dir']} (neither "
        "backup_2026-01-05_02-00-00.manifest.json nor backup_2026-01-05_02-00-00.sql.gz is there)"
    )


def test_the_stem_of_a_legacy_file_finds_it(pg_cluster, made, tmp_path):
    legacy = tmp_path / "backup_2025-12-31_02-00-00.sql.gz"
    legacy.write_bytes(gzip.compress(b"SELECT 1;\n"))
    shutil.copy(made["manifest"], tmp_path)  # another backup beside it changes nothing
    result = resolve(pg_cluster, made, "backup_2025-12-31_02-00-00", tmp_path)
    assert not result.get("failed"), result
    assert result["backup"]["kind"] == "legacy" and result["backup_path"] == str(legacy)
