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
    assert [s["name"] for s in doc["scenarios"]] == ["backup_verification", "database_recovery", "application_rollback"]
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


def test_application_rollback_measures_rto_from_the_broken_release_and_rpo_zero():
    scenario = next(s for s in report()["scenarios"] if s["name"] == "application_rollback")
    assert scenario["id"] == "2.2"
    assert scenario["verdict"] == "pass", scenario["reasons"]
    disaster = scenario["disaster"]
    assert disaster["kind"] == "failed_deployment"
    assert "(v2-crash) went live at " in disaster["description"]
    assert "failed at 'Run the apps of ecosystem.config.js under pm2" in disaster["description"]
    assert "crash loop: tokotani-nextjs did not stay online" in disaster["description"]
    assert "\n" not in disaster["description"] and len(disaster["description"]) < 600
    # RTO: the crashing release going live to the automatic rollback's verified health
    assert abs(scenario["rto"]["measured_seconds"] - (scenario["healthy_at"] - disaster["at"])) < 0.01
    assert scenario["rto"]["objective_seconds"] == 900
    steps = [p["name"] for p in scenario["phases"] if p["kind"] == "recovery"]
    assert steps == ["read", "switch", "processes", "health"]
    # the pm2 wait that caught the crash loop is the detect phase, before the rollback's first step
    assert scenario["phases"][0]["name"] == "detect"
    # RPO 0: the database was left alone and the canary row survived every rollback
    assert scenario["rpo"]["measured_seconds"] == 0 and scenario["rpo"]["objective_seconds"] == 0
    assert scenario["recovery"]["recovery_point_at"] == scenario["healthy_at"]
    items = {i["item"]: i for i in scenario["checklist"]["items"]}
    for item in (
        "Automatic rollback of a release that crashes at start",
        "Automatic rollback of a release that answers 500, its migration restored from the paired backup",
        "Manual rollback to the previous release (rollback.yml)",
        "Orders written since the deploy kept (RPO 0)",
        "All services running",
    ):
        assert items[item]["status"] == "pass", items[item]
    error = items["Automatic rollback of a release that answers 500, its migration restored from the paired backup"]
    assert "restored from backup_" in error["evidence"]
    assert "(v1.0.0) live and healthy" in items["Manual rollback to the previous release (rollback.yml)"]["evidence"]


def test_the_sandbox_runs_the_release_it_had_before_the_drill(host):
    health = host.check_output("curl -s http://127.0.0.1:3000/api/health")
    assert json.loads(health)["version"] == "1.0.0"
    tables = host.check_output(
        "runuser -u postgres -- psql -d tokotani -Atc \"SELECT to_regclass('public.dr_drill_canary') IS NULL\""
    )
    assert tables == "t"


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
