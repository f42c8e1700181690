#!/usr/bin/python
# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Engine: plugins/module_utils/app_backup.py (take).

DOCUMENTATION = r"""
module: app_backup
short_description: Back up the live release of the app before a deployment changes anything (plan 1.2)
version_added: "0.3.0"
description:
  - Writes the application backup of the live release into
    C(<base_dir>/.deploy-backups/<timestamp>_<version>/) (mode 0700) - C(record.json) (the release's name, version,
    commit, build id and since when it is live, what C(current) points to, the SHA-256 of its C(package-lock.json)
    and of the files kept, O(deploying) and the name of the paired database backup O(database_backup)), a copy of
    the release's C(.env) (mode 0600, never shown) and of its C(ecosystem.config.js).
  - Then keeps the newest O(keep) backups, this one included, and the newest backup of the live release; a
    directory whose name this module does not make is never touched.
  - With no live release (the first deployment), changes nothing and says so.
  - The release is read as M(tokotani.dr.app_release_info) reads it - names confined, files opened without
    following links, regular and small; a live release whose build never completed, or whose C(.env) is a link,
    is refused and nothing is written.
author:
  - TokoTani DevOps Team (@tokotani)
attributes:
  check_mode:
    support: full
    description: Reads the live release and says what it would write and remove; writes nothing.
  diff_mode:
    support: none
    description: RV(path) and RV(removed) say what changed.
options:
  base_dir:
    description: The app's base directory (C(releases/), C(current)), as M(tokotani.dr.tokotani_app) lays it out.
    type: path
    default: /srv/tokotani
  keep:
    description: How many application backups to keep, this one included (at least 1).
    type: int
    default: 10
  deploying:
    description: The version the deployment is about to make live, recorded for the post-mortem.
    type: str
  database_backup:
    description:
      - The name of the database backup taken for this deployment (RV(tokotani.dr.postgresql_backup#module:name)),
        the one to restore when the new release's migrations must be undone.
    type: str
  database:
    description: The database that backup is of, recorded with it.
    type: str
    aliases: [db]
notes:
  - Run it as root or as the app's user - the C(.env) copy is readable by that user only.
seealso:
  - module: tokotani.dr.app_release_info
  - module: tokotani.dr.app_release
  - module: tokotani.dr.postgresql_backup
"""

EXAMPLES = r"""
- name: Back up the live release, paired with the database backup just taken
  tokotani.dr.app_backup:
    base_dir: /srv/tokotani
    deploying: v1.1.0
    database: tokotani
    database_backup: "{{ db_backup.name }}"
  become: true
  register: app_backup
"""

RETURN = r"""
path:
  description: The backup's directory; null when nothing was backed up (no live release).
  returned: always
  type: str
  sample: /srv/tokotani/.deploy-backups/20261204T053000Z_v1.0.0
name:
  description: Its name (the UTC time it was taken and the live release's version).
  returned: always
  type: str
  sample: 20261204T053000Z_v1.0.0
record:
  description:
    - What C(record.json) holds - C(format), C(created_at), C(base_dir), C(current), C(release) (C(name),
      C(version), C(commit), C(build_id), C(live_since), C(path)), C(package_lock_sha256), C(files) (each kept
      file's SHA-256, null when the release had none), C(deploying), C(database), C(database_backup).
  returned: always
  type: dict
removed:
  description: The older backups removed by the retention.
  returned: always
  type: list
  elements: str
msg:
  description: What was done.
  returned: always
  type: str
  sample: "release v1.0.0-1a2b3c4d (v1.0.0) backed up into /srv/tokotani/.deploy-backups/20261204T053000Z_v1.0.0"
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tokotani.dr.plugins.module_utils.app_backup import take
from ansible_collections.tokotani.dr.plugins.module_utils.errors import call
from ansible_collections.tokotani.dr.plugins.module_utils.specs import app_backup_argument_spec


def main():
    module = AnsibleModule(argument_spec=app_backup_argument_spec(), supports_check_mode=True)
    result, failure = call(take, module.params, check_mode=module.check_mode)
    if failure:
        failure.setdefault("changed", False)
        module.fail_json(**failure)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
