# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
name: runner_files
short_description: The collection's files the host-side runner needs, to install them on a server
version_added: "0.2.0"
description:
  - Returns the paths, relative to the collection's C(plugins/module_utils), of every file the host-side runner
    C(tokotani-dr) imports - its whole import closure, pure standard library, declared once in code
    (C(jobs/runner.py), C(HOST_MODULES)) and checked by the collection's tests with Ansible made unimportable.
  - The role C(tokotani.dr.backup) copies exactly these onto the server (C(tasks/runner.yml)).
  - Takes no terms.
author:
  - TokoTani DevOps Team (@tokotani)
"""

EXAMPLES = r"""
- name: Install the runner's engines
  ansible.builtin.copy:
    src: "{{ collection_module_utils }}/{{ item }}"
    dest: /usr/local/lib/tokotani-dr/ansible_collections/tokotani/dr/plugins/module_utils/{{ item }}
    mode: "0644"
  loop: "{{ query('tokotani.dr.runner_files') }}"
"""

RETURN = r"""
_raw:
  description: Paths relative to C(plugins/module_utils), for example C(pg_restore.py) and C(jobs/runner.py).
  type: list
  elements: str
"""

from ansible.errors import AnsibleError
from ansible.plugins.lookup import LookupBase
from ansible_collections.tokotani.dr.plugins.module_utils.jobs.runner import HOST_MODULES


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        if terms:
            raise AnsibleError("tokotani.dr.runner_files takes no terms")
        self.set_options(var_options=variables, direct=kwargs)
        return list(HOST_MODULES)
