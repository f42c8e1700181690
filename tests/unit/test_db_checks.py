"""The row-count rule of the checks engine (db_checks), shared by the restore, postgresql_check and the checklist."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.tokotani.dr.plugins.module_utils import db_checks  # noqa: E402


def counted(schema, name, expected, actual):
    return {"table": f"{schema}.{name}", "schema": schema, "name": name, "expected": expected, "actual": actual}


@pytest.mark.parametrize(
    ("growing", "schema", "name", "expected"),
    [
        (["sessions"], "public", "sessions", True),
        (["public.sessions"], "public", "sessions", True),
        (["sessions"], "toko", "sessions", False),
        (["toko.sessions"], "toko", "sessions", True),
        ([], "public", "sessions", False),
        (["users"], "public", "sessions", False),
    ],
)
def test_growing_is_a_bare_name_in_public_or_schema_dot_name(growing, schema, name, expected):
    assert db_checks.is_growing(schema, name, growing) is expected


def test_the_rule_exact_unless_growing_and_missing_always_fails():
    compared = db_checks.compare_counts(
        [
            counted("public", "orders", 10, 10),
            counted("public", "users", 5, 6),
            counted("public", "sessions", 7, 9),
            counted("public", "engine_heartbeat", 2, 1),
            counted("public", "secret_rotations", 0, None),
            counted("public", "products", 3, 2),
        ],
        ["sessions", "engine_heartbeat", "secret_rotations"],
    )
    assert [(t["name"], t["growing"], t["ok"]) for t in compared] == [
        ("orders", False, True),
        ("users", False, False),
        ("sessions", True, True),
        ("engine_heartbeat", True, False),
        ("secret_rotations", True, False),
        ("products", False, False),
    ]
    assert db_checks.missing_tables(compared) == ["public.secret_rotations"]
    assert db_checks.wrong_counts(compared) == [
        "public.users has 6 rows, the manifest says 5",
        "public.engine_heartbeat has 1 rows, the manifest says at least 2",
        "public.products has 2 rows, the manifest says 3",
    ]
    assert db_checks.public_counts(compared)[2] == {
        "table": "public.sessions",
        "expected": 7,
        "actual": 9,
        "growing": True,
        "ok": True,
    }


def test_without_growing_tables_every_count_must_match():
    compared = db_checks.compare_counts([counted("public", "sessions", 7, 9)])
    assert compared[0]["ok"] is False and compared[0]["growing"] is False


class RecordingPsql:
    """Answers as the server would and records the SQL (the statements are checked, not run)."""

    def __init__(self, present):
        self.present = present
        self.sql = []

    def query_json(self, sql, dbname, what=None, variables=None):
        self.sql.append(sql)
        if what == "checking tables":
            return [{"i": i, "present": p} for i, p in enumerate(self.present)]
        return [{"i": i, "rows": 40 + i} for i, p in enumerate(self.present) if p]


def test_manifest_names_reach_the_server_only_as_quoted_identifiers():
    hostile = 'x"; DROP TABLE orders; --'
    psql = RecordingPsql([True, False])
    found = db_checks.count_tables(
        psql,
        "shop",
        [{"schema": "public", "name": hostile, "rows": 1}, {"schema": "public", "name": "gone", "rows": 2}],
    )
    assert [t["actual"] for t in found] == [40, None]
    assert 'to_regclass(\'"public"."x""; DROP TABLE orders; --"\')' in psql.sql[0]
    assert 'FROM "public"."x""; DROP TABLE orders; --"' in psql.sql[1]
    assert "gone" not in psql.sql[1]


def test_the_restore_does_not_count_when_a_table_is_missing():
    psql = RecordingPsql([True, False])
    tables = [{"schema": "public", "name": "a", "rows": 1}, {"schema": "public", "name": "b", "rows": 2}]
    found = db_checks.count_tables(psql, "shop", tables, count_if_missing=False)
    assert [t["actual"] for t in found] == [None, None] and len(psql.sql) == 1
    assert db_checks.count_tables(RecordingPsql([]), "shop", []) == []


# --------------------------------------------------------------------------- the suspicious-backup guard


def tables(**rows):
    return [{"schema": "public", "name": name, "rows": n} for name, n in rows.items()]


def test_half_of_a_big_table_gone_is_caught_and_a_busy_day_is_not():
    before = tables(order_items=4_590_000, orders=1_000_000, sessions=500)
    after = tables(order_items=2_290_000, orders=900_000, sessions=10)
    assert db_checks.shrinkage(before, after) == [
        {"table": "public.order_items", "previous_rows": 4_590_000, "rows": 2_290_000, "lost": 0.5011}
    ]


def test_a_table_that_is_gone_is_always_caught():
    found = db_checks.shrinkage(tables(orders=5000), tables())
    assert found == [{"table": "public.orders", "previous_rows": 5000, "rows": None, "lost": 1.0}]
    assert db_checks.shrinkage_text(found, "b1") == "compared with b1: public.orders is gone (5000 rows before)"


def test_thresholds_per_table_override_the_default():
    before = tables(carts=10_000, orders=10_000)
    after = tables(carts=1_000, orders=8_500)
    found = db_checks.shrinkage(before, after, per_table={"carts": 1, "public.orders": 0.1})
    assert [f["table"] for f in found] == ["public.orders"]
    assert db_checks.shrinkage(before, after, min_rows=20_000) == []
