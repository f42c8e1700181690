"""Unit tests of what is read back: the manifest schema (one schema, two checkers that agree), confined names,
the time rules, and database properties that can never carry code."""

from __future__ import annotations

import copy
import datetime
import json
import os
import sys
from pathlib import Path

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.tokotani.dr.plugins.module_utils import backup_catalog as catalog  # noqa: E402
from ansible_collections.tokotani.dr.plugins.module_utils import manifest_schema, pg_cli  # noqa: E402
from ansible_collections.tokotani.dr.plugins.module_utils import s3_offsite as s3  # noqa: E402

SHA = "a" * 64
NOW = datetime.datetime(2026, 1, 20, 2, 0, 0, tzinfo=datetime.UTC)
VALIDATOR = jsonschema.Draft202012Validator(manifest_schema.MANIFEST_SCHEMA)


def full_manifest():
    """A directory backup's manifest with every field the backup engine writes."""
    return {
        "manifest_version": 1,
        "tool": "tokotani.dr",
        "tool_version": "0.1.0",
        "name": "backup_2026-01-05_02-00-00_1",
        "data": "backup_2026-01-05_02-00-00_1.dir",
        "database": "shop",
        "label": "",
        "format": "directory",
        "compression": "zstd",
        "compression_level": "auto",
        "jobs": 2,
        "size": 100,
        "sha256": SHA,
        "started_at": "2026-01-05T02:00:00.417000Z",
        "finished_at": "2026-01-05T02:00:09.000000Z",
        "dump_seconds": 8.5,
        "duration": 9.1,
        "host": "db1",
        "server": {"host": "/var/run/postgresql", "port": 5432, "version": "15.20", "version_num": 150020},
        "pg_dump": {"path": "/usr/lib/postgresql/15/bin/pg_dump", "version": "15.20"},
        "database_size": 9000,
        "database_properties": {
            "name": "shop",
            "owner": "tokotani",
            "encoding": "UTF8",
            "collate": "C.UTF-8",
            "ctype": "C.UTF-8",
            "locale_provider": "c",
            "icu_locale": None,
            "is_template": False,
            "allow_connections": True,
            "connection_limit": -1,
            "comment": "Toko's shop\nsecond line",
            "acl_is_default": False,
            "acl": [{"grantee": "PUBLIC", "privilege": "CONNECT", "grantable": False}],
            "settings": [{"role": None, "config": ['search_path="$user", public', "statement_timeout=5min"]}],
            "size": 9000,
        },
        "snapshot": "00000003-00000002-1",
        "row_counts": "exact, in the dump's snapshot",
        "tables": [{"schema": "public", "name": "orders", "rows": 12}],
        "files": {"toc.dat": {"size": 40, "sha256": SHA}, "3001.dat.zst": {"size": 60, "sha256": SHA}},
        "zstd_choices": {"3001": 3},
    }


def test_the_published_schema_is_the_one_the_reader_uses():
    published = json.loads((ROOT / "docs" / "manifest.schema.json").read_text())
    assert published == manifest_schema.MANIFEST_SCHEMA
    jsonschema.Draft202012Validator.check_schema(published)


def test_a_manifest_as_the_engine_writes_it_is_valid():
    doc = full_manifest()
    assert VALIDATOR.is_valid(doc)
    assert catalog.manifest_problems(doc, now=NOW) == []


BAD_TYPES = [0, 1.5, True, "x", None, [], {}, ["x"], {"a": 1}]


def _mutations():
    """(label, document) pairs: every field of the full manifest replaced by every wrong JSON type."""
    base = full_manifest()
    out = []

    def walk(node, path):
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in list(items):
            for bad in BAD_TYPES:
                if type(bad) is type(value) and bad == value:
                    continue
                doc = copy.deepcopy(base)
                target = doc
                for part in path:
                    target = target[part]
                target[key] = bad
                out.append(("/".join(map(str, [*path, key])) + f"={bad!r}", doc))
            if isinstance(value, (dict, list)):
                walk(value, [*path, key])

    walk(base, [])
    return out


MUTATIONS = _mutations()


@pytest.mark.parametrize(("label", "doc"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_jsonschema_and_the_stdlib_checker_agree(label, doc):
    ours = manifest_schema.schema_problems(doc)
    assert bool(ours) == (not VALIDATOR.is_valid(doc)), (label, ours)


def test_the_mutation_corpus_covers_every_field():
    assert len(MUTATIONS) > 500
    rejected = [label for label, doc in MUTATIONS if manifest_schema.schema_problems(doc)]
    assert "size='x'" in rejected and "files/toc.dat/sha256=0" in rejected
    assert "database_properties/settings/0/config/0=0" in rejected


HOSTILE_NAMES = [
    "../x",
    "../../etc/cron.d/evil",
    "/etc/passwd",
    "/",
    "",
    ".",
    "..",
    "a/../b",
    "a/./b",
    "a//b",
    "a/",
    "a\\..\\b",
    "nul\x00byte",
    "new\nline",
    "toc.dat\n",
    "x" * 256,
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_hostile_file_name_invalidates_the_manifest_in_both_checkers(name):
    doc = full_manifest()
    doc["files"][name] = {"size": 1, "sha256": SHA}
    ours = manifest_schema.schema_problems(doc)
    assert ours and "not a plain relative path" in ours[0], ours
    assert not VALIDATOR.is_valid(doc)
    assert not manifest_schema.is_relpath(name)


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_confined_join_refuses_hostile_names(tmp_path, name):
    with pytest.raises(catalog.CatalogError, match="refusing the file name"):
        catalog.confined_join(str(tmp_path), name)


def test_confined_join_refuses_a_symlink_on_the_way(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    base = tmp_path / "backup.dir"
    base.mkdir()
    (base / "sub").symlink_to(outside)
    with pytest.raises(catalog.CatalogError, match="symbolic link inside a backup is never followed"):
        catalog.confined_join(str(base), "sub/toc.dat")
    assert catalog.confined_join(str(base), "blobs/3001.dat") == str(base / "blobs" / "3001.dat")


@pytest.mark.parametrize("data", ["../backup_2026-01-05_02-00-00_1.dir", "/tmp/x", "a/b", "other.dir"])
def test_the_data_name_must_be_the_backups_own(data):
    problems = catalog.manifest_problems(dict(full_manifest(), data=data), now=NOW)
    assert problems, data


def test_started_at_must_be_the_second_of_the_name():
    problems = catalog.manifest_problems(dict(full_manifest(), started_at="2026-01-05T02:00:01Z"), now=NOW)
    assert problems == [
        "the manifest's started_at 2026-01-05T02:00:01Z is not the time in its name backup_2026-01-05_02-00-00_1 "
        "(a manifest edited or renamed by someone else)"
    ]


def test_a_manifest_from_the_future_is_invalid():
    doc = dict(
        full_manifest(),
        name="backup_2099-01-01_00-00-00",
        data="backup_2099-01-01_00-00-00.dir",
        started_at="2099-01-01T00:00:00Z",
    )
    problems = catalog.manifest_problems(doc, now=NOW)
    assert len(problems) == 1 and "lies in the future (now 2026-01-20T02:00:00" in problems[0]
    soon = NOW + datetime.timedelta(minutes=4)
    doc = dict(
        full_manifest(),
        name=catalog.stem_for(soon),
        data=catalog.stem_for(soon) + ".dir",
        started_at=catalog.iso(soon),
    )
    assert catalog.manifest_problems(doc, now=NOW) == [], "a few minutes of clock skew is accepted"


def test_a_future_manifest_offsite_is_neither_latest_nor_kept_by_retention():
    def doc_for(name):
        return {
            "manifest_version": 1,
            "name": name,
            "data": f"{name}.sql.gz",
            "database": "shop",
            "format": "plain",
            "compression": "gzip",
            "size": 10,
            "sha256": SHA,
            "started_at": f"{name[7:17]}T{name[18:20]}:{name[21:23]}:{name[24:26]}Z",
            "finished_at": f"{name[7:17]}T{name[18:20]}:{name[21:23]}:{name[24:26]}Z",
            "tables": [],
        }

    names = ["backup_2099-01-01_00-00-00", "backup_2026-01-19_02-00-00", "backup_2026-01-18_02-00-00"]
    objects = {}
    docs = {}
    for name in names:
        objects[f"{name}.manifest.json"] = {"size": 1, "last_modified": 0}
        objects[f"{name}.sql.gz"] = {"size": 10, "last_modified": 0}
        docs[f"{name}.manifest.json"] = doc_for(name)
    entries, _incomplete = s3.build_entries(objects, "", docs)
    chosen, skipped = s3.select_entry(entries)
    assert chosen["name"] == "backup_2026-01-19_02-00-00"
    assert skipped[0]["name"] == names[0] and "lies in the future" in skipped[0]["problems"][0]
    prune, _keep = catalog.plan_retention(entries, "shop", NOW, keep_days=0, keep_min=1)
    assert [e["name"] for e, _why in prune] == ["backup_2026-01-18_02-00-00"]


def test_a_files_entry_that_is_not_an_object_breaks_only_its_own_entry(tmp_path):
    good = dict(full_manifest())
    bad = copy.deepcopy(good)
    bad.update(
        name="backup_2026-01-06_02-00-00", data="backup_2026-01-06_02-00-00.dir", started_at="2026-01-06T02:00:00Z"
    )
    bad["files"]["toc.dat"] = "not an object"
    for doc in (good, bad):
        (tmp_path / f"{doc['name']}.manifest.json").write_text(json.dumps(doc))
        os.mkdir(tmp_path / doc["data"])
    listing = catalog.scan(str(tmp_path))["backups"]
    by_name = {e["name"]: e for e in listing}
    assert "the manifest's files.toc.dat is a string, not an object" in by_name[bad["name"]]["problems"][0]
    assert by_name[good["name"]]["manifest"] is not None
    entries, _incomplete = s3.build_entries(
        {f"{d['name']}.manifest.json": {"size": 1} for d in (good, bad)},
        "",
        {f"{d['name']}.manifest.json": d for d in (good, bad)},
    )
    assert len(entries) == 2


def test_a_symlink_inside_a_local_directory_backup_makes_it_invalid(tmp_path):
    doc = full_manifest()
    data = tmp_path / doc["data"]
    data.mkdir()
    (data / "toc.dat").symlink_to("/etc/passwd")
    (data / "3001.dat.zst").write_bytes(b"x" * 60)
    (tmp_path / f"{doc['name']}.manifest.json").write_text(json.dumps(doc))
    entry = catalog.scan(str(tmp_path))["backups"][0]
    assert not entry["valid"]
    assert entry["problems"] == [
        f"{doc['data']} holds what a backup never does (symbolic links or special files, refused, never followed): "
        "toc.dat"
    ]
    with pytest.raises(OSError):
        catalog.sha256_file(str(data / "toc.dat"))


# --------------------------------------------------------------------------- database properties


@pytest.mark.parametrize(
    ("item", "sql"),
    [
        ('search_path="$user", public', "search_path TO '$user', 'public'"),
        ('search_path="a""b", "x y"', "search_path TO 'a\"b', 'x y'"),
        ("search_path=", "search_path TO ''"),
        ("statement_timeout=5min", "statement_timeout TO '5min'"),
        ("application_name=it's \\! id", "application_name TO 'it''s \\! id'"),
        ("plpgsql.extra_warnings=all", "plpgsql.extra_warnings TO 'all'"),
    ],
)
def test_settings_render_as_literals(item, sql):
    assert pg_cli.setting_sql(item) == sql


@pytest.mark.parametrize(
    "item",
    [
        "search_path=public; CREATE ROLE evil SUPERUSER",
        "search_path=public, pg_catalog) ; DROP",
        'search_path="unterminated',
        "work mem=1",
        "x;y=1",
        "=1",
        "no_equals",
    ],
)
def test_settings_that_cannot_be_rendered_are_problems(item):
    with pytest.raises(pg_cli.PgError):
        pg_cli.setting_sql(item)
    assert pg_cli.properties_problems({"settings": [{"role": None, "config": [item]}]})


def test_a_manifest_with_sql_in_a_setting_is_invalid():
    doc = full_manifest()
    doc["database_properties"]["settings"][0]["config"] = ["search_path=public; CREATE ROLE evil SUPERUSER"]
    assert catalog.manifest_problems(doc, now=NOW) == [
        "cannot read the list value 'public; CREATE ROLE evil SUPERUSER'"
    ]


@pytest.mark.parametrize("privilege", ["ALL", "CONNECT; DROP ROLE x", "SUPERUSER", "connect"])
def test_a_bogus_privilege_word_is_invalid(privilege):
    doc = full_manifest()
    doc["database_properties"]["acl"][0]["privilege"] = privilege
    problems = catalog.manifest_problems(doc, now=NOW)
    assert problems and "not one of CONNECT, CREATE, TEMPORARY" in problems[0]
    with pytest.raises(pg_cli.PgError, match="is not one of"):
        pg_cli.properties_sql("x", dict(doc["database_properties"]))


def test_code_loading_and_privileged_settings_are_never_restored_from_a_manifest():
    props = {
        "settings": [
            {"role": None, "config": ["session_preload_libraries=/tmp/evil.so", "statement_timeout=5min"]},
            {"role": "app", "config": ["role=postgres"]},
            {"role": None, "config": ["log_statement=all"]},
        ]
    }
    kept, skipped = pg_cli.restorable_properties(props, {"log_statement"})
    assert kept["settings"] == [{"role": None, "config": ["statement_timeout=5min"]}]
    assert skipped == [
        "session_preload_libraries=/tmp/evil.so (for the database)",
        "role=postgres (for role app)",
        "log_statement=all (for the database)",
    ]
