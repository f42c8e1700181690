# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What tokotani.dr.backup_info reports: the catalog (backup_catalog.collect_info) with who reads each
backup now, the leftovers of interrupted runs (leftovers.Janitor in check mode), the databases restores
kept, and the recovery of the database: in progress, interrupted (with what it left), or how the last
one ended (recovery_run.report). Read-only."""

from __future__ import annotations

from ansible_collections.tokotani.dr.plugins.module_utils import backup_catalog as catalog
from ansible_collections.tokotani.dr.plugins.module_utils import backup_keys
from ansible_collections.tokotani.dr.plugins.module_utils import recovery_run as recovery
from ansible_collections.tokotani.dr.plugins.module_utils.leftovers import (
    KEEP_PREVIOUS,
    KEEP_PREVIOUS_DAYS,
    RESTORE_SCRATCH,
    Janitor,
)
from ansible_collections.tokotani.dr.plugins.module_utils.pg_cli import Connection, Psql


def backup_info(params, now=None):
    """The module's result; returns (result, failure) as backup_catalog.collect_info does."""
    result, failure = catalog.collect_info(params, now)
    directory = params["backup_dir"]
    for item in result["backups"]:
        item["in_use"] = catalog.in_use({"directory": directory, "name": item["name"]})
    clock = (now or catalog.utcnow()).timestamp()
    kept = params.get("kept_databases")
    database = params.get("database")
    if kept and not database:
        raise catalog.CatalogError("kept_databases needs database: whose kept databases to list")
    psql = Psql(Connection.from_params(params)) if kept else None
    running = None
    if database:
        result["recovery"] = recovery.report(directory, database, psql=psql, now=clock)
        running, _note = recovery.in_progress(directory, database, now=clock)
    janitor = Janitor(psql, directory, check_mode=True)
    scratch = [(database, RESTORE_SCRATCH)] if kept else []
    keep_since = int(running["started_at"]) if running else None
    report = janitor.clean(scratch=scratch, directories=[directory], now=clock, keep_since=keep_since)
    if kept:
        result["kept_databases"] = janitor.keep_previous(
            database,
            directory,
            keep=params.get("keep_previous", KEEP_PREVIOUS),
            keep_days=params.get("keep_previous_days", KEEP_PREVIOUS_DAYS),
            now=clock,
            keys=backup_keys.keyring(params),
        )
        result["warnings"] = janitor.warnings
    result["leftovers"] = report
    return result, failure
