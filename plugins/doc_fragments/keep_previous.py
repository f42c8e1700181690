# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The retention of the databases restores keep (leftovers.plan_keep_previous), shared by the modules that
apply it (postgresql_backup, postgresql_restore) and the one that reports on it (backup_info)."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  keep_previous:
    description:
      - Retention of the databases restores keep of O(database) - C(<database>__pre_restore_<timestamp>) (the live
        database as it was before a restore) and C(<database>__failed_restore_<timestamp>) (the database a revert
        replaced), both kinds together, newest first by the timestamp in their name.
      - The newest O(keep_previous) stay while they are at most O(keep_previous_days) days old; the others are due
        to go.
      - What a kept database alone holds is what was written to the database between its last backup and the
        restore (or revert) that set it aside, and nothing tells whether anything was. So one due to go is dropped
        only once a backup holds all of its data - a valid backup of the kept database itself in the backup
        directory, taken after it was set aside, whose checksums are verified right before the drop.
        M(tokotani.dr.postgresql_backup) (and the daily backup timer) takes that backup first, like its own backups
        but of the kept database and labelled C(keep_previous archive), then drops it; a restore only drops what
        such a backup already holds and leaves the rest to the next backup run. Retention never drops
        the only copy of data; the archives are never pruned automatically (restore one with
        M(tokotani.dr.postgresql_restore) O(tokotani.dr.postgresql_restore#module:mode=into) and
        O(tokotani.dr.postgresql_restore#module:source_database) set to the kept database's name; delete it when it
        is no longer needed).
      - C(DROP DATABASE) without C(FORCE) - one someone is connected to stays for a later run.
    type: int
    default: 2
  keep_previous_days:
    description:
      - See O(keep_previous).
    type: int
    default: 7
"""
