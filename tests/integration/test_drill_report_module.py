"""tokotani.dr.drill_report through ansible: the files it writes, idempotence, check mode, malformed records."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import textwrap
from pathlib import Path

from backup_support import ROOT, VENV_BIN, module_env, run_module

T = 1767578400.0  # 2026-01-05T02:00:00Z
STEM = "drill-20260105T020000Z"


def record(rto_objective=1800):
    steps = [("stop", 2.0, 4.5), ("identify", 4.5, 6.0), ("restore", 6.0, 21.2), ("verify", 21.2, 23.0)]
    steps += [("restart", 23.0, 30.0), ("health", 30.0, 33.0)]
    return {
        "drill_id": STEM,
        "environment": "sandbox",
        "inventory": "inventories/sandbox",
        "data_scale": "tiny",
        "started_at": T - 60,
        "finished_at": T + 120,
        "scenarios": [
            {
                "id": "2.1",
                "name": "database_recovery",
                "title": "Database corruption/loss",
                "host": "tokotani-sandbox-server",
                "disaster": {"kind": "drop_database", "description": "DROP DATABASE tokotani", "at": T},
                "recovery": {
                    "status": "recovered",
                    "backup": "backup_2026-01-05_01-00-00",
                    "source": "local",
                    "backup_finished_at": T - 3588,
                    "timeline": [
                        {"step": name, "started_at": T + a, "finished_at": T + b, "seconds": round(b - a, 2)}
                        for name, a, b in steps
                    ],
                    "failure": None,
                },
                "checklist": {
                    "passed": True,
                    "started_at": T + 34,
                    "finished_at": T + 46,
                    "items": [
                        {"item": "All services running", "passed": True, "evidence": "pm2: 2 online"},
                        {"item": "Users notified", "passed": None, "evidence": "not configured"},
                    ],
                },
                "healthy_at": T + 48,
                "objectives": {"rto_seconds": rto_objective, "rpo_seconds": 86400},
            }
        ],
    }


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_writes_the_reports_and_latest_copies(tmp_path):
    dest = tmp_path / "reports"
    result = run_module("drill_report", {"drill": record(), "dest": str(dest)})
    assert result["_rc"] == 0, result
    assert result["changed"] is True
    assert result["verdict"] == "pass"
    assert result["msg"] == "Drill verdict: PASS - 1 of 1 scenario passed"
    assert result["summary"][1].startswith("SCENARIO")
    assert "48 s / 30 min ok" in result["summary"][3]
    assert result["files"] == {
        "json": str(dest / f"{STEM}.json"),
        "markdown": str(dest / f"{STEM}.md"),
        "html": str(dest / f"{STEM}.html"),
    }
    assert names(dest) == sorted(
        [f"{STEM}.json", f"{STEM}.md", f"{STEM}.html", "latest.json", "latest.md", "latest.html"]
    )
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o755
    assert all(stat.S_IMODE(os.stat(p).st_mode) == 0o644 for p in dest.iterdir())
    written = json.loads((dest / f"{STEM}.json").read_text())
    assert written == result["report"]
    assert written["scenarios"][0]["rto"]["measured_seconds"] == 48.0
    assert written["scenarios"][0]["rpo"]["measured_seconds"] == 3588.0
    assert (dest / "latest.json").read_text() == (dest / f"{STEM}.json").read_text()
    assert "## Scenario 2.1: Database corruption/loss - PASS" in (dest / f"{STEM}.md").read_text()
    assert (dest / f"{STEM}.html").read_text().count('<rect class="phase ') == 8

    again = run_module("drill_report", {"drill": record(), "dest": str(dest)})
    assert again["changed"] is False
    assert again["written"] == []


def test_check_mode_writes_nothing(tmp_path):
    dest = tmp_path / "reports"
    result = run_module("drill_report", {"drill": record(), "dest": str(dest)}, check=True)
    assert result["_rc"] == 0, result
    assert result["changed"] is True
    assert len(result["written"]) == 6
    assert result["verdict"] == "pass"
    assert not dest.exists()


def test_a_failed_drill_is_reported_not_a_failed_task(tmp_path):
    result = run_module(
        "drill_report",
        {"drill": record(rto_objective=40), "dest": str(tmp_path), "formats": ["json"], "name": "q1-drill"},
    )
    assert result["_rc"] == 0, result
    assert result["verdict"] == "fail"
    assert result["report"]["scenarios"][0]["reasons"] == ["RTO objective missed: 48 s measured, objective 40 s"]
    assert names(tmp_path) == ["latest.json", "q1-drill.json"]


def test_a_malformed_record_fails_with_the_field(tmp_path):
    bad = record()
    bad["scenarios"][0]["recovery"]["status"] = "ok"
    result = run_module("drill_report", {"drill": bad, "dest": str(tmp_path / "reports")})
    assert result["failed"] is True
    assert result["msg"].startswith("drill.scenarios[0].recovery.status must be one of recovered, reverted")
    assert result["path"] == "drill.scenarios[0].recovery.status"
    assert not (tmp_path / "reports").exists()

    result = run_module("drill_report", {"drill": record(), "dest": str(tmp_path), "name": "latest"})
    assert result["failed"] is True
    assert "reserved" in result["msg"]
    assert names(tmp_path) == []


def test_a_record_templated_in_a_playbook(tmp_path):
    """The record as a role builds it: set_fact with templated numbers, a timeline built in Jinja."""
    playbook = tmp_path / "drill.yml"
    playbook.write_text(
        textwrap.dedent(
            f"""\
            - name: Report a drill
              hosts: localhost
              gather_facts: false
              vars:
                disaster_at: {T}
                marks: [["stop", 2.0], ["restore", 6.0], ["health", 30.0], ["end", 33.0]]
              tasks:
                - name: Build the record
                  ansible.builtin.set_fact:
                    record:
                      drill_id: templated
                      environment: sandbox
                      inventory: "{{{{ inventory_file | default('localhost,') }}}}"
                      data_scale: null
                      started_at: "{{{{ disaster_at - 10 }}}}"
                      finished_at: "{{{{ disaster_at | float + 60 }}}}"
                      scenarios:
                        - id: "2.1"
                          name: database_recovery
                          disaster: {{at: "{{{{ disaster_at }}}}", kind: drop_database, description: drill}}
                          recovery:
                            status: recovered
                            backup_finished_at: "{{{{ disaster_at - 600 }}}}"
                            timeline: >-
                              {{% set steps = [] %}}{{% for m in marks[:-1] %}}{{% set _ = steps.append({{'step': m[0],
                              'started_at': disaster_at + m[1], 'finished_at': disaster_at + marks[loop.index][1]}})
                              %}}{{% endfor %}}{{{{ steps }}}}
                          checklist: null
                          healthy_at: "{{{{ (disaster_at + 40) | string }}}}"
                          objectives: {{rto_seconds: 1800, rpo_seconds: 86400}}

                - name: Write the report
                  tokotani.dr.drill_report:
                    drill: "{{{{ record }}}}"
                    dest: "{tmp_path / "out"}"
                  register: report

                - name: Show the summary
                  ansible.builtin.debug:
                    msg: "{{{{ report.summary }}}}"
            """
        )
    )
    argv = [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook)]
    argv += ["-e", f"ansible_python_interpreter={VENV_BIN / 'python'}"]
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=module_env({"ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default"}),
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "out" / "templated.json").read_text())
    scenario = report["scenarios"][0]
    assert scenario["rto"]["measured_seconds"] == 40.0
    assert scenario["rpo"]["measured_seconds"] == 600.0
    assert [(p["name"], p["offset_seconds"], p["seconds"]) for p in scenario["phases"]] == [
        ("detect", 0.0, 2.0),
        ("stop", 2.0, 4.0),
        ("restore", 6.0, 24.0),
        ("health", 30.0, 3.0),
    ]
    assert scenario["verdict"] == "pass"
    assert "2.1 database_recovery" in proc.stdout
