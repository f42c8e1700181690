"""Unit tests of the restore assertions (SQL wrapping, outcome parsing, option checks) and their spec resolution."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.tokotani.dr.plugins.module_utils import pg_restore, specs  # noqa: E402
from ansible_collections.tokotani.dr.plugins.module_utils.pg_cli import PgError  # noqa: E402


@pytest.mark.parametrize(
    ("out", "problem"),
    [
        ('1 {"ok":true}\n', None),
        ('1 {"?column?":true,"n":5}', None),
        ('1 {"b":false,"a":true}', "returned false"),
        ('1 {"x":null}', "returned NULL"),
        ("0 \n", "returned no row"),
        ("", "returned no row"),
        ('4 {"x":true}', "returned 4 rows, expected one"),
        ('1 {"x":"t"}', 'returned "t", not a boolean'),
        ('1 {"x":1}', "returned 1, not a boolean"),
    ],
)
def test_assertion_outcome(out, problem):
    assert pg_restore.assertion_outcome(out) == problem
    # psql prints the DO block's NOTICE; only the line carrying this run's marker counts.
    notices = f'NOTICE:  1 {{"x":true}}\nNOTICE:  m-1 {out.strip()}\n'
    assert pg_restore.assertion_outcome(notices, "m-1") == problem


def test_a_notice_without_the_marker_is_not_an_outcome():
    assert pg_restore.assertion_outcome('NOTICE:  1 {"x":true}\n', "m-1") == "returned no row"


def test_assertion_sql_is_one_do_statement_with_the_query_as_a_literal():
    sql = pg_restore.assertion_sql("  SELECT true -- trailing comment\n;; ", "m-1")
    assert sql.startswith("DO '") and sql.endswith("'")
    inner = sql[len("DO '") : -1].replace("''", "'")
    assert "FOR r IN EXECUTE 'SELECT row_to_json(a)::text AS j FROM (\nSELECT true -- trailing comment\n) a'" in inner
    # A quote in the query cannot end either literal: it is doubled, then doubled again.
    assert "it" + "'" * 8 + "s" in pg_restore.assertion_sql("SELECT 'it''s' = 'x'", "m")
    assert "-c default_transaction_read_only=on" in pg_restore.ASSERTION_OPTIONS


def test_sql_error_text_drops_the_psql_prefix():
    err = PgError("x failed", stderr='psql:<stdin>:3: ERROR:  relation "nope" does not exist\nLINE 2: SELECT')
    assert pg_restore.sql_error_text(err) == 'ERROR: relation "nope" does not exist'
    assert pg_restore.sql_error_text(PgError("cannot connect")) == "cannot connect"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["SELECT true"], "assertions[0] must be a dict"),
        ([{"sql": "SELECT true"}], "assertions[0] has no name"),
        ([{"name": "a", "sql": " ; "}], "assertion 'a' has no sql"),
    ],
)
def test_check_assertions_refuses_malformed_items(value, message):
    with pytest.raises(PgError, match=message.replace("[", r"\[").replace("]", r"\]")):
        pg_restore.check_assertions(value)


def test_resolve_takes_assertions_from_a_runner_config():
    spec = specs.restore_argument_spec()
    params = specs.resolve(spec, {"database": "shop", "assertions": [{"name": "a", "sql": "SELECT true"}]}, {})
    assert params["assertions"] == [{"name": "a", "sql": "SELECT true"}]
    assert specs.resolve(spec, {"database": "shop"}, {})["assertions"] == []
    assert specs.resolve(spec, {"database": "shop", "mode": "revert"}, {})["mode"] == "revert"
    with pytest.raises(specs.SpecError, match=r"assertions\[0\]: missing required option: sql"):
        specs.resolve(spec, {"database": "shop", "assertions": [{"name": "a"}]}, {})
    with pytest.raises(specs.SpecError, match=r"assertions\[0\]: unsupported option\(s\): query"):
        specs.resolve(spec, {"database": "shop", "assertions": [{"name": "a", "sql": "x", "query": "y"}]}, {})
    with pytest.raises(specs.SpecError, match="assertions: 'SELECT 1' is not a valid list"):
        specs.resolve(spec, {"database": "shop", "assertions": "SELECT 1"}, {})


def test_retention_removes_the_verification_record_with_its_backup(tmp_path):
    from ansible_collections.tokotani.dr.plugins.module_utils import backup_catalog as catalog  # noqa: PLC0415

    stem = "backup_2026-01-05_02-00-00"
    for name in (
        f"{stem}.sql.gz",
        f"{stem}.manifest.json",
        f"{stem}.verify.json",
        "backup_2026-01-06_02-00-00.verify.json",
    ):
        (tmp_path / name).write_text("x")
    entry = {
        "name": stem,
        "directory": str(tmp_path),
        "path": str(tmp_path / f"{stem}.sql.gz"),
        "manifest_path": str(tmp_path / f"{stem}.manifest.json"),
    }
    assert catalog.scan(str(tmp_path))["backups"][0]["name"] == stem  # the record is not listed as a backup
    catalog.delete_entry(entry)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup_2026-01-06_02-00-00.verify.json"]
