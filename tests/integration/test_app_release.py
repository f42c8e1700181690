"""tokotani.dr.app_release_info and tokotani.dr.app_release on a real release tree (the layout tokotani_app
builds) and a real PostgreSQL 15: which
release is live, which one a rollback picks, the atomic switch and its record, the schema check against
_prisma_migrations, and what it does with releases, records and rows an intruder wrote.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from backup_support import conn_args, drop_db, run_module

DB = "rel_live"
INIT = "20240115093000_init"
LOYALTY = "20261201000000_add_loyalty"


def release(base: Path, name: str, version: str, commit: str, *, migrations=(INIT,), built: float = 0) -> Path:
    path = base / "releases" / name
    (path / "node_modules").mkdir(parents=True)
    (path / "ecosystem.config.js").write_text("module.exports = { apps: [] };\n")
    (path / ".next").mkdir()
    (path / ".next" / "BUILD_ID").write_text(f"build_{commit[:8]}\n")
    for migration in migrations:
        (path / "prisma" / "migrations" / migration).mkdir(parents=True)
        (path / "prisma" / "migrations" / migration / "migration.sql").write_text("SELECT 1;\n")
    marker = path / ".tokotani-release.json"
    marker.write_text(json.dumps({"repo": "file:///srv/git/app.git", "version": version, "commit": commit}))
    if built:
        os.utime(marker, (built, built))
    return path


@pytest.fixture
def tree(tmp_path):
    """v1 (live first), v2 (live now, with the loyalty migration), v3 built but never live."""
    base = tmp_path / "app"
    release(base, "v1.0.0-11111111", "v1.0.0", "1" * 40, built=1_700_000_000)
    release(base, "v2.0.0-22222222", "v2.0.0", "2" * 40, migrations=(INIT, LOYALTY), built=1_700_000_100)
    release(base, "v3.0.0-33333333", "v3.0.0", "3" * 40, migrations=(INIT, LOYALTY), built=1_700_000_200)
    for name in ("v1.0.0-11111111", "v2.0.0-22222222"):
        result = run_module("app_release", {"base_dir": str(base), "version": name})
        assert result.get("changed"), result
    return base


def current(base: Path) -> str:
    return os.readlink(base / "current")


def test_previous_is_the_release_live_before_and_the_switch_is_recorded(tree):
    info = run_module("app_release_info", {"base_dir": str(tree), "version": "previous"})
    assert not info.get("failed"), info
    assert info["live"] == "v2.0.0-22222222"
    assert info["target"]["name"] == "v1.0.0-11111111"  # not v3: it was never live
    assert [r["name"] for r in info["releases"] if r["runnable"]] == [
        "v1.0.0-11111111",
        "v2.0.0-22222222",
        "v3.0.0-33333333",
    ]
    assert info["target"]["migrations"] == [INIT]
    assert info["target"]["build_id"] == "build_11111111"

    done = run_module("app_release", {"base_dir": str(tree)})
    assert done["changed"] and not done.get("failed"), done
    assert current(tree) == str(tree / "releases" / "v1.0.0-11111111")
    assert done["previous_live"] == "v2.0.0-22222222"
    assert done["msg"] == "release v1.0.0-11111111 (v1.0.0) is live; it replaced v2.0.0-22222222"
    record = json.loads((tree / "releases" / "v1.0.0-11111111" / ".tokotani-live.json").read_text())
    assert record["replaced"] == "v2.0.0-22222222"
    assert not list(tree.glob(".current.*")), "a temporary link was left"

    # after the rollback, previous is v2 again (it was live before v1 came back); v1 again changes nothing
    again = run_module("app_release", {"base_dir": str(tree), "version": "v1.0.0"})
    assert not again["changed"], again
    assert again["msg"] == "release v1.0.0-11111111 (v1.0.0) is already live: nothing to switch"
    assert run_module("app_release_info", {"base_dir": str(tree)})["live"] == "v1.0.0-11111111"
    assert run_module("app_release_info", {"base_dir": str(tree), "version": "previous"})["target"]["name"] == (
        "v2.0.0-22222222"
    )


def test_a_switch_away_from_a_failed_release_marks_it_and_previous_skips_it(tree):
    # v3 goes live and fails its health gate; the automatic rollback switches to v2 and marks v3
    assert run_module("app_release", {"base_dir": str(tree), "version": "v3.0.0"})["changed"]
    back = run_module(
        "app_release",
        {"base_dir": str(tree), "version": "v2.0.0", "replaced_failed": "the health gate failed:\n500 \x1b"},
    )
    assert back["changed"] and not back.get("failed"), back
    record = json.loads((tree / "releases" / "v3.0.0-33333333" / ".tokotani-live.json").read_text())
    assert record["failure"] == "the health gate failed: 500"
    assert record["failed_at"] and record["live_since"]
    info = run_module("app_release_info", {"base_dir": str(tree), "version": "previous"})
    assert info["target"]["name"] == "v1.0.0-11111111", info  # not v3, live more recently but failed
    failed = next(r for r in info["releases"] if r["name"] == "v3.0.0-33333333")
    assert failed["failed"] == {"at": record["failed_at"], "reason": "the health gate failed: 500"}
    # named, it can still be made live, and that clears the mark
    again = run_module("app_release", {"base_dir": str(tree), "version": "v3.0.0-33333333"})
    assert again["changed"], again
    info = run_module("app_release_info", {"base_dir": str(tree)})
    assert next(r for r in info["releases"] if r["name"] == "v3.0.0-33333333")["failed"] is None


def test_an_unknown_version_fails_with_the_list_and_changes_nothing(tree):
    before = current(tree)
    result = run_module("app_release", {"base_dir": str(tree), "version": "v9.9.9"})
    assert result["failed"] and not result["changed"], result
    assert result["msg"].startswith("no release 'v9.9.9' here: the releases that can be made live are v2.0.0 ")
    assert "v1.0.0 (v1.0.0-11111111, live since " in result["msg"]
    assert "v3.0.0 (v3.0.0-33333333, built " in result["msg"]
    assert "live now" in result["msg"]
    assert current(tree) == before


def test_check_mode_says_what_it_would_switch_and_changes_nothing(tree):
    before = current(tree)
    result = run_module("app_release", {"base_dir": str(tree), "version": "v1.0.0"}, check=True)
    assert result["changed"] and not result.get("failed"), result
    assert result["msg"] == "would make release v1.0.0-11111111 (v1.0.0) live instead of v2.0.0-22222222"
    assert current(tree) == before


def test_a_schema_newer_than_the_targets_code_is_refused_unless_allowed(tree, pg_cluster):
    pg_cluster.createdb(DB)
    try:
        pg_cluster.psql(
            'CREATE TABLE "_prisma_migrations" (id varchar(36) PRIMARY KEY, checksum varchar(64) NOT NULL, '
            "finished_at timestamptz, migration_name varchar(255) NOT NULL, logs text, rolled_back_at timestamptz, "
            "started_at timestamptz NOT NULL DEFAULT now(), applied_steps_count int NOT NULL DEFAULT 0); "
            "INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name) VALUES "
            "('a', 'x', now(), '20240115093000_init'), ('b', 'x', now(), '20261201000000_add_loyalty'), "
            "('c', 'x', NULL, 'unfinished_is_not_applied'), "
            "('d', 'x', now(), 'x''); DROP TABLE _prisma_migrations; --');",
            db=DB,
        )
        before = current(tree)
        args = {"base_dir": str(tree), "version": "v1.0.0", **conn_args(pg_cluster, database=DB)}
        refused = run_module("app_release", args)
        assert refused["failed"] and not refused["changed"], refused
        assert refused["msg"] == (
            f"database {DB} has 2 migration(s) that release v1.0.0-11111111 does not know "
            f"({LOYALTY}, x'); DROP TABLE _prisma_migrations; --): the schema is newer than that release's code. "
            "Nothing was changed: v2.0.0-22222222 is still live."
        )
        assert refused["schema"]["compatible"] is False
        assert current(tree) == before
        # the crafted migration name was only read and shown
        assert pg_cluster.psql("SELECT count(*) FROM _prisma_migrations;", db=DB).strip() == "4"

        # v3 knows every migration v2 applied (the crafted one aside): still refused on that one alone
        v3 = run_module("app_release", {**args, "version": "v3.0.0"})
        assert v3["failed"] and v3["schema"]["newer"] == ["x'); DROP TABLE _prisma_migrations; --"], v3
        pg_cluster.psql("DELETE FROM _prisma_migrations WHERE id = 'd';", db=DB)
        v3 = run_module("app_release", {**args, "version": "v3.0.0"})
        assert v3["changed"] and v3["schema"]["compatible"] is True and v3["schema"]["missing"] == [], v3

        allowed = run_module("app_release", {**args, "newer_schema": "allow"})
        assert allowed["changed"] and not allowed.get("failed"), allowed
        assert allowed["schema"]["newer"] == [LOYALTY]
        assert current(tree) == str(tree / "releases" / "v1.0.0-11111111")
        assert pg_cluster.password not in json.dumps(allowed)
    finally:
        drop_db(pg_cluster, DB)


def test_releases_records_and_links_an_intruder_wrote_are_refused_not_followed(tree, tmp_path):
    releases = tree / "releases"
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"version": "v6.6.6", "commit": "6" * 40}))
    # a marker that is a link to a file elsewhere, a marker that is a FIFO, one that is not JSON, a huge one
    linked = release(tree, "v4.0.0-44444444", "v4.0.0", "4" * 40)
    (linked / ".tokotani-release.json").unlink()
    (linked / ".tokotani-release.json").symlink_to(secret)
    fifo = release(tree, "v5.0.0-55555555", "v5.0.0", "5" * 40)
    (fifo / ".tokotani-release.json").unlink()
    os.mkfifo(fifo / ".tokotani-release.json")
    (release(tree, "v7.0.0-77777777", "v7", "7" * 40) / ".tokotani-release.json").write_text("{not json")
    (release(tree, "v8.0.0-88888888", "v8", "8" * 40) / ".tokotani-release.json").write_text(" " * 70000 + "{}")
    # a release whose version is a shell fragment, a directory name this tool never makes, a link as a release
    release(tree, "v9.0.0-99999999", "$(touch /tmp/pwned)", "9" * 40)
    release(tree, "bad name; rm -rf", "v10", "a" * 40)
    (releases / "v11.0.0-linked").symlink_to(tmp_path)
    # a migration directory named like SQL, and a live record with garbage
    odd = release(tree, "v12.0.0-cccccccc", "v12", "c" * 40)
    (odd / "prisma" / "migrations" / "x'; DROP TABLE users; --").mkdir()
    (odd / "prisma" / "migrations" / "x'; DROP TABLE users; --" / "migration.sql").write_text("")
    (odd / ".tokotani-live.json").write_text(json.dumps({"live_since": "2099-13-45", "replaced": "../../etc"}))
    # build ids that are a link to a file elsewhere, and a shell fragment
    (odd / ".next" / "BUILD_ID").unlink()
    (odd / ".next" / "BUILD_ID").symlink_to(secret)
    (linked / ".next" / "BUILD_ID").write_text("$(reboot)\n")

    info = run_module("app_release_info", {"base_dir": str(tree)})
    assert not info.get("failed"), info
    by_name = {r["name"]: r for r in info["releases"]}
    assert "v11.0.0-linked" not in by_name
    assert by_name["v4.0.0-44444444"]["version"] is None
    assert (
        by_name["v4.0.0-44444444"]["problems"][0]
        == ".tokotani-release.json is a symbolic link (refused: it could point anywhere)"
    )
    assert by_name["v5.0.0-55555555"]["problems"] == [".tokotani-release.json is not a regular file"]
    assert by_name["v7.0.0-77777777"]["problems"] == [".tokotani-release.json is not JSON"]
    assert by_name["v8.0.0-88888888"]["problems"] == [".tokotani-release.json is larger than 65536 bytes"]
    assert by_name["v9.0.0-99999999"]["problems"] == [".tokotani-release.json has no usable version"]
    assert by_name["bad name; rm -rf"]["problems"] == [
        "its directory name is not one this tool makes (letters, digits, '.', '_', '-')"
    ]
    assert by_name["v12.0.0-cccccccc"]["live_since"] is None and by_name["v12.0.0-cccccccc"]["replaced"] is None
    assert by_name["v12.0.0-cccccccc"]["build_id"] is None and by_name["v4.0.0-44444444"]["build_id"] is None
    assert by_name["v1.0.0-11111111"]["build_id"] == "build_11111111"
    assert by_name["v12.0.0-cccccccc"]["problems"] == [
        'the migration directory "x\'; DROP TABLE users; --" has a name this tool refuses'
    ]
    assert not Path("/tmp/pwned").exists()

    for name in ("v4.0.0-44444444", "v5.0.0-55555555", "bad name; rm -rf", "v11.0.0-linked"):
        result = run_module("app_release", {"base_dir": str(tree), "version": name})
        assert result["failed"] and not result["changed"], (name, result)
    refused = run_module("app_release", {"base_dir": str(tree), "version": "v4.0.0-44444444"})
    assert refused["msg"].startswith("release v4.0.0-44444444 (v4.0.0-44444444) cannot be made live: ")
    assert current(tree) == str(releases / "v2.0.0-22222222")

    # current pointing outside the releases: reported, no release live, and a switch still works
    (tree / "current").unlink()
    (tree / "current").symlink_to("/etc")
    info = run_module("app_release_info", {"base_dir": str(tree)})
    assert info["live"] is None
    assert info["current_problem"] == f"{tree / 'current'} points to /etc, which is not a release under {releases}"
    # current as a real directory is never replaced
    (tree / "current").unlink()
    (tree / "current").mkdir()
    result = run_module("app_release", {"base_dir": str(tree), "version": "v1.0.0"})
    assert result["failed"] and (tree / "current").is_dir() and not (tree / "current").is_symlink(), result
    assert result["msg"] == (
        f"{tree / 'current'} is not a symbolic link: it is not switched by this tool: refusing to replace it"
    )


def test_a_tree_with_no_releases_says_so(tmp_path):
    result = run_module("app_release_info", {"base_dir": str(tmp_path / "nothing")})
    assert result["failed"], result
    assert result["msg"] == (
        f"{tmp_path / 'nothing' / 'releases'} is not a directory: no release of the app was ever built here "
        "(deploy one with the tokotani.dr.tokotani_app role)"
    )
