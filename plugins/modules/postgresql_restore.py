#!/usr/bin/python
# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Engine: plugins/module_utils/pg_restore.py (restore, RestoreEngine).

DOCUMENTATION = r"""
module: postgresql_restore
short_description: Restore a PostgreSQL backup into a new database, check it, and swap it in atomically
version_added: "0.1.0"
description:
  - Restores a backup made by M(tokotani.dr.postgresql_backup), or a plain C(.sql.gz) from the team's
    earlier scripts (no manifest), and never loses data doing it.
  - Refuses to run unless O(confirm=true); the message says how to confirm.
  - Verifies the backup before touching anything - the sha256 of the manifest (every file of a directory
    backup), or the whole gzip stream of a legacy C(.sql.gz).
  - O(mode=replace) (default) - restores into a new database C(<database>__restore_<timestamp>), checks that
    every table of the manifest is there with exactly the manifest's row count, runs ANALYZE, gives it the live
    database's owner, privileges, C(ALTER DATABASE ... SET) settings, comment and connection limit, then
    terminates the connections to the live database and swaps the two with renames in one transaction. The
    previous database stays as C(<database>__pre_restore_<timestamp>). When the live database does not exist
    any more (it was dropped), the restored one simply takes its name, with the properties recorded in the
    manifest.
  - O(mode=stage) and O(mode=swap) - the two halves of O(mode=replace), for a recovery that restores and checks while
    the application still serves and stops it only for the swap (M(tokotani.dr.recovery_commit)), or that must
    not be cut in two by a lost controller. O(mode=stage) restores and checks into C(<database>__restore_<timestamp>)
    and leaves it there (RV(staging_database), RV(restored_oid)); the live database is not touched. O(mode=swap)
    swaps that database (O(staging_database), which must still have the OID O(staged_oid)) in as in
    O(mode=replace), a compare-and-swap on both OIDs. A staged database is left alone by the cleanup of other runs
    while the recovery that staged it is in progress (M(tokotani.dr.recovery_run)); once that recovery is over,
    the next restore of the database drops it.
  - O(mode=discard) - drops the database O(mode=stage) made (O(staging_database), only when it still has the OID
    O(staged_oid)), for a recovery that stops before its swap.
  - O(mode=into) - restores into the new database O(database) (which must not exist), with the same checks;
    nothing else is touched. Used by restore tests and backup verification.
  - O(assertions) - the operator's SQL checks, run against the restored database after the table and row-count
    checks, once it has its settings, and before the swap (O(mode=replace)) or at the end (O(mode=into)). A false
    one fails the restore like any other check - the new database is dropped and the live one is untouched.
  - O(mode=revert) - undoes a replace - swaps a kept previous database (O(previous_database), by default the newest
    C(<database>__pre_restore_<timestamp>)) back in. Terminates the connections to both and, in one transaction,
    renames the current O(database) (when it exists) to C(<database>__failed_restore_<timestamp>) and the previous
    one to O(database). Nothing is dropped.
  - Any SQL error fails the restore (C(pg_restore --exit-on-error), C(psql -v ON_ERROR_STOP=1)). On any
    failure the new database is dropped and the live database is exactly as it was.
  - SIGTERM, SIGINT and SIGHUP are failures like any other - the children (C(pg_restore) and its workers, the
    decompressors, C(psql), C(vacuumdb)) are stopped, the new database is dropped and the message says so
    (C(the restore was interrupted by SIGTERM - pg_restore was stopped, the scratch database ... was dropped and
    the live database ... is as it was)). A signal during the swap waits until its transaction has committed or
    rolled back, so the live database is never left missing. The children run under C(setpriv --pdeathsig KILL)
    (util-linux), so that even C(kill -9) of the module leaves no C(pg_restore) running.
  - First of all (once confirmed) it removes what interrupted runs left - C(<database>__restore_<timestamp>)
    databases and C(.tokotani-restore-*) staging directories (in the backup directory, O(work_dir) and the temporary
    directory) whose run is gone. Each run holds a lock on a lock file named after what it makes
    (C(.tokotani-db.<name>.lock) in the backup directory, C(<directory>.lock) beside a directory) for its whole life;
    a leftover whose lock file no process holds is stale, and one without a lock file only once it is more than a
    day old (made on another host, or by an older version). Its connections (an orphaned C(pg_restore)) are
    terminated before it is dropped. RV(leftovers) says what was removed and what was left, and why.
  - Holds a shared lock on the backup it reads (C(.tokotani-use.<name>.lock) beside it) for its whole run, so that
    retention does not remove it meanwhile; other readers are never blocked.
  - After a swap (O(mode=replace) or O(mode=revert)) applies O(keep_previous) to the kept databases of O(database)
    and reports it in RV(kept_databases).
  - Passwords reach C(pg_restore) and C(psql) through the environment, never through their command line.
author:
  - TokoTani DevOps Team (@tokotani)
extends_documentation_fragment:
  - tokotani.dr.postgres
  - tokotani.dr.backup_key
  - tokotani.dr.suspicious
  - tokotani.dr.keep_previous
  - tokotani.dr.server_log
attributes:
  check_mode:
    support: full
    description:
      - Resolves and verifies the backup (checksums included) and reports what it would do; O(confirm) is not needed.
  diff_mode:
    support: none
    description: There is nothing to compare; the result describes what was done.
options:
  database:
    description:
      - O(mode=replace) - the database to replace (it may be missing).
      - O(mode=into) - the new database to restore into.
      - O(mode=revert) - the database to give back its previous content (it may be missing).
    type: str
    required: true
    aliases: [db]
  backup:
    description:
      - The backup - a path to its data (file or directory) or manifest; a name in O(backup_dir) as an operator types
        it - the stem (V(backup_2026-01-05_02-00-00)), the data name (V(backup_2026-01-05_02-00-00.dir),
        C(.dump), C(.sql.gz)) or the manifest name; or V(latest), the newest valid backup of O(source_database) in
        O(backup_dir) (legacy C(.sql.gz) files included).
    type: str
    default: latest
  backup_dir:
    description:
      - Directory to pick V(latest) (or a bare name) from.
    type: path
  before:
    description:
      - With O(backup=latest), take the newest valid backup that ended (its manifest's C(finished_at)) strictly before
        this time, for example from before a security breach - a backup still running then is not taken. ISO 8601
        (without a zone, UTC), a backup name, or epoch seconds.
    type: str
  mode:
    description:
      - V(replace) swaps the restored database in for O(database); V(stage) restores and checks it, stopping before
        the swap; V(swap) swaps a staged database in; V(discard) drops one; V(into) creates O(database) and leaves
        everything else alone; V(revert) swaps a kept previous database back in for O(database) (no backup is
        read, the backup options are ignored).
    type: str
    choices: [replace, stage, swap, discard, into, revert]
    default: replace
  confirm:
    description:
      - Must be V(true), or the module refuses (and changes nothing), in every mode. Check mode does not need it.
    type: bool
    default: false
  source_database:
    description:
      - The database the backup must come from, checked against the manifest. Defaults to O(database) in
        O(mode=replace) (a backup of another database is refused), and to anything in O(mode=into).
      - Also selects whose backups V(latest) looks at (default O(database)).
    type: str
  jobs:
    description:
      - Parallel C(pg_restore) jobs (directory and custom formats) and C(vacuumdb --analyze-only) jobs.
    type: int
    default: 2
  analyze:
    description:
      - Run ANALYZE on the restored database before it is swapped in, so that the application does not start
        on a database without planner statistics.
    type: bool
    default: true
  maintenance_work_mem:
    description:
      - C(maintenance_work_mem) of the restore's sessions (index builds); every job uses up to this much.
    type: str
    default: 256MB
  work_dir:
    description:
      - Where to make the staging directory of a zstd directory backup, which holds the decompressed table data
        while C(pg_restore) reads it (about the size of a plain SQL dump; removed afterwards). Defaults to the
        backup's own directory (same filesystem - uncompressed files are hard-linked, not copied), or the system's
        temporary directory when that is not writable.
    type: path
  assertions:
    description:
      - SQL checks of the restored database, for example that C(_prisma_migrations) is not empty.
      - Each query must return exactly one row whose first column is V(true). It runs in its own session, read-only
        at the server (C(default_transaction_read_only), C(statement_timeout) 5 minutes), connected to the restored
        database, opened as a cursor inside one C(DO) statement, so write one query (C(SELECT) or C(WITH)) that
        returns rows, without anything after it; it can neither write nor run a second statement.
      - "False, NULL, no row, several rows or an SQL error fail the restore with
        C(assertion '<name>' failed: <what it returned or the SQL error>); the new database is dropped and the live
        database is not touched."
      - Not used in O(mode=revert).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: A short name, used in messages and in RV(assertions).
        type: str
        required: true
      sql:
        description: The query.
        type: str
        required: true
  previous_database:
    description:
      - O(mode=revert) - the kept database to swap back in. Defaults to the newest
        C(<database>__pre_restore_<timestamp>) on the server (the one the last replace kept).
    type: str
  expected_oid:
    description:
      - Compare-and-swap - the OID the live database must have for the swap to happen (the one a recovery saw at its
        start, RV(tokotani.dr.recovery_run#module:live_oid); in O(mode=revert), the restored one,
        RV(restored_oid)). When the live database is another one (a concurrent recovery swapped its own in), nothing
        is changed and the run fails saying what it found.
      - Whatever this says, the swap itself commits only if, after the renames, the databases are the ones the run
        saw a moment before; otherwise it rolls back.
    type: int
  staging_database:
    description:
      - O(mode=swap) and O(mode=discard) - the database O(mode=stage) made (its RV(staging_database)). Only a scratch
        name of O(database), C(<database>__restore_<timestamp>), is accepted.
    type: str
  staged_oid:
    description:
      - O(mode=swap) and O(mode=discard) - the OID O(staging_database) must have (RV(restored_oid) of the stage);
        required with them. Another database of that name is never swapped in or dropped.
    type: int
  previous_oid:
    description:
      - O(mode=revert) - the OID the kept database of O(previous_database) must have (RV(previous_oid) of the replace
        that kept it); another database of that name is never swapped in.
    type: int
notes:
  - The restore's own sessions run with C(synchronous_commit=off); the swap commits synchronously, which
    flushes all of it.
  - Roles are not part of a database backup; the roles that own objects must exist on the server.
  - "Measured on this project's 2-core machine with the generated shop database (about 1 GB) - C(gunzip | psql)
    of the plan's C(.sql.gz) 14 s on an idle machine, 19-20 s on a busy one; this module (default format,
    checksums, checks, ANALYZE and swap included) 12-14 s. The restore is CPU-bound and PostgreSQL already
    builds indexes in parallel for a single C(psql) session, so on two cores the gain is 1.1x to 1.6x;
    C(bench/README.md) has the analysis, C(make bench) reruns the comparison."
seealso:
  - module: tokotani.dr.postgresql_backup
  - module: tokotani.dr.backup_info
"""

EXAMPLES = r"""
- name: Restore the newest backup over the shop database (the plan's "npm run phase10:restore <file> --confirm")
  tokotani.dr.postgresql_restore:
    database: tokotani
    backup: latest
    backup_dir: /srv/tokotani/backups
    confirm: "{{ confirm | default(false) | bool }}"
    login_host: 127.0.0.1
    login_password: "{{ vault_postgres_password }}"
  register: restored

- name: Report
  ansible.builtin.debug:
    msg: "{{ restored.msg }}; previous database kept as {{ restored.previous_database }}"

- name: Restore a legacy .sql.gz from the earlier scripts
  tokotani.dr.postgresql_restore:
    database: tokotani
    backup: /srv/tokotani/backups/backup_2026-01-03_02-00-00.sql.gz
    confirm: true

- name: Weekly restore test into a scratch database
  tokotani.dr.postgresql_restore:
    database: tokotani_verify
    source_database: tokotani
    mode: into
    backup_dir: /srv/tokotani/backups
    confirm: true

- name: Restore with the shop's own checks; any false one leaves the live database untouched
  tokotani.dr.postgresql_restore:
    database: tokotani
    backup_dir: /srv/tokotani/backups
    confirm: true
    assertions:
      - name: prisma migrations applied
        sql: SELECT count(*) > 0 FROM _prisma_migrations
      - name: sessions table present
        sql: SELECT to_regclass('public.sessions') IS NOT NULL

- name: Undo the last replace - swap the database it kept back in
  tokotani.dr.postgresql_restore:
    database: tokotani
    mode: revert
    confirm: true
  register: reverted

- name: Restore and check while the shop still serves; nothing live is touched yet
  tokotani.dr.postgresql_restore:
    database: tokotani
    backup_dir: /srv/tokotani/backups
    mode: stage
    confirm: true
  register: staged

- name: Swap the staged copy in, only if both databases are still the ones the stage saw
  tokotani.dr.postgresql_restore:
    database: tokotani
    mode: swap
    backup_dir: /srv/tokotani/backups
    staging_database: "{{ staged.staging_database }}"
    staged_oid: "{{ staged.restored_oid }}"
    expected_oid: "{{ staged.live_oid }}"
    confirm: true

- name: Restore from before the breach
  tokotani.dr.postgresql_restore:
    database: tokotani
    backup_dir: /srv/tokotani/backups
    before: "2026-01-05T08:30:00+07:00"
    confirm: true
"""

RETURN = r"""
restored_database:
  description: The database that now holds the backup (O(mode=revert) - the previous content).
  returned: always
  type: str
  sample: tokotani
previous_database:
  description:
    - Where the database it replaced was kept (null in O(mode=into), or when there was none).
    - In O(mode=revert), the C(<database>__failed_restore_<timestamp>) the current database was renamed to.
  returned: always
  type: str
  sample: tokotani__pre_restore_20260105_083512
restored_oid:
  description:
    - The OID of the database now live as O(database) (O(mode=replace), O(mode=swap) and O(mode=revert)); in
      O(mode=stage), of the staged database (for O(staged_oid)).
  returned: success, when not in check mode
  type: int
  sample: 16990
previous_oid:
  description: The OID of the database kept as RV(previous_database) (null when there was none).
  returned: success, when not in check mode
  type: int
  sample: 16384
reverted_from:
  description: The kept database swapped back in (O(mode=revert)).
  returned: when O(mode=revert)
  type: str
  sample: tokotani__pre_restore_20260105_083512
staging_database:
  description:
    - The name the backup was restored under before the swap (O(mode=replace)); in O(mode=stage), where it stays for
      O(mode=swap).
  returned: always
  type: str
  sample: tokotani__restore_20260105_083512
backup:
  description: The backup restored (see RV(tokotani.dr.backup_info#module:backups) for the fields).
  returned: when O(mode) is V(replace) or V(into)
  type: dict
backup_path:
  description: Path of the backup's data.
  returned: when O(mode) is V(replace) or V(into)
  type: str
  sample: /srv/tokotani/backups/backup_2026-01-05_02-00-00.dir
mode:
  description: The mode used.
  returned: always
  type: str
  sample: replace
duration:
  description: Seconds from start to finish (verification, restore, checks, ANALYZE and swap).
  returned: success and not check mode
  type: float
  sample: 12.4
timings:
  description: Seconds per phase - verify, load, check_analyze_settings, assertions (when given), swap.
  returned: success and not check mode
  type: dict
  sample: {"verify": 0.13, "load": 11.5, "check_analyze_settings": 0.67, "swap": 0.02}
tables:
  description: Number of tables checked.
  returned: success and not check mode
  type: int
  sample: 8
rows:
  description: Total rows checked against the manifest (null for a legacy backup).
  returned: success and not check mode
  type: int
  sample: 7080944
verified:
  description: What was verified, in words (on failure, what held before the failed check).
  returned: always
  type: list
  elements: str
  sample: ["sha256 of backup_2026-01-05_02-00-00.dir matches the manifest",
           "8 tables present with the manifest's row counts (7080944 rows)"]
assertions:
  description:
    - The assertions that held, in order (empty in check mode, where nothing is restored).
    - On failure the result has RV(assertions) up to the failed one (with C(ok=false) and C(problem)), C(assertion)
      (its name) and C(failed_check).
  returned: always
  type: list
  elements: dict
  sample: [{"name": "prisma migrations applied", "ok": true}]
failed_check:
  description:
    - Which check failed - C(backup integrity), C(restore without SQL errors), C(tables present), C(row counts)
      or C(assertion '<name>').
  returned: failure, when a check of the backup or of the restored database failed
  type: str
  sample: row counts
swap_attempts:
  description: How many tries the swap took (clients reconnecting make it retry).
  returned: success and not check mode
  type: int
  sample: 1
leftovers:
  description:
    - What interrupted runs had left, and what this run did with each, as in
      RV(tokotani.dr.postgresql_backup#module:leftovers) (scratch databases of O(database), staging directories).
  returned: success
  type: list
  elements: dict
kept_databases:
  description:
    - What O(keep_previous) did after the swap, as in RV(tokotani.dr.postgresql_backup#module:kept_databases). A
      restore drops only the kept databases that a backup of them already holds; the others it leaves to the next
      backup run. Empty in check mode and in O(mode=into).
  returned: success
  type: list
  elements: dict
live_oid:
  description: O(mode=stage) - the OID of the live database the stage left untouched (for O(expected_oid) of the swap).
  returned: success in O(mode=stage), when not in check mode
  type: int
  sample: 16384
dropped:
  description: O(mode=discard) - the staged database dropped (null when it was not there).
  returned: when O(mode=discard)
  type: str
  sample: tokotani__restore_20260105_083512
interrupted_by:
  description: The signal that stopped the run (V(SIGTERM), V(SIGINT) or V(SIGHUP)); RV(msg) says what was undone.
  returned: failure, when a signal stopped the run
  type: str
  sample: SIGTERM
msg:
  description: What was done.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tokotani.dr.plugins.module_utils.errors import call
from ansible_collections.tokotani.dr.plugins.module_utils.pg_restore import restore
from ansible_collections.tokotani.dr.plugins.module_utils.specs import restore_argument_spec


def main():
    module = AnsibleModule(argument_spec=restore_argument_spec(), supports_check_mode=True)
    result, failure = call(restore, module.params, check_mode=module.check_mode)
    if failure:
        module.fail_json(changed=False, **failure)
    for warning in result.pop("warnings", []):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
