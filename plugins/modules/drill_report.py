#!/usr/bin/python
# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Engine: plugins/module_utils/drill_report.py (compute, render_table, write_reports).

DOCUMENTATION = r"""
module: drill_report
short_description: Compute a DR drill's RTO, RPO and verdicts and write its report (JSON, Markdown, HTML)
version_added: "0.1.0"
description:
  - Takes the raw record of a DR drill (what the C(tokotani.dr.dr_drill) role collects - for each scenario the
    simulated disaster, the recovery's timeline, the post-recovery checklist and the moment service was healthy)
    and computes the report - RTO (healthy minus disaster) and RPO (disaster minus the end of the backup restored)
    against their objectives, the phases of every recovery, the scenario and drill verdicts, lessons learned and
    improvements needed.
  - Writes C(<dest>/<name>.json) (the machine-readable report, C(schema_version) 1, see
    C(docs/drill_report_schema.md)), C(<dest>/<name>.md) (the plan's incident report - timeline, root cause,
    recovery steps taken, post-recovery checklist with evidence, lessons learned, improvements needed) and
    C(<dest>/<name>.html) (one self-contained page with an SVG timeline chart of every scenario against its RTO
    objective), and copies them to C(latest.json), C(latest.md) and C(latest.html) unless a newer drill's
    report already holds those names.
  - Every file is written to a temporary file beside it and renamed into place. A file whose content would not
    change is left alone, so the same record twice reports C(changed=false).
  - Returns the terminal summary table in RV(summary) and the drill verdict in RV(verdict). A failed drill is not
    a failed task - the playbook decides what to do with RV(verdict).
  - "Runs on the controller (C(delegate_to: localhost), or a play on C(localhost))."
author:
  - TokoTani DevOps Team (@tokotani)
attributes:
  check_mode:
    support: full
    description: Computes the report and reports which files would be written; writes nothing.
  diff_mode:
    support: none
    description: The reports are generated documents; the result lists the files written.
options:
  drill:
    description:
      - The raw drill record - C(drill_id), C(environment), C(inventory), C(data_scale), C(started_at),
        C(finished_at) (epoch seconds) and C(scenarios), each with C(id), C(name), C(title), C(host), C(disaster)
        (C(kind), C(description), C(at), C(began_at) - when a breach began, the RPO measured to it), C(recovery)
        (C(status), C(backup), C(source), C(backup_finished_at),
        C(timeline) of C(step)/C(started_at)/C(finished_at), C(failure)), C(checklist) (C(passed), C(started_at),
        C(finished_at), C(items) of C(item)/C(passed)/C(evidence)), C(healthy_at) and C(objectives)
        (C(rto_seconds), C(rpo_seconds)).
      - The full description, field by field, is in C(plugins/module_utils/drill_report.py) and
        C(docs/drill_report_schema.md). A malformed record fails the task with the path of the bad field.
    type: dict
    required: true
  dest:
    description:
      - The reports directory. Created (mode C(0755), parents too) when missing. Report files get mode C(0644).
    type: path
    required: true
  formats:
    description:
      - Which files to write.
    type: list
    elements: str
    choices: [json, markdown, html]
    default: [json, markdown, html]
  name:
    description:
      - File stem of the reports - letters, digits, C(.), C(_) and C(-), starting with a letter or digit; not
        V(latest) (reserved for the copies of the newest report).
      - Default - the drill's C(drill_id), with any other character replaced by C(-).
    type: str
notes:
  - The report is computed from the record alone - no clock is read - so the same record always gives the same
    files, byte for byte.
  - The C(latest.*) copies are updated when this drill started no earlier than the one C(latest.json) describes.
seealso:
  - module: tokotani.dr.postgresql_restore
  - module: tokotani.dr.backup_info
"""

EXAMPLES = r"""
- name: Write the drill report
  tokotani.dr.drill_report:
    drill: "{{ dr_drill_record }}"
    dest: "{{ playbook_dir }}/../reports"
  delegate_to: localhost
  run_once: true
  register: report

- name: Print the summary
  ansible.builtin.debug:
    msg: "{{ report.summary }}"
  run_once: true

- name: Fail the drill when a scenario failed (the report is written either way)
  ansible.builtin.assert:
    that: report.verdict == 'pass'
    fail_msg: "DR drill failed: {{ report.report.summary.failed_scenarios | join(', ') }}; see {{ report.files.html }}"
  run_once: true

- name: Only the machine-readable report, under a fixed name
  tokotani.dr.drill_report:
    drill: "{{ dr_drill_record }}"
    dest: /var/lib/tokotani-dr/reports
    formats: [json]
    name: quarterly-drill
  delegate_to: localhost
"""

RETURN = r"""
report:
  description:
    - The report document (C(schema_version) 1), as written to the JSON file; every field is described in
      C(docs/drill_report_schema.md) and C(docs/drill_report.schema.json).
  returned: always
  type: dict
  contains:
    schema_version:
      description: Version of the report's schema.
      type: int
      sample: 1
    drill_id:
      description: The drill's id.
      type: str
      sample: drill-20260105T020000Z
    verdict:
      description: V(pass) when every scenario passed (and there was at least one), else V(fail).
      type: str
      sample: pass
    summary:
      description: Counts of scenarios, passed and failed, and the ids of the failed ones.
      type: dict
      sample: {"scenarios": 2, "passed": 2, "failed": 0, "failed_scenarios": []}
    scenarios:
      description: One entry per scenario - verdict and reasons, RTO and RPO against their objectives, phases,
        checklist, lessons learned and improvements.
      type: list
      elements: dict
    lessons_learned:
      description: Every scenario's lessons learned (C(scenario), C(code), C(text)).
      type: list
      elements: dict
    improvements:
      description: Every scenario's improvements needed (C(scenario), C(code), C(text)).
      type: list
      elements: dict
verdict:
  description: The drill verdict, V(pass) or V(fail).
  returned: always
  type: str
  sample: pass
summary:
  description: The terminal summary table, one line per element (plain ASCII, aligned columns).
  returned: always
  type: list
  elements: str
  sample:
    - DR drill drill-20260105T020000Z (environment sandbox, inventory inventories/sandbox, data scale small)
    - "SCENARIO               RTO measured / objective  RPO measured / objective  CHECKLIST         VERDICT"
    - "2.1 database_recovery  48 s / 30 min ok          59.8 min / 24 h ok        pass 4/5 (1 n/c)  PASS"
    - "Drill verdict: PASS - 1 of 1 scenario passed"
files:
  description: The report files of this drill, by format (also in check mode, where they are not written).
  returned: always
  type: dict
  sample:
    json: /srv/drills/reports/drill-20260105T020000Z.json
    markdown: /srv/drills/reports/drill-20260105T020000Z.md
    html: /srv/drills/reports/drill-20260105T020000Z.html
latest:
  description: The C(latest.*) copies, by format; empty when a newer drill's report holds them.
  returned: always
  type: dict
  sample:
    json: /srv/drills/reports/latest.json
written:
  description: The files written (in check mode, that would be written); files already up to date are not listed.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tokotani.dr.plugins.module_utils import drill_report
from ansible_collections.tokotani.dr.plugins.module_utils.errors import call


def main():
    module = AnsibleModule(
        argument_spec={
            "drill": {"type": "dict", "required": True},
            "dest": {"type": "path", "required": True},
            "formats": {
                "type": "list",
                "elements": "str",
                "choices": ["json", "markdown", "html"],
                "default": ["json", "markdown", "html"],
            },
            "name": {"type": "str"},
        },
        supports_check_mode=True,
    )
    params = module.params
    report, failure = call(drill_report.compute, params["drill"])
    if not failure:
        files, failure = call(
            drill_report.write_reports,
            report,
            params["dest"],
            formats=params["formats"],
            stem=params["name"],
            check_mode=module.check_mode,
        )
    if failure:
        module.fail_json(changed=False, **failure)
    summary = drill_report.render_table(report)
    module.exit_json(
        changed=files["changed"],
        msg=summary[-1],
        report=report,
        verdict=report["verdict"],
        summary=summary,
        files=files["files"],
        latest=files["latest"],
        written=files["written"],
    )


if __name__ == "__main__":
    main()
