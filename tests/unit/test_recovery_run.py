"""The recovery record's pure parts: what is trusted, when a run is dead, what it left, the timeline,
and the compare-and-swap end of the swap transaction."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / ".collections"))

from ansible_collections.tokotani.dr.plugins.module_utils import pg_restore
from ansible_collections.tokotani.dr.plugins.module_utils import recovery_run as rr


def record(**over):
    doc = {
        "schema": 1,
        "run_id": "0123456789abcdef",
        "database": "tokotani",
        "procedure": "recover_db",
        "operator": "alice",
        "controller": "ctl1",
        "host": "db1",
        "state": "running",
        "step": "restore",
        "started_at": 1000.0,
        "updated_at": 1010.0,
        "finished_at": None,
        "steps": [{"step": "identify", "at": 1000.0}, {"step": "restore", "at": 1010.0}],
        "databases": {"live_oid": 16384},
        "message": None,
    }
    doc.update(over)
    return doc


def test_a_record_this_collection_writes_is_trusted():
    assert rr.validate(record(), "tokotani") == []


@pytest.mark.parametrize(
    ("over", "problem"),
    [
        ({"run_id": "'; DROP DATABASE x; --"}, "the recovery record's run_id \"'; DROP DATABASE x; --\" is not of the"),
        ({"database": "other"}, "the recovery record names another database"),
        ({"state": "done"}, "the recovery record's state is 'done', not one of running"),
        ({"started_at": "yesterday"}, "the recovery record's started_at is a string, not a number"),
        ({"steps": [{"step": "rm -rf /", "at": 1}]}, "the recovery record's steps[0].step 'rm -rf /' is not of"),
        ({"databases": {"previous": ["a"]}}, "the recovery record's databases.previous is an array, not a string"),
        ({"databases": {"live_oid": True}}, "the recovery record's databases.live_oid is a boolean, not a string"),
        ({"databases": {"previous": "x" * 64}}, "the recovery record's databases.previous is longer than 63"),
        ({"databases": {"Bad Key": 1}}, "the recovery record's databases names 'Bad Key', which is not a short"),
        ({"operator": "x" * 500}, "the recovery record's operator is longer than 200 characters"),
        ({"extra": "field"}, "the recovery record has an unknown field 'extra'"),
        ({"databases": {"live_oid": 2**32}}, "the recovery record's databases.live_oid is 4294967296, above"),
    ],
)
def test_a_crafted_record_is_refused_with_the_reason(over, problem):
    problems = rr.validate(record(**over), "tokotani")
    assert any(p.startswith(problem) for p in problems), problems


def test_a_record_that_is_not_json_or_too_big_is_not_read(tmp_path):
    path = tmp_path / "r.json"
    path.write_text("{not json")
    assert rr.read_record(str(path), "tokotani") == (None, ["it is not JSON"])
    path.write_text(" " * (rr.MAX_RECORD_BYTES + 1))
    assert rr.read_record(str(path), "tokotani")[1] == [f"it is larger than {rr.MAX_RECORD_BYTES} bytes"]


def test_a_symlinked_record_is_not_followed(tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps(record()))
    link = tmp_path / "r.json"
    os.symlink(target, link)
    doc, problems = rr.read_record(str(link), "tokotani")
    assert doc is None and problems[0].startswith("it cannot be opened")


def test_a_run_is_alive_while_it_records_steps_or_its_restore_runs():
    assert rr.stale_verdict(record(), 1010 + 899, 900, []) == (
        False,
        "its last step was recorded 899 s ago (a run is judged dead after 900 s)",
    )
    stale, reason = rr.stale_verdict(record(), 1010 + 5000, 900, ["pid 7 on db1 since x: restore of tokotani into y"])
    assert not stale and reason.startswith("a restore of its database is running on this server")


def test_a_run_silent_longer_than_stale_after_with_no_restore_running_is_dead():
    stale, reason = rr.stale_verdict(record(), 1010 + 901, 900, [])
    assert stale
    assert (
        reason
        == "no step was recorded for 901 s (more than 900 s) and no restore of its database is running on this server"
    )


def test_the_description_names_who_where_since_when_and_the_step():
    assert rr.describe(record(), 1040) == (
        "run 0123456789abcdef of recover_db by alice from ctl1, started 1970-01-01T00:16:40Z (40 s ago), "
        "at step restore since 30 s ago"
    )


def test_read_back_text_loses_its_control_characters():
    assert rr.clean_text("alice\x1b[2J\nroot") == "alice?[2J?root"


def test_the_timeline_ends_each_step_where_the_next_begins():
    steps = [{"step": "identify", "at": 10.0}, {"step": "stop", "at": 11.5}, {"step": "restore", "at": 12.0}]
    assert rr.timeline(steps, 30.25) == [
        {"step": "identify", "started_at": 10.0, "finished_at": 11.5, "seconds": 1.5},
        {"step": "stop", "started_at": 11.5, "finished_at": 12.0, "seconds": 0.5},
        {"step": "restore", "started_at": 12.0, "finished_at": 30.25, "seconds": 18.25},
    ]


def test_downtime_runs_from_the_stop_to_the_shop_serving_again():
    plan_order = rr.timeline(
        [
            {"step": s, "at": at}
            for s, at in (
                ("identify", 10.0),
                ("stop", 11.0),
                ("restore", 12.0),
                ("swap", 30.0),
                ("restart", 30.1),
                ("health", 34.0),
            )
        ],
        36.5,
    )
    assert rr.downtime(plan_order) == 25.5
    keep_serving = rr.timeline(
        [
            {"step": s, "at": at}
            for s, at in (
                ("identify", 10.0),
                ("restore", 11.0),
                ("verify", 29.0),
                ("stop", 29.5),
                ("swap", 30.0),
                ("restart", 30.1),
                ("health", 34.0),
            )
        ],
        35.0,
    )
    assert rr.downtime(keep_serving) == 5.5
    # recovery_commit records the moment the server saw the shop healthy (serving): the downtime ends there,
    # not when the controller closed the run a round trip later
    served = rr.timeline(
        [
            {"step": s, "at": at}
            for s, at in (("stop", 29.5), ("swap", 30.0), ("restart", 30.1), ("health", 33.2), ("serving", 33.4))
        ],
        35.0,
    )
    assert rr.downtime(served) == 3.9
    # never stopped (refused before step 1): no downtime; stopped but never healthy: until the run ended
    assert rr.downtime(rr.timeline([{"step": "identify", "at": 1.0}], 2.0)) is None
    assert rr.downtime(rr.timeline([{"step": "stop", "at": 1.0}, {"step": "restore", "at": 2.0}], 9.0)) == 8.0


def test_what_a_dead_run_left_is_said_from_what_is_found():
    rec = record(databases={"live_oid": 1, "restored_oid": 2, "previous": "t__pre", "scratch": "t__restore"})
    untouched = rr.left_behind(rec, {"live": 1, "t__pre": None, "t__restore": 5})
    assert untouched == [
        "the live database tokotani is the one it started from (OID 1): untouched",
        "its scratch database t__restore is still there",
        "its previous database t__pre is not there",
    ]
    swapped = rr.left_behind(rec, {"live": 2, "t__pre": 1, "t__restore": None})
    assert swapped[0] == (
        "the live database tokotani is the backup it restored (OID 2), swapped in but never verified by it; "
        "the database it replaced is kept as t__pre"
    )
    other = rr.left_behind(rec, {"live": 9})
    assert other[0].endswith("nor one it restored: changed by someone else since")
    assert rr.left_behind(rec, {"live": None})[0] == "the live database tokotani does not exist now"


def test_oids_given_as_strings_by_a_playbook_become_integers():
    assert rr.normalize_databases({"previous_oid": "16384", "previous": "", "restored_oid": 7}) == {
        "previous_oid": 16384,
        "previous": None,
        "restored_oid": 7,
    }


def test_the_record_of_an_odd_database_name_stays_in_its_directory(tmp_path):
    path = rr.record_path(str(tmp_path), "../../etc/passwd")
    assert os.path.dirname(path) == str(tmp_path)
    assert os.path.basename(path).startswith(".tokotani-recovery.")


def test_the_swap_commits_only_when_every_name_is_the_database_the_run_saw():
    sql = pg_restore.cas_sql({"tokotani": 16990, "tokotani__pre_restore_x": 16384})
    assert "datname = 'tokotani') IS NOT DISTINCT FROM 16990::oid" in sql
    assert "datname = 'tokotani__pre_restore_x') IS NOT DISTINCT FROM 16384::oid" in sql
    assert sql.endswith(
        f"\\if :tokotani_cas_ok\nCOMMIT;\n\\else\nROLLBACK;\n\\echo {pg_restore.CAS_MISMATCH}\n\\endif\n"
    )


def test_a_name_in_the_compare_and_swap_is_a_quoted_literal():
    sql = pg_restore.cas_sql({"it's": 1})
    assert "datname = 'it''s')" in sql


def test_backup_info_reports_an_interrupted_recovery_and_what_to_do(tmp_path):
    database = "shop"
    path = rr.record_path(str(tmp_path), database)
    assert rr.report(str(tmp_path), database, now=1000.0)["state"] == "none"
    doc = record(database=database, step="restore", updated_at=100.0)
    Path(path).write_text(json.dumps(doc))
    live = rr.report(str(tmp_path), database, now=200.0)
    assert live["state"] == "in_progress" and live["advice"] is None
    dead = rr.report(str(tmp_path), database, now=100.0 + rr.STALE_AFTER + 1)
    assert dead["state"] == "interrupted" and dead["step"] == "restore" and dead["run_id"] == doc["run_id"]
    assert dead["advice"] == rr.ADVICE_BEFORE_SWAP
    assert "never finished" in dead["msg"] and "What it left: not checked." in dead["msg"]
    assert dead["msg"].endswith(rr.ADVICE_BEFORE_SWAP)
    Path(path).write_text(json.dumps(dict(doc, step="restart")))
    assert rr.report(str(tmp_path), database, now=100.0 + rr.STALE_AFTER + 1)["advice"] == rr.ADVICE_AFTER_SWAP
    Path(path).write_text(json.dumps(dict(doc, state="recovered", step="end", finished_at=150.0)))
    ended = rr.report(str(tmp_path), database, now=2000.0)
    assert ended["state"] == "ended" and ended["outcome"] == "recovered"
    Path(path).write_text('{"schema": 1, "run_id": "$(reboot)"}')
    assert rr.report(str(tmp_path), database, now=2000.0)["state"] == "untrusted"
