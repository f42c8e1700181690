"""tokotani.dr.postgresql_check on a real PostgreSQL 15: the restore's checks on an existing database,
read-only, with the operator's message for every check that does not hold."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import pytest
from backup_support import conn_args, databases, drop_db, load_shop, run_module, table_checksums

DB = "ck_live"
KEY = "ck-backup-key-" + "k" * 32


@pytest.fixture(scope="module")
def live(pg_cluster, tmp_path_factory):
    load_shop(pg_cluster, DB, fidelity=False, seed=13)
    src = tmp_path_factory.mktemp("ck_backups")
    made = run_module("postgresql_backup", conn_args(pg_cluster, database=DB, backup_dir=str(src), backup_key=KEY))
    assert not made.get("failed"), made
    yield {"dir": src, "made": made, "manifest": made["manifest_path"]}
    for db in databases(pg_cluster, "ck_"):
        drop_db(pg_cluster, db)


def check(cluster, **extra) -> dict:
    return run_module("postgresql_check", conn_args(cluster, **{"database": DB, **extra}))


def test_the_live_database_matches_its_backup_and_the_assertions_hold(pg_cluster, live):
    result = check(
        pg_cluster,
        backup=live["manifest"],
        backup_key=KEY,
        assertions=[{"name": "orders exist", "sql": "SELECT count(*) > 0 FROM orders"}],
    )
    assert not result.get("failed") and result["changed"] is False, result
    assert result["tables"] == live["made"]["tables"] and result["rows"] == live["made"]["rows"]
    finished = json.loads(Path(live["manifest"]).read_text())["finished_at"]
    assert result["backup"]["finished_at"] == finished
    assert result["backup"]["finished_at_epoch"] == datetime.fromisoformat(finished).timestamp()
    assert result["verified"] == [
        f"the manifest of {live['made']['name']} is signed by backup key {live['made']['key_id']}",
        f"{result['tables']} tables present with the manifest's row counts ({result['rows']} rows)",
        "assertion 'orders exist' holds",
    ]
    assert result["assertions"] == [{"name": "orders exist", "ok": True}]


def test_a_row_written_since_the_backup_is_named(pg_cluster, live):
    pg_cluster.psql("INSERT INTO users (email, name) VALUES ('ck-late@example.com', 'late');", db=DB)
    try:
        result = check(pg_cluster, backup=live["manifest"], backup_key=KEY)
        assert result["failed"] and result["failed_check"] == "row counts", result
        assert result["msg"].startswith("row counts differ from the manifest: public.users has "), result
        assert "the manifest says" in result["msg"]
        assert result["verified"] == [
            f"the manifest of {live['made']['name']} is signed by backup key {live['made']['key_id']}"
        ]
    finally:
        pg_cluster.psql("DELETE FROM users WHERE email = 'ck-late@example.com';", db=DB)


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM order_items RETURNING true",
        "SELECT true; SET default_transaction_read_only = off; COMMIT; DELETE FROM order_items",
        "WITH gone AS (DELETE FROM order_items RETURNING 1) SELECT count(*) > 0 FROM gone",
    ],
)
def test_an_assertion_that_tries_to_write_fails_and_writes_nothing(pg_cluster, live, sql):
    before = table_checksums(pg_cluster, DB)
    result = check(pg_cluster, assertions=[{"name": "sneaky", "sql": sql}])
    assert result["failed"] and result["failed_check"] == "assertion 'sneaky'", result
    assert result["msg"].startswith("assertion 'sneaky' failed: "), result
    assert result["assertions"][0]["ok"] is False
    assert table_checksums(pg_cluster, DB) == before


def test_a_crafted_table_name_in_an_unsigned_manifest_reaches_the_server_only_as_an_identifier(
    pg_cluster, live, tmp_path
):
    doc = json.loads(Path(live["manifest"]).read_text())
    doc.pop("signature")
    doc["tables"].append({"schema": "public", "name": 'x" ; DROP TABLE orders; --', "rows": 0})
    shutil.copytree(live["dir"], tmp_path / "b", dirs_exist_ok=True)
    manifest = tmp_path / "b" / f"{doc['name']}.manifest.json"
    manifest.write_text(json.dumps(doc))
    before = table_checksums(pg_cluster, DB)

    refused = check(pg_cluster, backup=str(manifest), backup_key=KEY)
    assert refused["failed"] and refused["failed_check"] == "backup integrity", refused
    assert "is not signed, and a backup key is configured" in refused["msg"]
    assert refused["msg"].endswith("Nothing was checked.")

    unchecked = check(pg_cluster, backup=str(manifest))
    assert unchecked["failed"], unchecked
    assert unchecked["failed_check"] in ("tables present", "backup integrity"), unchecked
    assert table_checksums(pg_cluster, DB) == before
    assert "orders" in pg_cluster.psql("SELECT tablename FROM pg_tables WHERE schemaname = 'public';", db=DB).split()


def test_a_missing_database_is_a_plain_message(pg_cluster, live):
    result = check(pg_cluster, database="ck_nope", backup=live["manifest"])
    assert result["failed"] and result["msg"] == "the database ck_nope does not exist: nothing to check", result
    assert "ck_nope" not in databases(pg_cluster, "ck_")


def test_a_report_runs_every_check_and_names_each_one_that_did_not_hold(pg_cluster, live):
    pg_cluster.psql("INSERT INTO users (email, name) VALUES ('ck-report@example.com', 'late');", db=DB)
    try:
        result = check(
            pg_cluster,
            backup=live["manifest"],
            backup_key=KEY,
            fail_on_problem=False,
            assertions=[
                {"name": "false one", "sql": "SELECT false"},
                {"name": "writer", "sql": "DELETE FROM order_items RETURNING true"},
                {"name": "true one", "sql": "SELECT true"},
            ],
        )
        assert not result.get("failed") and result["passed"] is False, result
        assert result["problems"][0].startswith("row counts differ from the manifest: public.users has ")
        assert result["problems"][1] == "assertion 'false one' failed: returned false"
        assert result["problems"][2].startswith("assertion 'writer' failed: ")
        assert [a["ok"] for a in result["assertions"]] == [False, False, True]
        assert "assertion 'true one' holds" in result["verified"]
    finally:
        pg_cluster.psql("DELETE FROM users WHERE email = 'ck-report@example.com';", db=DB)


def test_growing_tables_may_only_grow_and_every_table_is_returned(pg_cluster, live):
    pg_cluster.psql(
        "INSERT INTO users (email, name) VALUES ('ck-grow-1@example.com', 'a'), ('ck-grow-2@example.com', 'b');",
        db=DB,
    )
    try:
        grown = check(pg_cluster, backup=live["manifest"], backup_key=KEY, growing_tables=["users"])
        assert not grown.get("failed") and grown["passed"] is True, grown
        users = next(t for t in grown["table_counts"] if t["table"] == "public.users")
        assert users["actual"] == users["expected"] + 2 and users["growing"] is True and users["ok"] is True
        assert grown["rows"] == live["made"]["rows"] + 2
        assert (
            f"{grown['tables']} tables present with the manifest's row counts, growing tables at least "
            f"({grown['rows']} rows; public.users {users['actual']} >= {users['expected']})"
        ) in grown["verified"]
        assert all(t["ok"] and not t["growing"] for t in grown["table_counts"] if t is not users)

        # schema.name works as well; a table that is not growing must still match exactly
        exact = check(pg_cluster, backup=live["manifest"], backup_key=KEY, growing_tables=["public.orders"])
        assert exact["failed"] and exact["failed_check"] == "row counts", exact
        assert exact["msg"] == (
            f"row counts differ from the manifest: public.users has {users['actual']} rows, "
            f"the manifest says {users['expected']}"
        )
        assert next(t for t in exact["table_counts"] if t["table"] == "public.orders")["growing"] is True

        pg_cluster.psql(
            "DELETE FROM users WHERE email LIKE 'ck-grow-%'; CREATE TABLE ck_kept AS SELECT * FROM sessions LIMIT 1;",
            db=DB,
        )
        pg_cluster.psql("DELETE FROM sessions WHERE id IN (SELECT id FROM ck_kept);", db=DB)
        shrunk = check(
            pg_cluster, backup=live["manifest"], backup_key=KEY, growing_tables=["sessions"], fail_on_problem=False
        )
        sessions = next(t for t in shrunk["table_counts"] if t["table"] == "public.sessions")
        assert shrunk["passed"] is False and sessions["ok"] is False
        assert shrunk["problems"] == [
            f"row counts differ from the manifest: public.sessions has {sessions['expected'] - 1} rows, "
            f"the manifest says at least {sessions['expected']}"
        ]
    finally:
        pg_cluster.psql(
            "DELETE FROM users WHERE email LIKE 'ck-grow-%'; CREATE TABLE IF NOT EXISTS ck_kept (LIKE sessions); "
            "INSERT INTO sessions SELECT * FROM ck_kept ON CONFLICT DO NOTHING; DROP TABLE ck_kept;",
            db=DB,
        )


def test_a_missing_table_is_reported_with_the_counts_of_the_others(pg_cluster, live):
    pg_cluster.psql("ALTER TABLE order_items RENAME TO ck_away;", db=DB)
    try:
        result = check(pg_cluster, backup=live["manifest"], backup_key=KEY, fail_on_problem=False)
    finally:
        pg_cluster.psql("ALTER TABLE ck_away RENAME TO order_items;", db=DB)
    assert result["passed"] is False
    assert result["problems"] == ["the restored database lacks 1 table(s) of the manifest: public.order_items"]
    missing = [t for t in result["table_counts"] if t["actual"] is None]
    assert [t["table"] for t in missing] == ["public.order_items"] and not missing[0]["ok"]
    assert all(t["ok"] for t in result["table_counts"] if t["actual"] is not None)
