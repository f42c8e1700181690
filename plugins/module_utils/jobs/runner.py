# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host-side runner behind the backup roles' systemd timers: ``tokotani-dr <job> --config FILE``.

One engine, several front doors (docs/development.md). The modules are one door; this runner is
the other, for the timers that must keep working when the controller and AWX are down. It runs
on the host with the collection's module_utils copied beside it (``HOST_MODULES``) and no Ansible
installed, and calls the same engines as the modules (the jobs ``jobs/backup.py`` and
``jobs/verify.py`` chain them). The module ``tokotani.dr.dr_job`` calls ``execute`` too: a playbook
run and a timer run are the same run.

A job's ``run(config, log, check_mode, environ, via)`` returns a result dict (``failed``, ``msg`` and details)
or raises an error with ``to_dict()``. The runner logs progress to stderr (the journal), prints
the result as one JSON document on stdout, writes the status file named by the config's
``status_file`` (keeping the previous ``last_success`` when a run fails, so monitoring can
tell how old the last good run is), and exits 0 on success, 1 on failure, 2 on bad usage or
configuration (a job raises ``specs.SpecError`` for a configuration its specs refuse, before it
does anything).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

from ansible_collections.tokotani.dr.plugins.module_utils import backup_catalog as catalog
from ansible_collections.tokotani.dr.plugins.module_utils.jobs import backup as backup_job
from ansible_collections.tokotani.dr.plugins.module_utils.jobs import verify as verify_job
from ansible_collections.tokotani.dr.plugins.module_utils.specs import SpecError

JOBS = {"backup": backup_job, "verify": verify_job}

# What runs on a host without Ansible: this runner's whole import closure, as paths under module_utils/.
# The role tokotani.dr.backup installs exactly these (lookup tokotani.dr.runner_files); a unit test imports
# the runner with Ansible made unimportable and checks that the closure is this list, no more, no less.
HOST_MODULES = (
    "errors.py",
    "text.py",
    "locks.py",
    "backup_catalog.py",
    "manifest_schema.py",
    "backup_keys.py",
    "pg_cli.py",
    "leftovers.py",
    "pg_backup.py",
    "db_checks.py",
    "pg_restore.py",
    "recovery_run.py",
    "offsite_crypto.py",
    "s3_offsite.py",
    "specs.py",
    "jobs/__init__.py",
    "jobs/runner.py",
    "jobs/backup.py",
    "jobs/verify.py",
)
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def make_logger(job, stream=None):
    """A log(msg) writing ``tokotani-dr <job>: msg`` lines to stderr (the journal under systemd)."""
    stream = stream or sys.stderr

    def log(msg):
        stream.write(f"tokotani-dr {job}: {msg}\n")
        stream.flush()

    return log


def load_config(path):
    """The job's JSON configuration (the role writes it root:postgres 0640); raises ValueError, clearly worded."""
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except OSError as err:
        raise ValueError(f"cannot read the configuration {path}: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"the configuration {path} is not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise ValueError(f"the configuration {path} must be a JSON object")
    return config


def read_status(path):
    """The previous status document ({} when missing or unreadable)."""
    try:
        with open(path, encoding="utf-8") as handle:
            doc = json.load(handle)
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def status_document(job, result, started, finished, previous):
    """The status file's content after a run: this run, and the last successful one."""
    ok = not result.get("failed")
    run = {
        "job": job,
        "ok": ok,
        "started_at": catalog.iso(started),
        "finished_at": catalog.iso(finished),
        "started_at_epoch": round(started.timestamp(), 6),
        "finished_at_epoch": round(finished.timestamp(), 6),
        "duration": round((finished - started).total_seconds(), 3),
        "msg": result.get("msg", ""),
        "summary": result.get("summary", {}),
        "skipped": bool(result.get("skipped")),
    }
    # A skipped run (a recovery was in progress) did not fail, and did not succeed either: the age of the
    # last success keeps growing for monitoring.
    last_success = run if ok and not run["skipped"] else previous.get("last_success")
    return {"job": job, "last_run": run, "last_success": last_success}


def write_status(path, doc):
    if not path:
        return
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o755, exist_ok=True)
    catalog.write_json_atomic(path, doc)
    os.chmod(path, 0o644)


def run_job(job, config, log, *, check_mode=False, environ=None, via=None):
    """Import and run a job; errors become a failed result with their message.

    ``environ`` replaces ``os.environ`` for the options' environment fallbacks (the module ``dr_job``
    passes its secrets that way, as systemd's EnvironmentFile does for the timers); ``via`` names the
    front door in what the job records (null: the timer).
    """
    try:
        result = JOBS[job].run(config, log=log, check_mode=check_mode, environ=environ, via=via)
    except SpecError as err:  # the configuration: exit 2, nothing was done
        result = {"msg": f"invalid configuration: {err}", "error": "config", "failed": True}
    except Exception as err:  # every failure must reach the journal and the status file
        to_dict = getattr(err, "to_dict", None)
        result = dict(to_dict()) if callable(to_dict) else {"msg": f"{type(err).__name__}: {err}"}
        if not callable(to_dict):
            log(traceback.format_exc().rstrip())
        result["failed"] = True
    result.setdefault("failed", False)
    result.setdefault("msg", "done")
    return result


def execute(job, config, log, *, check_mode=False, environ=None, via=None):
    """One run of a job as the timers and the module ``dr_job`` make it: the result, with the status file written.

    ``config`` is the job's configuration as the role's template writes it (its ``status_file`` is taken out);
    a status file that cannot be written fails the run (monitoring reads it).
    """
    config = dict(config)
    status_file = config.pop("status_file", None)
    started = catalog.utcnow()
    clock = time.monotonic()
    result = run_job(job, config, log, check_mode=check_mode, environ=environ, via=via)
    finished = catalog.utcnow()
    result["duration"] = round(time.monotonic() - clock, 3)
    if not check_mode:
        try:
            previous = read_status(status_file or "")
            write_status(status_file, status_document(job, result, started, finished, previous))
        except OSError as err:
            log(f"cannot write the status file {status_file}: {err.strerror}")
            result["failed"] = True
            result["msg"] += f"; and the status file {status_file} could not be written: {err.strerror}"
    return result


def main(argv=None, stdout=None, stderr=None):
    stdout = stdout or sys.stdout
    parser = argparse.ArgumentParser(prog="tokotani-dr", description="TokoTani DR jobs run by systemd timers.")
    parser.add_argument("job", choices=sorted(JOBS))
    parser.add_argument("--config", required=True, help="the job's JSON configuration")
    parser.add_argument("--check", action="store_true", help="report what would be done, change nothing")
    args = parser.parse_args(argv)
    log = make_logger(args.job, stderr)
    try:
        config = load_config(args.config)
    except ValueError as err:
        log(f"FAILED: {err}")
        return EXIT_USAGE
    log(f"started ({'check mode' if args.check else 'config ' + args.config})")
    result = execute(args.job, config, log, check_mode=args.check)
    json.dump(result, stdout, sort_keys=True, default=str)
    stdout.write("\n")
    if result["failed"]:
        log(f"FAILED: {result['msg']}")
        return EXIT_USAGE if result.get("error") == "config" else EXIT_FAILED
    log(f"ok in {result['duration']:.1f} s: {result['msg']}")
    return EXIT_OK
