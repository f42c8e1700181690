"""Checks of the report files the drill wrote (side_effect.yml), on the controller."""

import itertools
import json
import os
import pathlib
import re

import jsonschema
import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"]).get_hosts(
    "tokotani_servers"
)

EPHEMERAL = pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
REPORTS = EPHEMERAL / "reports"
SCHEMA = pathlib.Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "docs" / "drill_report.schema.json"


def report():
    return json.loads((REPORTS / "latest.json").read_text())


def test_json_report_is_schema_valid():
    jsonschema.validate(report(), json.loads(SCHEMA.read_text()))


def test_every_scenario_is_present_and_passed():
    doc = report()
    assert [s["name"] for s in doc["scenarios"]] == ["backup_verification", "database_recovery"]
    assert doc["verdict"] == "pass", [s["reasons"] for s in doc["scenarios"]]


def test_rto_and_rpo_agree_with_the_timeline():
    scenario = next(s for s in report()["scenarios"] if s["name"] == "database_recovery")
    disaster = scenario["disaster"]["at"]
    rto = scenario["rto"]["measured_seconds"]
    rpo = scenario["rpo"]["measured_seconds"]
    assert isinstance(rto, (int, float)) and isinstance(rpo, (int, float))
    assert abs(rto - (scenario["healthy_at"] - disaster)) < 0.01
    assert abs(rpo - (disaster - scenario["recovery"]["backup_finished_at"])) < 0.01
    # every recovery step lies between the disaster and the checklist's end, in order (identify comes before stop)
    steps = [p for p in scenario["phases"] if p["kind"] == "recovery"]
    assert [p["name"] for p in steps] == [
        "identify",
        "stop",
        "restore",
        "verify",
        "swap",
        "restart",
        "health",
        "serving",
    ]
    # the shop was down from the stop until healthy again: the RTO less identifying the backup
    downtime = scenario["recovery"]["downtime_seconds"]
    assert isinstance(downtime, (int, float)) and 0 < downtime < rto
    assert abs(downtime - (scenario["healthy_at"] - steps[1]["started_at"])) < 0.05
    for earlier, later in itertools.pairwise(steps):
        assert earlier["started_at"] <= later["started_at"]
    assert steps[0]["started_at"] >= disaster
    assert scenario["healthy_at"] <= scenario["checklist"]["finished_at"]
    assert scenario["rto"]["met"] and scenario["rpo"]["met"]


def test_checklist_has_evidence():
    scenario = next(s for s in report()["scenarios"] if s["name"] == "database_recovery")
    items = {i["item"]: i for i in scenario["checklist"]["items"]}
    assert items["All services running"]["passed"] is True
    assert "online" in items["All services running"]["evidence"]
    assert items["Users notified"]["passed"] is None


def test_markdown_has_the_incident_report_sections():
    text = (REPORTS / "latest.md").read_text()
    for section in ("Timeline", "Root cause", "Recovery steps", "Lessons learned", "Improvements"):
        assert re.search(rf"^#+ .*{section}", text, re.MULTILINE | re.IGNORECASE), section


def test_html_is_self_contained_with_the_chart():
    html = (REPORTS / "latest.html").read_text()
    assert "<svg" in html
    assert not re.search(r"""(src|href)=["']https?:""", html)


def test_drill_printed_the_summary_and_no_secret():
    out = (EPHEMERAL / "drill-output.txt").read_text()
    assert "database_recovery" in out and "rc=0" in out
    assert "sandbox-secret-do-not-print" not in out
    assert "sandbox-backup-key-do-not-print" not in out


def test_a_failed_scenario_still_writes_its_report_and_fails_the_drill():
    out = (EPHEMERAL / "failed-drill-output.txt").read_text()
    assert "rc=0" not in out
    doc = json.loads((EPHEMERAL / "reports-failed" / "latest.json").read_text())
    jsonschema.validate(doc, json.loads(SCHEMA.read_text()))
    assert doc["verdict"] == "fail"
    (scenario,) = doc["scenarios"]
    assert scenario["verdict"] == "fail"
    # the database had been dropped: nothing to swap back, the restored one stays live
    assert scenario["recovery"]["status"] == "failed"
    assert "step health failed" in scenario["recovery"]["failure"]
    assert scenario["rto"]["measured_seconds"] is None
    assert any(lesson["code"] == "recovery_failed" for lesson in scenario["lessons_learned"])
    assert (EPHEMERAL / "reports-failed" / "latest.html").exists()
    assert (EPHEMERAL / "reports-failed" / "latest.md").exists()
