# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The commit of a recovery: (stop the app,) swap the staged database in, restart the app, wait until it
answers healthy - one call on the server that a lost controller cannot cut in two.

Over a connection that does not end the remote process when the controller dies (docker exec, an SSH
session whose client was SIGKILLed), a module keeps running; over one that does (SIGHUP), it is killed.
Either way, a recovery whose steps are separate tasks could end swapped with the application stopped.
This engine ignores SIGINT, SIGTERM, SIGHUP and SIGPIPE from its first step to its last, so once it
starts, it finishes: the live database is either untouched (a refused or failed swap, the app started
again when this call stopped it) or swapped with the application restarted. Each step is recorded in
the recovery record first (tokotani.dr.recovery_run), so an interrupted run's record says how far it got.

The swap is the one of the restore engine (pg_restore.RestoreEngine, mode swap: a compare-and-swap on
both OIDs); the app is driven by the pm2 engine (pm2.ensure_process), as pm2_process does.
"""

from __future__ import annotations

import contextlib
import signal
import time

from ansible_collections.tokotani.dr.plugins.module_utils import checklist, checklist_run, pg_restore, pm2
from ansible_collections.tokotani.dr.plugins.module_utils import recovery_run as recovery
from ansible_collections.tokotani.dr.plugins.module_utils.errors import DrError
from ansible_collections.tokotani.dr.plugins.module_utils.pg_cli import Connection, PgError
from ansible_collections.tokotani.dr.plugins.module_utils.specs import (
    keep_previous_argument_spec,
    key_argument_spec,
    postgres_argument_spec,
)

HEALTH_POLL = 0.2
HEALTH_REQUEST_TIMEOUT = 5
SHIELDED = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGPIPE") if hasattr(signal, name))


def argument_spec():
    """tokotani.dr.recovery_commit: the swap of a staged database and the app around it."""
    app = {
        key: value
        for key, value in pm2.process_argument_spec().items()
        if key in ("ecosystem", "only", "min_uptime", "wait_timeout", "log_lines", "user", "pm2_home", "executable")
    }
    app["ecosystem"] = dict(app["ecosystem"], required=True)
    spec = postgres_argument_spec()
    spec.update(
        database={"type": "str", "required": True, "aliases": ["db"]},
        state_dir={"type": "path", "required": True},
        run_id={"type": "str", "required": True},
        staging_database={"type": "str", "required": True},
        staged_oid={"type": "int", "required": True},
        expected_oid={"type": "int"},
        backup_dir={"type": "path"},
        stop_first={"type": "bool", "default": False},
        app={"type": "dict", "required": True, "options": app},
        confirm={"type": "bool", "default": False},
        login_os_user={"type": "str"},
        health_url={"type": "str"},
        health_timeout={"type": "int", "default": 30},
        **keep_previous_argument_spec(),
    )
    spec.update(key_argument_spec())
    return spec


class CommitError(DrError):
    """The commit stopped; its message says where every database and the app are."""


@contextlib.contextmanager
def shielded():
    """The signals a lost controller sends are ignored for the block (and restored after it)."""
    previous = {}
    for signum in SHIELDED:
        with contextlib.suppress(OSError, ValueError):
            previous[signum] = signal.signal(signum, signal.SIG_IGN)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            with contextlib.suppress(OSError, ValueError, TypeError):
                signal.signal(signum, handler)


class Commit:
    def __init__(self, module, params, check_mode=False):
        self.module = module
        self.p = params
        self.check_mode = check_mode
        self.database = params["database"]
        self.steps = []
        self.warnings = []
        self.swap = None

    def _record(self, step, databases=None, *, must=True):
        """Record step in the recovery record; before the swap a failure stops the commit (this run may no
        longer own the recovery), after it only a warning (the app must still be restarted)."""
        if self.check_mode:
            return
        params = {
            "database": self.database,
            "state_dir": self.p["state_dir"],
            "run_id": self.p["run_id"],
            "step": step,
            "databases": databases or {},
        }
        try:
            recovery.RecoveryRun(params).step()
        except DrError as err:
            if must:
                raise
            self.warnings.append(f"step {step} could not be recorded: {err.msg}")
        self.steps.append(step)

    def _app(self, state):
        """pm2_process with its own defaults, the app's options and state."""
        app = {key: option.get("default") for key, option in pm2.process_argument_spec().items()}
        app.update(self.p["app"], state=state)
        return pm2.ensure_process(self.module, app, check_mode=self.check_mode)

    def _restore_params(self, mode):
        own = ("app", "stop_first", "run_id", "state_dir", "health_url", "health_timeout")
        params = {k: v for k, v in self.p.items() if k not in own}
        params.update(mode=mode, backup_dir=self.p.get("backup_dir") or self.p["state_dir"])
        return params

    def run(self):
        result = {"changed": False, "database": self.database, "stopped": None, "swap": None, "restart": None}
        conn = Connection.from_params(self.p)
        swap = self.swap = pg_restore.RestoreEngine(conn, self._restore_params("swap"), check_mode=self.check_mode)
        with shielded():
            stopped = None
            if self.p.get("stop_first"):
                self._record("stop")
                stopped = self._app("stopped")
                result.update(stopped=stopped, changed=True)
            self._record("swap", {"staging": self.p["staging_database"]})
            try:
                swapped = swap.run()
            except PgError as err:
                raise self._swap_failed(err, stopped) from None
            result.update(swap=swapped, changed=True)
            self.warnings.extend(swapped.pop("warnings", []))
            if self.check_mode:
                result["msg"] = swapped["msg"] + "; would restart the application"
                return result
            databases = {
                "previous": swapped["previous_database"],
                "previous_oid": swapped["previous_oid"],
                "restored_oid": swapped["restored_oid"],
            }
            self._record("restart", databases, must=False)
            # what a failure after the swap returns, under the names of a success: the caller swaps back with them
            kept = {key: swapped[key] for key in ("previous_database", "previous_oid", "restored_oid")}
            try:
                result["restart"] = self._app("restarted")
            except pm2.Pm2Error as err:
                err.msg = (
                    f"{swapped['msg']}, but the application did not come back: {err.msg}. {self.database} holds the "
                    f"restored backup; the previous database is kept as {swapped['previous_database'] or '(none)'}."
                )
                err.details.update(swap=swapped, failed_step="restart", **kept)
                raise
            if self.p.get("health_url"):
                self._record("health", must=False)
                healthy, said = self._wait_healthy()
                result["health"] = said
                if not healthy:
                    raise CommitError(
                        f"{swapped['msg']} and the application restarted, but it is not healthy: {said} (for "
                        f"{self.p['health_timeout']} s). {self.database} holds the restored backup; the previous "
                        f"database is kept as {swapped['previous_database'] or '(none)'}.",
                        swap=swapped,
                        failed_step="health",
                        **kept,
                    )
                # the moment the shop answers again: the end of its downtime (recovery_run.downtime)
                self._record("serving", must=False)
        result.update(
            previous_database=swapped["previous_database"],
            previous_oid=swapped["previous_oid"],
            restored_oid=swapped["restored_oid"],
            steps=self.steps,
            msg=f"{swapped['msg']}; the application was restarted",
        )
        return result

    def _wait_healthy(self):
        """(healthy, what it answered last): health_url polled from this server every HEALTH_POLL seconds until
        it answers 200 with database ok (checklist.health_check), at most health_timeout seconds."""
        deadline = time.monotonic() + max(0, self.p["health_timeout"])
        while True:
            answer = checklist_run.http_request(self.p["health_url"], HEALTH_REQUEST_TIMEOUT, ok=(200, 503))
            healthy, said = checklist.health_check(answer)
            if healthy or time.monotonic() >= deadline:
                return healthy, said
            time.sleep(HEALTH_POLL)

    def _swap_failed(self, err, stopped):
        """The swap changed nothing (refused, a compare-and-swap mismatch, an SQL error): start the app again
        when this call stopped it, and say so."""
        text = err.msg
        if stopped is not None:
            try:
                self._app("started")
                text += " The application was started again on the untouched database."
            except pm2.Pm2Error as start_err:
                text += f" The application did NOT start again: {start_err.msg}"
        details = {k: v for k, v in err.details.items() if k not in ("msg", "swapped", "app_stopped")}
        return CommitError(text, swapped=False, app_stopped=stopped is not None, **details)


def commit(module, params, check_mode=False):
    """The module's entry: returns the result, raises a DrError (with swapped: whether the swap committed)."""
    engine = Commit(module, params, check_mode=check_mode)
    try:
        result = engine.run()
    except DrError as err:
        err.details.setdefault("swapped", bool(engine.swap and engine.swap.swapped))
        raise
    result["warnings"] = engine.warnings
    return result
