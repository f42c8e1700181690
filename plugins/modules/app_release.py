#!/usr/bin/python
# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Engine: plugins/module_utils/app_release.py (live).

DOCUMENTATION = r"""
module: app_release
short_description: Make one of the app's releases live, its database's schema checked first
version_added: "0.3.0"
description:
  - Makes the release O(version) names live - C(current) is replaced by a new link in one rename, so every process
    sees the old release or the new one, never neither - and records in the release since when it is live and which
    release it replaced, so that V(previous) is known after rollbacks too (M(tokotani.dr.app_release_info)).
  - Refuses, changing nothing, a release that is unknown (with the list of those that can be made live), whose build
    never completed or that lacks its process file or dependencies, a C(current) that is not a symbolic link, and,
    with O(database) and O(newer_schema=fail), a database with migrations the release does not know.
  - It only switches the link. Restart the processes with M(tokotani.dr.pm2_process) so that the release's code
    really runs.
author:
  - TokoTani DevOps Team (@tokotani)
extends_documentation_fragment:
  - tokotani.dr.postgres
  - tokotani.dr.app_release
attributes:
  check_mode:
    support: full
    description: Resolves and checks as it would and says what it would switch; changes nothing.
  diff_mode:
    support: none
    description: RV(previous_live) and RV(live) say what changed.
options:
  version:
    description:
      - The release to make live - V(previous) (the release that was live before the live one), a release directory
        name (C(v1.0.0-1a2b3c4d)), a version as it was deployed (C(v1.0.0)), or a commit prefix of at least 7 hex
        digits.
    type: str
    default: previous
  newer_schema:
    description:
      - With O(database), what to do when the database has migrations the release does not know (or the release has no
        O(migrations_dir) to compare with).
      - V(fail) refuses, changing nothing. V(allow) runs the release's code on the newer schema, at the operator's
        word.
    type: str
    choices: [fail, allow]
    default: fail
  replaced_failed:
    description:
      - Why the release being replaced failed (a deployment whose health gate failed, rolled back automatically).
      - Recorded, printable and cut to 300 characters, in that release's C(.tokotani-live.json) with the time, so
        that O(version=previous) never picks it again; it stays selectable by name, and a later switch to it
        clears the mark. Not recorded when nothing is switched.
    type: str
seealso:
  - module: tokotani.dr.app_release_info
  - module: tokotani.dr.pm2_process
  - module: community.general.deploy_helper
"""

EXAMPLES = r"""
- name: Roll back to v1.0.0, refusing when the database has migrations v1.0.0 does not know
  tokotani.dr.app_release:
    base_dir: /srv/tokotani
    version: v1.0.0
    database: tokotani
    login_unix_socket: /var/run/postgresql
    login_os_user: postgres
  become: true

- name: Make a freshly built release live (the deploy's switch)
  tokotani.dr.app_release:
    base_dir: /srv/tokotani
    version: v1.1.0-7353c5cc
"""

RETURN = r"""
base_dir:
  description: The base directory read.
  returned: always
  type: str
  sample: /srv/tokotani
live:
  description: The release C(current) points to after the switch (before it, in check mode).
  returned: always
  type: str
  sample: v1.0.0-1a2b3c4d
previous_live:
  description: The release that was live before; null when none was.
  returned: always
  type: str
  sample: v2.0.0-9f8e7d6c
target:
  description:
    - The release O(version) names, as RV(tokotani.dr.app_release_info#module:releases) describes each (name, path,
      version, commit, built_at, live_since, replaced, failed, build_id, migrations, runnable, problems).
  returned: always
  type: dict
  sample: {name: v1.0.0-1a2b3c4d, version: v1.0.0, live_since: "2026-12-02T09:00:00.000000Z", runnable: true}
schema:
  description:
    - With O(database), the database's migrations against the release's, as
      RV(tokotani.dr.app_release_info#module:schema) describes them (applied, known, newer, missing, compatible,
      refusal); null without O(database).
  returned: always
  type: dict
  sample: {applied: [20240115093000_init], newer: [], compatible: true, refusal: null}
msg:
  description: What was done (or would be, in check mode).
  returned: always
  type: str
  sample: "release v1.0.0-1a2b3c4d (v1.0.0) is live; it replaced v2.0.0-9f8e7d6c"
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tokotani.dr.plugins.module_utils.app_release import live
from ansible_collections.tokotani.dr.plugins.module_utils.errors import call
from ansible_collections.tokotani.dr.plugins.module_utils.specs import app_release_argument_spec


def main():
    module = AnsibleModule(argument_spec=app_release_argument_spec(), supports_check_mode=True)
    result, failure = call(live, module.params, check_mode=module.check_mode)
    if failure:
        failure.setdefault("changed", False)
        module.fail_json(**failure)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
