"""Unit tests of the drill report engine: fixed drill records in, expected numbers, verdicts and renderings out."""

from __future__ import annotations

import copy
import json
import os
import re
import stat
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.tokotani.dr.plugins.module_utils import drill_report as dr  # noqa: E402

SCHEMA = json.loads((ROOT / "docs" / "drill_report.schema.json").read_text())
T = 1767578400.0  # 2026-01-05T02:00:00Z, the simulated disaster
BACKUP_END = T - 3588.0  # the nightly backup ended 59.8 min before


def db_scenario(**changes):
    """Scenario 2.1 as the dr_drill role records it: disaster at T, healthy at T+48."""
    scenario = {
        "id": "2.1",
        "name": "database_recovery",
        "title": "Database corruption/loss",
        "host": "tokotani-sandbox-server",
        "disaster": {"kind": "drop_database", "description": "DROP DATABASE tokotani", "at": T},
        "recovery": {
            "status": "recovered",
            "backup": "backup_2026-01-05_01-00-00",
            "source": "local",
            "backup_finished_at": BACKUP_END,
            "timeline": [
                {"step": "stop", "started_at": T + 2.0, "finished_at": T + 4.5, "seconds": 2.5},
                {"step": "identify", "started_at": T + 4.5, "finished_at": T + 6.0, "seconds": 1.5},
                {"step": "restore", "started_at": T + 6.0, "finished_at": T + 21.2, "seconds": 15.2},
                {"step": "verify", "started_at": T + 21.2, "finished_at": T + 23.0, "seconds": 1.8},
                {"step": "restart", "started_at": T + 23.0, "finished_at": T + 30.0, "seconds": 7.0},
                {"step": "health", "started_at": T + 30.0, "finished_at": T + 33.0, "seconds": 3.0},
            ],
            "failure": None,
        },
        "checklist": {
            "passed": True,
            "started_at": T + 34.0,
            "finished_at": T + 46.0,
            "items": [
                {"item": "All services running", "passed": True, "evidence": "pm2: 2 online; PostgreSQL up"},
                {"item": "Database integrity verified", "passed": True, "evidence": "row counts = manifest"},
                {"item": "Application functionality tested", "passed": True, "evidence": "health 200; 24 products"},
                {"item": "Monitoring alerts cleared", "passed": True, "evidence": "GET /api/alerts: []"},
                {"item": "Users notified", "passed": None, "evidence": "not configured"},
            ],
        },
        "healthy_at": T + 48.0,
        "objectives": {"rto_seconds": 1800, "rpo_seconds": 86400},
    }
    for key, value in changes.items():
        scenario[key] = value
    return scenario


def verify_scenario():
    return {
        "id": "4.2",
        "name": "backup_verification",
        "title": "Backup verification",
        "host": "tokotani-sandbox-server",
        "disaster": None,
        "recovery": {
            "status": "verified",
            "backup": "backup_2026-01-05_01-00-00",
            "source": "local",
            "backup_finished_at": BACKUP_END,
            "timeline": [{"step": "restore_test", "started_at": T - 50, "finished_at": T - 30}],
            "failure": None,
        },
        "checklist": None,
        "healthy_at": None,
        "objectives": {"rto_seconds": None, "rpo_seconds": None},
    }


def drill(*scenarios):
    return {
        "drill_id": "drill-20260105T020000Z",
        "environment": "sandbox",
        "inventory": "inventories/sandbox",
        "data_scale": "small",
        "started_at": T - 60,
        "finished_at": T + 120,
        "scenarios": list(scenarios) if scenarios else [verify_scenario(), db_scenario()],
    }


def scenario_of(report, sid="2.1"):
    return next(s for s in report["scenarios"] if s["id"] == sid)


def codes(entries):
    return [entry["code"] for entry in entries]


# --------------------------------------------------------------------------- a tiny JSON Schema check


_KINDS = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
    "integer": int,
    "number": (int, float),
}


def _type_ok(instance, types):
    allowed = [types] if isinstance(types, str) else types
    return any(
        isinstance(instance, _KINDS[t]) and not (t in ("integer", "number") and isinstance(instance, bool))
        for t in allowed
    )


def _scalar_errors(instance, schema, path):
    errors = []
    if "const" in schema and instance != schema["const"]:
        errors.append(f"{path}: {instance!r} != {schema['const']!r}")
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{path}: {instance!r} not in {schema['enum']}")
    if isinstance(instance, (int, float)) and instance < schema.get("minimum", float("-inf")):
        errors.append(f"{path}: {instance} < {schema['minimum']}")
    if isinstance(instance, str) and len(instance) < schema.get("minLength", 0):
        errors.append(f"{path}: too short")
    if isinstance(instance, str) and not re.search(schema.get("pattern", ""), instance):
        errors.append(f"{path}: {instance!r} does not match {schema['pattern']}")
    return errors


def _fallback_errors(instance, schema, root, path="$"):
    """The subset of JSON Schema 2020-12 that docs/drill_report.schema.json uses (when jsonschema is missing)."""
    if "$ref" in schema:
        return _fallback_errors(instance, root["$defs"][schema["$ref"].rsplit("/", 1)[1]], root, path)
    if "anyOf" in schema:
        failing = [_fallback_errors(instance, option, root, path) for option in schema["anyOf"]]
        return [f"{path}: matches none of anyOf"] if all(failing) else []
    if "type" in schema and not _type_ok(instance, schema["type"]):
        return [f"{path}: {instance!r} is not {schema['type']}"]
    errors = _scalar_errors(instance, schema, path)
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        errors.extend(f"{path}: {key} is required" for key in schema.get("required", []) if key not in instance)
        if schema.get("additionalProperties") is False:
            errors.extend(f"{path}: {key} is not allowed" for key in instance if key not in props)
        for key in props.keys() & instance.keys():
            errors.extend(_fallback_errors(instance[key], props[key], root, f"{path}.{key}"))
    if isinstance(instance, list) and "items" in schema:
        for index, item in enumerate(instance):
            errors.extend(_fallback_errors(item, schema["items"], root, f"{path}[{index}]"))
    return errors


def schema_errors(report):
    try:
        import jsonschema  # noqa: PLC0415 - optional: ansible-lint brings it into .venv
    except ImportError:
        return _fallback_errors(report, SCHEMA, SCHEMA)
    validator = jsonschema.Draft202012Validator(SCHEMA)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(report)]


# --------------------------------------------------------------------------- arithmetic


def test_rto_and_rpo_arithmetic_against_objectives():
    report = dr.compute(drill())
    s = scenario_of(report)
    assert s["rto"] == {
        "measured_seconds": 48.0,
        "objective_seconds": 1800.0,
        "met": True,
        "margin_seconds": 1752.0,
        "measured_text": "48 s",
        "objective_text": "30 min",
        "unaccounted_seconds": 3.0,
    }
    assert s["rpo"] == {
        "measured_seconds": 3588.0,
        "objective_seconds": 86400.0,
        "met": True,
        "margin_seconds": 82812.0,
        "measured_text": "59.8 min",
        "objective_text": "24 h",
    }
    assert s["verdict"] == "pass"
    assert s["reasons"] == []
    assert report["verdict"] == "pass"
    assert report["summary"] == {"scenarios": 2, "passed": 2, "failed": 0, "failed_scenarios": []}
    assert report["duration_seconds"] == 180.0
    assert report["started_at_iso"] == "2026-01-05T01:59:00.000Z"
    assert s["disaster"]["at_iso"] == "2026-01-05T02:00:00.000Z"
    assert s["healthy_at_iso"] == "2026-01-05T02:00:48.000Z"
    assert s["recovery"]["backup_finished_at_iso"] == "2026-01-05T01:00:12.000Z"


def rollback_scenario(point):
    """Scenario 2.2: the broken release went live at T, the previous one was healthy at T+40, nothing restored."""
    return {
        "id": "2.2",
        "name": "application_rollback",
        "title": "Failed deployment",
        "disaster": {"kind": "crash_at_start", "description": "v2-crash went live", "at": T},
        "recovery": {
            "status": "recovered",
            "recovery_point_at": point,
            "timeline": [
                {"step": "switch", "started_at": T + 30.0, "finished_at": T + 31.0},
                {"step": "processes", "started_at": T + 31.0, "finished_at": T + 38.0},
                {"step": "health", "started_at": T + 38.0, "finished_at": T + 40.0},
            ],
        },
        "healthy_at": T + 40.0,
        "objectives": {"rto_seconds": 900, "rpo_seconds": 0},
    }


def test_a_breach_found_later_measures_the_rto_from_its_detection_and_the_rpo_to_its_beginning():
    # the intruder got in at T - 3 h, it was found at T, the backup restored ended at T - 5 h
    breach = {
        "id": "2.4",
        "name": "security_breach",
        "disaster": {"kind": "security_breach", "description": "admin user created", "at": T, "began_at": T - 10800.0},
        "recovery": {
            "status": "recovered",
            "backup": "backup_x",
            "backup_finished_at": T - 18000.0,
            "timeline": [{"step": "isolate", "started_at": T + 10.0, "finished_at": T + 20.0}],
        },
        "healthy_at": T + 300.0,
        "objectives": {"rto_seconds": 28800, "rpo_seconds": None},
    }
    report = dr.compute(drill(breach))
    assert schema_errors(report) == []
    s = scenario_of(report, "2.4")
    assert s["rto"]["measured_seconds"] == 300.0
    assert s["rpo"]["measured_seconds"] == 7200.0
    assert s["disaster"]["began_at_iso"] == "2026-01-04T23:00:00.000Z"
    assert s["verdict"] == "pass", s["reasons"]
    assert "(began at `2026-01-04T23:00:00.000Z`)" in dr.render_markdown(report)
    assert "(began at 2026-01-04T23:00:00.000Z)" in dr.render_html(report)
    breach["disaster"].pop("began_at")
    assert scenario_of(dr.compute(drill(breach)), "2.4")["rpo"]["measured_seconds"] == 18000.0


def test_a_recovery_that_kept_the_data_past_the_disaster_has_rpo_zero():
    report = dr.compute(drill(rollback_scenario(T + 40.0)))
    assert schema_errors(report) == []
    s = scenario_of(report, "2.2")
    assert s["rpo"]["measured_seconds"] == 0.0
    assert s["rpo"]["met"] is True
    assert s["rto"]["measured_seconds"] == 40.0
    assert s["recovery"]["recovery_point_at_iso"] == "2026-01-05T02:00:40.000Z"
    assert s["recovery"]["backup"] is None
    assert s["verdict"] == "pass", s["reasons"]
    assert "- Data kept up to `2026-01-05T02:00:40.000Z`" in dr.render_markdown(report)
    assert "data kept up to 2026-01-05T02:00:40.000Z" in dr.render_html(report)


def test_a_recovery_point_before_the_disaster_is_the_data_lost_and_wins_over_the_backup_end():
    s = rollback_scenario(T - 120.0)
    s["recovery"]["backup_finished_at"] = T - 3600.0
    result = scenario_of(dr.compute(drill(s)), "2.2")
    assert result["rpo"]["measured_seconds"] == 120.0
    assert result["rpo"]["met"] is False
    assert result["reasons"] == ["RPO objective missed: 2 min measured, objective 0 s"]
    s["recovery"]["recovery_point_at"] = "yesterday"
    with pytest.raises(dr.DrillReportError, match="recovery_point_at"):
        dr.compute(drill(s))


def test_without_a_recovery_point_the_report_says_null():
    s = scenario_of(dr.compute(drill()))
    assert s["recovery"]["recovery_point_at"] is None
    assert s["recovery"]["recovery_point_at_iso"] is None


def test_the_shops_downtime_is_reported_beside_the_rto():
    plain = scenario_of(dr.compute(drill()))
    assert plain["recovery"]["downtime_seconds"] is None and plain["recovery"]["downtime_text"] is None
    s = db_scenario()
    s["recovery"]["downtime_seconds"] = "6.4"
    report = dr.compute(drill(s))
    assert schema_errors(report) == []
    assert scenario_of(report)["recovery"]["downtime_seconds"] == 6.4
    assert scenario_of(report)["recovery"]["downtime_text"] == "6.4 s"
    assert "- Shop downtime (application stopped until healthy again): 6.4 s" in dr.render_markdown(report)
    assert "<tr><th>Downtime</th><td>6.4 s</td>" in dr.render_html(report)
    s["recovery"]["downtime_seconds"] = "soon"
    with pytest.raises(dr.DrillReportError, match="downtime_seconds"):
        dr.compute(drill(s))


def test_rto_equal_to_the_objective_is_met():
    report = dr.compute(drill(db_scenario(objectives={"rto_seconds": 48, "rpo_seconds": 3588})))
    s = scenario_of(report)
    assert s["rto"]["met"] is True and s["rto"]["margin_seconds"] == 0.0
    assert s["rpo"]["met"] is True
    assert s["verdict"] == "pass"


def test_missed_rto_fails_with_reason_lesson_and_improvement():
    report = dr.compute(drill(db_scenario(objectives={"rto_seconds": 40, "rpo_seconds": 86400})))
    s = scenario_of(report)
    assert s["rto"]["met"] is False
    assert s["rto"]["margin_seconds"] == -8.0
    assert s["verdict"] == "fail"
    assert s["reasons"] == ["RTO objective missed: 48 s measured, objective 40 s"]
    assert report["verdict"] == "fail"
    assert report["summary"]["failed_scenarios"] == ["2.1"]
    missed = next(x for x in s["lessons_learned"] if x["code"] == "rto_missed")
    assert missed["text"] == (
        "RTO missed: 48 s measured against an objective of 40 s (8 s over). "
        "The slowest phase, restore, took 15 s (32% of the RTO)."
    )
    improvement = next(x for x in s["improvements"] if x["code"] == "rto_missed")
    assert improvement["text"].startswith("RTO missed because restore took 32% of it (15 s): consider directory-format")
    assert "db_recovery_jobs" in improvement["text"]
    # The drill-level lists carry the scenario's id.
    assert {"scenario": "2.1", **missed} in report["lessons_learned"]


def test_missed_rpo():
    report = dr.compute(drill(db_scenario(objectives={"rto_seconds": 1800, "rpo_seconds": 1800})))
    s = scenario_of(report)
    assert s["rpo"]["met"] is False
    assert s["reasons"] == ["RPO objective missed: 59.8 min measured, objective 30 min"]
    lesson = next(x for x in s["lessons_learned"] if x["code"] == "rpo_missed")
    assert "backup_2026-01-05_01-00-00" in lesson["text"] and "59.8 min" in lesson["text"]
    improvement = next(x for x in s["improvements"] if x["code"] == "rpo_missed")
    assert "at least every 30 min" in improvement["text"] and "WAL archiving" in improvement["text"]


def test_near_miss_and_slowest_phase_lessons():
    report = dr.compute(drill(db_scenario(objectives={"rto_seconds": 50, "rpo_seconds": 86400})))
    s = scenario_of(report)
    assert s["verdict"] == "pass"
    assert codes(s["lessons_learned"])[:2] == ["rto_near_miss", "slowest_phase"]
    assert s["lessons_learned"][0]["text"] == "RTO met with little margin: 48 s of 50 s (96% of the objective)."
    assert s["lessons_learned"][1]["text"] == "The slowest phase was restore: 15 s of 48 s (32% of the RTO)."
    assert s["improvements"][0]["text"].startswith("Win back margin on restore (32% of the RTO): consider")


# --------------------------------------------------------------------------- null handling


def test_failed_recovery_without_healthy_at():
    failed = db_scenario(healthy_at=None, checklist=None)
    failed["recovery"].update(
        status="failed",
        timeline=failed["recovery"]["timeline"][:3],
        failure="step restore failed (Step 3): backup checksum mismatch",
    )
    report = dr.compute(drill(failed))
    s = scenario_of(report)
    assert s["rto"]["measured_seconds"] is None
    assert s["rto"]["met"] is None
    assert s["rto"]["margin_seconds"] is None
    assert s["rto"]["measured_text"] == "-"
    assert s["rto"]["unaccounted_seconds"] is None
    assert s["rpo"]["met"] is True  # the RPO of the backup chosen is still measured
    assert s["verdict"] == "fail"
    assert s["reasons"] == [
        "recovery status is failed, expected recovered: step restore failed (Step 3): backup checksum mismatch",
        "RTO not measured (service was never verified healthy), objective 30 min",
    ]
    assert codes(s["lessons_learned"]) == ["recovery_failed", "rto_not_measured"]
    assert "backup checksum mismatch" in s["lessons_learned"][0]["text"]
    # No "record healthy_at" advice: the failed recovery is the cause.
    assert codes(s["improvements"]) == ["recovery_failed"]
    assert [p["share_of_rto"] for p in s["phases"]] == [None, None, None, None]
    assert report["verdict"] == "fail"


def test_unset_objectives_are_not_checked():
    s = db_scenario(objectives={"rto_seconds": None, "rpo_seconds": None}, healthy_at=None)
    s["recovery"]["backup_finished_at"] = None
    result = scenario_of(dr.compute(drill(s)))
    assert result["rto"]["met"] is None and result["rpo"]["met"] is None
    assert result["rto"]["objective_text"] == "-"
    assert result["verdict"] == "pass"
    assert "rto_not_measured" not in codes(result["lessons_learned"])


def test_objectives_may_be_missing_altogether():
    s = db_scenario()
    del s["objectives"]
    result = scenario_of(dr.compute(drill(s)))
    assert result["rto"]["objective_seconds"] is None
    assert result["rto"]["measured_seconds"] == 48.0
    assert result["verdict"] == "pass"


def test_unknown_backup_end_with_an_rpo_objective_fails():
    s = db_scenario()
    s["recovery"]["backup_finished_at"] = None
    result = scenario_of(dr.compute(drill(s)))
    assert result["rpo"]["measured_seconds"] is None
    assert result["verdict"] == "fail"
    assert result["reasons"] == ["RPO not measured (the end time of the restored backup is unknown), objective 24 h"]
    assert "rpo_not_measured" in codes(result["lessons_learned"])


def test_no_disaster_time_measures_nothing_and_starts_the_axis_at_the_first_step():
    report = dr.compute(drill(verify_scenario()))
    s = scenario_of(report, "4.2")
    assert s["origin_at"] == T - 50
    assert [(p["name"], p["kind"], p["offset_seconds"], p["seconds"]) for p in s["phases"]] == [
        ("restore_test", "recovery", 0.0, 20.0)
    ]
    assert s["rto"]["measured_seconds"] is None and s["rpo"]["measured_seconds"] is None
    assert s["verdict"] == "pass"
    assert s["lessons_learned"] == [] and s["improvements"] == []
    assert report["verdict"] == "pass"


def test_numeric_strings_and_boolean_strings_are_accepted():
    s = db_scenario(healthy_at=str(T + 48.0))
    s["disaster"]["at"] = str(T)
    s["objectives"] = {"rto_seconds": "1800", "rpo_seconds": ""}
    s["checklist"]["items"][0]["passed"] = "true"
    s["checklist"]["items"][4]["passed"] = "None"
    result = scenario_of(dr.compute(drill(s)))
    assert result["rto"]["measured_seconds"] == 48.0
    assert result["rto"]["objective_seconds"] == 1800.0
    assert result["rpo"]["objective_seconds"] is None
    assert [i["passed"] for i in result["checklist"]["items"]] == [True, True, True, True, None]


# --------------------------------------------------------------------------- phases


def test_phases_detect_recovery_and_post_recovery():
    s = scenario_of(dr.compute(drill()))
    assert [(p["name"], p["kind"]) for p in s["phases"]] == [
        ("detect", "detect"),
        ("stop", "recovery"),
        ("identify", "recovery"),
        ("restore", "recovery"),
        ("verify", "recovery"),
        ("restart", "recovery"),
        ("health", "recovery"),
        ("post_recovery", "post_recovery"),
    ]
    assert [p["offset_seconds"] for p in s["phases"]] == [0.0, 2.0, 4.5, 6.0, 21.2, 23.0, 30.0, 34.0]
    assert [p["seconds"] for p in s["phases"]] == [2.0, 2.5, 1.5, 15.2, 1.8, 7.0, 3.0, 12.0]
    assert [p["seconds_in_rto"] for p in s["phases"]] == [2.0, 2.5, 1.5, 15.2, 1.8, 7.0, 3.0, 12.0]
    assert [p["share_of_rto"] for p in s["phases"]] == [4.2, 5.2, 3.1, 31.7, 3.8, 14.6, 6.2, 25.0]
    assert s["phases"][3]["started_at_iso"] == "2026-01-05T02:00:06.000Z"
    assert s["slowest_phase"] == {"name": "restore", "seconds": 15.2, "share_of_rto": 31.7}
    assert s["recovery"]["seconds"] == 31.0
    assert [step["step"] for step in s["recovery"]["steps"]] == [
        "stop",
        "identify",
        "restore",
        "verify",
        "restart",
        "health",
    ]
    assert s["checklist"]["seconds"] == 12.0


def test_a_checklist_after_service_was_healthy_takes_no_share_of_the_rto():
    """healthy_at at the end of the health step (as the dr_drill role records it), the checklist after it."""
    s = db_scenario(healthy_at=T + 33.0)
    s["checklist"].update(started_at=T + 34.0, finished_at=T + 60.0)  # the longest phase, outside the RTO
    result = scenario_of(dr.compute(drill(s)))
    assert result["rto"]["measured_seconds"] == 33.0
    assert result["rto"]["unaccounted_seconds"] == 0.0
    post = result["phases"][-1]
    assert (post["name"], post["seconds"], post["seconds_in_rto"], post["share_of_rto"]) == (
        "post_recovery",
        26.0,
        0.0,
        0.0,
    )
    assert result["slowest_phase"] == {"name": "restore", "seconds": 15.2, "share_of_rto": 46.1}
    assert sum(p["seconds_in_rto"] for p in result["phases"]) == pytest.approx(33.0)
    md = dr.render_markdown(dr.compute(drill(s)))
    # The timeline lists events in time order: healthy at +33 s, before the checklist at +34 s.
    assert md.index("| service verified healthy |") < md.index("| post\\_recovery |")


def test_no_detect_phase_when_the_recovery_starts_at_the_disaster():
    s = db_scenario()
    s["recovery"]["timeline"][0]["started_at"] = T
    result = scenario_of(dr.compute(drill(s)))
    assert result["phases"][0]["name"] == "stop"
    assert result["phases"][0]["seconds"] == 4.5


def test_timeline_is_taken_in_time_order():
    s = db_scenario()
    s["recovery"]["timeline"].reverse()
    result = scenario_of(dr.compute(drill(s)))
    assert [p["name"] for p in result["phases"]][1:4] == ["stop", "identify", "restore"]
    assert result == scenario_of(dr.compute(drill()))


def test_time_between_phases_is_a_lesson():
    s = db_scenario(healthy_at=T + 70.0)  # 25 s of the RTO outside any phase
    result = scenario_of(dr.compute(drill(s)))
    assert result["rto"]["unaccounted_seconds"] == 25.0
    lesson = next(x for x in result["lessons_learned"] if x["code"] == "time_between_phases")
    assert lesson["text"].startswith("25 s (36% of the RTO) passed between the recorded phases")
    # The RTO is comfortably met: a lesson, no improvement needed.
    assert "time_between_phases" not in codes(result["improvements"])
    missed = db_scenario(healthy_at=T + 70.0, objectives={"rto_seconds": 60, "rpo_seconds": None})
    result = scenario_of(dr.compute(drill(missed)))
    assert "time_between_phases" in codes(result["improvements"])


# --------------------------------------------------------------------------- verdicts


@pytest.mark.parametrize(
    ("name", "status", "verdict"),
    [
        ("database_recovery", "recovered", "pass"),
        ("database_recovery", "verified", "fail"),
        ("database_recovery", "reverted", "fail"),
        ("database_recovery", "failed", "fail"),
        ("database_recovery", "not_run", "fail"),
        ("backup_verification", "verified", "pass"),
        ("backup_verification", "recovered", "fail"),
    ],
)
def test_status_decides_the_verdict(name, status, verdict):
    s = db_scenario(name=name)
    s["recovery"]["status"] = status
    result = scenario_of(dr.compute(drill(s)))
    assert result["verdict"] == verdict
    assert result["recovery"]["expected_status"] == ("verified" if name == "backup_verification" else "recovered")


def test_reverted_recovery_with_swap_back():
    s = db_scenario(healthy_at=None, checklist=None)
    s["recovery"]["status"] = "reverted"
    s["recovery"]["failure"] = "step health failed (Step 6 - verify the system): Status code was 503"
    s["recovery"]["timeline"] = [
        *s["recovery"]["timeline"][:5],
        {"step": "health", "started_at": T + 30.0, "finished_at": T + 60.0},
        {"step": "swap_back", "started_at": T + 60.0, "finished_at": T + 62.5},
    ]
    result = scenario_of(dr.compute(drill(s)))
    assert result["phases"][-1] == {
        "name": "swap_back",
        "kind": "swap_back",
        "started_at": T + 60.0,
        "finished_at": T + 62.5,
        "started_at_iso": "2026-01-05T02:01:00.000Z",
        "offset_seconds": 60.0,
        "seconds": 2.5,
        "seconds_in_rto": None,
        "share_of_rto": None,
    }
    assert result["verdict"] == "fail"
    assert result["reasons"][0] == (
        "recovery status is reverted, expected recovered: step health failed (Step 6 - verify the system): "
        "Status code was 503"
    )
    assert codes(result["lessons_learned"]) == ["recovery_reverted", "rto_not_measured"]
    assert "Nothing was lost" in result["lessons_learned"][0]["text"]
    assert "Status code was 503" in result["lessons_learned"][0]["text"]
    # A reverted recovery needs no separate "the checklist did not run" lesson.
    assert "checklist_not_run" not in codes(result["lessons_learned"])


def test_failed_check_fails_the_scenario_with_evidence():
    s = db_scenario()
    s["checklist"]["passed"] = False
    s["checklist"]["items"][3] = {
        "item": "Monitoring alerts cleared",
        "passed": False,
        "evidence": 'GET /api/alerts: [{"name": "db_down"}]',
    }
    result = scenario_of(dr.compute(drill(s)))
    assert result["verdict"] == "fail"
    assert result["reasons"] == ["post-recovery check failed: Monitoring alerts cleared"]
    assert result["checklist"]["passed"] is False
    assert result["checklist"]["counts"] == {"total": 5, "passed": 3, "failed": 1, "not_configured": 1}
    lesson = next(x for x in result["lessons_learned"] if x["code"] == "check_failed")
    assert (
        lesson["text"]
        == 'Post-recovery check failed: Monitoring alerts cleared (GET /api/alerts: [{"name": "db_down"}]).'
    )
    improvement = next(x for x in result["improvements"] if x["code"] == "check_failed")
    assert "/api/alerts" in improvement["text"]


def test_not_configured_item_passes_but_is_a_lesson():
    result = scenario_of(dr.compute(drill()))
    assert result["verdict"] == "pass"
    assert result["checklist"]["items"][4] == {
        "item": "Users notified",
        "passed": None,
        "status": "not_configured",
        "evidence": "not configured",
    }
    assert codes(result["lessons_learned"]) == ["slowest_phase", "check_not_configured"]
    assert result["lessons_learned"][1]["text"] == "Not checked: Users notified (not configured)."
    assert codes(result["improvements"]) == ["check_not_configured"]
    assert "notification hook" in result["improvements"][0]["text"]
    assert result["improvements"][0]["text"].endswith(".")


def test_checklist_reporting_failure_without_a_failed_item_fails():
    s = db_scenario()
    s["checklist"]["passed"] = False
    result = scenario_of(dr.compute(drill(s)))
    assert result["verdict"] == "fail"
    assert result["reasons"] == ["the post-recovery checklist reported a failure"]
    assert "checklist_failed" in codes(result["lessons_learned"])


def test_missing_checklist_after_a_recovery_is_a_lesson_not_a_failure():
    result = scenario_of(dr.compute(drill(db_scenario(checklist=None))))
    assert result["verdict"] == "pass"
    assert result["checklist"] is None
    assert "checklist_not_run" in codes(result["lessons_learned"])
    assert [p["name"] for p in result["phases"]][-1] == "health"


def test_a_drill_without_scenarios_fails():
    report = dr.compute({**drill(), "scenarios": []})
    assert report["verdict"] == "fail"
    assert report["summary"] == {"scenarios": 0, "passed": 0, "failed": 0, "failed_scenarios": []}
    assert report["lessons_learned"] == [
        {"scenario": None, "code": "no_scenarios", "text": "The drill ran no scenario, so nothing was measured."}
    ]
    assert codes(report["improvements"]) == ["no_scenarios"]
    md = dr.render_markdown(report)
    assert "## Drill\n\n### Lessons learned\n\n- The drill ran no scenario, so nothing was measured.\n" in md
    assert "No scenario ran." in md
    assert "The drill ran no scenario" in dr.render_html(report)
    assert "(no scenario ran)" in dr.render_table(report)
    assert not schema_errors(report)


def test_one_failed_scenario_fails_the_drill():
    failed = db_scenario(id="2.1-offsite")
    failed["recovery"]["status"] = "failed"
    report = dr.compute(drill(verify_scenario(), db_scenario(), failed))
    assert report["verdict"] == "fail"
    assert report["summary"] == {"scenarios": 3, "passed": 2, "failed": 1, "failed_scenarios": ["2.1-offsite"]}


# --------------------------------------------------------------------------- malformed records


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("drill_id"), "drill.drill_id is required"),
        (lambda d: d.update(drill_id="  "), "drill.drill_id must not be empty"),
        (lambda d: d.update(started_at="yesterday"), "drill.started_at must be a number, got 'yesterday'"),
        (lambda d: d.update(scenarios={"id": "2.1"}), "drill.scenarios must be a list, got dict"),
        (
            lambda d: d["scenarios"][1]["recovery"].update(status="done"),
            "drill.scenarios[1].recovery.status must be one of recovered, reverted, failed, verified, not_run",
        ),
        (
            lambda d: d["scenarios"][1]["recovery"]["timeline"][2].update(finished_at=T),
            "drill.scenarios[1].recovery.timeline[2]: finished_at (2026-01-05T02:00:00.000Z) is before started_at",
        ),
        (
            lambda d: d["scenarios"][1]["checklist"]["items"][0].update(passed="maybe"),
            "drill.scenarios[1].checklist.items[0].passed must be true, false or null, got 'maybe'",
        ),
        (lambda d: d["scenarios"][1].update(healthy_at=True), "drill.scenarios[1].healthy_at must be a number"),
        (
            lambda d: d["scenarios"][1]["objectives"].update(rto_seconds=-1),
            "drill.scenarios[1].objectives.rto_seconds must not be negative",
        ),
        (lambda d: d["scenarios"][1].update(id="4.2"), "drill.scenarios[1].id '4.2' appears twice"),
        (lambda d: d["scenarios"][1].pop("recovery"), "drill.scenarios[1].recovery must be a mapping, got NoneType"),
        (lambda d: d["scenarios"][1].update(healthy_at=float("nan")), "must be a finite number"),
    ],
)
def test_malformed_records_name_the_bad_field(mutate, message):
    record = drill()
    mutate(record)
    with pytest.raises(dr.DrillReportError) as err:
        dr.compute(record)
    assert message in err.value.msg
    assert err.value.to_dict()["msg"] == err.value.msg


def test_unknown_keys_are_ignored():
    record = drill()
    record["awx_job_id"] = 42
    record["scenarios"][1]["recovery"]["restore_timings"] = {"pg_restore": 12.5}
    assert dr.compute(record) == dr.compute(drill())


# --------------------------------------------------------------------------- formatting


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0, "0 s"),
        (4.25, "4.2 s"),
        (9.96, "10 s"),
        (48.4, "48 s"),
        (99.4, "99 s"),
        (150, "2.5 min"),
        (1800, "30 min"),
        (3588, "59.8 min"),
        (7200, "2 h"),
        (14400, "4 h"),
        (86400, "24 h"),
        (259200, "3 d"),
        (-8, "-8 s"),
    ],
)
def test_human_duration(seconds, text):
    assert dr.human_duration(seconds) == text


# --------------------------------------------------------------------------- renderings


def test_table_is_aligned_ascii_with_every_column():
    failed = db_scenario(id="2.1b", title="Datenbank \u2013 verloren")
    failed["recovery"]["status"] = "failed"
    failed["healthy_at"] = None
    lines = dr.render_table(dr.compute(drill(verify_scenario(), db_scenario(), failed)))
    assert all(line.isascii() for line in lines)
    assert lines[0] == (
        "DR drill drill-20260105T020000Z (environment sandbox, inventory inventories/sandbox, data scale small)"
    )
    header, rule, rows = lines[1], lines[2], lines[3:6]
    assert header.startswith("SCENARIO  ")
    labels = ("SCENARIO", "RTO measured", "DOWNTIME", "RPO measured", "CHECKLIST", "VERDICT")
    columns = [header.index(label) for label in labels]
    for row in rows:
        for start in columns[1:]:
            assert row[start - 2 : start] == "  ", (row, start)
            assert row[start] != " ", (row, start)
    assert set(rule) == {"-"} and len(rule) >= max(len(row) for row in rows)
    assert rows[0].split() == ["4.2", "backup_verification", "-", "/", "-", "-", "-", "/", "-", "-", "PASS"]
    assert re.split(r"\s{2,}", rows[1]) == [
        "2.1 database_recovery",
        "48 s / 30 min ok",
        "-",
        "59.8 min / 24 h ok",
        "pass 4/5 (1 n/c)",
        "PASS",
    ]
    assert re.split(r"\s{2,}", rows[2]) == [
        "2.1b database_recovery",
        "- / 30 min UNMEASURED",
        "-",
        "59.8 min / 24 h ok",
        "pass 4/5 (1 n/c)",
        "FAIL",
    ]
    assert lines[-1] == "Drill verdict: FAIL - 2 of 3 scenarios passed (failed: 2.1b)"


def test_table_says_where_each_measured_rto_went():
    unmeasured = db_scenario(id="2.1b")
    unmeasured["recovery"]["status"] = "failed"
    unmeasured["healthy_at"] = None
    lines = dr.render_table(dr.compute(drill(verify_scenario(), db_scenario(), unmeasured)))
    start = lines.index("  2.1 database_recovery, the RTO by phase: detect 2 s 4%, stop 2.5 s 5%, identify 1.5 s 3%,")
    second = "    restore 15.2 s 32%, verify 1.8 s 4%, restart 7 s 15%, health 3 s 6%, post_recovery 12 s 25%"
    assert lines[start + 1] == second
    assert set(lines[start - 1]) == {"-"} and set(lines[start + 2]) == {"-"}
    assert all(len(line) <= 110 for line in lines[start : start + 2])
    assert not any("2.1b" in line or "4.2" in line for line in lines[start:-2]), "no line for an unmeasured RTO"


def test_table_marks_a_missed_objective():
    lines = dr.render_table(dr.compute(drill(db_scenario(objectives={"rto_seconds": 40, "rpo_seconds": 86400}))))
    assert "48 s / 40 s MISSED" in lines[3]
    assert lines[-1] == "Drill verdict: FAIL - 0 of 1 scenario passed (failed: 2.1)"


def test_markdown_has_the_incident_report_sections():
    s = db_scenario()
    s["checklist"]["items"][2]["evidence"] = "GET / | 24 products\nline two"
    md = dr.render_markdown(dr.compute(drill(verify_scenario(), s)))
    for heading in (
        "# DR drill report: drill-20260105T020000Z",
        "## Summary",
        "## Scenario 2.1: Database corruption/loss - PASS",
        "### Incident timeline",
        "### Root cause",
        "### Recovery steps taken",
        "### Post-recovery checklist",
        "### Lessons learned",
        "### Improvements needed",
    ):
        assert f"\n{heading}\n" in f"\n{md}", heading
    assert "**Verdict: PASS** - 2 of 2 scenarios passed." in md
    assert "| 2.1 Database corruption/loss | 48 s / 30 min (met) | 59.8 min / 24 h (met) |" in md
    assert "Simulated disaster `drop_database` at `2026-01-05T02:00:00.000Z`: DROP DATABASE tokotani" in md
    assert "| +6 s | `2026-01-05T02:00:06.000Z` | restore | 15.2 s | 32% |" in md
    assert "| +48 s | `2026-01-05T02:00:48.000Z` | service verified healthy | - | - |" in md
    assert "3. restore - 15.2 s" in md
    assert "- [x] All services running - pm2: 2 online; PostgreSQL up" in md
    assert "- [ ] Users notified (not configured)\n" in md
    # Evidence stays on its line and cannot break the table or list.
    assert "- [x] Application functionality tested - GET / \\| 24 products line two" in md
    assert "| From first step |" in md  # the verification scenario has no disaster
    assert "No disaster was simulated in this scenario." in md


def test_markdown_of_a_failure_shows_reasons_and_improvements():
    s = db_scenario(objectives={"rto_seconds": 40, "rpo_seconds": 86400})
    s["checklist"]["items"][0]["passed"] = False
    md = dr.render_markdown(dr.compute(drill(s)))
    assert "## Scenario 2.1: Database corruption/loss - FAIL" in md
    assert "- Failed because: RTO objective missed: 48 s measured, objective 40 s; post-recovery check failed:" in md
    assert "- [ ] All services running **FAILED** - pm2: 2 online; PostgreSQL up" in md
    assert "- RTO missed because restore took 32% of it (15 s): consider" in md


def _svgs(page):
    return re.findall(r"<svg\b.*?</svg>", page, re.S)


def test_html_is_self_contained_with_one_chart_per_scenario():
    report = dr.compute(drill())
    page = dr.render_html(report)
    assert page.startswith("<!DOCTYPE html>")
    svgs = _svgs(page)
    assert len(svgs) == len(report["scenarios"]) == 2
    for svg, scenario in zip(svgs, report["scenarios"], strict=True):
        assert svg.count('<rect class="phase ') == len(scenario["phases"])
        for phase in scenario["phases"]:
            assert f">{phase['name']}</text>" in svg
    assert svgs[1].count('class="phase phase-recovery"') == 6
    assert '<rect class="phase phase-detect"' in svgs[1]
    assert '<rect class="phase phase-post_recovery"' in svgs[1]
    assert ">15.2 s</text>" in svgs[1]
    assert ">0 s</text>" in svgs[1]
    assert "healthy: RTO 48 s" in svgs[1]
    # Nothing is fetched: no URL, no script, no stylesheet link, no CSS url().
    assert "http" not in page
    assert not re.search(r"\b(?:src|href|xlink:href)\s*=", page)
    for forbidden in ("<script", "<link", "@import", "url(", "<img", "<iframe"):
        assert forbidden not in page
    assert "<style>" in page
    for section in ("Incident timeline", "Root cause", "Recovery steps taken", "Post-recovery checklist"):
        assert f"<h3>{section}</h3>" in page
    assert "Lessons learned" in page and "Improvements needed" in page


def test_html_objective_far_away_is_an_off_scale_marker():
    svg = _svgs(dr.render_html(dr.compute(drill(db_scenario()))))[0]
    assert 'class="objective-mark"' in svg
    assert "30 min (1800 s)" in svg
    assert 'class="objective"' not in svg
    ticks = [float(t) for t in re.findall(r'text-anchor="middle">([0-9.]+) s</text>', svg)]
    assert max(ticks) < 100  # the axis follows the measured RTO (48 s), not the 30 min objective


def test_html_objective_near_the_rto_is_a_line_on_the_axis():
    svg = _svgs(dr.render_html(dr.compute(drill(db_scenario(objectives={"rto_seconds": 40, "rpo_seconds": None})))))[0]
    assert '<line class="objective"' in svg
    assert "RTO objective 40 s" in svg
    assert "objective-mark" not in svg
    ticks = [float(t) for t in re.findall(r'text-anchor="middle">([0-9.]+) s</text>', svg)]
    assert max(ticks) >= 48


def test_html_escapes_every_text():
    s = db_scenario(title='<b onmouseover="x">Database</b>')
    s["disaster"]["description"] = "<script>alert(1)</script> & more"
    s["checklist"]["items"][0]["evidence"] = "<img src=x onerror=alert(1)>"
    s["recovery"]["timeline"][0]["step"] = "stop <now>"
    page = dr.render_html(dr.compute(drill(s)))
    assert "<script" not in page and "<img" not in page and "<b " not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "stop &lt;now&gt;" in page
    assert "&lt;b onmouseover=&quot;x&quot;&gt;Database&lt;/b&gt;" in page


def test_html_without_phases_still_has_a_chart():
    s = verify_scenario()
    s["recovery"]["timeline"] = []
    page = dr.render_html(dr.compute(drill(s)))
    (svg,) = _svgs(page)
    assert "No timeline was recorded." in svg
    assert '<rect class="phase' not in svg


# --------------------------------------------------------------------------- schema and determinism


@pytest.mark.parametrize(
    "record",
    [
        drill(),
        drill(db_scenario(objectives={"rto_seconds": 40, "rpo_seconds": 60}, checklist=None)),
        drill(db_scenario(disaster=None, healthy_at=None)),
        drill(verify_scenario()),
    ],
    ids=["pass", "missed", "no-disaster", "verification"],
)
def test_report_is_valid_against_the_json_schema(record):
    report = dr.compute(record)
    assert schema_errors(report) == []
    assert json.loads(dr.render_json(report)) == report


def test_fallback_schema_check_catches_drift():
    report = dr.compute(drill())
    assert _fallback_errors(report, SCHEMA, SCHEMA) == []
    broken = copy.deepcopy(report)
    broken["scenarios"][1]["rto"]["surprise"] = 1
    broken["scenarios"][1]["verdict"] = "maybe"
    del broken["summary"]["failed"]
    assert len(_fallback_errors(broken, SCHEMA, SCHEMA)) == 3
    assert len(schema_errors(broken)) == 3


def test_same_record_same_report_and_the_record_is_untouched():
    record = drill()
    before = copy.deepcopy(record)
    first = dr.compute(record)
    second = dr.compute(copy.deepcopy(record))
    assert record == before
    for render in (dr.render_json, dr.render_markdown, dr.render_html):
        assert render(first) == render(second)
    assert dr.render_table(first) == dr.render_table(second)


# --------------------------------------------------------------------------- files


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_write_reports_creates_files_and_latest_copies(tmp_path):
    report = dr.compute(drill())
    dest = tmp_path / "reports" / "q1"
    result = dr.write_reports(report, str(dest))
    stem = "drill-20260105T020000Z"
    assert _mode(dest) == 0o755
    assert result["files"] == {fmt: str(dest / f"{stem}{ext}") for fmt, ext in dr.FORMATS.items()}
    assert result["latest"] == {fmt: str(dest / f"latest{ext}") for fmt, ext in dr.FORMATS.items()}
    assert result["changed"] is True
    assert len(result["written"]) == 6
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        [f"{stem}.json", f"{stem}.md", f"{stem}.html", "latest.json", "latest.md", "latest.html"]
    )
    for path in dest.iterdir():
        assert _mode(path) == 0o644
    assert json.loads((dest / f"{stem}.json").read_text()) == report
    assert (dest / "latest.html").read_text() == dr.render_html(report)
    again = dr.write_reports(report, str(dest))
    assert again["changed"] is False and again["written"] == []


def test_write_reports_in_check_mode_writes_nothing(tmp_path):
    dest = tmp_path / "reports"
    result = dr.write_reports(dr.compute(drill()), str(dest), check_mode=True)
    assert result["changed"] is True
    assert len(result["written"]) == 6
    assert not dest.exists()


def test_an_older_drill_does_not_take_latest(tmp_path):
    newer = dr.compute(drill())
    older_record = drill()
    older_record.update(drill_id="drill-older", started_at=T - 86400, finished_at=T - 86000)
    older = dr.compute(older_record)
    dr.write_reports(newer, str(tmp_path))
    result = dr.write_reports(older, str(tmp_path), formats=["json", "markdown"])
    assert result["latest"] == {}
    assert result["written"] == [str(tmp_path / "drill-older.json"), str(tmp_path / "drill-older.md")]
    assert json.loads((tmp_path / "latest.json").read_text())["drill_id"] == "drill-20260105T020000Z"
    assert not (tmp_path / "drill-older.html").exists()


@pytest.mark.parametrize("name", ["latest", "../escape", ".hidden", "a/b", "", "x" * 201])
def test_unusable_names_are_refused(tmp_path, name):
    with pytest.raises(dr.DrillReportError, match="name"):
        dr.write_reports(dr.compute(drill()), str(tmp_path), stem=name)
    assert list(tmp_path.iterdir()) == []


def test_default_stem_is_a_safe_file_name():
    assert dr.default_stem("drill 2026/01/05 02:00") == "drill-2026-01-05-02-00"
    assert dr.default_stem("///") == "drill"


def test_dest_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "reports"
    target.write_text("not a directory")
    with pytest.raises(dr.DrillReportError, match="is not a directory"):
        dr.write_reports(dr.compute(drill()), str(target))


@pytest.mark.parametrize(
    ("item", "advice"),
    [
        ("All services running", "pm2 logs"),
        ("Database integrity verified", "row counts"),
        ("Application functionality tested", "storefront"),
        ("Monitoring alerts cleared", "/api/alerts"),
        ("Users notified", "notification hook"),
        ("Disk space ok", "Fix the cause of the failed check 'Disk space ok' (92% used)"),
    ],
)
def test_each_plan_checklist_item_gets_its_own_advice(item, advice):
    s = db_scenario()
    s["checklist"]["items"] = [{"item": item, "passed": False, "evidence": "92% used"}]
    result = scenario_of(dr.compute(drill(s)))
    (improvement,) = [x for x in result["improvements"] if x["code"] == "check_failed"]
    assert advice in improvement["text"]
