#!/usr/bin/python
# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Engine: plugins/module_utils/pg_revoke.py (revoke).

DOCUMENTATION = r"""
module: postgresql_revoke
short_description: Take database roles away from an intruder - login, attributes, connections, the role - by exact name
version_added: "0.3.0"
description:
  - Step 5 of a breach response (plan 2.4). For each of O(roles), found by its exact name in C(pg_roles), takes away
    its login and attributes (C(NOLOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS)), ends its
    connections (O(terminate)) and, when it owns nothing and holds no privilege in any database (C(pg_shdepend)),
    drops it (O(drop)). A role that still owns objects stays, disabled, and RV(roles) says in which databases.
  - The names come from the breached cluster, where the intruder chose them. A name such as C("postgres") (quotes
    included), C(a"b), C(x.y) or one with a line break is its own role; M(community.postgresql.postgresql_user)
    treats a name in double quotes as already quoted and splits one with a dot, so it would act on another role -
    the bootstrap superuser, the app's. Here a name is only a psql variable read as a literal, compared by the
    server with C(rolname); the statements are built by the server (C(format('%I', rolname))) from the row it found.
  - Never touched, reported under RV(untouched) - built-in roles (OID below 16384, the bootstrap superuser and the
    C(pg_) roles), the role the module connects as, and O(keep).
author:
  - TokoTani DevOps Team (@tokotani)
extends_documentation_fragment:
  - tokotani.dr.postgres
attributes:
  check_mode:
    support: full
    description: Reads each role and reports what would be disabled, ended and dropped.
  diff_mode:
    support: none
    description: The result lists each role before and after.
options:
  roles:
    description:
      - The exact names of the roles to revoke (as C(pg_roles.rolname) holds them; no quoting, no case folding).
    type: list
    elements: str
    required: true
  keep:
    description:
      - Names never touched even when listed in O(roles) (the app's role, a monitoring role).
    type: list
    elements: str
    default: []
  drop:
    description:
      - Drop each role that owns nothing; V(false) only disables them.
    type: bool
    default: true
  terminate:
    description:
      - End each role's connections (C(pg_terminate_backend)).
    type: bool
    default: true
notes:
  - Run it as a superuser (C(become_user=postgres) over the unix socket), since only a superuser may alter one.
seealso:
  - module: community.postgresql.postgresql_user
  - module: tokotani.dr.evidence_bundle
"""

EXAMPLES = r"""
- name: Revoke the roles the breached cluster should not have
  tokotani.dr.postgresql_revoke:
    roles: "{{ assessment.unexpected_roles | map(attribute='rolname') | list }}"
    keep: [tokotani, monitoring]
    login_unix_socket: /var/run/postgresql
  become: true
  become_user: postgres
  register: revoked
"""

RETURN = r"""
roles:
  description: One entry per name given.
  returned: success
  type: list
  elements: dict
  contains:
    name:
      description: The name as given.
      type: str
    found:
      description: Whether a role of exactly that name exists.
      type: bool
    oid:
      description: Its OID.
      type: int
    was_superuser:
      description: Whether it was a superuser before.
      type: bool
    could_login:
      description: Whether it could log in before.
      type: bool
    member_of:
      description: The roles it was a member of.
      type: list
      elements: str
    depends_in:
      description: The databases where it owns objects or holds privileges (C((shared)) for tablespaces, databases).
      type: list
      elements: str
    disabled:
      description: Whether its login and attributes were taken away by this run.
      type: bool
    connections_ended:
      description: How many of its connections were ended.
      type: int
    dropped:
      description: Whether it was dropped.
      type: bool
    kept_because:
      description: Why it was not dropped.
      type: str
    untouched_because:
      description: Why it was not touched at all (built in, the role this runs as, listed in O(keep)).
      type: str
  sample:
    - name: intruder
      found: true
      oid: 16420
      was_superuser: true
      could_login: true
      member_of: []
      depends_in: []
      disabled: true
      connections_ended: 1
      dropped: true
dropped:
  description: The names dropped.
  returned: success
  type: list
  elements: str
  sample: [intruder]
disabled:
  description: The names left in place without login (they own objects).
  returned: success
  type: list
  elements: str
  sample: []
untouched:
  description: The names not touched (built in, the role this runs as, O(keep)).
  returned: success
  type: list
  elements: str
  sample: []
not_found:
  description: The names no role has.
  returned: success
  type: list
  elements: str
  sample: []
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tokotani.dr.plugins.module_utils.errors import call
from ansible_collections.tokotani.dr.plugins.module_utils.pg_revoke import revoke
from ansible_collections.tokotani.dr.plugins.module_utils.specs import postgresql_revoke_argument_spec


def main():
    module = AnsibleModule(argument_spec=postgresql_revoke_argument_spec(), supports_check_mode=True)
    result, failure = call(revoke, module.params, check_mode=module.check_mode)
    if failure:
        module.fail_json(changed=False, **failure)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
