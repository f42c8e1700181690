"""A hostile bucket and a hostile disk: what an intruder with write access to the offsite bucket or the
backup directory can craft, against moto server and a real PostgreSQL 15, through ansible.

Every test asserts the operator's message, that nothing was written outside the target, that no role
or setting changed on the server, and that the live database is untouched.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from backup_support import conn_args, databases, drop_db, load_shop, run_module, table_checksums
from s3_support import offsite, serve_moto, tree_state

DB = "hi_live"
ESCAPE = Path("/tmp/tokotani-hostile-escape")
# ansible-core 2.19 shows the traceback of the exception being handled when fail_json is called inside
# an except block: with tracebacks on, an operator error must carry none of the engine's frames.
TRACEBACKS = {"ANSIBLE_DISPLAY_TRACEBACK": "error"}


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    yield from serve_moto(tmp_path_factory.mktemp("moto"))


@pytest.fixture(scope="module")
def source(pg_cluster, tmp_path_factory):
    """A live shop database and one real directory backup of it."""
    load_shop(pg_cluster, DB, fidelity=False, seed=5)
    src = tmp_path_factory.mktemp("hi_backups")
    made = run_module("postgresql_backup", conn_args(pg_cluster, database=DB, backup_dir=str(src)))
    assert not made.get("failed"), made
    yield {"dir": src, "name": made["name"], "rows": table_checksums(pg_cluster, DB)}
    for db in databases(pg_cluster, "hi_"):
        drop_db(pg_cluster, db)


@pytest.fixture(autouse=True)
def no_escape():
    shutil.rmtree(ESCAPE, ignore_errors=True)
    yield
    assert not ESCAPE.exists(), "something was written outside its target"


def copy_dir(src: Path, name: str, dest: Path) -> dict:
    """A copy of backup name in dest; returns its manifest (to be tampered with)."""
    dest.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((src / f"{name}.manifest.json").read_text())
    shutil.copytree(src / manifest["data"], dest / manifest["data"])
    (dest / f"{name}.manifest.json").write_text(json.dumps(manifest))
    return manifest


def write_manifest(directory: Path, manifest: dict) -> None:
    (directory / f"{manifest['name']}.manifest.json").write_text(json.dumps(manifest))


def roles(cluster) -> list[str]:
    return cluster.psql("SELECT rolname FROM pg_roles ORDER BY 1;").split()


def db_settings(cluster) -> str:
    return cluster.psql(
        "SELECT coalesce(string_agg(array_to_string(setconfig, ','), ';'), '') FROM pg_db_role_setting;"
    )


# --------------------------------------------------------------------------- the bucket


@pytest.mark.parametrize(
    ("name", "key_tail"),
    [
        ("../../tokotani-hostile-escape/x", "../../tokotani-hostile-escape/x"),
        (str(ESCAPE / "x"), "/" + str(ESCAPE / "x")),  # the S3 key holds '//tmp/...'
        ("sub/../../x", "sub/../../x"),
    ],
)
def test_a_traversal_name_in_a_remote_manifest_is_refused_before_a_byte_is_written(
    moto, source, tmp_path, name, key_tail
):
    bucket = moto.bucket()
    conn = moto.args(bucket, prefix="shop")
    assert not offsite({**conn, "mode": "push", "backup_dir": str(source["dir"])}).get("failed")
    s3 = moto.client()
    key = f"shop/{source['name']}.manifest.json"
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    manifest["files"][name] = {"size": 5, "sha256": "0" * 64}
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(manifest).encode())
    s3.put_object(Bucket=bucket, Key=f"shop/{manifest['data']}/{key_tail}", Body=b"owned")

    dest = tmp_path / "pulled"
    listed = offsite({**conn, "mode": "list"})
    assert not listed.get("failed"), listed
    entry = listed["backups"][0]
    assert entry["valid"] is False
    assert f"the manifest's files names {name!r}, which is not a plain relative path" in entry["problems"][0]
    pulled = offsite({**conn, "mode": "pull", "backup_dir": str(dest), "backup": source["name"]})
    assert pulled["failed"] and not pulled["changed"], pulled
    assert pulled["msg"].startswith(f"the offsite backup {source['name']} is not valid: the manifest's files names")
    assert not dest.exists() or not any(dest.iterdir())
    assert not (tmp_path / "x").exists()


def test_a_future_dated_manifest_is_invalid_and_never_latest(moto, source, tmp_path):
    bucket = moto.bucket()
    conn = moto.args(bucket, prefix="shop")
    assert not offsite({**conn, "mode": "push", "backup_dir": str(source["dir"])}).get("failed")
    s3 = moto.client()
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"shop/{source['name']}.manifest.json")["Body"].read())
    forged = dict(
        manifest,
        name="backup_2099-01-01_00-00-00",
        data="backup_2099-01-01_00-00-00.dir",
        started_at="2099-01-01T00:00:00.000000Z",
        finished_at="2099-01-01T00:00:09.000000Z",
    )
    s3.put_object(Bucket=bucket, Key=f"shop/{forged['name']}.manifest.json", Body=json.dumps(forged).encode())
    for rel in manifest["files"]:
        body = s3.get_object(Bucket=bucket, Key=f"shop/{manifest['data']}/{rel}")["Body"].read()
        s3.put_object(Bucket=bucket, Key=f"shop/{forged['data']}/{rel}", Body=body)

    listed = offsite({**conn, "mode": "list"})
    assert listed["newest"]["name"] == source["name"], listed
    future = next(b for b in listed["backups"] if b["name"] == forged["name"])
    assert not future["valid"] and "lies in the future" in future["problems"][0]
    pulled = offsite({**conn, "mode": "pull", "backup_dir": str(tmp_path / "d")})
    assert pulled["status"] == "pulled" and pulled["name"] == source["name"], pulled
    assert any(f"the newer offsite backup {forged['name']} is not valid" in w for w in pulled.get("warnings", []))
    pruned = offsite({**conn, "mode": "prune", "keep_days": 0, "keep_min": 1})
    assert not pruned.get("failed"), pruned
    assert f"shop/{source['name']}.manifest.json" in moto.keys(bucket), "the real newest backup was pruned"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("files", {"toc.dat": "not an object"}),
        ("tables", [{"schema": "public", "name": "orders", "rows": "12"}]),
        ("size", -1),
        ("database", ["shop"]),
        ("sha256", None),
    ],
)
def test_one_malformed_remote_manifest_breaks_only_its_own_entry(moto, source, field, value):
    bucket = moto.bucket()
    conn = moto.args(bucket, prefix="shop")
    assert not offsite({**conn, "mode": "push", "backup_dir": str(source["dir"])}).get("failed")
    s3 = moto.client()
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"shop/{source['name']}.manifest.json")["Body"].read())
    bad = dict(manifest, name="backup_2020-01-01_00-00-00", data="backup_2020-01-01_00-00-00.dir")
    bad.update(started_at="2020-01-01T00:00:00Z", finished_at="2020-01-01T00:00:00Z")
    bad[field] = value
    s3.put_object(Bucket=bucket, Key=f"shop/{bad['name']}.manifest.json", Body=json.dumps(bad).encode())
    listed = offsite({**conn, "mode": "list"})
    assert not listed.get("failed"), listed
    assert listed["count"] == 2 and listed["valid_count"] == 1
    broken = next(b for b in listed["backups"] if b["name"] == bad["name"])
    assert broken["problems"][0].startswith(f"the manifest's {field}"), broken
    pruned = offsite({**conn, "mode": "prune"})
    assert not pruned.get("failed"), pruned


# --------------------------------------------------------------------------- the disk


def test_a_symlink_inside_a_local_backup_is_refused_and_live_is_untouched(pg_cluster, source, tmp_path):
    d = tmp_path / "b"
    manifest = copy_dir(source["dir"], source["name"], d)
    toc = d / manifest["data"] / "toc.dat"
    ESCAPE.mkdir()
    shutil.copy(toc, ESCAPE / "toc.dat")
    toc.unlink()
    toc.symlink_to(ESCAPE / "toc.dat")
    info = run_module("backup_info", {"backup_dir": str(d)})
    assert info["backups"][0]["problems"] == [
        f"{manifest['data']} holds what a backup never does (symbolic links or special files, refused, never "
        "followed): toc.dat"
    ]
    dbs = databases(pg_cluster, "hi_")
    result = run_module("postgresql_restore", conn_args(pg_cluster, database=DB, backup_dir=str(d), confirm=True))
    assert result["failed"] and "no valid backup of database hi_live" in result["msg"], result
    assert databases(pg_cluster, "hi_") == dbs
    assert table_checksums(pg_cluster, DB) == source["rows"]
    shutil.rmtree(ESCAPE)


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        (["search_path=public; CREATE ROLE hi_evil SUPERUSER"], "cannot read the list value"),
        (['search_path="$user", public) ; CREATE ROLE hi_evil SUPERUSER; --'], "cannot read the list value"),
        (["work_mem; CREATE ROLE hi_evil SUPERUSER; SET x=1"], "is not of the allowed form"),
    ],
)
def test_sql_in_a_manifest_setting_makes_the_backup_invalid(pg_cluster, source, tmp_path, config, problem):
    d = tmp_path / "b"
    manifest = copy_dir(source["dir"], source["name"], d)
    manifest["database_properties"]["settings"] = [{"role": None, "config": config}]
    write_manifest(d, manifest)
    before = (roles(pg_cluster), db_settings(pg_cluster))
    result = run_module(
        "postgresql_restore",
        conn_args(pg_cluster, database="hi_into", source_database=DB, backup_dir=str(d), mode="into", confirm=True),
    )
    assert result["failed"] and f"no valid backup of database {DB}" in result["msg"], result
    assert problem in json.dumps(result["backups"][0]["problems"])
    assert "hi_into" not in databases(pg_cluster, "hi_")
    assert (roles(pg_cluster), db_settings(pg_cluster)) == before


def test_meta_commands_and_privileged_settings_in_a_manifest_never_run(pg_cluster, source, tmp_path):
    d = tmp_path / "b"
    manifest = copy_dir(source["dir"], source["name"], d)
    manifest["database_properties"]["settings"] = [
        {
            "role": None,
            "config": [
                f"tokotani.note=x'\n\\! mkdir {ESCAPE}\n",
                "session_preload_libraries=/tmp/tokotani-hostile.so",
                "log_statement=all",
            ],
        },
        {"role": "postgres", "config": ["role=postgres"]},
    ]
    manifest["database_properties"]["comment"] = f"\\! mkdir {ESCAPE}"
    write_manifest(d, manifest)
    before = roles(pg_cluster)
    result = run_module(
        "postgresql_restore",
        conn_args(pg_cluster, database="hi_meta", source_database=DB, backup_dir=str(d), mode="into", confirm=True),
    )
    assert not result.get("failed"), result
    warned = " ".join(result.get("warnings", []))
    for skipped in ("session_preload_libraries=/tmp/tokotani-hostile.so", "log_statement=all", "role=postgres"):
        assert f"the backup's database setting {skipped}" in warned and "was not restored" in warned
    settings = pg_cluster.psql(
        "SELECT array_to_string(setconfig, '|') FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
        "WHERE d.datname = 'hi_meta';"
    )
    assert f"tokotani.note=x'\n\\! mkdir {ESCAPE}\n" in settings, "the value is kept as it was, as data"
    assert "session_preload_libraries" not in settings and "log_statement" not in settings
    comment = pg_cluster.psql(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = 'hi_meta';"
    )
    assert comment.strip() == f"\\! mkdir {ESCAPE}"
    assert roles(pg_cluster) == before
    drop_db(pg_cluster, "hi_meta")


@pytest.mark.parametrize("privilege", ["ALL", "CONNECT TO PUBLIC; CREATE ROLE hi_evil SUPERUSER; GRANT CONNECT"])
def test_a_bogus_privilege_word_makes_the_backup_invalid(pg_cluster, source, tmp_path, privilege):
    d = tmp_path / "b"
    manifest = copy_dir(source["dir"], source["name"], d)
    props = manifest["database_properties"]
    props["acl_is_default"] = False
    props["acl"] = [{"grantee": "PUBLIC", "privilege": privilege, "grantable": False}]
    write_manifest(d, manifest)
    before = roles(pg_cluster)
    result = run_module(
        "postgresql_restore",
        conn_args(pg_cluster, database="hi_acl", source_database=DB, backup_dir=str(d), mode="into", confirm=True),
    )
    assert result["failed"] and "not one of CONNECT, CREATE, TEMPORARY" in json.dumps(result["backups"]), result
    assert "hi_acl" not in databases(pg_cluster, "hi_")
    assert roles(pg_cluster) == before


def test_a_malformed_local_manifest_breaks_only_its_own_entry(source, tmp_path):
    d = tmp_path / "b"
    good = copy_dir(source["dir"], source["name"], d)
    bad = dict(good, name="backup_2020-01-01_00-00-00", data="backup_2020-01-01_00-00-00.dir")
    bad.update(started_at="2020-01-01T00:00:00Z", files={"toc.dat": ["not", "an", "object"]})
    shutil.copytree(d / good["data"], d / bad["data"])
    write_manifest(d, bad)
    state = tree_state(d)
    info = run_module("backup_info", {"backup_dir": str(d)})
    assert not info.get("failed"), info
    assert info["valid_count"] == 1 and info["newest"]["name"] == good["name"]
    broken = next(b for b in info["backups"] if b["name"] == bad["name"])
    assert len(broken["problems"]) == 1
    assert broken["problems"][0].endswith("is not valid: the manifest's files.toc.dat is an array, not an object")
    assert tree_state(d) == state


# --------------------------------------------------------------------------- operator input


def test_before_out_of_range_is_a_clear_message(pg_cluster, source):
    for module, args in (
        ("backup_info", {"backup_dir": str(source["dir"]), "before": "99999999999999999999"}),
        (
            "postgresql_restore",
            conn_args(pg_cluster, database=DB, backup_dir=str(source["dir"]), before="99999999999999999999"),
        ),
    ):
        result = run_module(module, args, env=TRACEBACKS)
        assert result["failed"], result
        assert result["msg"].startswith("the timestamp '99999999999999999999' is out of range"), result
        assert "tokotani/dr/plugins/module_utils/" not in result.get("exception", ""), result["exception"]
    assert table_checksums(pg_cluster, DB) == source["rows"]


def test_a_plain_refusal_reads_as_a_message_not_an_exception(pg_cluster, source):
    result = run_module(
        "postgresql_restore", conn_args(pg_cluster, database=DB, backup_dir=str(source["dir"])), env=TRACEBACKS
    )
    assert result["failed"] and result["msg"].startswith("Refusing to replace database hi_live"), result
    assert "module_utils/pg_restore.py" not in result.get("exception", ""), result["exception"]
    assert table_checksums(pg_cluster, DB) == source["rows"]
