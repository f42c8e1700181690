#!/usr/bin/python
# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Engine: plugins/module_utils/recovery_commit.py (Commit).

DOCUMENTATION = r"""
module: recovery_commit
short_description: Swap a staged, checked database in, restart the app and check its health, as one uncuttable step
version_added: "0.3.0"
description:
  - The commit of a recovery - optionally stops the application (O(stop_first)), swaps the database
    M(tokotani.dr.postgresql_restore) staged (O(tokotani.dr.postgresql_restore#module:mode=stage)) in for
    O(database), and restarts the application under pm2, waiting until it stays online; with O(health_url), it then
    waits until the application answers healthy.
  - One module call on the server, which ignores SIGINT, SIGTERM, SIGHUP and SIGPIPE from its first step to its
    last - so a controller that is interrupted or killed, or loses its connection, while it runs leaves either the
    live database untouched or swapped with the application restarted, never swapped with the application stopped.
  - The swap is a compare-and-swap - it happens only if the live database still has the OID O(expected_oid) (the one
    the recovery saw at its start) and O(staging_database) still has O(staged_oid); otherwise nothing is changed, the
    application is started again when this call stopped it, and the message says what it found.
  - Every step (V(stop), V(swap), V(restart), V(health)) is recorded in the recovery record of O(run_id) before it
    begins (M(tokotani.dr.recovery_run)); the commit refuses at once when the run no longer holds the recovery.
  - The moment the application answered healthy is recorded as the step V(serving) - the end of the shop's downtime
    (RV(tokotani.dr.recovery_run#module:downtime)), measured on the server rather than after a round trip to the
    controller.
  - When the application does not come back or is not healthy after the swap, the module fails with RV(swapped=true),
    RV(failed_step) and where the previous database is kept, so that the caller swaps it back
    (O(tokotani.dr.postgresql_restore#module:mode=revert)).
  - After the swap the previous database is kept as C(<database>__pre_restore_<timestamp>) and O(keep_previous) is
    applied, as M(tokotani.dr.postgresql_restore) does.
  - Run it as root (the app's user is reached with C(runuser), as M(tokotani.dr.pm2_process) does) with
    O(login_os_user=postgres) for peer authentication; files it makes in the backup directory get that directory's
    owner.
author:
  - TokoTani DevOps Team (@tokotani)
extends_documentation_fragment:
  - tokotani.dr.postgres
  - tokotani.dr.backup_key
  - tokotani.dr.keep_previous
attributes:
  check_mode:
    support: full
    description: Checks both databases and the app and says what it would do; nothing is stopped, swapped or recorded.
  diff_mode:
    support: none
    description: The result says what was done.
options:
  database:
    description: The live database to replace.
    type: str
    required: true
    aliases: [db]
  state_dir:
    description: Where the recovery record is (O(tokotani.dr.recovery_run#module:state_dir), the backup directory).
    type: path
    required: true
  run_id:
    description: The recovery run, as O(tokotani.dr.recovery_run#module:state=started) returned it.
    type: str
    required: true
  staging_database:
    description: The staged database (RV(tokotani.dr.postgresql_restore#module:staging_database) of the stage).
    type: str
    required: true
  staged_oid:
    description: Its OID (RV(tokotani.dr.postgresql_restore#module:restored_oid) of the stage).
    type: int
    required: true
  expected_oid:
    description: The OID the live database must still have (the one the recovery saw at its start).
    type: int
  backup_dir:
    description:
      - The backup directory (O(keep_previous) looks for the backups of kept databases there). Default O(state_dir).
    type: path
  stop_first:
    description:
      - Stop the application in this call, right before the swap - the minimal-downtime recovery, which staged and
        checked while the application still served. V(false) - the application was stopped earlier (the plan's order).
    type: bool
    default: false
  confirm:
    description: Must be V(true), or the swap is refused and nothing changes. Check mode does not need it.
    type: bool
    default: false
  login_os_user:
    description:
      - The operating system user C(psql) runs as - V(postgres) for peer authentication over the Unix socket. The module
        runs as root to switch. Empty - as the module's own user.
    type: str
  health_url:
    description:
      - The application's health URL, requested from this server (no proxy) once the processes stay online - it
        must answer 200 with a JSON body whose C(database) is V(ok) (TokoTani's C(/api/health)).
      - Polled every 0.2 seconds until it does, at most O(health_timeout) seconds. Empty - no health check.
    type: str
  health_timeout:
    description: Seconds the health URL has to answer healthy.
    type: int
    default: 30
  app:
    description: The application under pm2, as M(tokotani.dr.pm2_process) takes it.
    type: dict
    required: true
    suboptions:
      ecosystem:
        description: The app's pm2 process file.
        type: path
        required: true
      only:
        description: The apps of the file to stop and restart.
        type: list
        elements: str
      min_uptime:
        description: Seconds each process must stay online to count as started.
        type: float
        default: 3
      wait_timeout:
        description: Seconds to wait for that.
        type: int
        default: 60
        aliases: [timeout]
      log_lines:
        description: Lines of a failing process's log in the message.
        type: int
        default: 20
      user:
        description: The user whose pm2 daemon runs the app.
        type: str
        aliases: [run_as]
      pm2_home:
        description: That daemon's C(PM2_HOME) (default C(~user/.pm2)).
        type: path
      executable:
        description: The pm2 executable (default - found in the user's and the system's paths).
        type: path
notes:
  - The controller stays unaware of what happened while it was gone; the recovery record says (RV(steps), and
    M(tokotani.dr.recovery_run) O(tokotani.dr.recovery_run#module:state=status)).
seealso:
  - module: tokotani.dr.postgresql_restore
  - module: tokotani.dr.recovery_run
  - module: tokotani.dr.pm2_process
"""

EXAMPLES = r"""
- name: Stop the shop, swap the staged copy in, start the shop again - one step on the server
  tokotani.dr.recovery_commit:
    database: tokotani
    state_dir: /srv/tokotani/shared/backups
    run_id: "{{ run.run_id }}"
    staging_database: "{{ staged.staging_database }}"
    staged_oid: "{{ staged.restored_oid }}"
    expected_oid: "{{ run.live_oid }}"
    stop_first: true
    confirm: true
    login_os_user: postgres
    login_unix_socket: /var/run/postgresql
    app:
      ecosystem: /srv/tokotani/current/ecosystem.config.js
      only: [tokotani-nextjs, tokotani-engine-hub]
    health_url: http://127.0.0.1:3000/api/health
  register: committed
"""

RETURN = r"""
stopped:
  description:
    - What stopping the app did (RV(tokotani.dr.pm2_process#module:actions) and the rest); null without O(stop_first).
  returned: always
  type: dict
swap:
  description:
    - The swap's result, as M(tokotani.dr.postgresql_restore) returns it in
      O(tokotani.dr.postgresql_restore#module:mode=swap).
  returned: always
  type: dict
restart:
  description: What restarting the app did, as M(tokotani.dr.pm2_process) returns it (null in check mode).
  returned: always
  type: dict
previous_database:
  description: Where the database it replaced is kept (null when there was none); also on a failed restart.
  returned: success, and when the restart failed after the swap
  type: str
  sample: tokotani__pre_restore_20260105_083512
previous_oid:
  description: The OID of RV(previous_database).
  returned: success, and when the restart failed after the swap
  type: int
restored_oid:
  description: The OID of the database now live as O(database).
  returned: success, and when the restart failed after the swap
  type: int
steps:
  description: The steps recorded, in order.
  returned: success
  type: list
  elements: str
  sample: [stop, swap, restart, health, serving]
health:
  description: What the health URL answered last (only with O(health_url)).
  returned: when the health URL was checked
  type: str
  sample: /api/health 200, database ok (version 1.0.0)
failed_step:
  description: The step after the swap that failed - V(restart) (the app did not stay online) or V(health).
  returned: when the swap committed and a later step failed
  type: str
swapped:
  description: Whether the swap committed (V(false) - the failure changed no database).
  returned: failure
  type: bool
app_stopped:
  description: Whether this call had stopped the application (O(stop_first)) before the swap failed; the message says
    whether it was started again.
  returned: when the swap failed
  type: bool
msg:
  description: What was done, or where everything is after a failure.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tokotani.dr.plugins.module_utils.errors import call
from ansible_collections.tokotani.dr.plugins.module_utils.recovery_commit import argument_spec, commit


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    result, failure = call(commit, module, module.params, check_mode=module.check_mode)
    if failure:
        failure.setdefault("changed", bool(failure.get("swapped") or failure.get("app_stopped")))
        module.fail_json(database=module.params["database"], **failure)
    for warning in result.pop("warnings", []):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
