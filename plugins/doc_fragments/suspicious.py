# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The choice of latest around backups the suspicious-backup guard marked (postgresql_backup's shrink_check),
shared by the modules that pick one (postgresql_restore, backup_offsite)."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  accept_suspicious:
    description:
      - With O(backup=latest), also consider backups marked suspicious by the backup's guard (a table shrank sharply
        against the previous backup, see O(tokotani.dr.postgresql_backup#module:shrink_check)). By default latest
        passes over them, with a warning naming each and why. A backup named in O(backup) is used whatever its mark.
    type: bool
    default: false
"""
