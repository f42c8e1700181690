"""tokotani.dr.postgresql_restore against a real PostgreSQL 15, through ansible.

Round trips compare everything a restore must keep (schema dump, per-table row checksums,
sequences, extensions, large objects, database-level properties); fault tests assert the
operator-facing message AND that the live database is exactly as before, with no
half-restored database left behind.
"""

from __future__ import annotations

import datetime
import gzip
import subprocess
from pathlib import Path

import psycopg2
import pytest
from backup_support import (
    conn_args,
    copy_backup,
    database_state,
    databases,
    drop_db,
    full_state,
    load_shop,
    run_module,
    table_checksums,
)

SRC = "rs_src"  # never changed after it is loaded
LIVE = "rs_live"  # the database replace-mode restores swap out


@pytest.fixture(scope="module")
def source(pg_cluster, tmp_path_factory):
    load_shop(pg_cluster, SRC, seed=11)
    backups = tmp_path_factory.mktemp("rs_backups")
    made = {}
    for fmt in ("directory", "plain", "custom"):
        result = run_module(
            "postgresql_backup", conn_args(pg_cluster, database=SRC, backup_dir=str(backups), format=fmt)
        )
        assert not result.get("failed"), result
        made[fmt] = result
    state = full_state(pg_cluster, SRC)
    yield {"dir": backups, "backups": made, "state": state, "db_state": database_state(pg_cluster, SRC)}
    for db in databases(pg_cluster, "rs_"):
        drop_db(pg_cluster, db)


@pytest.fixture
def live(pg_cluster, tmp_path):
    """rs_live with its own backup in a fresh directory; every rs_live* database is dropped afterwards."""
    load_shop(pg_cluster, LIVE, seed=5)
    backup_dir = tmp_path / "live_backups"
    result = run_module("postgresql_backup", conn_args(pg_cluster, database=LIVE, backup_dir=str(backup_dir)))
    assert not result.get("failed"), result
    yield {"dir": backup_dir, "backup": result, "state": full_state(pg_cluster, LIVE)}
    for db in databases(pg_cluster, LIVE):
        drop_db(pg_cluster, db)


def restore(cluster, database, check=False, **options):
    return run_module("postgresql_restore", conn_args(cluster, database=database, **options), check=check)


def assert_same(cluster, db, expected):
    state = full_state(cluster, db)
    assert state["schema"] == expected["schema"]
    assert state["rows"] == expected["rows"]
    assert state["objects"] == expected["objects"]


def test_replace_swaps_in_the_backup_and_keeps_the_previous_database(pg_cluster, live):
    before_db_state = database_state(pg_cluster, LIVE)
    # The shop carries on after the backup: a new order, a new table. Then the disaster.
    pg_cluster.psql(
        "INSERT INTO orders (user_id, status, total) VALUES (1, 'paid', 10); CREATE TABLE later (x int);", db=LIVE
    )
    changed_rows = table_checksums(pg_cluster, LIVE)
    client = psycopg2.connect(pg_cluster.dsn(LIVE))  # an application still connected
    try:
        result = restore(pg_cluster, LIVE, backup="latest", backup_dir=str(live["dir"]), confirm=True)
    finally:
        client.close()
    assert not result.get("failed"), result
    assert result["changed"] and result["restored_database"] == LIVE
    previous = result["previous_database"]
    assert previous.startswith(f"{LIVE}__pre_restore_") and result["staging_database"].startswith(f"{LIVE}__restore_")
    assert result["backup"]["name"] == live["backup"]["name"]
    assert any("sha256" in v for v in result["verified"]) and any("row counts" in v for v in result["verified"])
    assert result["rows"] == live["backup"]["rows"] and result["swap_attempts"] >= 1
    assert set(result["timings"]) == {"verify", "load", "check_analyze_settings", "swap"}

    assert_same(pg_cluster, LIVE, live["state"])
    assert database_state(pg_cluster, LIVE) == before_db_state
    # The database it replaced is kept, with what happened after the backup.
    assert table_checksums(pg_cluster, previous) == changed_rows
    assert databases(pg_cluster, LIVE) == sorted([LIVE, previous])
    stats = pg_cluster.psql("SELECT count(*) FROM pg_stats WHERE tablename = 'order_items';", db=LIVE)
    assert int(stats) > 0, "ANALYZE ran before the swap"


@pytest.mark.parametrize("fmt", ["directory", "plain", "custom"])
def test_round_trip_into_a_new_database_keeps_everything(pg_cluster, source, fmt):
    target = f"rs_into_{fmt}"
    result = restore(pg_cluster, target, backup=source["backups"][fmt]["path"], mode="into", confirm=True)
    assert not result.get("failed"), result
    assert result["previous_database"] is None and result["restored_database"] == target
    assert_same(pg_cluster, target, source["state"])
    # Owner, ACL, settings, comment and connection limit come from the manifest.
    assert database_state(pg_cluster, target) == source["db_state"]
    drop_db(pg_cluster, target)


def test_legacy_sql_gz_from_the_earlier_scripts(pg_cluster, source, tmp_path):
    dump = subprocess.run(
        [str(pg_cluster.bindir / "pg_dump"), "-d", SRC], capture_output=True, env=pg_cluster.env(SRC), check=True
    ).stdout
    legacy = tmp_path / "backup_2026-01-03_02-00-00.sql.gz"
    legacy.write_bytes(gzip.compress(dump))
    result = restore(pg_cluster, "rs_legacy", backup=str(legacy), mode="into", confirm=True)
    assert not result.get("failed"), result
    assert result["backup"]["kind"] == "legacy"
    assert any("gzip stream" in v for v in result["verified"])
    state = full_state(pg_cluster, "rs_legacy")
    assert state["rows"] == source["state"]["rows"] and state["schema"] == source["state"]["schema"]
    drop_db(pg_cluster, "rs_legacy")


def test_refuses_without_confirm_and_changes_nothing(pg_cluster, live):
    dbs = databases(pg_cluster, "rs_")
    result = restore(pg_cluster, LIVE, backup="latest", backup_dir=str(live["dir"]))
    assert result["failed"] and not result["changed"]
    assert "Refusing to replace database rs_live" in result["msg"] and "set confirm: true" in result["msg"]
    assert "-e confirm=true" in result["msg"] and live["backup"]["name"] in result["msg"]
    assert databases(pg_cluster, "rs_") == dbs
    assert_same(pg_cluster, LIVE, live["state"])


def test_check_mode_verifies_and_touches_nothing(pg_cluster, live):
    dbs = databases(pg_cluster, "rs_")
    result = restore(pg_cluster, LIVE, check=True, backup="latest", backup_dir=str(live["dir"]))
    assert not result.get("failed") and result["changed"], result
    assert any("sha256" in v for v in result["verified"]) and "would restore" in result["msg"]
    assert databases(pg_cluster, "rs_") == dbs


def _untouched(pg_cluster, live, dbs):
    assert databases(pg_cluster, "rs_") == dbs, "no half-restored database may be left"
    assert_same(pg_cluster, LIVE, live["state"])


def test_missing_truncated_and_flipped_backups_are_refused_before_anything(pg_cluster, live, tmp_path):
    dbs = databases(pg_cluster, "rs_")
    missing = restore(pg_cluster, LIVE, backup=str(tmp_path / "backup_2026-01-01_00-00-00.dir"), confirm=True)
    assert missing["failed"] and "does not exist" in missing["msg"]

    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    name = live["backup"]["name"]
    copy_backup(live["dir"], name, bad_dir, "backup_2026-01-02_00-00-00", "2026-01-02T00:00:00.000000Z")
    copy_backup(live["dir"], name, bad_dir, "backup_2026-01-03_00-00-00", "2026-01-03T00:00:00.000000Z")
    zst = sorted((bad_dir / "backup_2026-01-02_00-00-00.dir").glob("*.zst"), key=lambda p: p.stat().st_size)[-1]
    zst.write_bytes(zst.read_bytes()[:-10])
    truncated = restore(pg_cluster, LIVE, backup=str(bad_dir / "backup_2026-01-02_00-00-00.dir"), confirm=True)
    assert truncated["failed"] and "is not valid" in truncated["msg"] and "Nothing was changed" in truncated["msg"]
    assert f"{zst.name} has" in truncated["msg"]

    zst = sorted((bad_dir / "backup_2026-01-03_00-00-00.dir").glob("*.zst"), key=lambda p: p.stat().st_size)[-1]
    data = bytearray(zst.read_bytes())
    data[len(data) // 2] ^= 0x01
    zst.write_bytes(bytes(data))
    flipped = restore(pg_cluster, LIVE, backup=str(bad_dir / "backup_2026-01-03_00-00-00.dir"), confirm=True)
    assert flipped["failed"] and "checksum mismatch" in flipped["msg"] and "Nothing was changed" in flipped["msg"]
    # latest skips nothing silently: the newest valid one is still the good backup in its own directory.
    _untouched(pg_cluster, live, dbs)


def test_backup_of_another_database_is_refused(pg_cluster, source, live):
    dbs = databases(pg_cluster, "rs_")
    result = restore(pg_cluster, LIVE, backup=source["backups"]["directory"]["path"], confirm=True)
    assert result["failed"]
    assert "is a backup of database rs_src, not rs_live" in result["msg"] and "source_database: rs_src" in result["msg"]
    _untouched(pg_cluster, live, dbs)


def test_sql_error_mid_restore_leaves_live_untouched(pg_cluster, source, live, tmp_path):
    dbs = databases(pg_cluster, "rs_")
    dump = subprocess.run(
        [str(pg_cluster.bindir / "pg_dump"), "-d", SRC], capture_output=True, env=pg_cluster.env(SRC), check=True
    ).stdout
    marker = b"\nCOPY public.orders "
    cut = dump.index(marker)
    broken = dump[:cut] + b"\nSELECT * FROM table_that_does_not_exist;\n" + dump[cut:]
    legacy = tmp_path / "backup_2026-01-04_02-00-00.sql.gz"
    legacy.write_bytes(gzip.compress(broken))
    result = restore(pg_cluster, LIVE, backup=str(legacy), confirm=True)
    assert result["failed"], result
    assert "psql failed" in result["msg"] and 'relation "table_that_does_not_exist" does not exist' in result["msg"]
    assert "was dropped" in result["msg"] and "live database rs_live was not touched" in result["msg"]
    _untouched(pg_cluster, live, dbs)


def test_pg_restore_error_drops_the_new_database(pg_cluster, tmp_path):
    # A backup whose objects belong to a role that no longer exists: pg_restore --exit-on-error fails.
    pg_cluster.psql("CREATE ROLE rs_gone; CREATE DATABASE rs_owned;")
    pg_cluster.psql("CREATE TABLE t (id int); ALTER TABLE t OWNER TO rs_gone; INSERT INTO t VALUES (1);", db="rs_owned")
    made = run_module("postgresql_backup", conn_args(pg_cluster, database="rs_owned", backup_dir=str(tmp_path)))
    assert not made.get("failed"), made
    drop_db(pg_cluster, "rs_owned")
    pg_cluster.psql("DROP ROLE rs_gone;")
    dbs = databases(pg_cluster, "rs_")
    result = restore(pg_cluster, "rs_owned_copy", backup=made["path"], mode="into", confirm=True)
    assert result["failed"]
    assert "pg_restore failed" in result["msg"] and 'role "rs_gone" does not exist' in result["msg"]
    assert "The incomplete database rs_owned_copy was dropped" in result["msg"]
    assert databases(pg_cluster, "rs_") == dbs


def test_latest_before_and_a_dropped_live_database(pg_cluster, source, tmp_path):
    backups = source["dir"]
    made = source["backups"]["directory"]
    now = datetime.datetime.now(datetime.UTC)
    old = now - datetime.timedelta(days=2)
    old_stem = old.strftime("backup_%Y-%m-%d_%H-%M-%S")
    d = tmp_path / "two"
    d.mkdir()
    copy_backup(backups, made["name"], d, old_stem, old.strftime("%Y-%m-%dT%H:%M:%S.000000Z"))
    copy_backup(
        backups, made["name"], d, now.strftime("backup_%Y-%m-%d_%H-%M-%S"), now.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    )
    before = (now - datetime.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    # rs_src_restored does not exist: replace mode simply creates it, with the manifest's properties.
    result = restore(pg_cluster, "rs_src_restored", backup_dir=str(d), before=before, source_database=SRC, confirm=True)
    assert not result.get("failed"), result
    assert result["backup"]["name"] == old_stem and result["previous_database"] is None
    assert_same(pg_cluster, "rs_src_restored", source["state"])
    assert database_state(pg_cluster, "rs_src_restored") == source["db_state"]
    nothing = restore(
        pg_cluster, "rs_x", backup_dir=str(d), before="2020-01-01T00:00:00Z", source_database=SRC, confirm=True
    )
    assert nothing["failed"] and "no valid backup of database rs_src before 2020-01-01" in nothing["msg"]


def test_into_an_existing_database_is_refused(pg_cluster, source):
    result = restore(pg_cluster, SRC, backup=source["backups"]["plain"]["path"], mode="into", confirm=True)
    assert result["failed"] and "database rs_src already exists" in result["msg"]
    assert table_checksums(pg_cluster, SRC) == source["state"]["rows"]


def test_wrong_password(pg_cluster, source):
    result = restore(
        pg_cluster,
        "rs_pw",
        backup=source["backups"]["plain"]["path"],
        mode="into",
        confirm=True,
        login_password="nope",
    )
    assert result["failed"] and "authentication failed" in result["msg"]
    assert pg_cluster.password not in str(result)


def test_no_dangling_paths(source):
    # Restores read the backups; they never write into the backup directory.
    names = sorted(p.name for p in Path(source["dir"]).iterdir())
    assert all(not n.endswith(".partial") for n in names)
