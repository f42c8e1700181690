# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The weekly backup verification of the host-side runner: ``tokotani-dr verify --config /etc/tokotani-dr/verify.json``.

The DR plan's section 4.2 ("Weekly: backup verification"), with the engines the modules use:

1. pick the backup: the newest valid one of ``source_database`` in ``backup_dir`` (the catalog's own
   choice, as tokotani.dr.postgresql_restore ``backup: latest`` makes it), or, with
   ``"source": "offsite"``, pull it with ``s3_offsite.pull`` (tokotani.dr.backup_offsite ``mode=pull``,
   sha256 verified while downloading) into a temporary directory under ``work_dir`` (default: a hidden
   directory inside ``backup_dir``), removed afterwards;
2. restore it with ``pg_restore.restore`` in mode ``into`` into a scratch database
   ``<scratch_database>_<UTC stamp>`` (default ``<source_database>__verify_<stamp>``): checksums, tables and
   row counts against the manifest, ANALYZE, then the operator's SQL ``assertions``;
3. drop the scratch database, whatever happened;
4. record the result beside the backup's manifest as ``<stem>.verify.json`` (pass/fail, the checks, the
   failed check, duration, backup name, time). Retention removes it with its backup. A backup pulled from
   offsite is recorded beside the local copy of the same backup when there is one (the status file has it
   either way).

The configuration is one JSON object (written by the role ``tokotani.dr.backup_verify``, root:postgres 0640)::

    {
      "status_file": "/var/lib/tokotani-dr/verify-status.json",
      "source": "local",
      "scratch_database": "tokotani__verify",
      "restore": {
        "source_database": "tokotani",
        "backup_dir": "/srv/tokotani/shared/backups",
        "login_unix_socket": "/var/run/postgresql",
        "login_port": 5432,
        "assertions": [{"name": "migrations applied", "sql": "SELECT EXISTS (SELECT 1 FROM _prisma_migrations)"}]
      },
      "offsite": {"bucket": "tokotani-backups", "prefix": "server1", "region": "ap-southeast-3"}
    }

- ``restore`` takes the options of tokotani.dr.postgresql_restore except the ones this job sets itself
  (``database``, ``mode``, ``confirm``, ``previous_database``); ``source_database`` and ``backup_dir`` are
  required; ``backup`` and ``before`` choose another backup than the newest.
- ``offsite`` (needed with ``"source": "offsite"``) takes the options of tokotani.dr.backup_offsite except
  ``mode``, ``backup``, ``before``, ``backup_dir`` and ``database`` (taken from ``restore``). S3 credentials
  come from the environment (systemd ``EnvironmentFile``), never from this file.

Before all of that, the run removes what interrupted runs left (``leftovers.Janitor``): stale scratch
databases of earlier verifications (``<scratch_database>_<stamp>``) and of interrupted restores of
``source_database`` (``<source_database>__restore_<stamp>``), and stale ``.tokotani-restore-*`` /
``.tokotani-verify-*`` directories in ``backup_dir`` and ``work_dir``. The run claims its own scratch database
(a lock file in ``backup_dir``) and work directory for its whole life, so that other runs leave them alone.
SIGTERM, SIGINT or SIGHUP stop the run cleanly: children stopped, the scratch database dropped, the work
directory removed, nothing recorded beside the backup (an interrupted verification says nothing about it).

``run`` returns the verification record (``result`` pass/fail, ``backup``, ``checks``, ``assertions``,
``failed_check``, ``duration``, ``record`` - where it was written) with ``failed``, ``msg`` and ``summary`` (for
the status file). A failed verification is a failed result whose message names the failed check
(``FAILED (check: <check>)``; checks: backup present, offsite copy, backup integrity, restore without SQL
errors, tables present, row counts, assertion '<name>', scratch database dropped).
A configuration the specs refuse raises ``specs.SpecError`` before anything is done.
"""

from __future__ import annotations

import os
import time

from ansible_collections.tokotani.dr.plugins.module_utils import backup_catalog as catalog
from ansible_collections.tokotani.dr.plugins.module_utils import leftovers, pg_restore, s3_offsite, specs
from ansible_collections.tokotani.dr.plugins.module_utils.pg_cli import Connection, PgError, Psql, quote_ident

KEYS = ("source", "restore", "offsite", "scratch_database", "work_dir")
SOURCES = ("local", "offsite")
RESTORE_SET_BY_JOB = ("database", "mode", "confirm", "previous_database")
# fallback: the verification checks the newest backup; a damaged one must fail it, never pass on an older one
OFFSITE_SET_BY_JOB = ("mode", "backup", "before", "backup_dir", "database", "fallback")
SCRATCH_SUFFIX = "__verify"


def resolve_config(config, environ=None, log=None):
    """The job's plan: {source, restore (params), offsite (params or None), scratch, work_dir}. Raises SpecError."""
    log = log or (lambda msg: None)
    specs.check_top_level(config, KEYS)
    source = config.get("source") or "local"
    if source not in SOURCES:
        raise specs.SpecError(f"source: {source!r} is not one of {', '.join(SOURCES)}")
    restore_spec = specs.restore_argument_spec()
    why = "the verification job sets them"
    values = specs.job_section(config, "restore", restore_spec, set_by_job=RESTORE_SET_BY_JOB, why=why, log=log) or {}
    try:
        params = specs.resolve(restore_spec, dict(values, database="scratch", mode="into", confirm=True), environ)
    except specs.SpecError as err:
        raise specs.SpecError(f"restore: {err}") from None
    for required in ("source_database", "backup_dir"):
        if not params[required]:
            raise specs.SpecError(f"restore: missing required option: {required}")
    scratch = config.get("scratch_database") or pg_restore.derived_name(params["source_database"], SCRATCH_SUFFIX)
    if not isinstance(scratch, str) or scratch == params["source_database"]:
        raise specs.SpecError("scratch_database must be a name other than the source database")
    offsite = None
    if source == "offsite":
        offsite_spec = specs.offsite_argument_spec()
        values = specs.job_section(config, "offsite", offsite_spec, set_by_job=OFFSITE_SET_BY_JOB, why=why, log=log)
        if values is None:
            raise specs.SpecError("source offsite needs the 'offsite' section (bucket, prefix, ...)")
        values = dict(
            values,
            mode="pull",
            backup=params["backup"],
            before=params["before"],
            backup_dir=params["backup_dir"],
            database=params["source_database"],
            fallback=0,
        )
        try:
            offsite = specs.offsite_constraints(specs.resolve(offsite_spec, values, environ))
        except specs.SpecError as err:
            raise specs.SpecError(f"offsite: {err}") from None
    work_dir = config.get("work_dir") or params["backup_dir"]
    return {"source": source, "restore": params, "offsite": offsite, "scratch": scratch, "work_dir": work_dir}


class Failure(Exception):
    """A verification that did not pass: the check that failed and the engine's message."""

    def __init__(self, check, msg, **details):
        super().__init__(msg)
        self.check = check
        self.msg = msg
        self.details = details


def _pick(plan, log, check_mode, work):
    """(entry, pulled result or None): the backup to verify (entry None in check mode with offsite)."""
    params = dict(plan["restore"])
    pulled = None
    if plan["source"] == "offsite":
        opts = dict(plan["offsite"], backup_dir=work)
        where = s3_offsite.s3_url(opts["bucket"], s3_offsite.object_key(opts["prefix"], ""))
        what = "the newest backup" if params["backup"] == "latest" else f"backup {params['backup']}"
        log(f"pulling {what} of {params['source_database']} from {where}")
        try:
            pulled = s3_offsite.pull(opts, check_mode=check_mode)
        except (s3_offsite.OffsiteError, catalog.CatalogError) as err:
            raise Failure("offsite copy", f"cannot pull the backup from {where}: {err.msg}") from None
        for warning in pulled.get("warnings") or []:
            log(f"warning: {warning}")
        if check_mode:
            return None, pulled
        log(f"pulled {pulled['name']} ({pulled['size']} bytes, sha256 verified) into {work}")
        params.update(backup=pulled["manifest_path"], backup_dir=work)
    engine = pg_restore.RestoreEngine(Connection.from_params(params), params)
    try:
        entry = engine.resolve()
    except (PgError, catalog.CatalogError) as err:
        if isinstance(err, leftovers.Interrupted):
            raise
        raise Failure("backup present", err.msg) from None
    return entry, pulled


def _drop(psql, conn, name):
    """Drop a scratch database; returns a problem or None (it must be gone afterwards)."""
    try:
        psql.run_sql(
            f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE);",
            conn.maintenance_db,
            what=f"dropping the scratch database {name}",
        )
        rows = psql.query_json(
            "SELECT json_build_object('n', count(*)) FROM pg_database WHERE datname = :'n';",
            conn.maintenance_db,
            variables={"n": name},
        )
    except PgError as err:
        return err.msg
    return None if rows and rows[0]["n"] == 0 else f"{name} still exists"


def _clean(plan, log):
    """First of all: remove what interrupted verifications and restores left. Returns the janitor's report."""
    params = plan["restore"]
    try:
        janitor = leftovers.Janitor(Psql(Connection.from_params(params)), params["backup_dir"], log=log)
    except PgError as err:
        log(f"warning: cannot look for leftovers of interrupted runs: {err.msg}")
        return []
    scratch = [(plan["scratch"], "_"), (params["source_database"], leftovers.RESTORE_SCRATCH)]
    report = janitor.clean(scratch=scratch, directories=[params["backup_dir"], plan["work_dir"]])
    for warning in janitor.warnings:
        log(f"warning: {warning}")
    return report


def _claim(plan, scratch, log):
    """The lock that tells other runs the scratch database is this run's (see leftovers.claim_database)."""
    database = plan["restore"]["source_database"]
    lock = leftovers.claim_database(plan["restore"]["backup_dir"], scratch, f"verification of {database}")
    if lock is None:
        raise Failure("restore", f"the scratch database {scratch} is claimed by another verification run")
    if lock.warning:
        log(f"warning: {lock.warning}")
    return lock


def record_path(entry, plan):
    """Where the verification of entry is recorded: ``<stem>.verify.json`` beside its manifest, or None.

    A backup pulled from offsite into a temporary directory is recorded beside the local copy of the
    same backup in backup_dir, when there is one.
    """
    stem = entry["name"]
    if plan["source"] == "offsite":
        directory = plan["restore"]["backup_dir"]
        if not os.path.isfile(os.path.join(directory, catalog.manifest_name(stem))):
            return None
    else:
        directory = os.path.dirname(entry["manifest_path"] or entry["path"])
    return os.path.join(directory, catalog.verify_name(stem))


def _restore(plan, entry, scratch, log):
    """Restore entry into scratch with the checks and assertions; returns the engine's result or raises Failure."""
    params = dict(plan["restore"], database=scratch, mode="into", confirm=True)
    params["backup"] = entry["manifest_path"] or entry["path"]
    params["backup_dir"] = os.path.dirname(entry["path"])
    try:
        return pg_restore.restore(params, log=log)
    except (PgError, catalog.CatalogError) as err:
        if isinstance(err, leftovers.Interrupted):
            raise
        details = dict(err.details)
        check = details.pop("failed_check", None) or "restore"
        raise Failure(check, err.msg, **details) from None


def _summary(doc):
    keep = ("result", "backup", "failed_check", "duration", "record", "tables", "rows", "scratch_database")
    out = {k: doc.get(k) for k in keep}
    out["assertions"] = len(doc.get("assertions") or [])
    return out


def _verify(plan, entry, scratch, log):
    """Restore entry into scratch and check it, then drop scratch whatever happened. Returns the restore result."""
    conn = Connection.from_params(plan["restore"])
    log(f"verifying {entry['name']} of {plan['restore']['source_database']} in the scratch database {scratch}")
    failure = None
    outcome = None
    try:
        outcome = _restore(plan, entry, scratch, log)
    except Failure as err:
        failure = err
    finally:
        psql = Psql(conn)
        dropped = _drop(psql, conn, scratch)
        log(f"could not drop the scratch database {scratch}: {dropped}" if dropped else f"dropped {scratch}")
    if dropped:
        what = "failed" if failure else "passed"
        msg = (
            f"the scratch database {scratch} could not be dropped ({dropped}); drop it by hand: "
            f"DROP DATABASE {quote_ident(scratch)} WITH (FORCE);"
        )
        if failure:
            failure.msg += f" Also, {msg}"
            raise failure
        raise Failure("scratch database dropped", f"the verification {what}, but {msg}")
    if failure:
        raise failure
    return outcome


def _document(plan, entry, *, outcome, failure, scratch, started, clock):
    """The verification record (also the job's result)."""
    database = plan["restore"]["source_database"]
    outcome = outcome or {}
    details = failure.details if failure else {}
    doc = {
        "result": "fail" if failure else "pass",
        "ok": failure is None,
        "database": database,
        "backup": entry["name"] if entry else None,
        "backup_path": entry["path"] if entry else None,
        "source": plan["source"],
        "scratch_database": scratch if entry else None,
        "checks": outcome.get("verified") or details.get("verified") or [],
        "assertions": outcome.get("assertions") or details.get("assertions") or [],
        "failed_check": failure.check if failure else None,
        "started_at": catalog.iso(started),
        "finished_at": catalog.iso(catalog.utcnow()),
        "duration": round(time.monotonic() - clock, 3),
        "tables": outcome.get("tables"),
        "rows": outcome.get("rows"),
        "timings": outcome.get("timings"),
        "host": os.uname()[1],
    }
    if plan.get("via"):
        doc["via"] = plan["via"]
    if failure:
        what = f"backup {entry['name']} of {database}" if entry else f"the backups of {database}"
        doc["msg"] = f"verification of {what} FAILED (check: {failure.check}): {failure.msg}"
    else:
        doc["msg"] = (
            f"backup {entry['name']} of {database} verified in {doc['duration']:.1f} s: {doc['tables']} tables with "
            f"the manifest's row counts ({doc['rows']} rows), {len(doc['assertions'])} assertion(s) hold; "
            f"scratch database {scratch} dropped"
        )
    return doc


def run(config, log=None, check_mode=False, environ=None, via=None):
    """One verification run (see the module docstring). Raises specs.SpecError for a bad configuration.

    ``environ`` replaces ``os.environ`` for the options' environment fallbacks (the secrets); ``via``, when
    given, is recorded (``playbook`` for the module ``dr_job``; the timer records none).
    """
    log = log or (lambda msg: None)
    plan = resolve_config(config, environ=environ, log=log)
    plan["via"] = via
    started = catalog.utcnow()
    clock = time.monotonic()
    scratch = leftovers.derived_name(plan["scratch"], "_" + leftovers.stamp(started))
    if check_mode:
        return _check_mode_result(plan, scratch, log)
    with leftovers.interruptible():
        return _run(plan, scratch, started, clock, log)


def _run(plan, scratch, started, clock, log):
    report = _clean(plan, log)
    work = claim = entry = outcome = failure = None
    try:
        if plan["source"] == "offsite":
            if not os.path.isdir(plan["work_dir"]):
                catalog.ensure_directory(plan["work_dir"])
            database = plan["restore"]["source_database"]
            work = leftovers.WorkDir(plan["work_dir"], "verify", f"verification of {database}: the offsite copy")
        entry, _pulled = _pick(plan, log, False, work.path if work else None)
        claim = _claim(plan, scratch, log)
        outcome = _verify(plan, entry, scratch, log)
    except Failure as err:
        failure = err
    except leftovers.Interrupted as err:
        _explain_interruption(err, plan, scratch, claim)
        claim = None
        raise
    finally:
        if work is not None:
            work.remove()
        if claim is not None:
            claim.release(remove=True)
    doc = _document(plan, entry, outcome=outcome, failure=failure, scratch=scratch, started=started, clock=clock)
    doc["record"] = record_path(entry, plan) if entry else None
    if doc["record"]:
        try:
            catalog.write_json_atomic(doc["record"], doc)
            log(f"result recorded in {doc['record']}")
        except OSError as err:
            log(f"cannot write the verification record {doc['record']}: {err.strerror}")
            doc["record"] = None
    return dict(doc, failed=failure is not None, changed=True, summary=_summary(doc), leftovers=report)


def _explain_interruption(err, plan, scratch, claim):
    """The message of a verification cut short by a signal; lets go of the scratch database's claim."""
    conn = Connection.from_params(plan["restore"])
    problem = _drop(Psql(conn), conn, scratch)
    if claim is not None:
        claim.release(remove=problem is None)
    gone = (
        f"the scratch database {scratch} is gone" if problem is None else f"{scratch} could not be dropped ({problem})"
    )
    err.msg = (
        f"the verification of {plan['restore']['source_database']} was interrupted by {err.signame}: {gone}, the "
        "work directory was removed and no result was recorded beside the backup (this says nothing about it). "
        f"What the restore said: {err.msg}"
    )
    err.explained = True


def _check_mode_result(plan, scratch, log):
    """What a run would do: the backup it would verify (checksums verified for a local one)."""
    try:
        entry, pulled = _pick(plan, log, True, plan["work_dir"])
    except Failure as err:
        return {
            "failed": True,
            "msg": f"check mode: the verification would fail (check: {err.check}): {err.msg}",
            "failed_check": err.check,
            "summary": {"failed_check": err.check},
        }
    if entry is None:
        msg = (
            f"check mode: would pull {pulled['name']} of {plan['restore']['source_database']} from offsite, restore it "
            f"into {scratch}, check it and drop {scratch}"
        )
        return {"failed": False, "changed": False, "msg": msg, "summary": {"backup": pulled["name"]}}
    params = dict(plan["restore"], database=scratch, mode="into", backup=entry["manifest_path"] or entry["path"])
    try:
        result = pg_restore.restore(params, check_mode=True, log=log)
    except (PgError, catalog.CatalogError) as err:
        check = err.details.get("failed_check") or "restore"
        return {
            "failed": True,
            "msg": f"check mode: verification of backup {entry['name']} would fail (check: {check}): {err.msg}",
            "failed_check": check,
            "summary": {"backup": entry["name"], "failed_check": check},
        }
    count = len(plan["restore"]["assertions"])
    msg = (
        f"check mode: {'; '.join(result['verified'])}; would restore {entry['name']} into {scratch}, check tables, "
        f"row counts and {count} assertion(s), drop {scratch} and record the result"
    )
    return {"failed": False, "changed": False, "msg": msg, "summary": {"backup": entry["name"]}}
