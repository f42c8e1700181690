"""The suspicious-backup guard against a real PostgreSQL 15: a backup of a database that lost half of a table
is marked in its signed manifest, reported by backup_info, and passed over by a restore of latest."""

from __future__ import annotations

import json

import pytest
from backup_support import conn_args, databases, drop_db, load_shop, run_module

DB = "sus_live"
KEY = "suspicious-test-key-0123456789abcdef0123"


@pytest.fixture(scope="module")
def backups(pg_cluster, tmp_path_factory):
    load_shop(pg_cluster, DB, fidelity=False, seed=29)
    where = tmp_path_factory.mktemp("sus_backups")
    args = conn_args(pg_cluster, database=DB, backup_dir=str(where), backup_key=KEY, shrink_min_rows=10)
    good = run_module("postgresql_backup", args)
    assert not good.get("failed") and good["suspicious"] is None, good
    before = int(pg_cluster.psql("SELECT count(*) FROM order_items;", db=DB))
    pg_cluster.psql("DELETE FROM order_items WHERE id % 2 = 0;", db=DB)
    after = int(pg_cluster.psql("SELECT count(*) FROM order_items;", db=DB))
    bad = run_module("postgresql_backup", args)
    assert not bad.get("failed"), bad
    yield {"dir": where, "good": good, "bad": bad, "before": before, "after": after, "args": args}
    for db in databases(pg_cluster, "sus_"):
        drop_db(pg_cluster, db)


def test_a_backup_of_a_table_half_gone_is_marked_suspicious_in_its_signed_manifest(backups):
    bad, good = backups["bad"], backups["good"]
    lost = round((backups["before"] - backups["after"]) / backups["before"] * 100)
    assert bad["suspicious"]["compared_with"] == good["name"]
    assert bad["suspicious"]["reason"] == (
        f"compared with {good['name']}: public.order_items has {backups['after']} rows, {lost}% fewer than "
        f"{backups['before']}"
    )
    assert any(w.startswith("this backup is marked suspicious (") for w in bad["warnings"]), bad["warnings"]
    manifest = json.loads((backups["dir"] / f"{bad['name']}.manifest.json").read_text())
    assert manifest["suspicious"] == bad["suspicious"] and manifest["signature"]["key_id"]


def test_backup_info_flags_it_and_latest_is_the_last_good_backup(backups):
    info = run_module("backup_info", {"backup_dir": str(backups["dir"]), "backup_key": KEY})
    assert not info.get("failed"), info
    assert info["suspicious"] == [backups["bad"]["name"]]
    assert info["newest"]["name"] == backups["good"]["name"]
    marked = {b["name"]: b["suspicious"] for b in info["backups"]}
    assert marked[backups["bad"]["name"]]["compared_with"] == backups["good"]["name"]


def resolve(cluster, backups, **args):
    return run_module(
        "postgresql_restore",
        conn_args(cluster, database=DB, backup_dir=str(backups["dir"]), backup_key=KEY, **args),
        check=True,
    )


def test_a_restore_of_latest_passes_over_it_saying_why(pg_cluster, backups):
    result = resolve(pg_cluster, backups)
    assert not result.get("failed"), result
    assert result["backup"]["name"] == backups["good"]["name"]
    assert any(
        w.startswith(f"the newer backup {backups['bad']['name']} is suspicious (compared with ")
        and w.endswith("skipped. Name it (backup=) or set accept_suspicious to restore it anyway")
        for w in result["warnings"]
    ), result["warnings"]


def test_named_or_accepted_it_is_restored(pg_cluster, backups):
    named = resolve(pg_cluster, backups, backup=backups["bad"]["name"])
    assert not named.get("failed") and named["backup"]["name"] == backups["bad"]["name"], named
    accepted = resolve(pg_cluster, backups, accept_suspicious=True)
    assert not accepted.get("failed") and accepted["backup"]["name"] == backups["bad"]["name"], accepted


def test_the_next_backup_still_compares_with_the_last_good_one_until_a_purge_is_accepted(pg_cluster, backups):
    again = run_module("postgresql_backup", backups["args"])
    assert again["suspicious"]["compared_with"] == backups["good"]["name"], again
    accepted = run_module("postgresql_backup", dict(backups["args"], shrink_check=False))
    assert accepted["suspicious"] is None, accepted
    after = run_module("postgresql_backup", backups["args"])
    assert after["suspicious"] is None, after
