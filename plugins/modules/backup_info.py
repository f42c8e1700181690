#!/usr/bin/python
# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Engine: plugins/module_utils/backup_catalog.py (collect_info: scan, verify, the catalog of one directory).

DOCUMENTATION = r"""
module: backup_info
short_description: List the database backups in a directory, check them, and alert when they are stale
version_added: "0.1.0"
description:
  - Lists the backups in O(backup_dir) - those made by M(tokotani.dr.postgresql_backup) (with a manifest), and
    legacy C(backup_*.sql.gz) files from the team's earlier scripts (no manifest) - newest first, with their
    validity.
  - A backup with a manifest is valid when the manifest is well-formed and the data is there with the recorded
    size (and file list, for a directory backup); with O(verify=true) its sha256 is also recomputed.
    A legacy file is valid when it is a gzip file; with O(verify=true) its whole gzip stream is checked.
  - Reports the newest valid backup, the newest one before a given time (to restore from before a breach),
    and the age of the newest one. With O(max_age), fails when there is no valid backup that recent, so that
    monitoring notices when the nightly backup silently stopped.
  - Reports which backups a run is reading now (RV(backups[].in_use)) - restores, offsite pushes and pulls and
    verifications hold a shared lock on a backup while they read it, and retention skips it meanwhile.
  - Reports the leftovers of interrupted runs in O(backup_dir) (staging and work directories
    C(.tokotani-restore-*), C(.tokotani-verify-*)) and whether the next backup, restore or verification run removes
    them (RV(leftovers)).
  - With O(kept_databases=true), also connects to the server (the connection options) and lists the databases
    restores kept of O(database) (C(<database>__pre_restore_<timestamp>), C(<database>__failed_restore_<timestamp>))
    with what O(keep_previous) would do with each on the next backup of O(database) (RV(kept_databases)), and the
    stale C(<database>__restore_<timestamp>) scratch databases of interrupted restores. Which kept databases a
    backup in O(backup_dir) already holds decides whether one can go at once; see O(keep_previous).
  - Never changes anything; C(.partial) leftovers, stale directories and databases are reported, not removed.
author:
  - TokoTani DevOps Team (@tokotani)
extends_documentation_fragment:
  - tokotani.dr.postgres
  - tokotani.dr.keep_previous
  - tokotani.dr.backup_key
attributes:
  check_mode:
    support: full
    description: Read-only; behaves the same in check mode.
  diff_mode:
    support: none
    description: There is nothing to compare; the result describes what was done.
options:
  backup_dir:
    description:
      - Directory holding the backups.
    type: path
    required: true
  database:
    description:
      - Only list backups of this database (legacy files, which carry no database name, are always listed
        unless O(include_legacy=false)).
      - Also reports its recovery in RV(recovery) - one in progress, one interrupted, how the last one ended.
    type: str
  include_legacy:
    description:
      - List legacy C(backup_*.sql.gz) files without a manifest.
    type: bool
    default: true
  verify:
    description:
      - Recompute every backup's sha256 (or read every legacy file's whole gzip stream). Reads all the data.
    type: bool
    default: false
  before:
    description:
      - Also report in RV(newest_before) the newest valid backup that ended strictly before this time (a backup
        still running then is not taken). ISO 8601 (V(2026-01-05T02:00:00Z); without a zone, UTC), a backup name,
        or epoch seconds.
    type: str
  max_age:
    description:
      - Fail when the newest valid backup is older than this, or when there is none. Seconds, or a duration
        such as V(26h), V(90m), V(2d).
    type: str
  include_manifest:
    description:
      - Return every backup's full manifest (row counts and file lists included) in RV(backups).
    type: bool
    default: false
  kept_databases:
    description:
      - Connect to the server and report the databases restores kept of O(database) in RV(kept_databases), and
        stale scratch databases of its interrupted restores in RV(leftovers). Needs O(database).
      - Without it the module reads O(backup_dir) only, and the connection options are not used.
    type: bool
    default: false
notes:
  - A backup's time is its start, from the manifest (legacy files - from the name, in UTC, else the file's
    modification time).
  - Who reads a backup comes from its lock file C(.tokotani-use.<name>.lock) and C(/proc/locks), without taking any
    lock.
seealso:
  - module: tokotani.dr.postgresql_backup
  - module: tokotani.dr.postgresql_restore
"""

EXAMPLES = r"""
- name: Alert when the nightly backup stopped (no valid backup younger than 26 hours)
  tokotani.dr.backup_info:
    backup_dir: /srv/tokotani/backups
    database: tokotani
    max_age: 26h

- name: Find the newest backup from before the breach, re-verifying checksums
  tokotani.dr.backup_info:
    backup_dir: /srv/tokotani/backups
    database: tokotani
    before: "2026-01-05T08:30:00+07:00"
    verify: true
  register: info

- name: Restore it
  tokotani.dr.postgresql_restore:
    database: tokotani
    backup: "{{ info.newest_before.path }}"
    confirm: true
"""

RETURN = r"""
backups:
  description: Every backup, newest first.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The backup's name.
      type: str
      sample: backup_2026-01-05_02-00-00
    kind:
      description: V(managed) (with a manifest) or V(legacy) (a C(.sql.gz) without one).
      type: str
      sample: managed
    path:
      description: The data (file or directory).
      type: str
    manifest_path:
      description: The manifest (null for legacy files).
      type: str
    database:
      description: The database backed up (null for legacy files).
      type: str
    format:
      description: directory, plain or custom.
      type: str
    compression:
      description: zstd, gzip or none.
      type: str
    size:
      description: Bytes.
      type: int
    sha256:
      description: From the manifest.
      type: str
    label:
      description: From the manifest.
      type: str
    started_at:
      description: Start time, ISO 8601 UTC.
      type: str
    finished_at:
      description: End time, ISO 8601 UTC.
      type: str
    finished_at_epoch:
      description: End time, epoch seconds (the recovery point of the backup); null when unknown (legacy files).
      type: float
    timestamp:
      description: Start time, epoch seconds.
      type: float
    age_seconds:
      description: Seconds since the start.
      type: int
    valid:
      description: Whether the backup can be restored, as far as checked.
      type: bool
    verified:
      description: Whether its content was re-read (sha256 or the whole gzip stream) by this run.
      type: bool
    signed:
      description:
        - V(true) when the manifest is signed by O(backup_key) or one of O(backup_previous_keys); V(false) when it
          carries no signature (legacy files never do); null when it is signed but no key was given to check it.
        - With a key, a manifest that is not signed (without O(allow_unsigned)), signed by another key, or changed
          after signing is listed as not valid, with the reason in RV(backups[].problems).
      type: bool
    signed_by:
      description: The id of the key whose signature was checked (a hash of the key, never the key); else null.
      type: str
    problems:
      description: What makes it invalid.
      type: list
      elements: str
    tables:
      description: Number of tables in the manifest.
      type: int
    manifest:
      description: The full manifest, with O(include_manifest=true).
      type: dict
    in_use:
      description:
        - "The runs reading the backup now (C(pid <pid> on <host> since <time>: <what>)); empty when none. Retention
          skips a backup in use and removes it on a later run."
      type: list
      elements: str
count:
  description: Number of backups listed.
  returned: always
  type: int
  sample: 14
valid_count:
  description: Number of valid backups listed.
  returned: always
  type: int
  sample: 14
suspicious:
  description:
    - Names of the valid backups marked suspicious by the backup's guard (a table shrank sharply against the previous
      backup, or the backup was taken while a recovery of its database was in progress); each element of RV(backups)
      carries the mark in C(suspicious) (C(compared_with), C(reason), C(tables), C(recovery_run)). V(latest) passes
      over them.
  returned: always
  type: list
  elements: str
  sample: [backup_2026-01-05_02-00-00]
newest:
  description: The newest valid backup that is not suspicious (an element of RV(backups)), or null.
  returned: always
  type: dict
newest_before:
  description: The newest valid backup that ended before O(before), or null.
  returned: when O(before) is set
  type: dict
newest_age_seconds:
  description: Age of the newest valid backup in seconds, or null when there is none.
  returned: always
  type: int
  sample: 3600
stale:
  description: Whether the newest valid backup is older than O(max_age) (or missing). False without O(max_age).
  returned: always
  type: bool
partials:
  description: C(.partial) leftovers (a backup in progress, or of an interrupted run).
  returned: always
  type: list
  elements: str
recovery:
  description:
    - The recovery of O(database) (M(tokotani.dr.recovery_run)) - whether one is in progress, one never finished
      (its controller was killed or lost), or how the last one ended. With O(kept_databases=true) what an
      interrupted run left is checked on the server by OID.
  returned: when O(database) is given
  type: dict
  contains:
    state:
      description: V(none), V(in_progress), V(interrupted) (a run that never finished), V(ended) or V(untrusted).
      type: str
      sample: interrupted
    run_id:
      description: The run (null when none was recorded).
      type: str
    step:
      description: The step the run reached.
      type: str
      sample: restore
    outcome:
      description: How an ended run ended (V(recovered), V(reverted), V(failed), V(refused)).
      type: str
    msg:
      description: The same in words, naming the run (who, from where, since when, which step).
      type: str
    left_behind:
      description: What an interrupted run left, checked on the server (with O(kept_databases=true)).
      type: list
      elements: str
    advice:
      description: What to do about an interrupted run.
      type: str
leftovers:
  description:
    - Staging and work directories in O(backup_dir) (and with O(kept_databases=true), scratch databases of
      interrupted restores of O(database)), with what the next backup, restore or verification run does with them.
  returned: always
  type: list
  elements: dict
  contains:
    kind:
      description: V(work_directory), V(scratch_database) or V(lock_file) (a lock file left without what it guarded).
      type: str
    name:
      description: Its name.
      type: str
    path:
      description: The directory or lock file (null for a database).
      type: str
    action:
      description: V(would_remove) (stale) or V(left) (in use, or too young to judge).
      type: str
    reason:
      description: Why, for example C(its run ended without removing it (no process holds its lock)).
      type: str
    holders:
      description: The runs holding its lock, when it is in use.
      type: list
      elements: str
  sample: [{"kind": "work_directory", "name": ".tokotani-restore-3f9a1c2e", "action": "would_remove",
            "path": "/srv/tokotani/backups/.tokotani-restore-3f9a1c2e",
            "reason": "its run ended without removing it (no process holds its lock)"}]
kept_databases:
  description: The databases restores kept of O(database), newest first, with what O(keep_previous) does with each.
  returned: when O(kept_databases=true)
  type: list
  elements: dict
  contains:
    name:
      description: The database.
      type: str
    kind:
      description: V(pre_restore) (the live database before a restore) or V(failed_restore) (the one a revert replaced).
      type: str
    made_at:
      description: When it was set aside (the timestamp in its name), ISO 8601 UTC.
      type: str
    action:
      description: V(kept), or V(would_drop) (the next backup of O(database) drops it, backing it up first when no
        backup holds it yet).
      type: str
    reason:
      description: Why.
      type: str
    backup:
      description: The backup (of the kept database itself) that holds its data, or null.
      type: str
  sample: [{"name": "tokotani__pre_restore_20260105_083512", "kind": "pre_restore", "action": "kept",
            "made_at": "2026-01-05T08:35:12.000000Z", "reason": "among the newest 2 and at most 7 days old",
            "backup": null}]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tokotani.dr.plugins.module_utils.backup_report import backup_info
from ansible_collections.tokotani.dr.plugins.module_utils.errors import call
from ansible_collections.tokotani.dr.plugins.module_utils.specs import (
    keep_previous_argument_spec,
    key_argument_spec,
    postgres_argument_spec,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            postgres_argument_spec(),
            backup_dir={"type": "path", "required": True},
            database={"type": "str"},
            include_legacy={"type": "bool", "default": True},
            verify={"type": "bool", "default": False},
            before={"type": "str"},
            max_age={"type": "str"},
            include_manifest={"type": "bool", "default": False},
            kept_databases={"type": "bool", "default": False},
            **keep_previous_argument_spec(),
            **key_argument_spec(),
        ),
        supports_check_mode=True,
    )
    outcome, error = call(backup_info, module.params)
    if error:
        module.fail_json(changed=False, **error)
    result, failure = outcome
    for warning in result.pop("warnings", []):
        module.warn(warning)
    if failure:
        module.fail_json(msg=failure, changed=False, **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
