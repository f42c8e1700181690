# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The daily backup job of the host-side runner: ``tokotani-dr backup --config /etc/tokotani-dr/backup.json``.

One run is what the playbook ``tokotani.dr.backup`` does through the modules, with the same
engines and the same option names:

1. a backup with ``pg_backup.backup`` (tokotani.dr.postgresql_backup): it first removes what interrupted
   restores left, and its local retention (``keep_days``, ``keep_min``; a backup a run is reading is skipped)
   and ``keep_previous`` run right after the new backup is committed;
2. when ``offsite`` is configured, a push of the new backup with ``s3_offsite``
   (tokotani.dr.backup_offsite ``mode=push``), then a catch-up push of the local backups younger
   than the offsite ``keep_days`` that are not offsite yet (a run whose push failed is caught up
   by the next one), then the offsite retention (``mode=prune``, this database only).

The configuration is one JSON object (written by the role ``tokotani.dr.backup``, root:postgres 0640)::

    {
      "status_file": "/var/lib/tokotani-dr/backup-status.json",
      "backup": {
        "database": "tokotani",
        "backup_dir": "/srv/tokotani/shared/backups",
        "login_unix_socket": "/var/run/postgresql",
        "login_port": 5432,
        "keep_days": 14,
        "keep_min": 3
      },
      "offsite": {
        "bucket": "tokotani-backups",
        "prefix": "server1",
        "region": "ap-southeast-3",
        "endpoint_url": "https://s3.example.com",
        "keep_days": 14,
        "keep_min": 3
      }
    }

- ``status_file`` is read by ``dr_runner`` (the status document of every run).
- ``backup`` takes the options of tokotani.dr.postgresql_backup (``database`` and
  ``backup_dir`` are required), with their aliases, defaults and environment fallbacks
  (``PGPASSWORD`` for ``login_password``).
- ``offsite`` (absent or null: no offsite copies) takes the options of tokotani.dr.backup_offsite
  except the ones this job sets itself: ``mode``, ``backup``, ``before``, ``backup_dir`` and
  ``database`` (taken from ``backup``). ``keep_days`` and ``keep_min`` are the offsite retention.
  ``multipart_threshold`` and ``multipart_chunksize`` take sizes such as ``16MB``.
- No secrets in the file: S3 credentials come from the environment (``AWS_ACCESS_KEY_ID``,
  ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``), which systemd reads from the root-only
  ``EnvironmentFile`` before it drops privileges.

A configuration the specs refuse raises ``specs.SpecError`` before anything is done (the runner
exits 2). ``run`` returns ``{failed, msg, summary, backup, offsite}``: ``summary`` goes to the status
file. A failed backup raises the engine's error (the runner reports it, nothing was written). When
the backup succeeded and its push failed, the run fails with a message that says the local backup
is fine and kept, and what went wrong offsite (no catch-up, no offsite retention then). When the
push worked and the catch-up of an older backup failed (a damaged local copy), the offsite
retention still runs and the run fails naming that backup.
"""

from __future__ import annotations

from ansible_collections.tokotani.dr.plugins.module_utils import backup_catalog as catalog
from ansible_collections.tokotani.dr.plugins.module_utils import backup_keys, pg_backup, recovery_run, s3_offsite, specs

SECTIONS = ("backup", "offsite")
# Options of the offsite section that the job sets itself (with their aliases).
OFFSITE_SET_BY_JOB = ("mode", "backup", "before", "backup_dir", "database")


def resolve_config(config, environ=None, log=None):
    """(backup params, offsite params or None) from the job's configuration; raises specs.SpecError."""
    log = log or (lambda msg: None)
    specs.check_top_level(config, SECTIONS)
    backup_spec = specs.backup_argument_spec()
    backup_values = specs.job_section(config, "backup", backup_spec, required=True, log=log)
    try:
        backup = specs.resolve(backup_spec, backup_values, environ)
    except specs.SpecError as err:
        raise specs.SpecError(f"backup: {err}") from None
    offsite_spec = specs.offsite_argument_spec()
    offsite_values = specs.job_section(
        config,
        "offsite",
        offsite_spec,
        set_by_job=OFFSITE_SET_BY_JOB,
        why="the job pushes the new backup of the 'backup' section (its database and backup_dir) and prunes "
        "that database's copies",
        log=log,
    )
    if offsite_values is None:
        return backup, None
    values = dict(offsite_values, mode="push", backup_dir=backup["backup_dir"], database=backup["database"])
    try:
        offsite = specs.offsite_constraints(specs.resolve(offsite_spec, values, environ), retention=True)
    except specs.SpecError as err:
        raise specs.SpecError(f"offsite: {err}") from None
    return backup, offsite


def _mb(size):
    return "%.1f MB" % ((size or 0) / 1e6)


def _catch_up_candidates(params, store, log):
    """Local valid backups younger than the offsite keep_days that are not offsite (newest first)."""
    entries, _incomplete, _objects = store.catalog()
    offsite = {e["name"] for e in entries if e["valid"]}
    cutoff = catalog.utcnow().timestamp() - params["keep_days"] * 86400
    local = catalog.scan(params["backup_dir"], database=params["database"], include_legacy=False, keys=store.keys)[
        "backups"
    ]
    missing = [
        e
        for e in local
        if e["kind"] == "managed"
        and e["valid"]
        and e["name"] not in offsite
        and e["timestamp"] is not None
        and e["timestamp"] >= cutoff
    ]
    if missing:
        names = ", ".join(e["name"] for e in missing)
        log(f"offsite: {len(missing)} older local backup(s) are not offsite yet: {names}")
    return missing


OFFSITE_ERRORS = (s3_offsite.OffsiteError, catalog.CatalogError)


def _offsite(params, name, check_mode, log):
    """Push name, catch up, prune. Returns (details, error message or None).

    A failed catch-up (an older backup that cannot be pushed) does not keep the retention from
    running; its error is reported after it.
    """
    where = s3_offsite.s3_url(params["bucket"], s3_offsite.object_key(params["prefix"], ""))
    details = {"url": where, "pushed": False, "key": None, "caught_up": [], "pruned": [], "error": None}
    step = "connecting to"
    caught_up_error = None
    try:
        store = s3_offsite.Store(params)
        if check_mode:
            step = "planning the retention of"
            pruned = s3_offsite.prune(params, check_mode=True, store=store)
            details["pruned"] = [p["name"] for p in pruned["pruned"]]
            return details, None
        step = f"pushing {name} to"
        log(f"offsite: pushing {name} to {where}")
        pushed = s3_offsite.push(dict(params, backup=name), store=store)
        details.update(pushed=True, key=pushed.get("key"), status=pushed["backups"][0]["status"])
        details["push_duration"] = pushed["duration"]
        details["throughput_mb_s"] = pushed["throughput_mb_s"]
        step = "listing what is offsite on"
        for entry in _catch_up_candidates(params, store, log):
            try:
                s3_offsite.push(dict(params, backup=entry["name"]), store=store)
            except OFFSITE_ERRORS as err:
                details["error"] = getattr(err, "kind", "local")
                caught_up_error = f"catching up the older backup {entry['name']} on {where} failed: {err}"
                log(caught_up_error)
                break
            details["caught_up"].append(entry["name"])
        step = "pruning old copies on"
        pruned = s3_offsite.prune(params, store=store)
        details["pruned"] = [p["name"] for p in pruned["pruned"]]
        if details["pruned"]:
            log(f"offsite: pruned {', '.join(details['pruned'])}")
    except OFFSITE_ERRORS as err:
        details["error"] = getattr(err, "kind", "local")
        return details, caught_up_error or f"{step} {where} failed: {err}"
    return details, caught_up_error


def _offsite_baseline(params, offsite_params, log):
    """The newest valid, signed, non-suspicious offsite backup of the database, for the suspicious-backup guard
    and the space estimate when there is no backup of it here (a new or rebuilt server whose backups were
    lost): without one, a backup of a damaged database would be compared with nothing. None when there is one
    here, offsite copies are off, or they cannot be read (a warning: the guard is off for this backup)."""
    if offsite_params is None or not params.get("shrink_check", True):
        return None
    keys = backup_keys.keyring(params)
    if pg_backup.local_baseline(params["backup_dir"], params["database"], keys) is not None:
        return None
    try:
        entries, _incomplete, _objects = s3_offsite.Store(offsite_params).catalog()
    except OFFSITE_ERRORS as err:
        log(
            f"warning: there is no backup of {params['database']} here to compare the new one with, and the offsite "
            f"copies could not be read ({err}): the suspicious-backup guard is off for this backup"
        )
        return None
    for entry in entries:
        if entry.get("database") == params["database"] and entry["valid"] and not entry.get("suspicious"):
            log(f"no backup of {params['database']} here: comparing the new one with the offsite copy {entry['name']}")
            return entry
    return None


def _stand_aside(params, log):
    """The skipped result while a recovery of the database is in progress (recovery_run), else None.

    A backup then would be of the database being recovered (the damaged one, or one half swapped in)
    and would become "latest".
    """
    recovering, note = recovery_run.in_progress(params["backup_dir"], params["database"])
    if recovering is None:
        if note:
            log(f"warning: {note}")
        return None
    msg = (
        f"skipped: a recovery of {params['database']} is in progress ({note}); nothing was backed up. The next "
        "timer run backs it up, or start tokotani-backup.service once the recovery is done"
    )
    log(msg)
    return {"failed": False, "changed": False, "skipped": True, "msg": msg, "summary": {"skipped": msg}}


def run(config, log=None, check_mode=False, environ=None, via=None):
    """One backup run (see the module docstring). Raises specs.SpecError, PgError or CatalogError.

    ``environ`` replaces ``os.environ`` for the options' environment fallbacks (the secrets); ``via`` is
    unused here (the manifest's ``label`` says which front door took the backup).
    """
    del via
    log = log or (lambda msg: None)
    params, offsite_params = resolve_config(config, environ=environ, log=log)
    where = params["backup_dir"]
    aside = _stand_aside(params, log)
    if aside is not None:
        return aside
    params = dict(params, offsite_baseline=_offsite_baseline(params, offsite_params, log))
    log(f"backing up database {params['database']} into {where}{' (check mode)' if check_mode else ''}")
    result = pg_backup.backup(params, check_mode=check_mode, log=log)
    for warning in result.get("warnings") or []:
        log(f"warning: {warning}")
    pruned = [p["name"] for p in result.get("pruned") or []]
    if pruned:
        log(f"{'would prune' if check_mode else 'pruned'} local backup(s): {', '.join(pruned)}")
    summary = {
        "name": result["name"],
        "path": result["path"],
        "size": result.get("size"),
        "sha256": result.get("sha256"),
        "duration": result.get("duration"),
        "throughput_mb_s": result.get("throughput_mb_s"),
        "pruned": pruned,
        "offsite": None,
    }
    out = {"failed": False, "changed": not check_mode, "summary": summary, "backup": _public_backup(result)}
    if check_mode:
        head = f"check mode: would back up {params['database']} into {result['path']}"
    else:
        head = (
            f"backup {result['name']} of {params['database']}: {_mb(result['size'])} in {result['duration']:.1f} s "
            f"({result['path']})"
        )
        if pruned:
            head += f"; pruned {len(pruned)} old local backup(s)"
        log(head)
    if offsite_params is None:
        out["msg"] = head + "; offsite copies are off"
        return out
    details, error = _offsite(offsite_params, result["name"], check_mode, log)
    summary["offsite"] = {k: details[k] for k in ("pushed", "key", "caught_up", "pruned", "error")}
    out["offsite"] = details
    if error and not details["pushed"]:
        out["failed"] = True
        out["msg"] = (
            f"the local backup {result['name']} is fine ({result['path']}, {_mb(result['size'])}) and was kept, "
            f"but the offsite copy failed: {error}. The next run pushes it too (catch-up); to push it now, start "
            f"tokotani-backup.service again or run tokotani.dr.backup_offsite mode=push backup={result['name']}"
        )
        return out
    if error:
        out["failed"] = True
        out["msg"] = (
            f"the backup {result['name']} is fine, locally ({result['path']}, {_mb(result['size'])}) and offsite "
            f"({s3_offsite.s3_url(offsite_params['bucket'], details['key'])}), but {error}"
        )
        return out
    if check_mode:
        out["msg"] = f"{head}; offsite {details['url']}: would prune {len(details['pruned'])} old copies"
        return out
    tail = f"offsite {s3_offsite.s3_url(offsite_params['bucket'], details['key'])} {details.get('status', 'pushed')}"
    if details["caught_up"]:
        tail += f", caught up {', '.join(details['caught_up'])}"
    if details["pruned"]:
        tail += f", pruned {len(details['pruned'])} old copies"
    out["msg"] = f"{head}; {tail}"
    return out


def _public_backup(result):
    keep = ("name", "path", "manifest_path", "size", "sha256", "duration", "throughput_mb_s", "database_size")
    out = {k: result.get(k) for k in keep}
    out.update(tables=result.get("tables"), rows=result.get("rows"), pruned=result.get("pruned") or [])
    out["warnings"] = result.get("warnings") or []
    out["retention"] = result.get("retention")
    out["leftovers"] = result.get("leftovers") or []
    out["kept_databases"] = result.get("kept_databases") or []
    return out
