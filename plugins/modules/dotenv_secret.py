#!/usr/bin/python
# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Engine: plugins/module_utils/dotenv.py (set_secret).

DOCUMENTATION = r"""
module: dotenv_secret
short_description: Set, generate, rotate or remove one secret in an app's .env, atomically, never showing it
version_added: "0.3.0"
description:
  - Writes one key of a C(.env) file the way the app's own writer does (its C(lib/env.js)) - every line of the key
    replaced by one C(KEY=value), appended when missing, every other line kept as it is - into a temporary file
    beside it (mode C(0600), the old file's owner and group kept, fsynced) renamed over the old one, so a reader
    sees the old file or the new one, never half of one. A file left with a looser mode is made C(0600).
  - A value is never returned, logged or shown in a diff - only the key's name, what happened to it (RV(outcome))
    and whether it existed. A generated value is read from the file by whoever needs it (the app reads it at
    its next start; the operator records it into the vault, C(docs/secrets.md)).
  - What it reads may have been written by someone else (a breach response runs on a compromised server). The file
    is read as data, by the parser of the filter C(tokotani.dr.dotenv) (C(plugins/module_utils/dotenv.py)); a
    symbolic link, a file that is not regular, larger than 1 MiB or not UTF-8 is refused, and nothing is written.
  - A generated secret is what the app's own rotation makes - O(bytes) random bytes, base64url without padding -
    from the operating system's CSPRNG (Python C(secrets)).
author:
  - TokoTani DevOps Team (@tokotani)
attributes:
  check_mode:
    support: full
    description: Reads and decides as it would and says what it would do; writes nothing.
  diff_mode:
    support: full
    description: The key's line before and after, its value replaced by C(<hidden>) (C(<hidden, new>) when it changes).
options:
  path:
    description: The C(.env) file, for example C(/srv/tokotani/current/.env).
    type: path
    required: true
  key:
    description: The variable's name - letters, digits and C(_), not a digit first (C(ADMIN_TOKEN)).
    type: str
    required: true
  value:
    description:
      - With O(state=present), the value to set - one line, no control character, no whitespace around it.
      - Without it, O(state=present) keeps the key's value and generates one only when the key is missing.
    type: str
  state:
    description:
      - V(present) - the key holds O(value), or any value (one generated when it is missing).
      - V(rotated) - a new value is generated, whatever the key held (always a change).
      - V(absent) - every line of the key is removed (a missing file is no change).
    type: str
    choices: [present, rotated, absent]
    default: present
  bytes:
    description: How many random bytes a generated value holds (16 to 512); the value is 4/3 as many characters.
    type: int
    default: 32
  create:
    description:
      - Create the file (mode C(0600), owned by the user the module runs as) when it is missing; else a missing file
        fails.
    type: bool
    default: false
notes:
  - Run it as the file's owner or as root (C(become)); the owner is kept either way.
  - The running app does not see the change until it restarts (M(tokotani.dr.pm2_process) with its
    C(restart_if_newer) pointing at the C(.env)).
seealso:
  - module: ansible.builtin.lineinfile
    description: The general tool for a line of a file; it shows and returns the line, which this module never does.
  - module: tokotani.dr.pm2_process
"""

EXAMPLES = r"""
- name: Rotate ADMIN_TOKEN (a breach response) - the old one stops working when the app restarts
  tokotani.dr.dotenv_secret:
    path: /srv/tokotani/current/.env
    key: ADMIN_TOKEN
    state: rotated
  become: true
  register: rotated

- name: Set the database URL with the role's new password, from the vault
  tokotani.dr.dotenv_secret:
    path: /srv/tokotani/current/.env
    key: DATABASE_URL
    value: "postgres://tokotani:{{ tokotani_db_password | urlencode }}@127.0.0.1:5432/tokotani"
  become: true

- name: Make sure a key exists (one is generated only when it is missing)
  tokotani.dr.dotenv_secret:
    path: /srv/tokotani/current/.env
    key: SESSION_PEPPER
  become: true
"""

RETURN = r"""
path:
  description: The file.
  returned: always
  type: str
  sample: /srv/tokotani/current/.env
key:
  description: The key.
  returned: always
  type: str
  sample: ADMIN_TOKEN
outcome:
  description:
    - What happened to the key (in check mode, what would) - V(set) (O(value) written), V(generated) (a new value
      where there was none), V(rotated) (a new value over the old one), V(removed) or V(unchanged).
  returned: always
  type: str
  sample: rotated
existed:
  description: Whether the key was in the file before.
  returned: always
  type: bool
  sample: true
mode_before:
  description: The file's mode before, as four octal digits; null when it did not exist.
  returned: always
  type: str
  sample: "0600"
msg:
  description: What was done, by key name.
  returned: always
  type: str
  sample: ADMIN_TOKEN rotated in /srv/tokotani/current/.env
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tokotani.dr.plugins.module_utils.dotenv import set_secret
from ansible_collections.tokotani.dr.plugins.module_utils.errors import call
from ansible_collections.tokotani.dr.plugins.module_utils.specs import dotenv_secret_argument_spec


def main():
    module = AnsibleModule(argument_spec=dotenv_secret_argument_spec(), supports_check_mode=True)
    result, failure = call(set_secret, module.params, check_mode=module.check_mode)
    if failure:
        failure.setdefault("changed", False)
        module.fail_json(**failure)
    diff = result.pop("diff")
    if module._diff:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
