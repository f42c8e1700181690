# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The DR drill report: RTO/RPO arithmetic, verdicts, lessons learned, and the JSON/Markdown/HTML/terminal renderings.

Pure standard library (no Ansible imports). ``compute(drill)`` turns the raw drill record that the
``tokotani.dr.dr_drill`` role collects into the report document (``docs/drill_report_schema.md``,
``docs/drill_report.schema.json``); the ``render_*`` functions turn that document into files and the
terminal summary; ``write_reports`` writes the files atomically. Everything is deterministic: the
same record gives byte-for-byte the same report (no clock is read; all times come from the record).

The raw drill record (the input, stable; times are epoch seconds, UTC; numbers may also be given as
numeric strings; keys not listed are ignored)::

    {
      "drill_id": str,                       # required, non-empty
      "environment": str | null,             # optional, default null (e.g. "sandbox", "staging")
      "inventory": str | null,               # optional, default null (the inventory path or name)
      "data_scale": str | null,              # optional, default null (tiny, small, medium, large)
      "started_at": epoch,                   # required
      "finished_at": epoch,                  # required
      "scenarios": [                         # required, may be empty (the drill then fails)
        {
          "id": str,                         # required, unique: the plan's section ("2.1", "4.2")
          "name": str,                       # required: database_recovery, backup_verification, ...
          "title": str,                      # optional, default the name ("Database corruption/loss")
          "host": str | null,                # optional, default null: the inventory host it ran on
          "disaster": {                      # optional, default null (e.g. a backup verification)
            "kind": str,                     #   what was simulated ("drop_database")
            "description": str,              #   in words, for the report's root cause
            "at": epoch | null,              #   when; RTO and RPO are measured from here
            "began_at": epoch | null         #   optional: when it began, when that was before it was found
                                             #   (a breach): the RPO is measured to here, the RTO from at
          } | null,
          "recovery": {                      # required
            "status": "recovered" | "reverted" | "failed" | "verified" | "not_run",   # required
            "backup": str | null,            #   the backup used (name)
            "source": str | null,            #   local or offsite
            "backup_finished_at": epoch | null,  # end of the backup restored: the recovery point
            "recovery_point_at": epoch | null,   # optional: the newest moment whose data the recovery kept, when
                                                 #   that is not a backup's end (a rollback that left the
                                                 #   database alone keeps everything: its healthy time)
            "timeline": [                    #   the recovery role's steps, default []
              {"step": str, "started_at": epoch, "finished_at": epoch,
               "seconds": float}             #   seconds is optional and ignored (recomputed)
            ],
            "failure": str | null,           #   why it failed or was reverted
            "downtime_seconds": number | null  # optional: the shop's downtime (app stopped -> healthy),
          },                                 #   as tokotani.dr.recovery_run measured it
          "checklist": {                     # optional, default null: the post-recovery checklist (plan 6.1)
            "passed": bool | null,           #   the checklist's own verdict, default: no item failed
            "started_at": epoch | null,
            "finished_at": epoch | null,
            "items": [                       #   default []
              {"item": str,                  #   required ("All services running")
               "passed": true | false | null,  # null = not configured / not checked
               "evidence": str}              #   default ""
            ]
          } | null,
          "healthy_at": epoch | null,        # optional: when service was verified healthy (end of the RTO)
          "objectives": {"rto_seconds": number | null, "rpo_seconds": number | null}  # optional
        }
      ]
    }

Arithmetic: RTO = healthy_at - disaster.at; RPO = disaster.at - recovery.backup_finished_at, or, when
recovery.recovery_point_at is set, max(0, disaster.at - recovery.recovery_point_at) (data kept up to
or past the disaster loses nothing) - disaster.began_at instead of disaster.at when it is set (a breach
found hours after the intruder got in loses the data since the backup up to then); an
objective is met when measured <= objective (met is null when either is null). A scenario passes
when its recovery status is ``recovered`` (``verified`` for ``backup_verification``), no checklist
item failed (null items are "not configured"), the checklist did not report failure, and every
objective that is set was measured and met. The drill passes when it has scenarios and all pass.
"""

from __future__ import annotations

import datetime
import html
import json
import math
import os
import re

from ansible_collections.tokotani.dr.plugins.module_utils import backup_catalog as catalog
from ansible_collections.tokotani.dr.plugins.module_utils.errors import DrError
from ansible_collections.tokotani.dr.plugins.module_utils.text import drop_point_zero
from ansible_collections.tokotani.dr.plugins.module_utils.text import human_duration as _human_duration

SCHEMA_VERSION = 1
REPORT_KIND = "tokotani.dr.drill_report"
RECOVERY_STATUSES = ("recovered", "reverted", "failed", "verified", "not_run")
# Scenarios whose success is a verified backup, not a recovered service.
VERIFICATION_SCENARIOS = ("backup_verification",)
FORMATS = {"json": ".json", "markdown": ".md", "html": ".html"}
LATEST_STEM = "latest"
FILE_MODE = 0o644
DIR_MODE = 0o755
# An RTO above this share of its objective is "met with little margin".
NEAR_MISS_RATIO = 0.8
# Time between phases above this share of the RTO is worth a lesson.
GAP_LESSON_PERCENT = 20.0
# A gap shorter than this between the disaster and the first step is no "detect" phase.
DETECT_MIN_SECONDS = 0.001
# In the chart, an RTO objective beyond this many times the measured span is drawn off scale.
OFF_SCALE_FACTOR = 4.0

# Suggestions for the phase that took the largest share of a missed (or nearly missed) RTO; each follows
# "RTO missed because <phase> took N% of it (T): ".
PHASE_ADVICE = {
    "detect": (
        "consider alerting on /api/health and on the backup age, and launching playbooks/recover_db.yml (or its "
        "AWX job template) without waiting for a full diagnosis"
    ),
    "stop": (
        "consider a shorter pm2 kill timeout and check the processes' shutdown hooks (open database connections, "
        "queues draining)"
    ),
    "identify": (
        "consider keeping a verified local copy of the newest backup so that no offsite pull is needed inside the "
        "RTO (the weekly backup verification checks it ahead of time)"
    ),
    "restore": (
        "consider directory-format backups restored with parallel jobs (db_recovery_jobs, one per core), zstd "
        "instead of gzip, a local copy instead of an offsite pull, and fast storage for the data directory"
    ),
    "verify": (
        "consider keeping the restore assertions to cheap queries (row counts and a few invariants) and moving "
        "heavy checks to the weekly backup verification"
    ),
    "restart": (
        "consider the application's start-up time and the pm2 wait (db_recovery_pm2_min_uptime, "
        "db_recovery_pm2_wait_timeout)"
    ),
    "health": (
        "consider why the application answers late (database pool, caches warming up); it is polled every 0.2 s "
        "from the server"
    ),
    "serving": (
        "the shop already serves again here (the recovery's record is closed from the controller): consider "
        "fewer tasks after the commit"
    ),
    "read": (
        "consider why reading the releases and the database's migrations is slow (tokotani.dr.app_release_info): "
        "the connection to PostgreSQL, or many release directories (tokotani_app_keep_releases)"
    ),
    "switch": "the switch is one rename of a link: a slow one points at the disk or at the connection to the server",
    "processes": (
        "consider the application's start-up time and the pm2 wait (app_rollback_pm2_min_uptime); in cluster mode a "
        "reload keeps serving while the processes change"
    ),
    "swap_back": "fix the step that failed after the swap so that the recovery does not have to undo itself",
    "packages": (
        "consider a server image with PostgreSQL, Node.js and the backup tools preinstalled (the rebuild then only "
        "checks them), or a local package mirror"
    ),
    "app": (
        "consider an npm cache or a prebuilt release artefact (npm ci and npm run build dominate), and a shorter "
        "pm2 min uptime"
    ),
    "timers": "arming the timers is a few files and one systemctl call: a slow one points at the connection",
    "dns": (
        "consider a shorter TTL on the shop's record before a disaster, and a shorter poll interval "
        "(dns_switch_wait_interval)"
    ),
    "load_test": "consider fewer requests or a shorter duration for the load test (it bounds both)",
    "post_recovery": (
        "consider running the checklist's checks with fewer round trips (one task per check, no fixed sleeps) "
        "or concurrently"
    ),
}

CHECK_ADVICE = (
    (
        ("notif", "users"),
        "configure the notification hook of the post_recovery role (a task file or a webhook URL) so that "
        "users are told when service is back",
    ),
    (
        ("alert", "monitoring"),
        "find out which alerts stayed active after the recovery (GET /api/alerts) and clear or fix their cause",
    ),
    (
        ("integrity", "database", "row count"),
        "compare the restored row counts with the backup manifest and fix the failing assertion before "
        "relying on this backup again",
    ),
    (
        ("application", "functionality", "storefront", "order"),
        "reproduce the failing application check against the recovered system (health, storefront, an order "
        "end to end) and fix it",
    ),
    (
        ("service", "running", "pm2", "postgres"),
        "find out why a service was not running after the recovery (pm2 logs, PostgreSQL's log) and make the "
        "recovery wait until it is",
    ),
)


class DrillReportError(DrError):
    """A malformed drill record or an unusable destination, with an operator-facing message."""


# --------------------------------------------------------------------------- formatting helpers


def human_duration(seconds):
    """48 s, 4.2 s, 2.5 min, 30 min, 24 h, 3 d; '-' for None (text.human_duration's report style)."""
    return _human_duration(seconds, style="report")


def seconds_text(seconds):
    """Seconds with at most one decimal: 15.2 s, 48 s; '-' for None."""
    if seconds is None:
        return "-"
    return drop_point_zero(f"{seconds:.1f}") + " s"


def epoch_iso(value):
    """2026-01-05T02:00:00.123Z for epoch seconds; None for None."""
    if value is None:
        return None
    moment = datetime.datetime.fromtimestamp(round(value, 3), datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _percent(part, whole):
    if part is None or not whole:
        return None
    return round(100.0 * part / whole, 1)


def _round(value, digits=3):
    return None if value is None else round(value, digits)


def _oneline(text):
    return " ".join(str(text).split())


# --------------------------------------------------------------------------- input checks


def _path(base, key):
    return f"{base}[{key}]" if isinstance(key, int) else f"{base}.{key}"


def _mapping(value, path, nullable=False):
    if value is None and nullable:
        return None
    if not isinstance(value, dict):
        kind = "a mapping or null" if nullable else "a mapping"
        raise DrillReportError(f"{path} must be {kind}, got {type(value).__name__}", path=path)
    return value


def _list(value, path, default=None):
    if value is None and default is not None:
        return default
    if not isinstance(value, (list, tuple)):
        raise DrillReportError(f"{path} must be a list, got {type(value).__name__}", path=path)
    return list(value)


def _number(value, path, nullable=True):
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        if nullable:
            return None
        raise DrillReportError(f"{path} is required (epoch seconds or a number of seconds)", path=path)
    if isinstance(value, bool):
        raise DrillReportError(f"{path} must be a number, got a boolean", path=path)
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise DrillReportError(f"{path} must be a number, got {value!r}", path=path) from None
    else:
        raise DrillReportError(f"{path} must be a number, got {type(value).__name__}", path=path)
    if math.isnan(number) or math.isinf(number):
        raise DrillReportError(f"{path} must be a finite number, got {value!r}", path=path)
    return number


def _text(value, path, nullable=True, default=None):
    if value is None:
        if default is not None:
            return default
        if nullable:
            return None
        raise DrillReportError(f"{path} is required", path=path)
    if isinstance(value, (dict, list, tuple)):
        raise DrillReportError(f"{path} must be a string, got {type(value).__name__}", path=path)
    return str(value)


def _tristate(value, path):
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "yes", "on"):
            return True
        if lowered in ("false", "no", "off"):
            return False
        if lowered in ("", "none", "null"):
            return None
    raise DrillReportError(f"{path} must be true, false or null, got {value!r}", path=path)


def _span(started, finished, path):
    if started is not None and finished is not None and finished < started:
        raise DrillReportError(
            f"{path}: finished_at ({epoch_iso(finished)}) is before started_at ({epoch_iso(started)})", path=path
        )


def _read_timeline(value, path):
    steps = []
    for index, entry in enumerate(_list(value, path, default=[])):
        here = _path(path, index)
        raw = _mapping(entry, here)
        step = {
            "step": _text(raw.get("step"), _path(here, "step"), nullable=False),
            "started_at": _number(raw.get("started_at"), _path(here, "started_at"), nullable=False),
            "finished_at": _number(raw.get("finished_at"), _path(here, "finished_at"), nullable=False),
        }
        _span(step["started_at"], step["finished_at"], here)
        steps.append(step)
    # Chronological (stable for equal starts), whatever order the role appended them in.
    return sorted(steps, key=lambda s: s["started_at"])


def _read_checklist(value, path):
    raw = _mapping(value, path, nullable=True)
    if raw is None:
        return None
    items = []
    for index, entry in enumerate(_list(raw.get("items"), _path(path, "items"), default=[])):
        here = _path(_path(path, "items"), index)
        item = _mapping(entry, here)
        items.append(
            {
                "item": _text(item.get("item"), _path(here, "item"), nullable=False),
                "passed": _tristate(item.get("passed"), _path(here, "passed")),
                "evidence": _text(item.get("evidence"), _path(here, "evidence"), default=""),
            }
        )
    checklist = {
        "passed": _tristate(raw.get("passed"), _path(path, "passed")),
        "started_at": _number(raw.get("started_at"), _path(path, "started_at")),
        "finished_at": _number(raw.get("finished_at"), _path(path, "finished_at")),
        "items": items,
    }
    _span(checklist["started_at"], checklist["finished_at"], path)
    return checklist


def _read_scenario(raw, path):
    raw = _mapping(raw, path)
    name = _text(raw.get("name"), _path(path, "name"), nullable=False)
    disaster = _mapping(raw.get("disaster"), _path(path, "disaster"), nullable=True)
    if disaster is not None:
        here = _path(path, "disaster")
        disaster = {
            "kind": _text(disaster.get("kind"), _path(here, "kind"), default=""),
            "description": _text(disaster.get("description"), _path(here, "description"), default=""),
            "at": _number(disaster.get("at"), _path(here, "at")),
            "began_at": _number(disaster.get("began_at"), _path(here, "began_at")),
        }
    recovery_path = _path(path, "recovery")
    recovery = _mapping(raw.get("recovery"), recovery_path)
    status = _text(recovery.get("status"), _path(recovery_path, "status"), nullable=False)
    if status not in RECOVERY_STATUSES:
        raise DrillReportError(
            f"{_path(recovery_path, 'status')} must be one of {', '.join(RECOVERY_STATUSES)}; got {status!r}",
            path=_path(recovery_path, "status"),
        )
    objectives = _mapping(raw.get("objectives"), _path(path, "objectives"), nullable=True) or {}
    objective_values = {}
    for key in ("rto_seconds", "rpo_seconds"):
        here = _path(_path(path, "objectives"), key)
        objective_values[key] = _number(objectives.get(key), here)
        if objective_values[key] is not None and objective_values[key] < 0:
            raise DrillReportError(f"{here} must not be negative, got {objectives.get(key)!r}", path=here)
    return {
        "id": _text(raw.get("id"), _path(path, "id"), nullable=False),
        "name": name,
        "title": _text(raw.get("title"), _path(path, "title"), default=name) or name,
        "host": _text(raw.get("host"), _path(path, "host")),
        "disaster": disaster,
        "recovery": {
            "status": status,
            "backup": _text(recovery.get("backup"), _path(recovery_path, "backup")),
            "source": _text(recovery.get("source"), _path(recovery_path, "source")),
            "backup_finished_at": _number(
                recovery.get("backup_finished_at"), _path(recovery_path, "backup_finished_at")
            ),
            "timeline": _read_timeline(recovery.get("timeline"), _path(recovery_path, "timeline")),
            "recovery_point_at": _number(recovery.get("recovery_point_at"), _path(recovery_path, "recovery_point_at")),
            "failure": _text(recovery.get("failure"), _path(recovery_path, "failure")),
            "downtime_seconds": _number(recovery.get("downtime_seconds"), _path(recovery_path, "downtime_seconds")),
        },
        "checklist": _read_checklist(raw.get("checklist"), _path(path, "checklist")),
        "healthy_at": _number(raw.get("healthy_at"), _path(path, "healthy_at")),
        "objectives": objective_values,
    }


def read_drill(drill):
    """The drill record, checked and normalised (numbers as floats, defaults filled in, timelines sorted)."""
    drill = _mapping(drill, "drill")
    record = {
        "drill_id": _text(drill.get("drill_id"), "drill.drill_id", nullable=False),
        "environment": _text(drill.get("environment"), "drill.environment"),
        "inventory": _text(drill.get("inventory"), "drill.inventory"),
        "data_scale": _text(drill.get("data_scale"), "drill.data_scale"),
        "started_at": _number(drill.get("started_at"), "drill.started_at", nullable=False),
        "finished_at": _number(drill.get("finished_at"), "drill.finished_at", nullable=False),
        "scenarios": [],
    }
    if not record["drill_id"].strip():
        raise DrillReportError("drill.drill_id must not be empty", path="drill.drill_id")
    _span(record["started_at"], record["finished_at"], "drill")
    seen = set()
    for index, raw in enumerate(_list(drill.get("scenarios"), "drill.scenarios")):
        scenario = _read_scenario(raw, f"drill.scenarios[{index}]")
        if scenario["id"] in seen:
            raise DrillReportError(
                f"drill.scenarios[{index}].id {scenario['id']!r} appears twice: scenario ids must be unique",
                path=f"drill.scenarios[{index}].id",
            )
        seen.add(scenario["id"])
        record["scenarios"].append(scenario)
    return record


# --------------------------------------------------------------------------- computation


def _objective(measured, objective):
    met = None if measured is None or objective is None else measured <= objective
    return {
        "measured_seconds": _round(measured),
        "objective_seconds": _round(objective),
        "met": met,
        "margin_seconds": None if met is None else _round(objective - measured),
        "measured_text": human_duration(measured),
        "objective_text": human_duration(objective),
    }


def _phases(scenario, origin, window):
    """The chart's bars. window = (disaster, healthy) when the RTO was measured: each phase's share of the RTO
    is the part of it inside that window (a checklist run after service was healthy takes none of it)."""
    steps = scenario["recovery"]["timeline"]
    disaster_at = (scenario["disaster"] or {}).get("at")
    phases = []
    if disaster_at is not None and steps and steps[0]["started_at"] - disaster_at > DETECT_MIN_SECONDS:
        phases.append(("detect", "detect", disaster_at, steps[0]["started_at"]))
    for step in steps:
        kind = "swap_back" if step["step"] == "swap_back" else "recovery"
        phases.append((step["step"], kind, step["started_at"], step["finished_at"]))
    checklist = scenario["checklist"]
    if checklist and checklist["started_at"] is not None and checklist["finished_at"] is not None:
        phases.append(("post_recovery", "post_recovery", checklist["started_at"], checklist["finished_at"]))
    out = []
    for name, kind, started, finished in phases:
        # Rounded first, so that a reader recomputing a share from the report's figures agrees with it.
        seconds = _round(finished - started)
        in_rto = rto = None
        if window is not None:
            low, high = (_round(t) for t in window)
            in_rto = _round(max(0.0, min(_round(finished), high) - max(_round(started), low)))
            rto = _round(high - low)
        out.append(
            {
                "name": name,
                "kind": kind,
                "started_at": _round(started),
                "finished_at": _round(finished),
                "started_at_iso": epoch_iso(started),
                "offset_seconds": _round(started - origin),
                "seconds": seconds,
                "seconds_in_rto": in_rto,
                "share_of_rto": _percent(in_rto, rto),
            }
        )
    return out


def _covered_seconds(phases, start, end):
    """Seconds of [start, end] covered by at least one phase (overlaps counted once)."""
    spans = sorted((max(p["started_at"], start), min(p["finished_at"], end)) for p in phases)
    covered = 0.0
    cursor = start
    for lo, hi in spans:
        begin = max(lo, cursor)
        if hi > begin:
            covered += hi - begin
            cursor = hi
    return covered


def _checklist_summary(checklist):
    if checklist is None:
        return None
    items = []
    counts = {"total": 0, "passed": 0, "failed": 0, "not_configured": 0}
    for item in checklist["items"]:
        status = {True: "pass", False: "fail", None: "not_configured"}[item["passed"]]
        counts["total"] += 1
        counts[{"pass": "passed", "fail": "failed", "not_configured": "not_configured"}[status]] += 1
        items.append({"item": item["item"], "passed": item["passed"], "status": status, "evidence": item["evidence"]})
    reported = checklist["passed"]
    seconds = None
    if checklist["started_at"] is not None and checklist["finished_at"] is not None:
        seconds = checklist["finished_at"] - checklist["started_at"]
    return {
        "passed": counts["failed"] == 0 and reported is not False,
        "reported_passed": reported,
        "started_at": _round(checklist["started_at"]),
        "finished_at": _round(checklist["finished_at"]),
        "seconds": _round(seconds),
        "counts": counts,
        "items": items,
    }


def _check_advice(item, evidence, failed):
    lowered = item.lower()
    for keywords, advice in CHECK_ADVICE:
        if any(word in lowered for word in keywords):
            return advice
    if failed:
        return f"fix the cause of the failed check '{item}'" + (f" ({evidence})" if evidence else "")
    return f"configure the '{item}' check so that the drill verifies it"


def _capital(text):
    return text[:1].upper() + text[1:]


class _Lessons:
    """Lessons learned ({code, text}) and the improvements tied to them ({code, text}, same code)."""

    def __init__(self):
        self.lessons = []
        self.improvements = []

    def add(self, code, text, advice=None):
        self.lessons.append({"code": code, "text": _oneline(text)})
        if advice:
            advice = _oneline(_capital(advice))
            self.improvements.append(
                {"code": code, "text": advice if advice.endswith((".", "!", "?")) else advice + "."}
            )


def _status_lessons(out, scenario, expected):
    recovery = scenario["recovery"]
    status = recovery["status"]
    reason = f": {_oneline(recovery['failure'])}" if recovery["failure"] else ""
    if status == "reverted":
        out.add(
            "recovery_reverted",
            f"The recovery swapped the previous database back after a failure{reason}. "
            "Nothing was lost, but service was not recovered from the backup.",
            "find out why the step after the swap failed (the reason above; the restored copy is kept for "
            "inspection), fix it, and run the drill again",
        )
    elif status == "failed":
        out.add(
            "recovery_failed",
            f"The recovery failed{reason or ' (no reason was recorded)'}.",
            "fix the cause of the failure and run the drill again; the recovery procedure must work unattended",
        )
    elif status == "not_run":
        out.add(
            "recovery_not_run",
            f"The scenario did not run{reason}.",
            "make the scenario runnable in the drill environment (see the reason above) and run the drill again",
        )
    elif status != expected:
        out.add(
            "recovery_unexpected_status",
            f"The recovery ended with status {status}, expected {expected}{reason}.",
            f"check why the {scenario['name']} scenario reported {status} instead of {expected}",
        )
    elif any(step["step"] == "swap_back" for step in recovery["timeline"]):
        out.add(
            "swap_back",
            f"The recovery swapped a database back during the run{reason}.",
            "find out why a swap-back was needed even though the recovery ended as recovered",
        )


def _phase_advice(name):
    return PHASE_ADVICE.get(name, f"consider where the {name} phase spends its time")


def _rto_lessons(out, result, missing):
    rto = result["rto"]
    recovered = result["recovery"]["status"] == result["recovery"]["expected_status"]
    slowest = result["slowest_phase"]
    if slowest is not None and slowest["share_of_rto"] is None:
        slowest = None
    measured = rto["measured_seconds"]
    objective = rto["objective_seconds"]
    near_miss = rto["met"] is True and bool(objective) and measured > NEAR_MISS_RATIO * objective
    if rto["met"] is False:
        text = (
            f"RTO missed: {rto['measured_text']} measured against an objective of {rto['objective_text']} "
            f"({human_duration(measured - objective)} over)."
        )
        advice = None
        if slowest:
            share = f"{slowest['share_of_rto']:.0f}%"
            took = human_duration(slowest["seconds"])
            text += f" The slowest phase, {slowest['name']}, took {took} ({share} of the RTO)."
            advice = f"RTO missed because {slowest['name']} took {share} of it ({took}): " + _phase_advice(
                slowest["name"]
            )
        out.add("rto_missed", text, advice)
    elif near_miss:
        out.add(
            "rto_near_miss",
            f"RTO met with little margin: {rto['measured_text']} of {rto['objective_text']} "
            f"({measured / objective * 100:.0f}% of the objective).",
            f"win back margin on {slowest['name']} ({slowest['share_of_rto']:.0f}% of the RTO): "
            + _phase_advice(slowest["name"])
            if slowest
            else None,
        )
    elif objective is not None and measured is None:
        out.add(
            "rto_not_measured",
            f"RTO not measured ({missing}), so the objective of {rto['objective_text']} could not be checked.",
            # A recovery that did not succeed explains the missing RTO; its own lesson says what to do.
            "make the scenario record both the disaster time and the moment service was verified healthy"
            if recovered
            else None,
        )
    if slowest and rto["met"] is not False:
        out.add(
            "slowest_phase",
            f"The slowest phase was {slowest['name']}: {human_duration(slowest['seconds'])} of "
            f"{rto['measured_text']} ({slowest['share_of_rto']:.0f}% of the RTO).",
        )
    gap = rto["unaccounted_seconds"]
    gap_share = _percent(gap, measured)
    if gap_share is not None and gap_share >= GAP_LESSON_PERCENT and gap >= 1.0:
        out.add(
            "time_between_phases",
            f"{human_duration(gap)} ({gap_share:.0f}% of the RTO) passed between the recorded phases: "
            "Ansible's own per-task cost and the hand-offs between the recovery, the checklist and the health check.",
            "cut the time between phases: pipelining on (ansible.cfg), fewer and larger tasks in the recovery "
            "role, and the checklist started right after the health check"
            if rto["met"] is False or near_miss
            else None,
        )


def _rpo_lessons(out, scenario, result, missing):
    rpo = result["rpo"]
    if rpo["met"] is False:
        backup = scenario["recovery"]["backup"] or "the backup"
        out.add(
            "rpo_missed",
            f"RPO missed: the newest recoverable point ({backup}) ended {rpo['measured_text']} before the "
            f"disaster; the objective is {rpo['objective_text']}.",
            f"take backups at least every {rpo['objective_text']} (the backup timer's schedule) and alert when the "
            "newest one is older (backup_info max_age); for an RPO below the backup interval add WAL archiving "
            "with point-in-time recovery",
        )
    elif rpo["objective_seconds"] is not None and rpo["measured_seconds"] is None:
        out.add(
            "rpo_not_measured",
            f"RPO not measured ({missing}), so the objective of {rpo['objective_text']} could not be checked.",
            "make the recovery record the end time of the backup it restored (its manifest's finished_at)",
        )


def _checklist_lessons(out, scenario, result):
    checklist = result["checklist"]
    if checklist is None:
        if scenario["recovery"]["status"] == "recovered":
            out.add(
                "checklist_not_run",
                "The post-recovery checklist (plan 6.1) did not run, so the recovered service was not verified.",
                "run the post-recovery checklist after every recovery in the drill",
            )
        return
    for item in checklist["items"]:
        evidence = _oneline(item["evidence"])
        if item["status"] == "fail":
            out.add(
                "check_failed",
                f"Post-recovery check failed: {item['item']}" + (f" ({evidence})" if evidence else "") + ".",
                _check_advice(item["item"], evidence, failed=True),
            )
        elif item["status"] == "not_configured":
            out.add(
                "check_not_configured",
                f"Not checked: {item['item']} ({evidence or 'not configured'}).",
                _check_advice(item["item"], evidence, failed=False),
            )
    if checklist["reported_passed"] is False and checklist["counts"]["failed"] == 0:
        out.add(
            "checklist_failed",
            "The post-recovery checklist reported a failure although no item failed.",
            "make every failing check of the post_recovery role appear as a checklist item with evidence",
        )


def _lessons(scenario, result, rto_missing, rpo_missing):
    """(lessons, improvements) for one scenario, in a fixed order: status, RTO, RPO, checklist."""
    out = _Lessons()
    _status_lessons(out, scenario, result["recovery"]["expected_status"])
    _rto_lessons(out, result, rto_missing)
    _rpo_lessons(out, scenario, result, rpo_missing)
    _checklist_lessons(out, scenario, result)
    return out.lessons, out.improvements


def _recovery_block(recovery, expected):
    steps = recovery["timeline"]
    first = steps[0]["started_at"] if steps else None
    last = max(step["finished_at"] for step in steps) if steps else None
    return {
        "status": recovery["status"],
        "expected_status": expected,
        "backup": recovery["backup"],
        "source": recovery["source"],
        "backup_finished_at": _round(recovery["backup_finished_at"]),
        "backup_finished_at_iso": epoch_iso(recovery["backup_finished_at"]),
        "recovery_point_at": _round(recovery["recovery_point_at"]),
        "recovery_point_at_iso": epoch_iso(recovery["recovery_point_at"]),
        "failure": recovery["failure"],
        "downtime_seconds": _round(recovery["downtime_seconds"]),
        "downtime_text": None if recovery["downtime_seconds"] is None else human_duration(recovery["downtime_seconds"]),
        "started_at": _round(first),
        "finished_at": _round(last),
        "seconds": None if first is None else _round(last - first),
        "steps": [
            {
                "step": step["step"],
                "started_at": _round(step["started_at"]),
                "finished_at": _round(step["finished_at"]),
                "seconds": _round(step["finished_at"] - step["started_at"]),
            }
            for step in steps
        ],
    }


def _missing(scenario):
    """Why the RTO and the RPO could not be measured, in words (for reasons and lessons)."""
    disaster_at = (scenario["disaster"] or {}).get("at")
    recovery = scenario["recovery"]
    if disaster_at is None:
        return "no disaster time was recorded", "no disaster time was recorded"
    if recovery["backup"] or recovery["status"] in ("recovered", "verified"):
        return "service was never verified healthy", "the end time of the restored backup is unknown"
    return "service was never verified healthy", "no backup was restored"


def _reasons(result, rto_missing, rpo_missing):
    """Why a scenario failed; empty when it passed."""
    recovery = result["recovery"]
    reasons = []
    if recovery["status"] != recovery["expected_status"]:
        reasons.append(
            f"recovery status is {recovery['status']}, expected {recovery['expected_status']}"
            + (f": {_oneline(recovery['failure'])}" if recovery["failure"] else "")
        )
    for label, block, missing in (("RTO", result["rto"], rto_missing), ("RPO", result["rpo"], rpo_missing)):
        if block["met"] is False:
            reasons.append(
                f"{label} objective missed: {block['measured_text']} measured, objective {block['objective_text']}"
            )
        elif block["objective_seconds"] is not None and block["measured_seconds"] is None:
            reasons.append(f"{label} not measured ({missing}), objective {block['objective_text']}")
    checklist = result["checklist"]
    if checklist is not None:
        reasons.extend(f"post-recovery check failed: {i['item']}" for i in checklist["items"] if i["status"] == "fail")
        if checklist["reported_passed"] is False and checklist["counts"]["failed"] == 0:
            reasons.append("the post-recovery checklist reported a failure")
    return reasons


def _scenario_report(scenario):
    disaster = scenario["disaster"]
    disaster_at = disaster["at"] if disaster else None
    recovery = scenario["recovery"]
    healthy_at = scenario["healthy_at"]
    objectives = scenario["objectives"]

    rto_measured = None if disaster_at is None or healthy_at is None else healthy_at - disaster_at
    rpo_measured = None
    # the data lost runs up to when the disaster began (a breach found later), else to when it happened
    lost_until = disaster["began_at"] if disaster and disaster["began_at"] is not None else disaster_at
    if lost_until is not None and recovery["recovery_point_at"] is not None:
        rpo_measured = max(0.0, lost_until - recovery["recovery_point_at"])
    elif lost_until is not None and recovery["backup_finished_at"] is not None:
        rpo_measured = lost_until - recovery["backup_finished_at"]

    # Time zero of the phase offsets: the disaster, else the first thing recorded.
    starts = [step["started_at"] for step in recovery["timeline"]]
    checklist = scenario["checklist"]
    if checklist and checklist["started_at"] is not None:
        starts.append(checklist["started_at"])
    origin = disaster_at if disaster_at is not None else (min(starts) if starts else None)
    window = (disaster_at, healthy_at) if rto_measured is not None and rto_measured >= 0 else None
    phases = _phases(scenario, origin, window) if origin is not None else []

    rto = _objective(rto_measured, objectives["rto_seconds"])
    rto["unaccounted_seconds"] = None
    if rto_measured is not None and rto_measured >= 0:
        rto["unaccounted_seconds"] = _round(rto_measured - _covered_seconds(phases, disaster_at, healthy_at))
    # Where the RTO went: the phase with the most time inside it (else the longest); the first of equals.
    slowest = max(phases, key=lambda p: (p["seconds_in_rto"] or 0.0, p["seconds"]), default=None)
    expected = "verified" if scenario["name"] in VERIFICATION_SCENARIOS else "recovered"
    result = {
        "id": scenario["id"],
        "name": scenario["name"],
        "title": scenario["title"],
        "host": scenario["host"],
        "verdict": "pass",
        "reasons": [],
        "origin_at": _round(origin),
        "disaster": None
        if disaster is None
        else {
            "kind": disaster["kind"],
            "description": disaster["description"],
            "at": _round(disaster_at),
            "at_iso": epoch_iso(disaster_at),
            "began_at": _round(disaster["began_at"]),
            "began_at_iso": epoch_iso(disaster["began_at"]),
        },
        "recovery": _recovery_block(recovery, expected),
        "healthy_at": _round(healthy_at),
        "healthy_at_iso": epoch_iso(healthy_at),
        "rto": rto,
        "rpo": _objective(rpo_measured, objectives["rpo_seconds"]),
        "phases": phases,
        "slowest_phase": None
        if slowest is None
        else {"name": slowest["name"], "seconds": slowest["seconds"], "share_of_rto": slowest["share_of_rto"]},
        "checklist": _checklist_summary(checklist),
        "lessons_learned": [],
        "improvements": [],
    }
    rto_missing, rpo_missing = _missing(scenario)
    result["reasons"] = _reasons(result, rto_missing, rpo_missing)
    result["verdict"] = "fail" if result["reasons"] else "pass"
    result["lessons_learned"], result["improvements"] = _lessons(scenario, result, rto_missing, rpo_missing)
    return result


def compute(drill):
    """The report document (schema_version 1) of a raw drill record; raises DrillReportError on a malformed one."""
    record = read_drill(drill)
    scenarios = [_scenario_report(s) for s in record["scenarios"]]
    failed = [s["id"] for s in scenarios if s["verdict"] != "pass"]
    lessons = []
    improvements = []
    if not scenarios:
        lessons.append(
            {"scenario": None, "code": "no_scenarios", "text": "The drill ran no scenario, so nothing was measured."}
        )
        improvements.append(
            {
                "scenario": None,
                "code": "no_scenarios",
                "text": "Select at least one scenario for the drill (dr_drill_scenarios).",
            }
        )
    for scenario in scenarios:
        lessons.extend({"scenario": scenario["id"], **entry} for entry in scenario["lessons_learned"])
        improvements.extend({"scenario": scenario["id"], **entry} for entry in scenario["improvements"])
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": REPORT_KIND,
        "drill_id": record["drill_id"],
        "environment": record["environment"],
        "inventory": record["inventory"],
        "data_scale": record["data_scale"],
        "started_at": _round(record["started_at"]),
        "started_at_iso": epoch_iso(record["started_at"]),
        "finished_at": _round(record["finished_at"]),
        "finished_at_iso": epoch_iso(record["finished_at"]),
        "duration_seconds": _round(record["finished_at"] - record["started_at"]),
        "verdict": "pass" if scenarios and not failed else "fail",
        "summary": {
            "scenarios": len(scenarios),
            "passed": len(scenarios) - len(failed),
            "failed": len(failed),
            "failed_scenarios": failed,
        },
        "scenarios": scenarios,
        "lessons_learned": lessons,
        "improvements": improvements,
    }


# --------------------------------------------------------------------------- JSON


def render_json(report):
    return json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


# --------------------------------------------------------------------------- terminal table


def _ascii(text):
    return str(text).encode("ascii", "replace").decode("ascii")


def _objective_cell(block):
    cell = f"{block['measured_text']} / {block['objective_text']}"
    if block["met"] is True:
        return cell + " ok"
    if block["met"] is False:
        return cell + " MISSED"
    if block["objective_seconds"] is not None:
        return cell + " UNMEASURED"
    return cell


def _checklist_cell(checklist):
    if checklist is None:
        return "-"
    counts = checklist["counts"]
    cell = f"{'pass' if checklist['passed'] else 'FAIL'} {counts['passed']}/{counts['total']}"
    if counts["not_configured"]:
        cell += f" ({counts['not_configured']} n/c)"
    return cell


def _phase_lines(scenario, width=110):
    """Where a scenario's RTO went, phase by phase (name, seconds, share of the RTO), wrapped under its name: the
    next lever, in the terminal summary. Nothing for a scenario with an unmeasured RTO or fewer than two phases."""
    phases = [p for p in scenario["phases"] if p["share_of_rto"] is not None]
    if scenario["rto"]["measured_seconds"] is None or len(phases) < 2:
        return []
    parts = [f"{p['name']} {seconds_text(p['seconds'])} {p['share_of_rto']:.0f}%" for p in phases]
    lines, current = [], f"  {scenario['id']} {scenario['name']}, the RTO by phase:"
    for part in parts:
        if len(current) + len(", ") + len(part) + len(",") > width:
            lines.append(current + ",")
            current = "    " + part
        else:
            current += (" " if current.endswith(":") else ", ") + part
    return [*lines, current]


def render_table(report):
    """The terminal summary: plain ASCII lines, aligned columns, then where each measured RTO went."""
    header = ("SCENARIO", "RTO measured / objective", "DOWNTIME", "RPO measured / objective", "CHECKLIST", "VERDICT")
    rows = [
        (
            f"{s['id']} {s['name']}",
            _objective_cell(s["rto"]),
            s["recovery"]["downtime_text"] or "-",
            _objective_cell(s["rpo"]),
            _checklist_cell(s["checklist"]),
            s["verdict"].upper(),
        )
        for s in report["scenarios"]
    ]
    rows = [tuple(_ascii(cell) for cell in row) for row in rows]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    context = ", ".join(
        part
        for part in (
            report["environment"] and f"environment {report['environment']}",
            report["inventory"] and f"inventory {report['inventory']}",
            report["data_scale"] and f"data scale {report['data_scale']}",
        )
        if part
    )
    title = f"DR drill {report['drill_id']}" + (f" ({context})" if context else "")
    rule = "-" * len(line(["-" * w for w in widths]))
    summary = report["summary"]
    verdict = (
        f"Drill verdict: {report['verdict'].upper()} - {summary['passed']} of {summary['scenarios']} "
        f"scenario{'s' if summary['scenarios'] != 1 else ''} passed"
        + (f" (failed: {', '.join(summary['failed_scenarios'])})" if summary["failed_scenarios"] else "")
    )
    out = [_ascii(title), line(header), rule]
    out.extend(line(row) for row in rows)
    if not rows:
        out.append("(no scenario ran)")
    phases = [_ascii(text) for s in report["scenarios"] for text in _phase_lines(s)]
    if phases:
        out.extend([rule, *phases])
    out.extend([rule, _ascii(verdict)])
    return out


# --------------------------------------------------------------------------- Markdown


def _md(text):
    """Inline Markdown text: one line, with the characters that would change its meaning escaped."""
    return re.sub(r"([\\`*_\[\]<>|#])", r"\\\1", _oneline(text))


def _md_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    out.extend("| " + " | ".join(row) + " |" for row in rows)
    return out


def _verdict_word(verdict):
    return "PASS" if verdict == "pass" else "FAIL"


def _met_word(block):
    if block["met"] is None:
        return "no objective" if block["objective_seconds"] is None else "**not measured**"
    return "met" if block["met"] else "**missed**"


def _md_facts(s):
    facts = [f"- Scenario: `{_oneline(s['name'])}`" + (f" on host `{_oneline(s['host'])}`" if s["host"] else "")]
    for label, block in (("RTO", s["rto"]), ("RPO", s["rpo"])):
        facts.append(
            f"- {label}: {block['measured_text']} measured, objective {block['objective_text']} ({_met_word(block)})"
        )
    if s["recovery"]["downtime_text"]:
        facts.append(f"- Shop downtime (application stopped until healthy again): {s['recovery']['downtime_text']}")
    if s["reasons"]:
        facts.append("- Failed because: " + "; ".join(_md(r) for r in s["reasons"]))
    return [*facts, ""]


def _md_timeline(s):
    out = ["### Incident timeline", ""]
    has_disaster = bool(s["disaster"]) and s["disaster"]["at"] is not None
    events = [(0.0, s["disaster"]["at_iso"], "disaster", "-", "-")] if has_disaster else []
    for p in s["phases"]:
        share = "-" if p["share_of_rto"] is None else f"{p['share_of_rto']:.0f}%"
        events.append((p["offset_seconds"], p["started_at_iso"], p["name"], seconds_text(p["seconds"]), share))
    if s["healthy_at"] is not None and s["origin_at"] is not None:
        events.append((s["healthy_at"] - s["origin_at"], s["healthy_at_iso"], "service verified healthy", "-", "-"))
    if not events:
        return [*out, "No timeline was recorded.", ""]
    events.sort(key=lambda event: event[0])  # stable: equal offsets keep their order
    rows = [
        (f"+{seconds_text(offset)}" if offset >= 0 else seconds_text(offset), f"`{at}`", _md(name), dur, share)
        for offset, at, name, dur, share in events
    ]
    since = "From disaster" if has_disaster else "From first step"
    out.extend(_md_table((since, "At (UTC)", "Event / phase", "Duration", "Share of RTO"), rows))
    if s["rto"]["unaccounted_seconds"]:
        out.extend(["", f"Between phases: {seconds_text(s['rto']['unaccounted_seconds'])} of the RTO."])
    return [*out, ""]


def _md_root_cause(s):
    d = s["disaster"]
    if not d:
        return ["### Root cause", "", "No disaster was simulated in this scenario.", ""]
    text = f"Simulated disaster `{_oneline(d['kind']) or 'unspecified'}`"
    text += f" at `{d['at_iso']}`" if d["at_iso"] else ""
    text += f" (began at `{d['began_at_iso']}`)" if d.get("began_at_iso") else ""
    text += f": {_md(d['description'])}" if d["description"] else "."
    return ["### Root cause", "", text, ""]


def _md_steps(r):
    out = ["### Recovery steps taken", "", f"- Status: **{r['status']}** (expected {r['expected_status']})"]
    if r["backup"]:
        backup = f"- Backup: `{_oneline(r['backup'])}`" + (f" from {_md(r['source'])}" if r["source"] else "")
        if r["backup_finished_at_iso"]:
            backup += f", finished at `{r['backup_finished_at_iso']}`"
        out.append(backup)
    if r["recovery_point_at_iso"]:
        out.append(f"- Data kept up to `{r['recovery_point_at_iso']}`")
    if r["failure"]:
        out.append(f"- Failure: {_md(r['failure'])}")
    out.append("")
    out.extend(f"{n}. {_md(step['step'])} - {seconds_text(step['seconds'])}" for n, step in enumerate(r["steps"], 1))
    if not r["steps"]:
        out.append("No recovery step was recorded.")
    return [*out, ""]


def _md_checklist(c):
    out = ["### Post-recovery checklist", ""]
    if c is None:
        return [*out, "The post-recovery checklist did not run.", ""]
    counts = c["counts"]
    took = f" ({seconds_text(c['seconds'])})" if c["seconds"] is not None else ""
    out.append(
        f"{'Passed' if c['passed'] else '**Failed**'}: {counts['passed']} passed, {counts['failed']} failed, "
        f"{counts['not_configured']} not configured{took}."
    )
    out.append("")
    for item in c["items"]:
        box = "[x]" if item["status"] == "pass" else "[ ]"
        note = {"pass": "", "fail": " **FAILED**", "not_configured": " (not configured)"}[item["status"]]
        # "not configured" evidence would only repeat the note.
        shown = item["evidence"] and not (item["status"] == "not_configured" and item["evidence"] == "not configured")
        evidence = f" - {_md(item['evidence'])}" if shown else ""
        out.append(f"- {box} {_md(item['item'])}{note}{evidence}")
    if not c["items"]:
        out.append("No checklist item was recorded.")
    return [*out, ""]


def _md_lessons(lessons, improvements):
    out = ["### Lessons learned", ""]
    out.extend(f"- {_md(x['text'])}" for x in lessons)
    if not lessons:
        out.append("- Nothing to report.")
    out.extend(["", "### Improvements needed", ""])
    out.extend(f"- {_md(x['text'])}" for x in improvements)
    if not improvements:
        out.append("- None: every objective was met and every check passed.")
    return [*out, ""]


def _md_scenario(s):
    """One scenario as the plan's incident report (6.2): timeline, root cause, steps, checklist, lessons."""
    return [
        f"## Scenario {_md(s['id'])}: {_md(s['title'])} - {_verdict_word(s['verdict'])}",
        "",
        *_md_facts(s),
        *_md_timeline(s),
        *_md_root_cause(s),
        *_md_steps(s["recovery"]),
        *_md_checklist(s["checklist"]),
        *_md_lessons(s["lessons_learned"], s["improvements"]),
    ]


def render_markdown(report):
    """The plan's incident report (6.2) for every scenario, with the 6.1 checklist and its evidence."""
    summary = report["summary"]
    out = [f"# DR drill report: {_md(report['drill_id'])}", ""]
    out.append(
        f"**Verdict: {_verdict_word(report['verdict'])}** - {summary['passed']} of {summary['scenarios']} "
        "scenarios passed."
    )
    out.append("")
    meta = [
        ("Environment", report["environment"]),
        ("Inventory", report["inventory"]),
        ("Data scale", report["data_scale"]),
        ("Started", report["started_at_iso"]),
        ("Finished", report["finished_at_iso"]),
        ("Duration", human_duration(report["duration_seconds"])),
    ]
    out.extend(f"- {label}: {_md(value)}" for label, value in meta if value is not None)
    out.extend(["", "## Summary", ""])
    rows = [
        (
            f"{_md(s['id'])} {_md(s['title'])}",
            f"{s['rto']['measured_text']} / {s['rto']['objective_text']} ({_met_word(s['rto'])})",
            f"{s['rpo']['measured_text']} / {s['rpo']['objective_text']} ({_met_word(s['rpo'])})",
            _checklist_cell(s["checklist"]),
            f"**{_verdict_word(s['verdict'])}**",
        )
        for s in report["scenarios"]
    ]
    if rows:
        out.extend(
            _md_table(
                ("Scenario", "RTO measured / objective", "RPO measured / objective", "Checklist", "Verdict"), rows
            )
        )
    else:
        out.append("No scenario ran.")
    out.append("")
    for scenario in report["scenarios"]:
        out.extend(_md_scenario(scenario))
    drill_wide = [x for x in report["lessons_learned"] if x["scenario"] is None]
    if drill_wide:
        out.extend(["## Drill", ""])
        out.extend(_md_lessons(drill_wide, [x for x in report["improvements"] if x["scenario"] is None]))
    out.append(f"_Report schema version {report['schema_version']} (`{REPORT_KIND}`)._")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2733;background:#f4f6f8;margin:0}
main{max-width:980px;margin:0 auto;padding:24px}
h1{font-size:1.6em;margin:0 0 8px}h2{margin-top:0}h3{margin:20px 0 8px;font-size:1.05em}
section{background:#fff;border:1px solid #d8dee4;border-radius:8px;padding:18px 22px;margin:18px 0}
table{border-collapse:collapse;width:100%;margin:6px 0}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e4e8ec;vertical-align:top}
th{background:#eef2f5;font-weight:600}
td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:1px 10px;border-radius:10px;font-weight:700;font-size:.85em;color:#fff}
.pass{background:#1f883d}.fail{background:#cf222e}.na{background:#8c959f}
.ok{color:#1f883d;font-weight:600}.missed{color:#cf222e;font-weight:600}.muted{color:#57606a}
.reasons{color:#cf222e}code{font-size:.92em;background:#eef2f5;padding:0 4px;border-radius:3px}
svg.timeline{max-width:100%;height:auto;font:11px system-ui,sans-serif}
svg .axis{stroke:#57606a}svg .grid{stroke:#e4e8ec}
svg .phase-detect{fill:#8c959f}svg .phase-recovery{fill:#0969da}
svg .phase-swap_back{fill:#cf222e}svg .phase-post_recovery{fill:#1f883d}
svg .disaster{stroke:#bc4c00;stroke-width:2}svg .healthy{stroke:#1f883d;stroke-width:2;stroke-dasharray:4 3}
svg .objective{stroke:#cf222e;stroke-width:2}svg .objective-mark{fill:#cf222e}
svg text{fill:#1d2733}svg text.small{fill:#57606a}
footer{color:#57606a;font-size:.85em;margin:24px 0}
"""


def _e(value):
    return html.escape("" if value is None else str(value), quote=True)


def _nice_step(span, target=6):
    raw = span / target
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def _fmt_num(value):
    return drop_point_zero(f"{value:.1f}") if value != int(value) else str(int(value))


class _Chart:
    """Geometry of one timeline chart: a label column, the plot, and room on the right for an off-scale marker."""

    label_w, chart_w, right_pad = 150, 500, 130
    row_h, bar_h, top = 24, 16, 48

    def __init__(self, phases, rto, has_disaster=True):
        # Time zero is the disaster; without one (a backup verification), the first recorded step.
        self.zero = "disaster" if has_disaster else "start"
        self.width = self.label_w + self.chart_w + self.right_pad
        self.axis_y = self.top + max(len(phases), 1) * self.row_h + 4
        self.height = self.axis_y + 34
        ends = [max(p["offset_seconds"] + p["seconds"], 0.0) for p in phases]
        span = max([*ends, rto["measured_seconds"] or 0.0, 0.001])
        objective = rto["objective_seconds"]
        # An objective far beyond the measured span would squash every bar: draw it as a marker at the edge.
        self.off_scale = objective is not None and objective > span * OFF_SCALE_FACTOR
        axis_max = span if objective is None or self.off_scale else max(span, objective)
        self.step = _nice_step(axis_max * 1.05)
        self.axis_max = self.step * math.ceil(axis_max * 1.05 / self.step)

    def x(self, seconds):
        return self.label_w + self.chart_w * min(max(seconds, 0.0), self.axis_max) / self.axis_max


def _svg_axis(chart):
    out = []
    tick = 0.0
    while tick <= chart.axis_max + chart.step / 1000:
        x = chart.x(tick)
        out.append(f'<line class="grid" x1="{x:.1f}" y1="{chart.top - 4}" x2="{x:.1f}" y2="{chart.axis_y}"/>')
        out.append(
            f'<text class="small" x="{x:.1f}" y="{chart.axis_y + 14}" text-anchor="middle">{_fmt_num(tick)} s</text>'
        )
        tick = round(tick + chart.step, 6)
    right = chart.label_w + chart.chart_w
    out.append(f'<line class="axis" x1="{chart.label_w}" y1="{chart.axis_y}" x2="{right}" y2="{chart.axis_y}"/>')
    out.append(
        f'<text class="small" x="{chart.label_w + chart.chart_w / 2:.1f}" y="{chart.axis_y + 29}" '
        f'text-anchor="middle">seconds from the {"disaster" if chart.zero == "disaster" else "first step"}</text>'
    )
    return out


def _svg_bars(chart, phases):
    out = []
    for index, phase in enumerate(phases):
        y = chart.top + index * chart.row_h
        text_y = y + chart.bar_h - 4
        x0 = chart.x(phase["offset_seconds"])
        bar_w = max(chart.x(phase["offset_seconds"] + phase["seconds"]) - x0, 1.0)
        share = "" if phase["share_of_rto"] is None else f", {phase['share_of_rto']:.0f}% of the RTO"
        took = seconds_text(phase["seconds"])
        tip = f"{phase['name']}: {took} (from +{seconds_text(phase['offset_seconds'])}{share})"
        out.append(
            f'<text x="{chart.label_w - 8}" y="{text_y}" text-anchor="end">{_e(phase["name"])}</text>'
            f'<rect class="phase phase-{_e(phase["kind"])}" x="{x0:.1f}" y="{y}" width="{bar_w:.1f}" '
            f'height="{chart.bar_h}" rx="2"><title>{_e(tip)}</title></rect>'
            f'<text class="small" x="{x0 + bar_w + 4:.1f}" y="{text_y}">{_e(took)}</text>'
        )
    return out


def _svg_markers(chart, rto):
    """The disaster at 0, the moment service was healthy (the measured RTO), and the RTO objective."""
    top, bottom = chart.top, chart.axis_y
    x0 = chart.x(0)
    out = [
        f'<line class="disaster" x1="{x0:.1f}" y1="{top - 26}" x2="{x0:.1f}" y2="{bottom}"/>',
        f'<text x="{x0 + 3:.1f}" y="{top - 18}">{chart.zero}</text>',
    ]
    if rto["measured_seconds"] is not None:
        x = chart.x(rto["measured_seconds"])
        out.append(f'<line class="healthy" x1="{x:.1f}" y1="{top - 14}" x2="{x:.1f}" y2="{bottom}"/>')
        out.append(
            f'<text x="{x - 3:.1f}" y="{top - 5}" text-anchor="end">'
            f"healthy: RTO {_e(seconds_text(rto['measured_seconds']))}</text>"
        )
    objective = rto["objective_seconds"]
    if objective is None:
        return out
    if chart.off_scale:
        edge = chart.label_w + chart.chart_w + 6
        mid = top + (bottom - top) / 2
        out.append(
            f'<polygon class="objective-mark" '
            f'points="{edge},{mid - 7:.1f} {edge + 12},{mid:.1f} {edge},{mid + 7:.1f}"/>'
        )
        out.append(
            f'<text x="{edge + 16}" y="{mid - 10:.1f}">RTO objective</text>'
            f'<text x="{edge + 16}" y="{mid + 4:.1f}">{_e(human_duration(objective))} ({_fmt_num(objective)} s)</text>'
            f'<text class="small" x="{edge + 16}" y="{mid + 18:.1f}">beyond the axis</text>'
        )
    else:
        x = chart.x(objective)
        out.append(f'<line class="objective" x1="{x:.1f}" y1="{top - 40}" x2="{x:.1f}" y2="{bottom}"/>')
        out.append(
            f'<text x="{x - 3:.1f}" y="{top - 32}" text-anchor="end">'
            f"RTO objective {_e(human_duration(objective))}</text>"
        )
    return out


def svg_timeline(scenario):
    """An inline SVG chart: one horizontal bar per phase along seconds from the disaster, with the RTO objective."""
    phases = scenario["phases"]
    has_disaster = bool(scenario["disaster"]) and scenario["disaster"]["at"] is not None
    chart = _Chart(phases, scenario["rto"], has_disaster)
    title = f"Timeline of scenario {scenario['id']} ({scenario['name']}): phases in seconds from the " + (
        "disaster" if has_disaster else "first step"
    )
    out = [
        f'<svg class="timeline" viewBox="0 0 {chart.width} {chart.height}" width="{chart.width}" '
        f'height="{chart.height}" role="img" aria-label="{_e(title)}">',
        f"<title>{_e(title)}</title>",
    ]
    if phases:
        out.extend(_svg_axis(chart))
        out.extend(_svg_bars(chart, phases))
        out.extend(_svg_markers(chart, scenario["rto"]))
    else:
        out.append(f'<text x="{chart.label_w}" y="{chart.top + 12}">No timeline was recorded.</text>')
    out.append("</svg>")
    return "\n".join(out)


def _badge(verdict):
    cls = "pass" if verdict == "pass" else "fail"
    return f'<span class="badge {cls}">{_verdict_word(verdict)}</span>'


def _met_html(block):
    if block["met"] is True:
        return '<span class="ok">met</span>'
    if block["met"] is False:
        return '<span class="missed">missed</span>'
    if block["objective_seconds"] is not None:
        return '<span class="missed">not measured</span>'
    return '<span class="muted">no objective</span>'


def _html_list(entries, empty):
    if not entries:
        return f'<p class="muted">{_e(empty)}</p>'
    return "<ul>" + "".join(f"<li>{_e(x['text'])}</li>" for x in entries) + "</ul>"


def _html_head(s):
    out = [f"<h2>{_e(s['id'])} {_e(s['title'])} {_badge(s['verdict'])}</h2>"]
    host = f" on host <code>{_e(s['host'])}</code>" if s["host"] else ""
    out.append(f'<p class="muted">Scenario <code>{_e(s["name"])}</code>{host}</p>')
    if s["reasons"]:
        out.append('<ul class="reasons">' + "".join(f"<li>{_e(r)}</li>" for r in s["reasons"]) + "</ul>")
    out.append("<table><tr><th></th><th>measured</th><th>objective</th><th></th></tr>")
    for label, block in (("RTO", s["rto"]), ("RPO", s["rpo"])):
        out.append(
            f"<tr><th>{label}</th><td>{_e(block['measured_text'])}</td><td>{_e(block['objective_text'])}</td>"
            f"<td>{_met_html(block)}</td></tr>"
        )
    if s["recovery"]["downtime_text"]:
        out.append(f"<tr><th>Downtime</th><td>{_e(s['recovery']['downtime_text'])}</td><td>-</td><td></td></tr>")
    out.append("</table>")
    return out


def _html_timeline(s):
    out = ["<h3>Incident timeline</h3>", svg_timeline(s)]
    if not s["phases"]:
        return out
    since = "from disaster" if s["disaster"] and s["disaster"]["at"] is not None else "from first step"
    out.append(
        f"<table><tr><th>phase</th><th>{since}</th><th>started (UTC)</th><th>duration</th><th>share of RTO</th></tr>"
    )
    for p in s["phases"]:
        share = "-" if p["share_of_rto"] is None else f"{p['share_of_rto']:.1f}%"
        out.append(
            f"<tr><td>{_e(p['name'])}</td><td class='num'>+{_e(seconds_text(p['offset_seconds']))}</td>"
            f"<td>{_e(p['started_at_iso'])}</td><td class='num'>{_e(seconds_text(p['seconds']))}</td>"
            f"<td class='num'>{_e(share)}</td></tr>"
        )
    out.append("</table>")
    if s["rto"]["unaccounted_seconds"]:
        gap = seconds_text(s["rto"]["unaccounted_seconds"])
        out.append(f'<p class="muted">Between phases: {_e(gap)} of the RTO.</p>')
    return out


def _html_root_cause(d):
    if not d:
        return ["<h3>Root cause</h3>", '<p class="muted">No disaster was simulated in this scenario.</p>']
    at = f" at {_e(d['at_iso'])}" if d["at_iso"] else ""
    at += f" (began at {_e(d['began_at_iso'])})" if d.get("began_at_iso") else ""
    description = f": {_e(d['description'])}" if d["description"] else ""
    return [
        "<h3>Root cause</h3>",
        f"<p>Simulated disaster <code>{_e(d['kind'] or 'unspecified')}</code>{at}{description}</p>",
    ]


def _html_steps(r):
    out = ["<h3>Recovery steps taken</h3>"]
    facts = [f"Status <strong>{_e(r['status'])}</strong> (expected {_e(r['expected_status'])})"]
    if r["backup"]:
        source = f" from {_e(r['source'])}" if r["source"] else ""
        finished = f", finished at {_e(r['backup_finished_at_iso'])}" if r["backup_finished_at_iso"] else ""
        facts.append(f"backup <code>{_e(r['backup'])}</code>{source}{finished}")
    if r["recovery_point_at_iso"]:
        facts.append(f"data kept up to {_e(r['recovery_point_at_iso'])}")
    out.append("<p>" + "; ".join(facts) + ".</p>")
    if r["failure"]:
        out.append(f'<p class="reasons">Failure: {_e(r["failure"])}</p>')
    if r["steps"]:
        items = "".join(f"<li>{_e(step['step'])} - {_e(seconds_text(step['seconds']))}</li>" for step in r["steps"])
        out.append(f"<ol>{items}</ol>")
    return out


def _html_checklist(c):
    out = ["<h3>Post-recovery checklist</h3>"]
    if c is None:
        return [*out, '<p class="muted">The post-recovery checklist did not run.</p>']
    out.append("<table><tr><th>check</th><th>result</th><th>evidence</th></tr>")
    for item in c["items"]:
        cls, word = {"pass": ("pass", "pass"), "fail": ("fail", "FAIL"), "not_configured": ("na", "n/c")}[
            item["status"]
        ]
        out.append(
            f"<tr><td>{_e(item['item'])}</td><td><span class='badge {cls}'>{word}</span></td>"
            f"<td>{_e(item['evidence'])}</td></tr>"
        )
    out.append("</table>")
    return out


def _html_scenario(s):
    sid = re.sub(r"[^A-Za-z0-9_-]", "-", s["id"])
    return "\n".join(
        [
            f'<section id="scenario-{_e(sid)}">',
            *_html_head(s),
            *_html_timeline(s),
            *_html_root_cause(s["disaster"]),
            *_html_steps(s["recovery"]),
            *_html_checklist(s["checklist"]),
            "<h3>Lessons learned</h3>",
            _html_list(s["lessons_learned"], "Nothing to report."),
            "<h3>Improvements needed</h3>",
            _html_list(s["improvements"], "None: every objective was met and every check passed."),
            "</section>",
        ]
    )


def render_html(report):
    """One self-contained page: inline CSS and SVG, no script, no external asset."""
    summary = report["summary"]
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>DR drill report {_e(report['drill_id'])} - {_verdict_word(report['verdict'])}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        f"<h1>DR drill report: {_e(report['drill_id'])} {_badge(report['verdict'])}</h1>",
        f"<p>{summary['passed']} of {summary['scenarios']} scenarios passed.</p>",
        "<table>",
    ]
    meta = [
        ("Environment", report["environment"]),
        ("Inventory", report["inventory"]),
        ("Data scale", report["data_scale"]),
        ("Started (UTC)", report["started_at_iso"]),
        ("Finished (UTC)", report["finished_at_iso"]),
        ("Duration", human_duration(report["duration_seconds"])),
    ]
    out.extend(f"<tr><th>{_e(label)}</th><td>{_e(value)}</td></tr>" for label, value in meta if value is not None)
    out.append("</table>")
    out.append("<section><h2>Summary</h2>")
    if report["scenarios"]:
        out.append(
            "<table><tr><th>scenario</th><th>RTO measured / objective</th><th>RPO measured / objective</th>"
            "<th>checklist</th><th>verdict</th></tr>"
        )
        for s in report["scenarios"]:
            cells = []
            for block in (s["rto"], s["rpo"]):
                cells.append(
                    f"<td>{_e(block['measured_text'])} / {_e(block['objective_text'])} {_met_html(block)}</td>"
                )
            out.append(
                f"<tr><td>{_e(s['id'])} {_e(s['title'])}</td>{''.join(cells)}"
                f"<td>{_e(_checklist_cell(s['checklist']))}</td><td>{_badge(s['verdict'])}</td></tr>"
            )
        out.append("</table>")
    else:
        out.append('<p class="muted">No scenario ran.</p>')
    out.append("</section>")
    out.extend(_html_scenario(s) for s in report["scenarios"])
    drill_wide = [x for x in report["lessons_learned"] if x["scenario"] is None]
    if drill_wide:
        out.append("<section><h2>Drill</h2><h3>Lessons learned</h3>")
        out.append(_html_list(drill_wide, ""))
        out.append("<h3>Improvements needed</h3>")
        out.append(_html_list([x for x in report["improvements"] if x["scenario"] is None], ""))
        out.append("</section>")
    out.append(
        f"<footer>Report schema version {report['schema_version']} ({_e(REPORT_KIND)}); "
        f"the machine-readable report is the JSON file of the same name.</footer>"
    )
    out.extend(["</main>", "</body>", "</html>"])
    return "\n".join(out) + "\n"


RENDERERS = {"json": render_json, "markdown": render_markdown, "html": render_html}


# --------------------------------------------------------------------------- files

_STEM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def default_stem(drill_id):
    """A file stem from a drill id: characters other than letters, digits, '.', '_' and '-' become '-'."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", drill_id).strip(".-")
    return stem or "drill"


def check_stem(stem):
    if not _STEM_RE.match(stem or "") or len(stem) > 200:
        raise DrillReportError(
            f"name {stem!r} is not a usable file stem: letters, digits, '.', '_' and '-' only, "
            "starting with a letter or digit (at most 200 characters)"
        )
    if stem == LATEST_STEM:
        raise DrillReportError(f"name {stem!r} is reserved for the copies of the newest report; choose another name")
    return stem


def _read_text(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (FileNotFoundError, IsADirectoryError, UnicodeDecodeError):
        return None


def _is_newest(report, dest):
    """Whether this report is at least as new as the one latest.json holds (by started_at)."""
    text = _read_text(os.path.join(dest, LATEST_STEM + FORMATS["json"]))
    if text is None:
        return True
    try:
        other = json.loads(text).get("started_at")
        return other is None or float(report["started_at"]) >= float(other)
    except (ValueError, TypeError, AttributeError):
        return True


def write_reports(report, dest, formats=None, stem=None, check_mode=False):
    """Write <dest>/<stem>.<ext> for each format, and latest.<ext> copies when this is the newest report.

    Files whose content is already the same are left alone. Returns {files, latest, written, changed}:
    the report files by format, the latest copies by format (empty when a newer report holds them),
    the paths written (or that would be, in check mode) and whether anything changed.
    """
    formats = list(formats or FORMATS)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise DrillReportError(f"unknown report format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    formats = [f for f in FORMATS if f in formats]
    stem = check_stem(stem if stem is not None else default_stem(report["drill_id"]))
    dest = os.path.abspath(dest)
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise DrillReportError(f"dest {dest} exists and is not a directory", dest=dest)
    written = []
    created = False
    if not os.path.isdir(dest):
        created = True
        if not check_mode:
            try:
                os.makedirs(dest, DIR_MODE, exist_ok=True)
                os.chmod(dest, DIR_MODE)
            except OSError as err:
                raise DrillReportError(
                    f"cannot create the reports directory {dest}: {err.strerror}", dest=dest
                ) from err
    newest = created or _is_newest(report, dest)
    files = {}
    latest = {}
    for fmt in formats:
        content = RENDERERS[fmt](report)
        targets = [os.path.join(dest, stem + FORMATS[fmt])]
        files[fmt] = targets[0]
        if newest:
            latest[fmt] = os.path.join(dest, LATEST_STEM + FORMATS[fmt])
            targets.append(latest[fmt])
        for path in targets:
            if _read_text(path) == content:
                continue
            written.append(path)
            if not check_mode:
                try:
                    catalog.write_atomic(path, content, FILE_MODE, unique=True, sync_dir=False)
                except OSError as err:
                    raise DrillReportError(
                        f"cannot write the report {path}: {err.strerror}", dest=dest, written=written[:-1]
                    ) from err
    if written and not check_mode:
        catalog.fsync_path(dest)
    return {"files": files, "latest": latest, "written": written, "changed": bool(written) or created}
