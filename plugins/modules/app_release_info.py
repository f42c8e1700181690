#!/usr/bin/python
# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Engine: plugins/module_utils/app_release.py (info).

DOCUMENTATION = r"""
module: app_release_info
short_description: List the app's releases, say which one is live and which one a rollback would pick
version_added: "0.3.0"
description:
  - Reads the releases under O(base_dir), which one is live, and for each its version, commit, build time, since when
    it was last live (recorded by M(tokotani.dr.app_release)) and its migrations (the subdirectories of
    O(migrations_dir) that hold a C(migration.sql), Prisma's layout).
  - With O(version), resolves the release it names (RV(target)); V(previous) is the one that was live before the live
    one. An unknown version fails with the list of the releases that can be made live and when each was live.
  - With O(database) and O(version), compares the migrations applied in the database with the target's (RV(schema)).
  - Read-only.
author:
  - TokoTani DevOps Team (@tokotani)
extends_documentation_fragment:
  - tokotani.dr.postgres
  - tokotani.dr.app_release
attributes:
  check_mode:
    support: full
    description: Read-only; behaves the same in check mode.
  diff_mode:
    support: none
    description: Changes nothing, so there is nothing to diff.
options:
  version:
    description:
      - The release to resolve - V(previous) (the release that was live before the live one), a release directory name
        (C(v1.0.0-1a2b3c4d)), a version as it was deployed (C(v1.0.0)), or a commit prefix of at least 7 hex digits.
      - Without it, RV(target) and RV(schema) are null.
    type: str
seealso:
  - module: tokotani.dr.app_release
"""

EXAMPLES = r"""
- name: List the releases and say which one a rollback would make live, and whether the schema allows it
  tokotani.dr.app_release_info:
    base_dir: /srv/tokotani
    version: previous
    database: tokotani
    login_unix_socket: /var/run/postgresql
    login_os_user: postgres
  become: true
  register: releases
"""

RETURN = r"""
base_dir:
  description: The base directory read.
  returned: always
  type: str
  sample: /srv/tokotani
releases:
  description: Every release directory, sorted by name.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The directory name.
      type: str
      sample: v1.0.0-1a2b3c4d
    path:
      description: Its path.
      type: str
      sample: /srv/tokotani/releases/v1.0.0-1a2b3c4d
    version:
      description: The version it was built from (its marker), null when unreadable.
      type: str
      sample: v1.0.0
    commit:
      description: The commit it was built from.
      type: str
      sample: 1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d
    built_at:
      description: When its build completed (the marker's time), ISO 8601 UTC.
      type: str
      sample: "2026-12-01T10:00:00.000000Z"
    live_since:
      description: Since when it was last made live by this module, null when never.
      type: str
      sample: "2026-12-02T09:00:00.000000Z"
    replaced:
      description: The release it replaced when it was last made live.
      type: str
      sample: v0.9.0-0f1e2d3c
    failed:
      description:
        - When a switch away from it recorded that it failed (a deployment's health gate, rolled back
          automatically) - C(at) and C(reason) - else null. V(previous) never picks a failed release.
      type: dict
      sample: {at: "2026-12-02T09:01:00.000000Z", reason: "the health gate failed: /api/health answered 500"}
    build_id:
      description: The build id (C(.next/BUILD_ID)), null when there is none.
      type: str
      sample: 3kfj20aKd
    migrations:
      description: The names of its migrations, null when it has no O(migrations_dir).
      type: list
      elements: str
      sample: [20240115093000_init]
    runnable:
      description: Whether it can be made live (its build completed, it has its process file and dependencies).
      type: bool
      sample: true
    problems:
      description: Why it cannot be made live.
      type: list
      elements: str
      sample: []
live:
  description: The release C(current) points to; null when none.
  returned: always
  type: str
  sample: v1.0.0-1a2b3c4d
current_problem:
  description: Why no release is live (C(current) missing, not a link, or outside C(releases/)); null otherwise.
  returned: always
  type: str
  sample: null
target:
  description: The release O(version) names (one element of RV(releases)); null without O(version).
  returned: always
  type: dict
  sample: {name: v1.0.0-1a2b3c4d, version: v1.0.0, runnable: true}
schema:
  description: With O(database) and a target, the database's migrations against the target's.
  returned: always
  type: dict
  contains:
    applied:
      description: Migrations applied in the database; null when it has no C(_prisma_migrations).
      type: list
      elements: str
    known:
      description: The target's migrations; null when it has no O(migrations_dir).
      type: list
      elements: str
    newer:
      description: Applied migrations the target does not know.
      type: list
      elements: str
    missing:
      description: The target's migrations that are not applied.
      type: list
      elements: str
    compatible:
      description: True when no applied migration is unknown to the target; null when either side is unknown.
      type: bool
    refusal:
      description:
        - Why the target's code should not run on this schema (what M(tokotani.dr.app_release) refuses with); null
          when it may.
      type: str
  sample:
    applied: [20240115093000_init]
    known: [20240115093000_init]
    newer: []
    missing: []
    compatible: true
    refusal: null
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tokotani.dr.plugins.module_utils.app_release import info
from ansible_collections.tokotani.dr.plugins.module_utils.errors import call
from ansible_collections.tokotani.dr.plugins.module_utils.specs import app_release_info_argument_spec


def main():
    module = AnsibleModule(argument_spec=app_release_info_argument_spec(), supports_check_mode=True)
    result, failure = call(info, module.params)
    if failure:
        failure.setdefault("changed", False)
        module.fail_json(**failure)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
