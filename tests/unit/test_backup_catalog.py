"""Unit tests of the backup catalog: names, timestamps, manifests, retention decisions, locks, row counting."""

from __future__ import annotations

import datetime
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.tokotani.dr.plugins.module_utils import backup_catalog as catalog  # noqa: E402
from ansible_collections.tokotani.dr.plugins.module_utils.pg_backup import LineCounter, copy_rows  # noqa: E402

UTC = datetime.UTC
NOW = datetime.datetime(2026, 1, 20, 2, 0, 0, tzinfo=UTC)


def entry(name, kind="managed", database="shop", valid=True, days=0.0):
    ts = NOW - datetime.timedelta(days=days)
    return {
        "name": name,
        "kind": kind,
        "database": database if kind == "managed" else None,
        "valid": valid,
        "timestamp": ts.timestamp(),
        "path": f"/b/{name}",
        "manifest_path": f"/b/{name}.manifest.json" if kind == "managed" else None,
    }


# --------------------------------------------------------------------------- names and times


def test_stem_and_parse_round_trip():
    dt = datetime.datetime(2026, 1, 5, 2, 3, 4, 999, tzinfo=UTC)
    assert catalog.stem_for(dt) == "backup_2026-01-05_02-03-04"
    assert catalog.stem_for(dt, 2) == "backup_2026-01-05_02-03-04_2"
    parsed = catalog.parse_name("backup_2026-01-05_02-03-04_2.manifest.json")
    assert parsed["stem"] == "backup_2026-01-05_02-03-04_2" and parsed["seq"] == 2
    assert parsed["timestamp"] == dt.replace(microsecond=0)
    assert catalog.parse_name("backup_2026-01-05_02-03-04.sql.gz")["ext"] == "sql.gz"
    assert catalog.parse_name("backup_2026-13-05_02-03-04.sql.gz") is None
    assert catalog.parse_name("notes.txt") is None
    # Local time of another zone still names in UTC.
    wib = datetime.timezone(datetime.timedelta(hours=7))
    assert catalog.stem_for(datetime.datetime(2026, 1, 5, 9, 0, 0, tzinfo=wib)) == "backup_2026-01-05_02-00-00"


def test_extensions():
    assert catalog.extension("plain", "gzip") == "sql.gz"
    assert catalog.extension("directory", "zstd") == "dir"
    assert catalog.extension("custom", "none") == "dump"
    with pytest.raises(catalog.CatalogError, match="cannot be compressed with zstd"):
        catalog.extension("custom", "zstd")


def test_reserve_name_takes_the_next_free_suffix(tmp_path):
    dt = datetime.datetime(2026, 1, 5, 2, 0, 0, tzinfo=UTC)
    (tmp_path / "backup_2026-01-05_02-00-00.dir").mkdir()
    (tmp_path / "backup_2026-01-05_02-00-00_1.sql.gz.partial").write_text("")
    stem, data, fd = catalog.reserve_name(str(tmp_path), dt, "dir")
    os.close(fd)
    assert stem == "backup_2026-01-05_02-00-00_2" and data == stem + ".dir"
    assert (tmp_path / f"{stem}.manifest.json.partial").exists()
    assert oct((tmp_path / f"{stem}.manifest.json.partial").stat().st_mode & 0o777) == oct(0o600)
    stem2, _data, fd = catalog.reserve_name(str(tmp_path), dt, "dir")
    os.close(fd)
    assert stem2 == "backup_2026-01-05_02-00-00_3"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-05T02:00:00Z", datetime.datetime(2026, 1, 5, 2, 0, tzinfo=UTC)),
        ("2026-01-05T09:00:00+07:00", datetime.datetime(2026, 1, 5, 2, 0, tzinfo=UTC)),
        ("2026-01-05 02:00:00", datetime.datetime(2026, 1, 5, 2, 0, tzinfo=UTC)),
        ("backup_2026-01-05_02-00-00", datetime.datetime(2026, 1, 5, 2, 0, tzinfo=UTC)),
        ("backup_2026-01-05_02-00-00.sql.gz", datetime.datetime(2026, 1, 5, 2, 0, tzinfo=UTC)),
        ("1767578400", datetime.datetime(2026, 1, 5, 2, 0, tzinfo=UTC)),
    ],
)
def test_parse_timestamp(text, expected):
    assert catalog.parse_timestamp(text) == expected


def test_parse_timestamp_rejects_garbage():
    with pytest.raises(catalog.CatalogError, match="ISO 8601"):
        catalog.parse_timestamp("last tuesday")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(3600, 3600), ("3600", 3600), ("90m", 5400), ("26h", 93600), ("2d", 172800), ("1w", 604800), ("1d12h", 129600)],
)
def test_parse_duration(text, seconds):
    assert catalog.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "5x", "h", "1h soon"])
def test_parse_duration_rejects(text):
    with pytest.raises(catalog.CatalogError, match="cannot read the duration"):
        catalog.parse_duration(text)


def test_human_duration():
    assert catalog.human_duration(59) == "59s"
    assert catalog.human_duration(5400) == "1h 30m"
    assert catalog.human_duration(2 * 86400 + 3600) == "2d 1h"


# --------------------------------------------------------------------------- manifests


def good_manifest(**changes):
    doc = {
        "manifest_version": 1,
        "name": "backup_2026-01-05_02-00-00",
        "data": "backup_2026-01-05_02-00-00.sql.gz",
        "database": "shop",
        "format": "plain",
        "compression": "gzip",
        "size": 10,
        "sha256": "0" * 64,
        "started_at": "2026-01-05T02:00:00.000000Z",
        "finished_at": "2026-01-05T02:00:05.000000Z",
        "tables": [{"schema": "public", "name": "users", "rows": 3}],
    }
    doc.update(changes)
    return doc


def test_manifest_problems():
    assert catalog.manifest_problems(good_manifest()) == []
    assert catalog.manifest_problems([]) == ["the manifest is not a JSON object"]
    assert "the manifest has no sha256" in catalog.manifest_problems(
        {k: v for k, v in good_manifest().items() if k != "sha256"}
    )
    assert "the manifest's size is a string, not an integer" in catalog.manifest_problems(good_manifest(size="10"))
    assert "the manifest's size is a boolean, not an integer" in catalog.manifest_problems(good_manifest(size=True))
    assert "the manifest's sha256 'abc' is not of the allowed form" in catalog.manifest_problems(
        good_manifest(sha256="abc")
    )
    assert any("newer than this tool" in p for p in catalog.manifest_problems(good_manifest(manifest_version=9)))
    assert any("not of the allowed form" in p for p in catalog.manifest_problems(good_manifest(data="../etc/passwd")))
    assert any("is not backup_" in p for p in catalog.manifest_problems(good_manifest(data="other.sql.gz")))
    assert any(
        "file list" in p for p in catalog.manifest_problems(good_manifest(format="directory", compression="zstd"))
    )
    assert catalog.manifest_problems(good_manifest(tables=[{"schema": "x"}])) == [
        "the manifest's tables[0] has no name",
        "the manifest's tables[0] has no rows",
    ]


def test_load_manifest_errors(tmp_path):
    path = tmp_path / "backup_2026-01-05_02-00-00.manifest.json"
    path.write_text("{not json")
    with pytest.raises(catalog.CatalogError, match="cannot be read"):
        catalog.load_manifest(str(path))
    path.write_text(json.dumps(good_manifest(size="x")))
    with pytest.raises(catalog.CatalogError, match="is not valid"):
        catalog.load_manifest(str(path))


def test_managed_entry_detects_truncation_and_missing_data(tmp_path):
    doc = good_manifest(size=10)
    (tmp_path / f"{doc['name']}.manifest.json").write_text(json.dumps(doc))
    missing = catalog.managed_entry(str(tmp_path), f"{doc['name']}.manifest.json")
    assert not missing["valid"] and "missing" in missing["problems"][0]
    (tmp_path / (doc["data"] + ".partial")).write_bytes(b"12345")
    incomplete = catalog.managed_entry(str(tmp_path), f"{doc['name']}.manifest.json")
    assert "incomplete" in incomplete["problems"][0]
    (tmp_path / doc["data"]).write_bytes(b"12345")
    short = catalog.managed_entry(str(tmp_path), f"{doc['name']}.manifest.json")
    assert not short["valid"] and "truncated" in short["problems"][0]


def test_listing_digest_is_order_independent():
    files = {"b.dat": {"sha256": "1" * 64, "size": 2}, "a.dat": {"sha256": "2" * 64, "size": 1}}
    assert catalog.listing_digest(files) == catalog.listing_digest(dict(reversed(list(files.items()))))


def test_directory_digest_and_verify(tmp_path):
    data = tmp_path / "backup_2026-01-05_02-00-00.dir"
    data.mkdir()
    (data / "toc.dat").write_bytes(b"toc")
    (data / "1.dat.zst").write_bytes(b"zzz")
    sha, files = catalog.digest_tree(str(data))
    doc = good_manifest(data=data.name, format="directory", compression="zstd", sha256=sha, files=files, size=6)
    (tmp_path / "backup_2026-01-05_02-00-00.manifest.json").write_text(json.dumps(doc))
    entry_ = catalog.managed_entry(str(tmp_path), "backup_2026-01-05_02-00-00.manifest.json")
    assert entry_["valid"]
    assert catalog.verify_entry(entry_)["valid"]
    (data / "1.dat.zst").write_bytes(b"zzy")
    entry_ = catalog.managed_entry(str(tmp_path), "backup_2026-01-05_02-00-00.manifest.json")
    assert entry_["valid"]  # same size: only the checksum tells
    assert not catalog.verify_entry(entry_)["valid"]
    assert "checksum mismatch: backup_2026-01-05_02-00-00.dir/1.dat.zst" in entry_["problems"][0]
    (data / "extra.dat").write_bytes(b"")
    assert (
        "unexpected files"
        in catalog.managed_entry(str(tmp_path), "backup_2026-01-05_02-00-00.manifest.json")["problems"][0]
    )


# --------------------------------------------------------------------------- retention


def names(pairs):
    return sorted(e["name"] for e, _reason in pairs)


def test_retention_prunes_old_and_keeps_newest_min():
    entries = [entry(f"b{d}", days=d) for d in (0, 1, 15, 20, 30)]
    prune, keep = catalog.plan_retention(entries, "shop", NOW, keep_days=14, keep_min=3)
    assert names(prune) == ["b20", "b30"]
    assert names(keep) == ["b0", "b1", "b15"]


def test_retention_never_prunes_the_newest_keep_min_even_if_all_are_old():
    entries = [entry(f"b{d}", days=d) for d in (40, 50, 60, 70)]
    prune, _keep = catalog.plan_retention(entries, "shop", NOW, keep_days=14, keep_min=3)
    assert names(prune) == ["b70"]
    prune, _keep = catalog.plan_retention(entries, "shop", NOW, keep_days=0, keep_min=10)
    assert prune == []


def test_retention_skips_invalid_other_databases_and_counts_only_valid_for_keep_min():
    entries = [
        entry("new_invalid", valid=False, days=0),
        entry("old_invalid", valid=False, days=90),
        entry("v1", days=1),
        entry("v30", days=30),
        entry("v40", days=40),
        entry("other", database="analytics", days=90),
    ]
    prune, keep = catalog.plan_retention(entries, "shop", NOW, keep_days=14, keep_min=2)
    # keep_min counts valid backups: v1 and v30 are the newest two valid ones; invalid ones are never pruned.
    assert names(prune) == ["v40"]
    assert "old_invalid" in names(keep) and "new_invalid" in names(keep)
    assert "other" not in names(prune) + names(keep)


def test_retention_legacy_only_with_option_and_enough_managed():
    entries = [entry("v1", days=1), entry("v2", days=2), entry("legacy_old", kind="legacy", days=60)]
    prune, _keep = catalog.plan_retention(entries, "shop", NOW, keep_days=14, keep_min=2)
    assert prune == []
    prune, _keep = catalog.plan_retention(entries, "shop", NOW, keep_days=14, keep_min=2, prune_legacy=True)
    assert names(prune) == ["legacy_old"]
    prune, keep = catalog.plan_retention(entries, "shop", NOW, keep_days=14, keep_min=3, prune_legacy=True)
    assert prune == [] and any("fewer than keep_min" in reason for _e, reason in keep)


def test_newest_and_newest_before():
    entries = [entry("b0", days=0), entry("bad", valid=False, days=0.5), entry("b1", days=1), entry("b2", days=2)]
    entries.sort(key=lambda e: e["timestamp"], reverse=True)
    assert catalog.newest(entries)["name"] == "b0"
    assert catalog.newest(entries, before=NOW - datetime.timedelta(hours=1))["name"] == "b1"
    assert catalog.newest(entries, before=NOW - datetime.timedelta(days=10)) is None


def test_newest_before_takes_only_a_backup_that_ended_before_the_time():
    # b1 started an hour before the breach and ended ten minutes after it: it ran on the intruder's ground
    breach = NOW - datetime.timedelta(hours=1)
    running = entry("b1", days=(1 / 24) + (1 / 24))
    running["finished_at"] = catalog.iso(breach + datetime.timedelta(minutes=10))
    done = entry("b2", days=1)
    done["finished_at"] = catalog.iso(NOW - datetime.timedelta(days=1) + datetime.timedelta(minutes=2))
    assert catalog.newest([running, done], before=breach)["name"] == "b2"
    running["finished_at"] = catalog.iso(breach - datetime.timedelta(seconds=1))
    assert catalog.newest([running, done], before=breach)["name"] == "b1"
    # no finished_at (a legacy dump): its start is all there is
    del running["finished_at"]
    assert catalog.newest([running, done], before=breach)["name"] == "b1"


# --------------------------------------------------------------------------- locks and leftovers


def test_lock_is_exclusive_and_names_the_holder(tmp_path):
    first = catalog.DirLock(str(tmp_path), "shop").acquire(1)
    try:
        with pytest.raises(catalog.CatalogError, match="another backup of database shop is running") as err:
            catalog.DirLock(str(tmp_path), "shop").acquire(0.3)
        assert f"pid {os.getpid()}" in err.value.msg
        other = catalog.DirLock(str(tmp_path), "analytics").acquire(0)
        assert catalog.other_lock_held(str(tmp_path), other.path)
        other.release()
        assert not catalog.other_lock_held(str(tmp_path), first.path)
    finally:
        first.release()
    catalog.DirLock(str(tmp_path), "shop").acquire(0).release()


def test_lock_path_is_filesystem_safe(tmp_path):
    path = catalog.lock_path(str(tmp_path), "weird/name with spaces")
    assert os.path.dirname(path) == str(tmp_path) and "/" not in os.path.basename(path)
    assert path != catalog.lock_path(str(tmp_path), "weird_name_with_spaces")


def test_clean_stale_waits_for_other_lock_holders(tmp_path):
    (tmp_path / "backup_2026-01-05_02-00-00.dir.partial").mkdir()
    doc = good_manifest(name="backup_2026-01-04_02-00-00", data="backup_2026-01-04_02-00-00.sql.gz")
    (tmp_path / "backup_2026-01-04_02-00-00.manifest.json").write_text(json.dumps(doc))
    (tmp_path / "backup_2026-01-04_02-00-00.sql.gz.partial").write_text("")
    (tmp_path / "notes.partial").write_text("not ours")
    own = catalog.DirLock(str(tmp_path), "shop").acquire(0)
    other = catalog.DirLock(str(tmp_path), "analytics").acquire(0)
    removed, skipped = catalog.clean_stale(str(tmp_path), own.path)
    assert removed == [] and "another backup" in skipped
    other.release()
    removed, skipped = catalog.clean_stale(str(tmp_path), own.path)
    own.release()
    assert skipped is None
    assert sorted(removed) == sorted(
        [
            "backup_2026-01-05_02-00-00.dir.partial",
            "backup_2026-01-04_02-00-00.sql.gz.partial",
            "backup_2026-01-04_02-00-00.manifest.json",
        ]
    )
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["notes.partial"]


def test_write_json_atomic_mode(tmp_path):
    path = tmp_path / "x.json"
    catalog.write_json_atomic(str(path), {"a": "ü"})
    assert json.loads(path.read_text()) == {"a": "ü"}
    assert path.stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "x.json.partial").exists()


def test_ensure_directory_creates_0700_and_tightens(tmp_path):
    new = tmp_path / "a" / "b"
    assert catalog.ensure_directory(str(new)) is None
    assert new.stat().st_mode & 0o777 == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    assert "tightened" in catalog.ensure_directory(str(loose))
    assert loose.stat().st_mode & 0o777 == 0o700


# --------------------------------------------------------------------------- row counting of COPY streams


@pytest.mark.parametrize(
    ("data", "rows"),
    [
        (b"\\.\n\n\n", 0),
        (b"1\ta\n2\tb\n\\.\n\n\n", 2),
        (b"1\tline\\nbreak\n\\.\n\n", 1),
        (b"1\t\\\\.\n\\.\n\n\n", 1),
        (b"1\ta\n", None),
    ],
)
def test_copy_rows(data, rows):
    assert copy_rows(data) == rows


def test_line_counter_across_chunks():
    counter = LineCounter()
    payload = b"".join(b"%d\tname %d\n" % (i, i) for i in range(100000)) + b"\\.\n\n\n"
    for start in range(0, len(payload), 4097):
        counter.feed(payload[start : start + 4097])
    assert counter.rows() == 100000 and counter.bytes == len(payload)


@pytest.mark.parametrize(
    ("finished", "epoch"),
    [
        ("2026-01-05T02:00:12.500000Z", 1767578412.5),
        ("2026-01-05T02:00:12+00:00", 1767578412.0),
        (None, None),
        ("", None),
        ("not a time", None),
    ],
)
def test_public_entries_carry_the_end_as_epoch_seconds(finished, epoch):
    entry = {"name": "backup_2026-01-05_02-00-00", "finished_at": finished, "timestamp": None, "manifest": {}}
    public = catalog.public_entry(entry)
    assert public["finished_at_epoch"] == epoch and "manifest" not in public


# --------------------------------------------------------------------------- suspicious backups

SHRUNK = {
    "compared_with": "b1",
    "reason": "compared with b1: public.order_items has 5 rows, 50% fewer than 10",
    "tables": [],
}


def test_latest_passes_over_a_suspicious_backup_and_says_which():
    newer = dict(entry("b2", days=0), suspicious=SHRUNK)
    older = entry("b1", days=1)
    skipped = []
    assert catalog.newest([newer, older], skipped=skipped) is older
    assert skipped == [newer]
    assert catalog.newest([newer, older], accept_suspicious=True) is newer
    assert catalog.suspicious_warning(newer) == (
        "the newer backup b2 is suspicious (compared with b1: public.order_items has 5 rows, 50% fewer than 10): "
        "skipped. Name it (backup=) or set accept_suspicious to restore it anyway"
    )


def test_suspicious_backups_never_push_the_last_good_ones_out_of_keep_min():
    entries = [dict(entry(f"s{i}", days=i), suspicious=SHRUNK) for i in range(3)]
    entries += [entry("good1", days=20), entry("good2", days=21), entry("good3", days=22)]
    prune, keep = catalog.plan_retention(entries, "shop", NOW, keep_days=14, keep_min=2)
    assert [e["name"] for e, _reason in prune] == ["good3"]
    kept = {e["name"]: reason for e, reason in keep}
    assert kept["good1"] == kept["good2"] == "among the newest 2 that are not suspicious (keep_min)"
    assert kept["s0"] == "within 14 days"
