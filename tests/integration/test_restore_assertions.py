"""tokotani.dr.postgresql_restore: SQL assertions and mode revert, against a real PostgreSQL 15, through ansible.

Every failure asserts the operator-facing message AND that the live database is exactly as it was
(row checksums), with no staging database left behind.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from backup_support import MIGRATION_SQL, conn_args, databases, drop_db, load_shop, run_module, table_checksums

LIVE = "ra_live"
GOOD = [
    {"name": "migrations applied", "sql": "SELECT EXISTS (SELECT 1 FROM _prisma_migrations);"},
    {"name": "sessions table present", "sql": "SELECT to_regclass('public.sessions') IS NOT NULL"},
    {"name": "orders have items", "sql": "WITH o AS (SELECT count(*) AS n FROM order_items) SELECT n > 0, n FROM o"},
]


@pytest.fixture
def live(pg_cluster, tmp_path):
    """ra_live (with one migration row) and its backup in a fresh directory; every ra_ database is dropped after."""
    load_shop(pg_cluster, LIVE, fidelity=False, seed=3)
    pg_cluster.psql(MIGRATION_SQL, db=LIVE)
    backup_dir = tmp_path / "backups"
    made = run_module("postgresql_backup", conn_args(pg_cluster, database=LIVE, backup_dir=str(backup_dir)))
    assert not made.get("failed"), made
    yield {"dir": backup_dir, "backup": made, "rows": table_checksums(pg_cluster, LIVE)}
    for db in databases(pg_cluster, "ra_"):
        drop_db(pg_cluster, db)


def restore(cluster, database, check=False, **options):
    return run_module("postgresql_restore", conn_args(cluster, database=database, **options), check=check)


def test_assertions_hold_and_are_reported(pg_cluster, live):
    result = restore(pg_cluster, LIVE, backup_dir=str(live["dir"]), confirm=True, assertions=GOOD)
    assert not result.get("failed"), result
    assert result["assertions"] == [{"name": a["name"], "ok": True} for a in GOOD]
    assert "assertion 'migrations applied' holds" in result["verified"]
    assert "assertions" in result["timings"]
    assert table_checksums(pg_cluster, LIVE) == live["rows"]
    assert result["previous_database"] in databases(pg_cluster, LIVE)


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        ("SELECT count(*) > 1000000 FROM orders", "returned false"),
        ("SELECT NULL::boolean", "returned NULL"),
        ("SELECT true FROM users WHERE false", "returned no row"),
        ("SELECT true FROM generate_series(1, 3)", "returned 3 rows, expected one"),
        ("SELECT 'yes'", 'returned "yes", not a boolean'),
        (
            "WITH d AS (DELETE FROM orders RETURNING 1) SELECT true",
            "ERROR: WITH clause containing a data-modifying statement must be at the top level",
        ),
        # Escapes from the wrapper: a second statement, a read-write switch, a psql meta-command.
        ("SELECT true) a; DELETE FROM orders; SELECT (1", "ERROR: cannot open multi-query plan as cursor"),
        (
            "SELECT set_config('transaction_read_only', 'off', true)::boolean",
            "ERROR: transaction read-write mode must be set before any query",
        ),
        ("\\! touch /tmp/tokotani-assertion-escape", 'ERROR: syntax error at or near "\\"'),
        ("SELECT true\n\\! touch /tmp/tokotani-assertion-escape\n", 'ERROR: syntax error at or near "\\"'),
    ],
)
def test_a_failing_assertion_fails_replace_and_leaves_live_untouched(pg_cluster, live, sql, problem):
    dbs = databases(pg_cluster, "ra_")
    assertions = [GOOD[0], {"name": "the check", "sql": sql}, GOOD[1]]
    result = restore(pg_cluster, LIVE, backup_dir=str(live["dir"]), confirm=True, assertions=assertions)
    assert result["failed"] and not result["changed"], result
    assert result["msg"].startswith(f"assertion 'the check' failed: {problem}"), result["msg"]
    assert "was dropped; the live database ra_live was not touched." in result["msg"]
    assert result["failed_check"] == "assertion 'the check'" and result["assertion"] == "the check"
    assert [a["ok"] for a in result["assertions"]] == [True, False]
    assert databases(pg_cluster, "ra_") == dbs, "no staging database may be left"
    assert table_checksums(pg_cluster, LIVE) == live["rows"]
    assert not Path("/tmp/tokotani-assertion-escape").exists(), "a meta-command ran"


def test_an_sql_error_in_an_assertion_fails_the_restore(pg_cluster, live):
    dbs = databases(pg_cluster, "ra_")
    assertions = [{"name": "audit log kept", "sql": "SELECT count(*) > 0 FROM audit_log"}]
    result = restore(pg_cluster, LIVE, backup_dir=str(live["dir"]), confirm=True, assertions=assertions)
    assert result["failed"], result
    assert result["msg"].startswith(
        """assertion 'audit log kept' failed: ERROR: relation "audit_log" does not exist"""
    ), result["msg"]
    assert "the live database ra_live was not touched" in result["msg"]
    assert databases(pg_cluster, "ra_") == dbs
    assert table_checksums(pg_cluster, LIVE) == live["rows"]


def test_into_mode_with_assertions(pg_cluster, live):
    ok = restore(
        pg_cluster, "ra_into", backup_dir=str(live["dir"]), source_database=LIVE, mode="into", confirm=True,
        assertions=GOOD,
    )  # fmt: skip
    assert not ok.get("failed"), ok
    assert [a["name"] for a in ok["assertions"]] == [a["name"] for a in GOOD]
    assert table_checksums(pg_cluster, "ra_into") == live["rows"]
    drop_db(pg_cluster, "ra_into")

    dbs = databases(pg_cluster, "ra_")
    bad = restore(
        pg_cluster, "ra_into", backup_dir=str(live["dir"]), source_database=LIVE, mode="into", confirm=True,
        assertions=[{"name": "no guests", "sql": "SELECT count(*) = 0 FROM users"}],
    )  # fmt: skip
    assert bad["failed"] and bad["msg"].startswith("assertion 'no guests' failed: returned false"), bad
    assert "The incomplete database ra_into was dropped." in bad["msg"]
    assert databases(pg_cluster, "ra_") == dbs


def test_assertions_are_checked_before_anything_happens(pg_cluster, live):
    dbs = databases(pg_cluster, "ra_")
    result = restore(pg_cluster, LIVE, backup_dir=str(live["dir"]), confirm=True, assertions=[{"name": "x"}])
    assert result["failed"] and "sql" in result["msg"], result
    empty = restore(pg_cluster, LIVE, backup_dir=str(live["dir"]), confirm=True, assertions=[{"name": "x", "sql": ";"}])
    assert empty["failed"] and "assertion 'x' has no sql" in empty["msg"], empty
    assert databases(pg_cluster, "ra_") == dbs


def test_revert_round_trip(pg_cluster, live):
    # The shop carries on after the backup; a replace brings the backup back; the revert undoes it.
    pg_cluster.psql("INSERT INTO orders (user_id, status, total) VALUES (1, 'paid', 10);", db=LIVE)
    before_replace = table_checksums(pg_cluster, LIVE)
    replaced = restore(pg_cluster, LIVE, backup_dir=str(live["dir"]), confirm=True)
    assert not replaced.get("failed"), replaced
    assert table_checksums(pg_cluster, LIVE) == live["rows"]
    pg_cluster.psql("INSERT INTO orders (user_id, status, total) VALUES (2, 'paid', 20);", db=LIVE)
    after_replace = table_checksums(pg_cluster, LIVE)

    check = restore(pg_cluster, LIVE, check=True, mode="revert")
    assert not check.get("failed") and check["changed"], check
    assert check["msg"].startswith(f"check mode: would rename {LIVE} to {LIVE}__failed_restore_")
    assert check["msg"].endswith(f"rename {replaced['previous_database']} to {LIVE}")
    assert table_checksums(pg_cluster, LIVE) == after_replace

    reverted = restore(pg_cluster, LIVE, mode="revert", confirm=True)
    assert not reverted.get("failed"), reverted
    assert reverted["restored_database"] == LIVE
    assert reverted["reverted_from"] == replaced["previous_database"]
    failed = reverted["previous_database"]
    assert failed.startswith(f"{LIVE}__failed_restore_")
    assert f"reverted {LIVE} to {replaced['previous_database']}" in reverted["msg"] and failed in reverted["msg"]
    assert table_checksums(pg_cluster, LIVE) == before_replace
    assert table_checksums(pg_cluster, failed) == after_replace, "the failed restore is kept, rows and all"
    assert databases(pg_cluster, LIVE) == sorted([LIVE, failed])


def test_revert_to_a_named_database_when_the_live_one_is_gone(pg_cluster, live):
    pg_cluster.psql(f"ALTER DATABASE {LIVE} RENAME TO ra_live_copy;")
    result = restore(pg_cluster, LIVE, mode="revert", previous_database="ra_live_copy", confirm=True)
    assert not result.get("failed"), result
    assert result["previous_database"] is None and result["reverted_from"] == "ra_live_copy"
    assert databases(pg_cluster, "ra_") == [LIVE]
    assert table_checksums(pg_cluster, LIVE) == live["rows"]


def test_revert_without_a_previous_database(pg_cluster, live):
    dbs = databases(pg_cluster, "ra_")
    result = restore(pg_cluster, LIVE, mode="revert", confirm=True)
    assert result["failed"] and not result["changed"], result
    assert f"no previous database of {LIVE} to revert to" in result["msg"]
    assert f"no {LIVE}__pre_restore_<timestamp> database" in result["msg"] and "Nothing was changed" in result["msg"]
    named = restore(pg_cluster, LIVE, mode="revert", previous_database="ra_nope", confirm=True)
    assert named["failed"] and "database ra_nope does not exist" in named["msg"], named
    assert databases(pg_cluster, "ra_") == dbs
    assert table_checksums(pg_cluster, LIVE) == live["rows"]


def test_revert_refuses_without_confirm(pg_cluster, live):
    replaced = restore(pg_cluster, LIVE, backup_dir=str(live["dir"]), confirm=True)
    assert not replaced.get("failed"), replaced
    dbs = databases(pg_cluster, "ra_")
    result = restore(pg_cluster, LIVE, mode="revert")
    assert result["failed"] and not result["changed"], result
    assert f"Refusing to revert database {LIVE} to {replaced['previous_database']}" in result["msg"]
    assert "set confirm: true" in result["msg"] and "-e confirm=true" in result["msg"]
    assert "Nothing was changed" in result["msg"]
    assert databases(pg_cluster, "ra_") == dbs
    assert table_checksums(pg_cluster, LIVE) == live["rows"]
