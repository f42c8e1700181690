"""Unit tests of the release engine's decisions: which release a rollback picks, the schema check and its
refusal, and how read-back text is shown."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.tokotani.dr.plugins.module_utils import app_release  # noqa: E402


def entry(
    name, version, *, live_since=None, built_at="2026-12-01T00:00:00.000000Z", migrations=("init",), runnable=True
):
    return {
        "name": name,
        "path": f"/srv/tokotani/releases/{name}",
        "version": version,
        "commit": name.rsplit("-", 1)[-1] * 5,
        "built_at": built_at,
        "live_since": live_since,
        "migrations": list(migrations) if migrations is not None else None,
        "runnable": runnable,
        "failed": None,
        "problems": [] if runnable else ["it has no node_modules"],
    }


def releases(*entries, live=None):
    found = app_release.Releases("/srv/tokotani")
    found.entries = list(entries)
    found.live = live
    return found


def test_previous_is_the_newest_live_other_than_the_live_one_and_never_a_broken_one():
    v1 = entry("v1-aaaaaaaa", "v1", live_since="2026-12-01T10:00:00.000000Z")
    v2 = entry("v2-bbbbbbbb", "v2", live_since="2026-12-02T10:00:00.000000Z")
    v3 = entry("v3-cccccccc", "v3", live_since="2026-12-03T10:00:00.000000Z")
    never = entry("v4-dddddddd", "v4", built_at="2026-12-04T00:00:00.000000Z")
    broken = entry("v5-eeeeeeee", "v5", live_since="2026-12-05T10:00:00.000000Z", runnable=False)
    assert releases(v1, v2, v3, never, broken, live="v3-cccccccc").resolve("previous") is v2
    # after a rollback to v1 (v1 live again, newest), previous is v3
    v1["live_since"] = "2026-12-06T10:00:00.000000Z"
    assert releases(v1, v2, v3, live="v1-aaaaaaaa").resolve(None) is v3
    # none ever recorded live: the newest build
    old = entry("v0-ffffffff", "v0", built_at="2026-11-01T00:00:00.000000Z")
    assert releases(old, never, live=None).resolve("previous") is never


def test_previous_never_picks_a_release_that_failed_but_its_name_still_does():
    v1 = entry("v1-aaaaaaaa", "v1", live_since="2026-12-01T10:00:00.000000Z")
    v2 = entry("v2-bbbbbbbb", "v2", live_since="2026-12-02T10:00:00.000000Z")
    crash = entry("v3-cccccccc", "v3", live_since="2026-12-03T10:00:00.000000Z")
    crash["failed"] = {"at": "2026-12-03T10:01:00.000000Z", "reason": "the health gate failed"}
    # v2 is live again after the automatic rollback from v3: previous is v1, not the release that crashed
    v2["live_since"] = "2026-12-03T10:01:00.000000Z"
    found = releases(v1, v2, crash, live="v2-bbbbbbbb")
    assert found.resolve("previous") is v1
    assert found.resolve("v3") is crash
    assert "v3 (v3-cccccccc, live since 2026-12-03T10:00:00.000000Z, failed at 2026-12-03T10:01:00" in found.listing()
    with pytest.raises(app_release.ReleaseError, match=r"apart from releases that failed"):
        releases(v2, crash, live="v2-bbbbbbbb").resolve("previous")


def test_a_failure_reason_is_kept_printable_and_short():
    assert app_release._reason("line one\nline\ttwo\x1b[31m") == "line one line two [31m"
    assert len(app_release._reason("x" * 1000)) == app_release.FAILURE_MAX


def test_a_version_a_name_and_a_commit_prefix_name_a_release_and_ambiguity_is_refused():
    v1 = entry("v1-aaaaaaaa", "v1")
    again = entry("v1-abababab", "v1")
    found = releases(v1, again, live=None)
    assert found.resolve("v1-abababab") is again
    assert found.resolve("abababa") is again
    with pytest.raises(app_release.ReleaseError, match=r"^'v1' names 2 releases \(v1-aaaaaaaa, v1-abababab\)"):
        found.resolve("v1")
    with pytest.raises(app_release.ReleaseError, match=r"^there is no release to roll back to"):
        releases(v1, live="v1-aaaaaaaa").resolve("previous")


def test_the_schema_check_names_the_migrations_the_target_does_not_know():
    target = entry("v1-aaaaaaaa", "v1", migrations=("a_init",))
    check = app_release.schema_check(target, ["a_init", "b_loyalty"])
    assert check == {
        "applied": ["a_init", "b_loyalty"],
        "known": ["a_init"],
        "newer": ["b_loyalty"],
        "missing": [],
        "compatible": False,
    }
    assert app_release.schema_refusal(target, check, "shop") == (
        "database shop has 1 migration(s) that release v1-aaaaaaaa does not know (b_loyalty): "
        "the schema is newer than that release's code"
    )
    fine = app_release.schema_check(target, ["a_init"])
    assert fine["compatible"] is True and app_release.schema_refusal(target, fine, "shop") is None
    # no migrations table: nothing to compare, nothing refused; no migrations directory: refused, it cannot be checked
    none = app_release.schema_check(target, None)
    assert none["compatible"] is None and app_release.schema_refusal(target, none, "shop") is None
    blind = entry("v0-bbbbbbbb", "v0", migrations=None)
    assert app_release.schema_refusal(blind, app_release.schema_check(blind, ["a_init"]), "shop").startswith(
        "release v0-bbbbbbbb has no migrations directory"
    )
    many = app_release.schema_check(target, ["a_init"] + [f"m{i:02d}" for i in range(12)])
    assert app_release.schema_refusal(target, many, "shop").endswith(
        "m09 and 2 more): the schema is newer than that release's code"
    )


def test_read_back_text_is_shown_printable_and_cut():
    assert app_release.shown("v1\x1b[31m\n") == "v1?[31m?"
    assert len(app_release.shown("x" * 500)) == app_release.SHOWN_MAX


@pytest.mark.parametrize("where", ["../prisma", "/etc", "", "prisma/../../x"])
def test_a_migrations_dir_outside_the_release_is_refused_before_anything_is_read(tmp_path, where):
    with pytest.raises(app_release.ReleaseError, match=r"must be a plain path inside the release"):
        app_release.Releases(str(tmp_path), where).scan()
