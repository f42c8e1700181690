"""tokotani.dr.backup_info through ansible: listing, validity, newest/newest_before, staleness; never changed."""

from __future__ import annotations

import datetime
import gzip
import subprocess
from pathlib import Path

import pytest
from backup_support import conn_args, copy_backup, drop_db, run_module

NOW = datetime.datetime.now(datetime.UTC)


def ago(**delta) -> datetime.datetime:
    return NOW - datetime.timedelta(**delta)


def stem(when: datetime.datetime) -> str:
    return when.strftime("backup_%Y-%m-%d_%H-%M-%S")


def iso(when: datetime.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.000000Z")


@pytest.fixture(scope="module")
def catalog_dir(pg_cluster, tmp_path_factory):
    """A directory with good, damaged, legacy and foreign backups of two databases, at known times."""
    for db in ("bi_src", "bi_other"):
        pg_cluster.psql(f"CREATE DATABASE {db};")
        pg_cluster.psql(
            "CREATE TABLE items (id int PRIMARY KEY, name text); "
            "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 500) g;",
            db=db,
        )
    seed = tmp_path_factory.mktemp("seed")
    made = {}
    for db, fmt in (("bi_src", "directory"), ("bi_src", "plain"), ("bi_other", "directory")):
        result = run_module("postgresql_backup", conn_args(pg_cluster, database=db, backup_dir=str(seed), format=fmt))
        assert not result.get("failed"), result
        made[(db, fmt)] = result["name"]
    for db in ("bi_src", "bi_other"):
        drop_db(pg_cluster, db)

    d = tmp_path_factory.mktemp("catalog")
    layout = {
        "dir_2h": (("bi_src", "directory"), ago(hours=2)),
        "plain_1d": (("bi_src", "plain"), ago(days=1)),
        "flipped_3h": (("bi_src", "plain"), ago(hours=3)),
        "truncated_4h": (("bi_src", "plain"), ago(hours=4)),
        "other_1h": (("bi_other", "directory"), ago(hours=1)),
    }
    names = {}
    for key, (source, when) in layout.items():
        copy_backup(seed, made[source], d, stem(when), iso(when))
        names[key] = stem(when)
    data = d / f"{names['flipped_3h']}.sql.gz"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    data = d / f"{names['truncated_4h']}.sql.gz"
    data.write_bytes(data.read_bytes()[:-100])
    # Legacy files from the earlier scripts: one good, one cut short (its gzip header is fine).
    names["legacy_2d"] = stem(ago(days=2))
    plain = subprocess.run(
        [str(pg_cluster.bindir / "pg_dump"), "-d", "postgres"], capture_output=True, env=pg_cluster.env(), check=True
    ).stdout
    (d / f"{names['legacy_2d']}.sql.gz").write_bytes(gzip.compress(plain))
    names["legacy_cut_5d"] = stem(ago(days=5))
    whole = gzip.compress(plain)
    (d / f"{names['legacy_cut_5d']}.sql.gz").write_bytes(whole[: len(whole) // 2])
    (d / f"{stem(ago(minutes=1))}.dir.partial").mkdir()
    (d / "README.txt").write_text("not a backup")
    return d, names


def info(directory: Path, check: bool = False, **options) -> dict:
    return run_module("backup_info", {"backup_dir": str(directory), **options}, check=check)


def by_name(result: dict) -> dict:
    return {b["name"]: b for b in result["backups"]}


def test_lists_everything_newest_first_without_changing(catalog_dir):
    d, names = catalog_dir
    before = sorted(p.name for p in d.iterdir())
    result = info(d)
    assert not result.get("failed") and result["changed"] is False, result
    listed = [b["name"] for b in result["backups"]]
    assert listed == [
        names[k] for k in ("other_1h", "dir_2h", "flipped_3h", "truncated_4h", "plain_1d", "legacy_2d", "legacy_cut_5d")
    ]
    entries = by_name(result)
    assert entries[names["truncated_4h"]]["valid"] is False
    assert "truncated" in " ".join(entries[names["truncated_4h"]]["problems"])
    # Without verify, a flipped byte or a cut gzip stream is not noticed yet.
    assert entries[names["flipped_3h"]]["valid"] and not entries[names["flipped_3h"]]["verified"]
    assert entries[names["legacy_cut_5d"]]["valid"] and entries[names["legacy_cut_5d"]]["kind"] == "legacy"
    assert entries[names["dir_2h"]]["database"] == "bi_src" and entries[names["dir_2h"]]["format"] == "directory"
    assert result["newest"]["name"] == names["other_1h"]
    # NOW is taken when the file is collected, which can be minutes before this test runs (pytest-xdist)
    since = (datetime.datetime.now(datetime.UTC) - NOW).total_seconds()
    assert 3600 + since - 120 <= result["newest_age_seconds"] <= 3600 + since + 5
    assert result["partials"] == [f"{stem(ago(minutes=1))}.dir.partial"]
    assert result["count"] == 7 and result["valid_count"] == 6
    assert sorted(p.name for p in d.iterdir()) == before
    again = info(d, check=True)
    assert again["changed"] is False and [b["name"] for b in again["backups"]] == listed


def test_verify_finds_flipped_bytes_and_damaged_gzip(catalog_dir):
    d, names = catalog_dir
    result = info(d, verify=True, database="bi_src")
    assert not result.get("failed"), result
    entries = by_name(result)
    assert names["other_1h"] not in entries  # another database's backup
    flipped = entries[names["flipped_3h"]]
    assert flipped["valid"] is False and flipped["verified"] is True
    assert any("checksum mismatch" in p for p in flipped["problems"])
    cut = entries[names["legacy_cut_5d"]]
    assert cut["valid"] is False and any("gzip stream damaged" in p for p in cut["problems"])
    assert entries[names["dir_2h"]]["valid"] and entries[names["dir_2h"]]["verified"]
    assert entries[names["legacy_2d"]]["valid"] and entries[names["legacy_2d"]]["verified"]
    assert result["newest"]["name"] == names["dir_2h"]


def test_newest_before_a_breach(catalog_dir):
    d, names = catalog_dir
    result = info(d, database="bi_src", verify=True, before=iso(ago(hours=2, minutes=30)))
    assert result["newest_before"]["name"] == names["plain_1d"]  # 3 h flipped, 4 h truncated: both invalid
    result = info(d, database="bi_src", before=stem(ago(days=1, minutes=1)))
    assert result["newest_before"]["name"] == names["legacy_2d"]
    result = info(d, database="bi_src", before=iso(ago(days=30)))
    assert result["newest_before"] is None


def test_max_age_alerts_when_backups_are_stale(catalog_dir, tmp_path):
    d, names = catalog_dir
    fresh = info(d, database="bi_src", max_age="26h")
    assert not fresh.get("failed") and fresh["stale"] is False
    stale = info(d, database="bi_src", max_age="90m")
    assert stale["failed"] and stale["stale"] is True and stale["changed"] is False
    assert names["dir_2h"] in stale["msg"] and "older than max_age 1h 30m" in stale["msg"]
    assert stale["newest"]["name"] == names["dir_2h"]
    empty = info(tmp_path, max_age=3600)
    assert empty["failed"] and "no valid backup" in empty["msg"] and empty["stale"] is True
    missing = info(tmp_path / "nope")
    assert missing["failed"] and "does not exist" in missing["msg"]
    bad = info(d, max_age="soon")
    assert bad["failed"] and "cannot read the duration" in bad["msg"]
