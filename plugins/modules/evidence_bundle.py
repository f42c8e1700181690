#!/usr/bin/python
# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Engine: plugins/module_utils/evidence.py (collect).

DOCUMENTATION = r"""
module: evidence_bundle
short_description: A breach's evidence on a server in one tarball with a sha256 manifest, before anything changes
version_added: "0.3.0"
description:
  - The first step of a breach response (plan 2.4) after isolation - before a secret is rotated or a backup restored.
    Collects into C(<dest>/<name>.tar.gz) (mode C(0600), written to a temporary file and linked into place, never
    over an existing bundle) the O(files) given (logs, C(authorized_keys), crontabs, a directory's regular files),
    the output of O(commands) (process lists, listening sockets, C(pm2 jlist), C(journalctl), queries), the entries
    of O(changed_since) directories modified or changed after O(since), and the keys of O(env_files) with the
    sha256 of their values.
  - C(<name>/MANIFEST.json) says who collected it (O(operator) and the user it ran as), on which host, when, since
    when, why (O(reason)), and lists every member with its sha256 and size, what was missing, withheld or failed;
    C(<name>/MANIFEST.sha256) checks the members with C(sha256sum -c) in the unpacked directory. The tarball's
    own sha256 (RV(sha256)) goes into the incident report.
  - Everything read is the intruder's ground. A symbolic link is recorded with its target and never read
    through; only regular files are read, each up to O(max_file_bytes) (more is cut and said); a file named
    like a C(.env) in O(files) is withheld (it holds secrets - its keys come through O(env_files), values
    hashed); commands run from an argv list, no shell, each with O(command_timeout). A file that cannot be
    read, a command that fails or is missing is recorded under C(errors) and the collection goes on - evidence
    is taken as it is.
author:
  - TokoTani DevOps Team (@tokotani)
attributes:
  check_mode:
    support: full
    description: Reads everything and runs the commands as it would, writes nothing; says what it would write.
  diff_mode:
    support: none
    description: RV(path), RV(sha256) and the manifest say what was written.
options:
  dest:
    description: The directory the bundle goes into (created, mode C(0700)).
    type: path
    required: true
  name:
    description:
      - The bundle's name, 1 to 100 letters, digits, C(.), C(_) or C(-) (not a path) - for example
        C(evidence-tokotani-1-20261207T031200Z). An existing bundle of that name is never overwritten.
    type: str
    required: true
  since:
    description: When the breach began (epoch seconds) - O(changed_since) lists what changed after it.
    type: float
  files:
    description: Files or directories to copy in as they are (a directory - its regular files and links, recursively).
    type: list
    elements: path
    default: []
  changed_since:
    description:
      - Directories (the app's tree) whose entries modified or changed after O(since) are listed with their sha256.
    type: list
    elements: path
    default: []
  env_files:
    description: C(.env) files whose keys are listed with the sha256 of each value - never a value.
    type: list
    elements: path
    default: []
  commands:
    description:
      - Commands whose output is evidence, each C({name, argv}) - C(name) names C(commands/<name>.txt), C(argv) the
        command as a list (no shell). Its exit code, start and duration are recorded with its output.
    type: list
    elements: dict
    default: []
  command_timeout:
    description: Seconds each command may take; a command that takes longer is recorded with what it printed.
    type: int
    default: 60
  max_file_bytes:
    description: The most of one file taken in; the rest is cut, and the manifest says so with the file's size.
    type: int
    default: 67108864
  operator:
    description: Who collects it, for the manifest (the user it runs as is recorded too).
    type: str
  reason:
    description: Why, for the manifest (for example the incident's number).
    type: str
seealso:
  - module: tokotani.dr.dotenv_secret
"""

EXAMPLES = r"""
- name: Collect the evidence before anything is changed
  tokotani.dr.evidence_bundle:
    dest: /var/lib/tokotani-dr/evidence
    name: "evidence-{{ inventory_hostname }}-{{ now(utc=true, fmt='%Y%m%dT%H%M%SZ') }}"
    since: "{{ breach_at_epoch }}"
    operator: "{{ lookup('ansible.builtin.env', 'USER') }}"
    reason: incident 2026-12-07 admin account created overnight
    files:
      - /var/log/auth.log
      - /var/log/postgresql
      - /root/.ssh/authorized_keys
      - /var/spool/cron/crontabs
    changed_since:
      - /srv/tokotani/current
    env_files:
      - /srv/tokotani/current/.env
    commands:
      - {name: listening, argv: [ss, -tlnp]}
      - {name: processes, argv: [ps, auxww]}
      - {name: journal, argv: [journalctl, --no-pager, --since, "@{{ breach_at_epoch | int }}"]}
  become: true
  register: evidence
"""

RETURN = r"""
path:
  description: The bundle.
  returned: always
  type: str
  sample: /var/lib/tokotani-dr/evidence/evidence-tokotani-1-20261207T031200Z.tar.gz
sha256:
  description: The sha256 of the tarball, for the incident report; null in check mode.
  returned: always
  type: str
size:
  description: The tarball's size in bytes; null in check mode.
  returned: always
  type: int
manifest_sha256:
  description: The sha256 of C(MANIFEST.json) inside it.
  returned: always
  type: str
members:
  description: How many members the manifest lists (besides the manifest itself).
  returned: always
  type: int
changed_files:
  description: How many entries of O(changed_since) changed after O(since); null without O(since).
  returned: always
  type: int
missing:
  description: The paths given that do not exist.
  returned: always
  type: list
  elements: str
withheld:
  description: The files not copied in because they hold secrets (a C(.env)).
  returned: always
  type: list
  elements: str
errors:
  description: What could not be read or run, and why.
  returned: always
  type: list
  elements: str
msg:
  description: What was written.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tokotani.dr.plugins.module_utils.errors import call
from ansible_collections.tokotani.dr.plugins.module_utils.evidence import collect
from ansible_collections.tokotani.dr.plugins.module_utils.specs import evidence_bundle_argument_spec


def main():
    module = AnsibleModule(argument_spec=evidence_bundle_argument_spec(), supports_check_mode=True)
    result, failure = call(collect, module.params, check_mode=module.check_mode)
    if failure:
        failure.setdefault("changed", False)
        module.fail_json(**failure)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
