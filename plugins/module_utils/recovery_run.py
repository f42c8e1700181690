# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One recovery of a database at a time, and what each run did: the recovery record on the server.

A recovery procedure (role ``db_recovery``; the module ``recovery_run``) takes the record of its
database before it changes anything, writes each step into it as it goes, and closes it at the end.
The record is a small JSON file beside the backups (``<backup_dir>/.tokotani-recovery.<db>.json``,
0600), so every controller that drives this server (two engineers, a retried AWX job) sees it:

- **start** refuses while another run's record is open and alive, naming it (who, from where, since
  when, which step); it records the live database's OID, for the compare-and-swap of the restore.
- **A run that died** (a killed controller, a lost connection) leaves its record open. The next run
  recognises it as stale when both hold: no step was recorded for ``stale_after`` seconds (longer
  than any step of the procedure but the restore), and no restore of the database is running on
  this server (the restore holds the claim lock of its scratch database for its whole life; the
  kernel releases it when the process dies). ``break_lock`` takes over earlier, once the operator
  has checked; it never takes over from a restore that is still running. Either way the new run
  reports what the dead one left, checked on the server (which database is live, what is left over).
- **step** fails when the record is no longer this run's (another run judged it dead and took
  over): the run stops instead of acting on databases it no longer owns.
- **finish** closes it with the outcome and returns the timeline (every step with its start, end
  and duration), which the drill reads for its RTO.

The backup job reads the record too (``in_progress``): it stands aside while a recovery is open.
Everything read back from the record is checked before use (``validate``): types, lengths and
names; a record this collection did not write is set aside, never trusted, and never reaches SQL
or a shell (database names go to psql as variables).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import time

from ansible_collections.tokotani.dr.plugins.module_utils import backup_catalog as catalog
from ansible_collections.tokotani.dr.plugins.module_utils import leftovers, locks, pg_cli
from ansible_collections.tokotani.dr.plugins.module_utils import manifest_schema as ms
from ansible_collections.tokotani.dr.plugins.module_utils.errors import DrError

SCHEMA = 1
RECORD_PREFIX = ".tokotani-recovery."
RECORD_SUFFIX = ".json"
# A run that recorded no step for this long (seconds), while no restore of its database runs, is dead.
STALE_AFTER = 900
OPEN = "running"
OUTCOMES = ("recovered", "reverted", "failed", "refused")
STATES = (OPEN, *OUTCOMES)
MAX_RECORD_BYTES = 256 * 1024
MAX_STEPS = 200
GUARD_TIMEOUT = 10
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
MAX_TEXT = 2000


class RecoveryError(DrError):
    """A recovery record problem an operator acts on."""


class RecoveryBusy(RecoveryError):
    """Another run holds the recovery of this database."""


# --------------------------------------------------------------------------- paths and reading


def record_path(directory, database):
    """The recovery record of database in directory (the name is made filesystem-safe)."""
    base = catalog.lock_path(directory, database, prefix=RECORD_PREFIX)
    return base[: -len(catalog.LOCK_SUFFIX)] + RECORD_SUFFIX


def _guard_path(directory, database):
    """The lock taken around every read-modify-write of the record (held for milliseconds)."""
    return catalog.lock_path(directory, database, prefix=RECORD_PREFIX)


def clean_text(value, limit=200):
    """Read-back text made safe to print: no control characters, bounded."""
    text = _CONTROL_RE.sub("?", str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


NAME_RULE = rf"^[a-z][a-z0-9_]{{0,31}}{ms.END}"
DATABASES_SCHEMA = {
    "type": "object",
    "maxProperties": 20,
    "propertyNames": {"pattern": NAME_RULE, "title": "a short lower-case name"},
    "additionalProperties": {
        "type": ["string", "integer", "null"],
        "maxLength": leftovers.NAMEDATALEN,
        "pattern": rf"^[^\x00]+{ms.END}",
        "minimum": 1,
        "maximum": 2**32 - 1,
    },
}
_TIME = {"type": "number", "minimum": 0}
_SHORT = {"type": "string", "maxLength": 200}
# The record as RecoveryRun writes it, checked with the collection's one schema checker (manifest_schema).
RECORD_SCHEMA = {
    "type": "object",
    "required": [
        "schema",
        "run_id",
        "database",
        "procedure",
        "operator",
        "controller",
        "host",
        "state",
        "started_at",
        "updated_at",
        "steps",
        "databases",
    ],
    "additionalProperties": False,
    "properties": {
        "schema": {"enum": [SCHEMA]},
        "run_id": {"type": "string", "pattern": rf"^[0-9a-f]{{16}}{ms.END}"},
        "database": {"type": "string", "maxLength": leftovers.NAMEDATALEN},
        "procedure": _SHORT,
        "operator": _SHORT,
        "controller": _SHORT,
        "host": _SHORT,
        "state": {"enum": list(STATES)},
        "step": {"type": "string", "pattern": NAME_RULE},
        "started_at": _TIME,
        "updated_at": _TIME,
        "finished_at": {"type": ["number", "null"], "minimum": 0},
        "steps": {
            "type": "array",
            "maxItems": MAX_STEPS,
            "items": {
                "type": "object",
                "required": ["step", "at"],
                "additionalProperties": False,
                "properties": {"step": {"type": "string", "pattern": NAME_RULE}, "at": _TIME},
            },
        },
        "databases": DATABASES_SCHEMA,
        "message": {"type": ["string", "null"], "maxLength": MAX_TEXT},
        "previous_run": {
            "type": ["object", "null"],
            "additionalProperties": False,
            "properties": {
                "run_id": {"type": "string", "pattern": rf"^[0-9a-f]{{16}}{ms.END}"},
                "description": {"type": "string", "maxLength": 1000},
            },
        },
    },
}
WHAT = "the recovery record"


def validate(doc, database):
    """Problems of a record read back (empty when it is one this collection wrote for database)."""
    problems = ms.schema_problems(doc, RECORD_SCHEMA, what=WHAT)
    if not problems and doc["database"] != database:
        problems.append(f"{WHAT} names another database")
    return problems


def databases_problems(databases):
    """Problems of a run's databases map: short keys; values a database name, an OID or null."""
    return ms.schema_problems(databases, DATABASES_SCHEMA, what="databases")


def normalize_databases(databases):
    """A databases map as a playbook passes it: OIDs (keys ending in _oid) as integers, empty values as null."""
    out = {}
    for key, given in (databases or {}).items():
        value = given
        if given in ("", "None", None):
            value = None
        elif str(key).endswith("_oid") and isinstance(given, str) and given.isdigit():
            value = int(given)
        out[key] = value
    return out


def read_record(path, database):
    """(record, problems): (None, []) when there is none; (None, problems) when it cannot be trusted."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None, []
    except OSError as err:
        return None, [f"it cannot be opened ({err.strerror}; a symlink, or another user's file?)"]
    try:
        raw = os.read(fd, MAX_RECORD_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_RECORD_BYTES:
        return None, [f"it is larger than {MAX_RECORD_BYTES} bytes"]
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None, ["it is not JSON"]
    problems = validate(doc, database)
    return (None, problems) if problems else (doc, [])


def _write(path, doc):
    catalog.write_atomic(path, catalog.json_text(doc), unique=True)


# --------------------------------------------------------------------------- pure decisions


def restores_running(directory, database):
    """Descriptions of the restores of database running on this server now (their scratch claims held)."""
    prefix = f"restore of {database} into "
    found = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return found
    for name in names:
        if not name.startswith(leftovers.DB_LOCK_PREFIX):
            continue
        for line in locks.holders(os.path.join(directory, name)):
            what = line.partition(": ")[2]
            if what.startswith(prefix):
                found.append(clean_text(line))
    return found


def stale_verdict(record, now, stale_after, restores):
    """(stale, reason) for an open record: a pure decision (see the module docstring)."""
    quiet = now - float(record["updated_at"])
    if restores:
        return False, f"a restore of its database is running on this server ({'; '.join(restores)})"
    if quiet < stale_after:
        return False, f"its last step was recorded {int(quiet)} s ago (a run is judged dead after {int(stale_after)} s)"
    return True, (
        f"no step was recorded for {int(quiet)} s (more than {int(stale_after)} s) and no restore of its database "
        "is running on this server"
    )


def describe(record, now):
    """One line naming a run: who, from where, since when, which step."""
    started = catalog.iso(catalog.parse_timestamp(record["started_at"]))[:19] + "Z"
    step_at = record["steps"][-1]["at"] if record["steps"] else record["started_at"]
    return (
        f"run {record['run_id']} of {clean_text(record['procedure'])} by {clean_text(record['operator'])} "
        f"from {clean_text(record['controller'])}, started {started} ({int(now - float(record['started_at']))} s ago), "
        f"at step {clean_text(record.get('step') or '?', 40)} since {int(now - float(step_at))} s ago"
    )


def timeline(steps, end_at):
    """Every step with its start, end and duration (seconds, 2 decimals); a step ends where the next begins."""
    out = []
    for index, item in enumerate(steps):
        started = float(item["at"])
        finished = float(steps[index + 1]["at"]) if index + 1 < len(steps) else float(end_at)
        out.append(
            {
                "step": item["step"],
                "started_at": started,
                "finished_at": finished,
                "seconds": round(finished - started, 2),
            }
        )
    return out


def downtime(steps):
    """Seconds the shop was down in a timeline: from the start of its step stop to the moment it answered healthy
    again (the start of step serving, recorded by recovery_commit on the server), else the end of step health,
    else the end of the run; None when the app was never stopped."""
    stops = [item for item in steps if item["step"] == "stop"]
    if not stops:
        return None
    serving = [item for item in steps if item["step"] == "serving"]
    healthy = [item for item in steps if item["step"] == "health"]
    end = healthy[-1]["finished_at"] if healthy else steps[-1]["finished_at"]
    if serving:
        end = serving[-1]["started_at"]
    return round(end - stops[0]["started_at"], 2)


def left_behind(record, found):
    """Sentences on what a run that stopped left, from found: {key: oid or None} of its databases now.

    found maps "live" to the OID the live database has now, and each name of the record's databases
    (scratch, previous, ...) to its OID now (None when it is not there). A pure function.
    """
    dbs = record["databases"]
    facts = []
    live_now = found.get("live")
    if live_now is None:
        facts.append(f"the live database {record['database']} does not exist now")
    elif dbs.get("live_oid") == live_now:
        facts.append(f"the live database {record['database']} is the one it started from (OID {live_now}): untouched")
    elif dbs.get("restored_oid") == live_now:
        previous = dbs.get("previous")
        kept = f"; the database it replaced is kept as {previous}" if previous and found.get(previous) else ""
        facts.append(
            f"the live database {record['database']} is the backup it restored (OID {live_now}), swapped in but "
            f"never verified by it{kept}"
        )
    else:
        facts.append(
            f"the live database {record['database']} (OID {live_now}) is neither the one it started from "
            f"(OID {dbs.get('live_oid')}) nor one it restored: changed by someone else since"
        )
    for key in ("staging", "scratch", "previous", "failed_restore"):
        name = dbs.get(key)
        if isinstance(name, str):
            state = "is still there" if found.get(name) else "is not there"
            facts.append(f"its {key.replace('_', ' ')} database {name} {state}")
    return facts


# --------------------------------------------------------------------------- the run


class RecoveryRun:
    """The record of one database's recovery (options as in the recovery_run module)."""

    def __init__(self, params, psql=None, now=time.time):
        self.p = params
        self.database = params["database"]
        self.directory = params["state_dir"]
        self.path = record_path(self.directory, self.database)
        self.guard = _guard_path(self.directory, self.database)
        self.psql = psql
        self.now = now
        self.stale_after = float(params.get("stale_after") or STALE_AFTER)
        self.warnings = []

    # -- helpers ---------------------------------------------------------------
    def _locked(self):
        if not os.path.isdir(self.directory):
            raise RecoveryError(
                f"state_dir {self.directory} does not exist: the recovery record lives beside the backups "
                "(db_recovery_backup_dir)"
            )
        return locks.FileLock(self.guard, f"recovery record of {self.database}").acquire(timeout=GUARD_TIMEOUT)

    def _read(self):
        record, problems = read_record(self.path, self.database)
        if problems:
            aside = f"{self.path}.invalid-{leftovers.stamp(catalog.utcnow())}"
            with contextlib.suppress(OSError):
                os.rename(self.path, aside)
            self.warnings.append(
                f"the recovery record {self.path} is not one this collection wrote ({'; '.join(problems)}): it was "
                f"set aside as {aside} and not trusted"
            )
        return record

    def _facts(self, record):
        if self.psql is None:
            return []
        names = [v for k, v in record["databases"].items() if isinstance(v, str) and k != "backup"]
        try:
            found = pg_cli.database_oids(self.psql, [record["database"], *names])
        except DrError as err:
            return [f"the databases could not be checked: {err.msg}"]
        found["live"] = found.pop(record["database"])
        return left_behind(record, found)

    def _own(self, record):
        run_id = self.p.get("run_id")
        if not run_id:
            raise RecoveryError("run_id is required with state step or finished (the one state=started returned)")
        if record is None or record["run_id"] != run_id or record["state"] != OPEN:
            now = self.now()
            if record is None:
                holder = "nobody (the record is gone)"
            elif record["state"] != OPEN:
                holder = f"nobody: it was closed ({record['state']})"
            else:
                holder = describe(record, now)
            raise RecoveryError(
                f"this run ({run_id}) no longer holds the recovery of {self.database}: it is now held by {holder}. "
                "Another run judged this one dead and took over; this run stops here and changes nothing more.",
                holder=record,
            )
        return record

    # -- states ----------------------------------------------------------------
    def start(self, check_mode=False):
        now = self.now()
        live_oid = None
        if self.psql is not None:
            live_oid = pg_cli.database_oids(self.psql, [self.database])[self.database]
        with self._locked():
            current = self._read()
            previous = None
            if current is not None and current["state"] == OPEN:
                restores = restores_running(self.directory, self.database)
                stale, reason = stale_verdict(current, now, self.stale_after, restores)
                if not stale and not (self.p.get("break_lock") and not restores):
                    raise RecoveryBusy(
                        f"another recovery of {self.database} is in progress: {describe(current, now)}; "
                        f"it is alive because {reason}. Nothing was changed and the application was not touched. "
                        "Wait for it to finish. If you are sure it is dead (its controller was killed), wait "
                        f"{int(self.stale_after)} s after its last step or set break_lock "
                        "(-e db_recovery_break_lock=true).",
                        holder=current,
                    )
                how = reason if stale else "break_lock was set"
                previous = {
                    "run_id": current["run_id"],
                    "description": describe(current, now),
                    "why_stale": how,
                    "left_behind": self._facts(current),
                }
                self.warnings.append(
                    f"the previous recovery of {self.database} never finished ({previous['description']}); taken "
                    f"over because {how}. What it left: {'; '.join(previous['left_behind']) or 'unknown'}"
                )
            elif current is not None:
                previous = {
                    "run_id": current["run_id"],
                    "description": describe(current, now),
                    "state": current["state"],
                }
            record = {
                "schema": SCHEMA,
                "run_id": secrets.token_hex(8),
                "database": self.database,
                "procedure": self.p.get("procedure") or "recover_db",
                "operator": clean_text(self.p.get("operator") or "unknown"),
                "controller": clean_text(self.p.get("controller") or "unknown"),
                "host": socket.gethostname(),
                "state": OPEN,
                "step": self.p.get("step") or "start",
                "started_at": now,
                "updated_at": now,
                "finished_at": None,
                "steps": [{"step": self.p.get("step") or "start", "at": now}],
                "databases": {"live_oid": live_oid},
                "message": None,
                "previous_run": previous and {k: previous[k] for k in ("run_id", "description")},
            }
            if not check_mode:
                _write(self.path, record)
        return {
            "changed": not check_mode,
            "run_id": record["run_id"],
            "record": record,
            "record_path": self.path,
            "previous_run": previous,
            "live_oid": live_oid,
            "msg": f"recovery of {self.database} started as run {record['run_id']}",
        }

    def step(self, check_mode=False):
        step = self.p.get("step")
        if not step or not re.search(NAME_RULE, step):
            raise RecoveryError("step must be a short lower-case name (letters, digits, _) with state step")
        extra = normalize_databases(self.p.get("databases"))
        problems = databases_problems(extra)
        if problems:
            raise RecoveryError(problems[0])
        now = self.now()
        with self._locked():
            record = self._own(self._read())
            if len(record["steps"]) >= MAX_STEPS:
                raise RecoveryError(f"a recovery records at most {MAX_STEPS} steps")
            record["steps"].append({"step": step, "at": now})
            record["step"] = step
            record["updated_at"] = now
            record["databases"].update(extra)
            if not check_mode:
                _write(self.path, record)
        return {"changed": not check_mode, "run_id": record["run_id"], "record": record, "msg": f"step {step}"}

    def finish(self, check_mode=False):
        outcome = self.p.get("outcome")
        if outcome not in OUTCOMES:
            raise RecoveryError("outcome must be one of " + ", ".join(OUTCOMES) + " with state finished")
        now = self.now()
        with self._locked():
            record = self._own(self._read())
            record["state"] = outcome
            record["step"] = "end"
            record["updated_at"] = now
            record["finished_at"] = now
            extra = normalize_databases(self.p.get("databases"))
            problems = databases_problems(extra)
            if problems:
                raise RecoveryError(problems[0])
            record["databases"].update(extra)
            message = self.p.get("summary")
            record["message"] = clean_text(message, MAX_TEXT) if message else None
            if not check_mode:
                _write(self.path, record)
        steps = timeline(record["steps"], now)
        return {
            "changed": not check_mode,
            "run_id": record["run_id"],
            "record": record,
            "timeline": steps,
            "downtime": downtime(steps),
            "facts": self._facts(record),
            "started_at": record["started_at"],
            "finished_at": now,
            "duration": round(now - record["started_at"], 2),
            "msg": f"recovery of {self.database} closed: {outcome}",
        }

    def status(self):
        now = self.now()
        record, problems = read_record(self.path, self.database)
        out = {"changed": False, "record": record, "record_path": self.path, "in_progress": False, "stale": None}
        out["facts"] = []
        if problems:
            out["msg"] = f"the recovery record {self.path} cannot be trusted: {'; '.join(problems)}"
            out["problems"] = problems
            return out
        if record is None:
            out["msg"] = f"no recovery of {self.database} was recorded in {self.directory}"
            return out
        if record["state"] != OPEN:
            out["msg"] = f"the last recovery of {self.database} ended {record['state']}: {describe(record, now)}"
            return out
        restores = restores_running(self.directory, self.database)
        stale, reason = stale_verdict(record, now, self.stale_after, restores)
        facts = self._facts(record)
        out.update(in_progress=not stale, stale=stale, left_behind=facts if stale else [], facts=facts)
        if stale:
            out["advice"] = advice(record)
            out["msg"] = (
                f"the recovery {describe(record, now)} never finished ({reason}). What it left: "
                f"{'; '.join(out['left_behind']) or ('not checked' if self.psql is None else 'unknown')}. "
                f"{out['advice']}"
            )
        else:
            so_far = f"; so far, checked on the server: {'; '.join(facts)}" if facts else ""
            out["msg"] = f"a recovery of {self.database} is in progress: {describe(record, now)} ({reason}){so_far}"
        return out


# What an operator does about a run that never finished, by the step it reached.
BEFORE_SWAP = ("start", "identify", "stop", "restore", "verify")
ADVICE_BEFORE_SWAP = (
    "It never reached the swap: the live database was not replaced. If it had stopped the application (step stop), "
    "the application is still stopped: start it (pm2 start ecosystem.config.js), or run recover_db.yml again, which "
    "takes over (at once with -e db_recovery_break_lock=true) and drops the copy it restored."
)
ADVICE_AFTER_SWAP = (
    "It had reached the swap, which runs to its end on the server with the restart of the application: check "
    "/api/health and run playbooks/post_recovery.yml; the database it replaced is kept (__pre_restore_)."
)


def advice(record):
    """The next thing to do about an open record whose run is dead, from the step it reached."""
    return ADVICE_BEFORE_SWAP if record.get("step") in BEFORE_SWAP else ADVICE_AFTER_SWAP


def report(directory, database, psql=None, now=None, stale_after=STALE_AFTER):
    """backup_info's view of the recovery of database: {state (none, in_progress, interrupted, ended,
    untrusted), run_id, step, outcome, msg, left_behind, advice}. Read-only; checks the databases when psql."""
    clock = time.time() if now is None else now
    engine = RecoveryRun(
        {"database": database, "state_dir": directory, "stale_after": stale_after}, psql=psql, now=lambda: clock
    )
    status = engine.status()
    record = status["record"]
    out = {
        "state": "none",
        "run_id": None,
        "step": None,
        "outcome": None,
        "msg": status["msg"],
        "left_behind": status.get("left_behind") or [],
        "advice": None,
    }
    if status.get("problems"):
        return dict(out, state="untrusted")
    if record is None:
        return out
    out.update(run_id=record["run_id"], step=record.get("step"))
    if record["state"] != OPEN:
        return dict(out, state="ended", outcome=record["state"])
    if status["in_progress"]:
        return dict(out, state="in_progress")
    return dict(out, state="interrupted", advice=status["advice"])


def in_progress(directory, database, now=None, stale_after=STALE_AFTER):
    """(record, reason) of an open, live recovery of database in directory, else (None, note or None).

    Read-only (the backup job asks before it starts): never creates, locks or moves anything.
    """
    now = time.time() if now is None else now
    record, problems = read_record(record_path(directory, database), database)
    if problems:
        return None, f"the recovery record in {directory} cannot be trusted ({'; '.join(problems)}): ignored"
    if record is None or record["state"] != OPEN:
        return None, None
    stale, reason = stale_verdict(record, now, stale_after, restores_running(directory, database))
    if stale:
        return None, f"a recovery that never finished is recorded ({describe(record, now)}; {reason})"
    return record, describe(record, now)


def run(params, psql=None, check_mode=False):
    """The module's entry: one state of the record. Raises RecoveryError (a DrError)."""
    engine = RecoveryRun(params, psql=psql)
    state = params.get("state") or "status"
    if state == "status":
        result = engine.status()
    elif state == "started":
        result = engine.start(check_mode=check_mode)
    elif state == "step":
        result = engine.step(check_mode=check_mode)
    elif state == "finished":
        result = engine.finish(check_mode=check_mode)
    else:
        raise RecoveryError("state must be started, step, finished or status")
    result["warnings"] = engine.warnings
    return result
