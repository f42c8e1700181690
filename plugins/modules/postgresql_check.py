#!/usr/bin/python
# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Engine: plugins/module_utils/pg_restore.py (check: RestoreEngine.check_existing, the restore's own checks).

DOCUMENTATION = r"""
module: postgresql_check
short_description: Check an existing database the way a restore checks its copy, changing nothing
version_added: "0.2.0"
description:
  - Runs on an existing database the checks M(tokotani.dr.postgresql_restore) runs on the copy it restored, with
    the same code - after a recovery, on the live database it swapped in.
  - With O(backup) - the backup's manifest is checked first (schema, checksums are not re-read, signature with
    O(backup_key)), then every table of the manifest must be there with exactly the manifest's row count - at least
    that many for O(growing_tables). Table names from the manifest reach the server only as quoted identifiers.
    The restore runs the same check (plugins/module_utils/db_checks.py), always exact.
  - Then every assertion of O(assertions), each as one cursor in its own session that is read-only at the server.
  - Fails with the first check that does not hold, saying which (RV(failed_check)) and what was found; with
    O(fail_on_problem=false), runs them all and reports instead.
author:
  - TokoTani DevOps Team (@tokotani)
extends_documentation_fragment:
  - tokotani.dr.postgres
  - tokotani.dr.backup_key
  - tokotani.dr.server_log
attributes:
  check_mode:
    support: full
    description: Read-only; behaves the same in check mode.
  diff_mode:
    support: none
    description: There is nothing to compare; the result describes what was found.
options:
  database:
    description: The database to check; it must exist.
    type: str
    required: true
    aliases: [db]
  backup:
    description:
      - The backup whose manifest gives the expected tables and row counts - a path to its data or manifest, a name in
        O(backup_dir), or V(latest) (the newest valid backup of O(source_database) in O(backup_dir)).
      - Without it, only O(assertions) are checked.
      - Row counts match only while nothing has written to the database since the restore (stop the application
        first).
    type: str
  backup_dir:
    description: Directory of the backups, for a name or V(latest) in O(backup).
    type: path
  source_database:
    description: The database the backup was taken of, for O(backup=latest); defaults to O(database).
    type: str
  growing_tables:
    description:
      - Tables the running application writes to, which pass with at least the manifest's row count instead of
        exactly it (after the application restarted on the recovered database) - each a name (a table of the
        C(public) schema) or C(schema.name). A missing table fails whatever this says.
    type: list
    elements: str
    default: []
  assertions:
    description:
      - SQL checks, each a query that must return exactly one row whose first column is V(true), run as with
        M(tokotani.dr.postgresql_restore) - read-only at the server, one query, C(statement_timeout) 5 minutes.
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
  fail_on_problem:
    description:
      - V(true) - fail at the first check that does not hold.
      - V(false) - run every check whatever the others found and report, without failing, which did not hold in
        RV(passed) and RV(problems) (a checklist that must show every item). A missing database still fails.
    type: bool
    default: true
seealso:
  - module: tokotani.dr.postgresql_restore
"""

EXAMPLES = r"""
- name: After the swap, check the live database against the backup it came from
  tokotani.dr.postgresql_check:
    database: tokotani
    backup: /srv/tokotani/shared/backups/backup_2026-01-05_02-00-00.manifest.json
    backup_key: "{{ tokotani_backup_key }}"
    assertions:
      - name: prisma migrations applied
        sql: SELECT count(*) > 0 FROM _prisma_migrations
  become: true
  become_user: postgres

- name: With the application running again - the tables it writes to may only have grown
  tokotani.dr.postgresql_check:
    database: tokotani
    backup: /srv/tokotani/shared/backups/backup_2026-01-05_02-00-00.manifest.json
    backup_key: "{{ tokotani_backup_key }}"
    growing_tables: [engine_heartbeat, sessions]
    fail_on_problem: false
  become: true
  become_user: postgres
  register: live_check
"""

RETURN = r"""
database:
  description: The database checked.
  returned: always
  type: str
  sample: tokotani
backup:
  description:
    - The backup whose manifest was compared (see RV(tokotani.dr.backup_info#module:backups)); null without O(backup).
  returned: success
  type: dict
passed:
  description: Whether every check held (always V(true) when the module succeeds with O(fail_on_problem=true)).
  returned: success
  type: bool
  sample: true
problems:
  description: What did not hold, one sentence each (with O(fail_on_problem=false)); empty when RV(passed).
  returned: success
  type: list
  elements: str
  sample:
    - "assertion 'migrations applied' failed: returned false"
tables:
  description: Tables compared with the manifest; null without O(backup).
  returned: success
  type: int
  sample: 14
rows:
  description:
    - Rows counted - the manifest's, plus what O(growing_tables) gained; null without O(backup).
  returned: success
  type: int
  sample: 120331
table_counts:
  description:
    - Each table of the manifest as compared - null without O(backup) or when the manifest was not usable (also
      returned on failure).
  returned: always
  type: list
  elements: dict
  contains:
    table:
      description: C(schema.name).
      type: str
      sample: public.sessions
    expected:
      description: The manifest's row count.
      type: int
      sample: 390
    actual:
      description: The rows counted; null when the table is missing.
      type: int
      sample: 402
    growing:
      description: Whether the table is one of O(growing_tables) (at least RV(table_counts[].expected) rows suffice).
      type: bool
      sample: true
    ok:
      description: Whether the table holds.
      type: bool
      sample: true
verified:
  description: What was checked and held, one sentence each (also on failure - what held before it).
  returned: always
  type: list
  elements: str
  sample:
    - the manifest of backup_2026-01-05_02-00-00 is signed by backup key 3f9c2a7d41b0e6c8
    - 14 tables present with the manifest's row counts (120331 rows)
    - assertion 'prisma migrations applied' holds
assertions:
  description: Each assertion run, in order, with C(name), C(ok) and, when it failed, C(problem).
  returned: always
  type: list
  elements: dict
failed_check:
  description:
    - The check that did not hold - V(database), V(backup integrity), V(tables present), V(row counts) or
      V(assertion '<name>').
  returned: failure
  type: str
  sample: row counts
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tokotani.dr.plugins.module_utils.errors import call
from ansible_collections.tokotani.dr.plugins.module_utils.pg_restore import check
from ansible_collections.tokotani.dr.plugins.module_utils.specs import check_argument_spec


def main():
    module = AnsibleModule(argument_spec=check_argument_spec(), supports_check_mode=True)
    result, failure = call(check, module.params, check_mode=module.check_mode)
    if failure:
        module.fail_json(changed=False, database=module.params["database"], **failure)
    for warning in result.pop("warnings", []):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
