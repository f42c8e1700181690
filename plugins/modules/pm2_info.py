#!/usr/bin/python
# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Engine: plugins/module_utils/pm2.py (process_info).

DOCUMENTATION = r"""
module: pm2_info
short_description: Read the pm2 processes of a user, without their environment
version_added: "0.1.0"
description:
  - Returns the processes of one user's pm2 daemon (all, or those named in O(name)) from C(pm2 jlist), with
    a status per app, the list of online apps and whether all of them are online, for C(when) conditions,
    C(assert) tasks and health checks.
  - Read-only. When the daemon does not run, reports no processes and RV(daemon_running=false) instead of
    spawning a daemon.
author:
  - TokoTani DevOps Team (@tokotani)
extends_documentation_fragment:
  - tokotani.dr.pm2
attributes:
  check_mode:
    support: full
    description: Read-only; behaves the same in check mode.
  diff_mode:
    support: none
    description: Changes nothing, so there is nothing to diff.
options:
  name:
    description:
      - Only report these apps. RV(status) then lists each of them, V(absent) when pm2 does not know it.
    type: list
    elements: str
  log_lines:
    description:
      - Also return the last O(log_lines) lines of each listed app's error log (its output log when that
        is empty) as RV(logs), with every secret of the processes' environment and every URL password
        masked, as M(tokotani.dr.pm2_process) masks its log tails. V(0) returns none.
    type: int
    default: 0
seealso:
  - module: tokotani.dr.pm2_process
"""

EXAMPLES = r"""
- name: Read the application's processes
  tokotani.dr.pm2_info:
    name:
      - tokotani-nextjs
      - tokotani-engine-hub
  register: pm2

- name: Both processes must be online
  ansible.builtin.assert:
    that: pm2.all_online
    fail_msg: "Not online: {{ pm2.status | dict2items | rejectattr('value', 'eq', 'online') | items2dict }}"

- name: Restart the engine hub only when it is not online
  tokotani.dr.pm2_process:
    name: tokotani-engine-hub
    state: restarted
  when: pm2.status['tokotani-engine-hub'] != 'online'

- name: Processes of another user's daemon
  tokotani.dr.pm2_info:
    user: deploy
  become: true
  register: deploy_pm2
"""

RETURN = r"""
processes:
  description:
    - The processes (one entry per instance), without their environment; the fields of
      RV(tokotani.dr.pm2_process#module:processes).
  returned: always
  type: list
  elements: dict
  sample:
    - name: tokotani-nextjs
      pm_id: 0
      pid: 4242
      status: online
      restarts: 0
      unstable_restarts: 0
      uptime: 3600
      started_at: "2026-01-05T02:00:00Z"
      created_at: "2026-01-04T10:00:00Z"
      cwd: /srv/tokotani/releases/v1.0.0-1a2b3c4d
      script: /srv/tokotani/releases/v1.0.0-1a2b3c4d/server.js
      interpreter: node
      exec_mode: fork
      instances: 1
      namespace: default
      version: 1.0.0
      node_version: 20.20.2
      autorestart: true
      memory: 53919744
      cpu: 0.3
      out_log: /root/.pm2/logs/tokotani-nextjs-out.log
      error_log: /root/.pm2/logs/tokotani-nextjs-error.log
      args: []
      node_args: []
status:
  description:
    - Status of each app (of O(name), else of every app in the list) - V(online) when all its instances are,
      else the first other status; V(absent) when pm2 does not know a named app.
  returned: always
  type: dict
  sample: {"tokotani-nextjs": "online", "tokotani-engine-hub": "stopped"}
online:
  description: The apps whose instances are all online.
  returned: always
  type: list
  elements: str
  sample: [tokotani-nextjs]
all_online:
  description: Whether every app of RV(status) is online (false when there is none).
  returned: always
  type: bool
  sample: false
daemon_running:
  description: Whether the pm2 daemon of O(pm2_home) runs.
  returned: always
  type: bool
  sample: true
pm2:
  description: The pm2 that was used.
  returned: always
  type: dict
  contains:
    executable:
      description: pm2 executable.
      type: str
      sample: /usr/local/bin/pm2
    version:
      description: pm2 version (from its package), null when unknown.
      type: str
      sample: 7.0.4
    node:
      description: The node that runs pm2.
      type: str
      sample: /usr/bin/node
    user:
      description: The user pm2 runs as.
      type: str
      sample: root
    home:
      description: C(PM2_HOME).
      type: str
      sample: /root/.pm2
logs:
  description:
    - Per app, the log file read and its last lines, secrets masked. Only apps whose logs could be read.
    - Empty unless O(log_lines) is set.
  returned: always
  type: dict
  sample:
    tokotani-nextjs:
      path: /home/tokotani/.pm2/logs/tokotani-nextjs-error.log
      lines: ["Error: connect ECONNREFUSED 127.0.0.1:5432"]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tokotani.dr.plugins.module_utils.errors import call
from ansible_collections.tokotani.dr.plugins.module_utils.pm2 import process_info


def main():
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "list", "elements": "str"},
            "user": {"type": "str", "aliases": ["run_as"]},
            "pm2_home": {"type": "path"},
            "executable": {"type": "path"},
            "log_lines": {"type": "int", "default": 0},
        },
        supports_check_mode=True,
    )
    result, details = call(process_info, module, module.params)
    if details:
        details.setdefault("changed", False)
        module.fail_json(**details)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
