#!/usr/bin/python
# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Engine: plugins/module_utils/pm2.py (ensure_process).

DOCUMENTATION = r"""
module: pm2_process
short_description: Start, stop, restart, reload or remove pm2 processes, from an ecosystem file or by name
version_added: "0.1.0"
description:
  - Brings pm2 processes to a state, deciding from C(pm2 jlist) whether anything must be done, so that a
    second run reports no change. V(restarted) and V(reloaded) always act.
  - Targets processes by O(name), or the apps of an O(ecosystem) file (C(ecosystem.config.js)), all of them or
    those listed in O(only), which are started with C(pm2 start <file> --only <apps>) from the file's directory.
  - With O(ecosystem), a running process whose script path, working directory, exec mode or number of
    instances differs from what the file says now (after a release switch, for example, when the file lives
    in the new release) is deleted and started again from the file (O(recreate)); a plain pm2 restart would
    keep running the old resolved path.
  - Waits (O(wait)) until every targeted process is online and has stayed up for O(min_uptime) seconds. A crash
    loop (the process errored, stopped, or restarted repeatedly while waiting) or the O(wait_timeout) fails
    the task with the last lines of the process's error log.
  - Optionally saves the process list for the next boot (O(save), C(pm2 save)) and installs pm2's systemd
    unit for the user (O(startup), C(pm2 startup systemd)), so that the processes come back after a reboot.
author:
  - TokoTani DevOps Team (@tokotani)
extends_documentation_fragment:
  - tokotani.dr.pm2
attributes:
  check_mode:
    support: full
    description: Reports the actions and commands it would run and changes nothing (never spawns a pm2 daemon).
  diff_mode:
    support: full
    description: Shows each targeted app's status before and after (V(absent) when not in pm2's list).
options:
  name:
    description:
      - Name of the pm2 process to act on.
      - Without O(ecosystem), the process must already be in pm2's list (for every state but V(absent)), since
        pm2 needs the app's definition to start it.
      - With O(ecosystem), the app of that file to act on (the same as O(only) with one name).
    type: str
  ecosystem:
    description:
      - The app's pm2 process file, for example C(/srv/tokotani/current/ecosystem.config.js). Its name must be
        one pm2 reads as a process file (containing C(.config.js), C(.config.cjs), C(.config.mjs), C(.json),
        C(.yml) or C(.yaml)).
      - pm2 runs from the file's directory, so relative C(cwd) and C(script) entries resolve there.
      - The file is loaded with node as O(user) to learn each app's name, script and working directory; its
        C(env) is never read into the result.
    type: path
  only:
    description:
      - The apps of O(ecosystem) to act on (C(--only)). All the file's apps when not set.
      - An app that the file does not define is an error.
    type: list
    elements: str
  state:
    description:
      - V(started) - running; a stopped or errored process is started, a missing one is started from
        O(ecosystem). An online process is left alone, unless it must be recreated (O(recreate)) or a file of
        O(restart_if_newer) changed after it started.
      - V(stopped) - stopped (C(pm2 stop)); a process that is not in pm2's list is left alone.
      - V(restarted) - always restarted (C(pm2 restart)); with O(ecosystem) the file's current settings and
        C(env) are applied.
      - V(reloaded) - always reloaded (C(pm2 reload)), which is zero-downtime in cluster mode only. In fork
        mode (the default for a single instance) pm2 restarts the process.
      - V(absent) - removed from pm2's list (C(pm2 delete)).
    type: str
    choices: [started, stopped, restarted, reloaded, absent]
    default: started
  recreate:
    description:
      - With O(ecosystem), delete and start again a process whose script path, working directory, exec mode or
        number of instances differs from the file (for V(started), V(restarted) and V(reloaded)).
      - When V(false), such a process is left to run its old path.
    type: bool
    default: true
  restart_if_newer:
    description:
      - Files (for example the app's C(.env)) whose change must restart the app. With V(started), an online
        process that started before any of these files was last modified is restarted.
      - A file that does not exist is an error.
    type: list
    elements: path
    default: []
  ecosystem_env:
    description:
      - Name of the environment of O(ecosystem) to apply (C(--env), for example V(production) uses the apps'
        C(env_production)) when starting, restarting or reloading from the file.
    type: str
  wait:
    description:
      - After acting (and also when nothing had to be done), wait until every targeted process is online and
        has stayed up for O(min_uptime) seconds, for V(started), V(restarted) and V(reloaded).
    type: bool
    default: true
  min_uptime:
    description:
      - Seconds a process must have been online (since its last start) to count as stable.
    type: float
    default: 3
  wait_timeout:
    description:
      - Seconds to wait for the processes to become stable before failing.
    type: int
    default: 60
    aliases: [timeout]
  log_lines:
    description:
      - Lines of the process's error log (its output log when that is empty) shown when it fails to start.
    type: int
    default: 20
  save:
    description:
      - Save pm2's process list for the next boot (C(pm2 save)) when this task changed something or the saved
        list (C(dump.pm2) in O(pm2_home)) differs from the running one.
      - The dump holds the processes' environment, so the module makes it private (mode 0600).
    type: bool
    default: false
  startup:
    description:
      - Install pm2's boot unit for O(user) (C(pm2 startup systemd -u <user> --hp <home>), which writes and
        enables C(/etc/systemd/system/pm2-<user>.service)) when it is missing or outdated, enable it, and start
        it when no daemon runs yet, so that the daemon runs under systemd.
      - The unit resurrects the list saved with O(save) at boot. Needs root and a host booted with systemd;
        O(pm2_home) must be C(<home>/.pm2).
    type: str
    choices: [systemd]
notes:
  - pm2 starts processes with the environment of the pm2 command, so variables set with the task's
    C(environment) keyword reach a process that this module starts.
seealso:
  - module: tokotani.dr.pm2_info
  - name: pm2 ecosystem file
    description: The process file format.
    link: https://pm2.keymetrics.io/docs/usage/application-declaration/
"""

EXAMPLES = r"""
# Plan 2.1 step 1: stop the application before restoring the database.
- name: Stop the Next.js app and the engine hub
  tokotani.dr.pm2_process:
    name: "{{ item }}"
    state: stopped
  loop:
    - tokotani-nextjs
    - tokotani-engine-hub

# Plan 2.1 step 5: restart both and wait until they stay up for 5 seconds.
- name: Restart the application from its ecosystem file
  tokotani.dr.pm2_process:
    ecosystem: /srv/tokotani/current/ecosystem.config.js
    only:
      - tokotani-nextjs
      - tokotani-engine-hub
    state: restarted
    min_uptime: 5
    wait_timeout: 90

# A deploy: start what is missing, recreate what runs an old release, restart when .env changed,
# remember the list for the next boot and make systemd start pm2 at boot.
- name: Run the release's apps under pm2
  tokotani.dr.pm2_process:
    ecosystem: /srv/tokotani/current/ecosystem.config.js
    only: [tokotani-nextjs, tokotani-engine-hub]
    state: started
    restart_if_newer:
      - /srv/tokotani/current/.env
    save: true
    startup: systemd
  become: true

# Another user's daemon (the module runs pm2 as that user).
- name: Reload the shop of the deploy user
  tokotani.dr.pm2_process:
    name: tokotani-nextjs
    state: reloaded
    user: deploy
  become: true

- name: Remove a process
  tokotani.dr.pm2_process:
    name: old-worker
    state: absent
"""

RETURN = r"""
actions:
  description: What was done (or would be, in check mode) to each targeted app that was not yet in state.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The app.
      type: str
      sample: tokotani-nextjs
    action:
      description: One of start, recreate, restart, reload, stop, delete.
      type: str
      sample: recreate
    reason:
      description: Why.
      type: str
      sample: cwd /srv/tokotani/releases/v1.0.0-1a2b3c4d -> /srv/tokotani/releases/v1.0.1-5e6f7a8b
commands:
  description: The commands run (or that would run, in check mode), as argv lists; they carry no secrets.
  returned: always
  type: list
  elements: list
  sample: [["/usr/local/bin/pm2", "start", "/srv/tokotani/current/ecosystem.config.js", "--only", "tokotani-nextjs"]]
processes:
  description:
    - The targeted processes after the task (one entry per instance), without their environment.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Process name.
      type: str
      sample: tokotani-nextjs
    pm_id:
      description: pm2's id of the process.
      type: int
      sample: 0
    pid:
      description: Operating system process id (0 when not running).
      type: int
      sample: 4242
    status:
      description: pm2 status (online, launching, stopping, stopped, waiting restart, errored, one-launch-status).
      type: str
      sample: online
    restarts:
      description: How many times pm2 restarted it (C(restart_time)).
      type: int
      sample: 0
    unstable_restarts:
      description: Restarts that happened before the process had been up for pm2's own C(min_uptime).
      type: int
      sample: 0
    uptime:
      description: Seconds since its last start; null when not online.
      type: int
      sample: 3600
    started_at:
      description: Time of its last start (ISO 8601, UTC); null when not online.
      type: str
      sample: "2026-01-05T02:00:00Z"
    created_at:
      description: Time it was added to pm2's list (ISO 8601, UTC).
      type: str
      sample: "2026-01-04T10:00:00Z"
    cwd:
      description: Working directory.
      type: str
      sample: /srv/tokotani/releases/v1.0.0-1a2b3c4d
    script:
      description: Resolved path of the script pm2 runs.
      type: str
      sample: /srv/tokotani/releases/v1.0.0-1a2b3c4d/server.js
    interpreter:
      description: Interpreter (C(node), C(bash), C(none) ...).
      type: str
      sample: node
    exec_mode:
      description: fork or cluster.
      type: str
      sample: fork
    instances:
      description: Instances configured.
      type: raw
      sample: 1
    namespace:
      description: pm2 namespace.
      type: str
      sample: default
    version:
      description: The app's version (from its package.json), null when unknown.
      type: str
      sample: 1.0.0
    node_version:
      description: Node.js version running it.
      type: str
      sample: 20.20.2
    autorestart:
      description: Whether pm2 restarts it when it exits.
      type: bool
      sample: true
    memory:
      description: Resident memory in bytes.
      type: int
      sample: 53919744
    cpu:
      description: CPU usage in percent.
      type: float
      sample: 0.3
    out_log:
      description: Output log file.
      type: str
      sample: /root/.pm2/logs/tokotani-nextjs-out.log
    error_log:
      description: Error log file.
      type: str
      sample: /root/.pm2/logs/tokotani-nextjs-error.log
    args:
      description: Script arguments, secret-looking values masked.
      type: list
      elements: str
      sample: ["--port", "3000", "--token", "********"]
    node_args:
      description: Node.js arguments, secret-looking values masked.
      type: list
      elements: str
      sample: ["--max-old-space-size=512"]
saved:
  description: Whether C(pm2 save) ran (or would run, in check mode).
  returned: always
  type: bool
  sample: true
startup_unit:
  description: The systemd unit that starts pm2 at boot.
  returned: when O(startup) is set
  type: str
  sample: pm2-root
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
  description: The last lines of the error log of each app that failed to become stable ({app -> lines}).
  returned: on failure, when a process crash-looped or did not become stable in time
  type: dict
  sample: {"tokotani-nextjs": ["Error: connect ECONNREFUSED 127.0.0.1:5432"]}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tokotani.dr.plugins.module_utils.errors import call
from ansible_collections.tokotani.dr.plugins.module_utils.pm2 import ensure_process, process_argument_spec


def main():
    module = AnsibleModule(
        argument_spec=process_argument_spec(),
        mutually_exclusive=[("name", "only")],
        required_one_of=[("name", "ecosystem")],
        required_by={"only": "ecosystem", "ecosystem_env": "ecosystem"},
        supports_check_mode=True,
    )
    params = module.params
    if params["min_uptime"] < 0 or params["wait_timeout"] < 0 or params["log_lines"] < 0:
        module.fail_json(msg="min_uptime, wait_timeout and log_lines must not be negative")
    if params["only"] is not None and not [name for name in params["only"] if name]:
        module.fail_json(msg="only must name at least one app of the ecosystem file")
    result, details = call(ensure_process, module, params, check_mode=module.check_mode)
    if details:
        details.setdefault("changed", False)
        module.fail_json(**details)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
