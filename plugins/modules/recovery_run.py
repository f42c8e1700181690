#!/usr/bin/python
# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Engine: plugins/module_utils/recovery_run.py (RecoveryRun).

DOCUMENTATION = r"""
module: recovery_run
short_description: One recovery of a database at a time, with its progress recorded on the server
version_added: "0.3.0"
description:
  - Keeps the recovery record of a database, a small JSON file beside its backups
    (C(<state_dir>/.tokotani-recovery.<database>.json), mode 0600) that every controller driving the server
    sees - the lock of a whole recovery procedure, not of one module call, and the record of how far it got.
  - O(state=started) takes the record before the procedure changes anything; it fails at once while another run
    holds it and is alive, naming that run (who, from where, since when, at which step), and records the live
    database's OID for the compare-and-swap of M(tokotani.dr.postgresql_restore).
  - A run that died (a killed controller, a lost connection) leaves its record open. It is judged dead when no step
    was recorded for O(stale_after) seconds and no restore of the database is running on the server (a restore holds
    the claim lock of its scratch database for its whole life, released by the kernel when it dies). O(break_lock)
    takes over earlier, but never from a restore that is still running. The new run reports what the dead one
    left, checked on the server (RV(previous_run)).
  - O(state=step) records a step and the databases involved; it fails when the record is no longer this run's
    (another run took it over), so a run never goes on acting on databases it no longer owns.
  - O(state=finished) closes the record with the outcome and returns the timeline of the run (RV(timeline)).
  - O(state=status) reads the record and says whether a recovery is in progress or one never finished.
  - Everything read back from the record is checked (types, lengths, names) before use; a record this collection did
    not write is set aside as C(<record>.invalid-<timestamp>) and never trusted. Database names from it reach the
    server only as psql variables.
author:
  - TokoTani DevOps Team (@tokotani)
extends_documentation_fragment:
  - tokotani.dr.postgres
attributes:
  check_mode:
    support: full
    description: Checks the record and what O(state) would do, writing nothing.
  diff_mode:
    support: none
    description: The record is returned in RV(record).
options:
  database:
    description: The database the recovery is of.
    type: str
    required: true
    aliases: [db]
  state:
    description:
      - V(started) - take the record (a new run); V(step) - record a step; V(finished) - close it with O(outcome);
        V(status) - read it.
    type: str
    choices: [started, step, finished, status]
    default: status
  state_dir:
    description:
      - Where the record lives - the backup directory of the database, which the backup job reads too (it stands aside
        while a recovery is in progress). It must exist.
    type: path
    required: true
  run_id:
    description: The run, as O(state=started) returned it in RV(run_id); required with V(step) and V(finished).
    type: str
  step:
    description: The step's name (lower case letters, digits and C(_)), with O(state=started) or O(state=step).
    type: str
  databases:
    description:
      - The databases involved so far, merged into the record - short lower-case keys, each a database name or an
        OID (for example C(scratch), C(previous), C(restored_oid)).
    type: dict
    default: {}
  outcome:
    description: How the run ended, with O(state=finished).
    type: str
    choices: [recovered, reverted, failed, refused]
  summary:
    description: What the run said at its end, kept in the record as C(message) (at most 2000 characters).
    type: str
  procedure:
    description: The procedure the run belongs to, for messages.
    type: str
    default: recover_db
  operator:
    description: Who runs it (user, AWX job), for messages.
    type: str
  controller:
    description: Where it runs from (the controller's host name), for messages.
    type: str
  stale_after:
    description:
      - Seconds without a recorded step after which an open record, with no restore of its database running, belongs
        to a dead run. Longer than any step of the procedure but the restore (whose process is checked directly).
    type: int
    default: 900
  break_lock:
    description:
      - Take the record over from an open run that is not yet judged dead, once you have checked that it is (its
        controller was killed). Never takes over while a restore of the database runs on the server.
    type: bool
    default: false
  check_databases:
    description:
      - Read the live database's OID (V(started)) and check what a dead run left (V(started), V(status)) or what this
        run leaves (V(finished)) on the server. Needs the connection options; V(false) leaves PostgreSQL alone.
    type: bool
    default: true
notes:
  - The backup job (M(tokotani.dr.dr_job), the C(tokotani-backup) timer) skips its run while a recovery of its database
    is in progress, and records C(skipped) in its status file.
seealso:
  - module: tokotani.dr.postgresql_restore
  - module: tokotani.dr.dr_job
"""

EXAMPLES = r"""
- name: Take the recovery of tokotani (fails at once while another run holds it)
  tokotani.dr.recovery_run:
    database: tokotani
    state: started
    state_dir: /srv/tokotani/shared/backups
    step: preflight
    operator: "{{ lookup('ansible.builtin.env', 'USER') }}"
    controller: "{{ lookup('ansible.builtin.pipe', 'hostname') }}"
    login_unix_socket: /var/run/postgresql
  become: true
  become_user: postgres
  register: run

- name: Record the restore step and the databases it involves
  tokotani.dr.recovery_run:
    database: tokotani
    state: step
    state_dir: /srv/tokotani/shared/backups
    run_id: "{{ run.run_id }}"
    step: verify
    databases:
      previous: "{{ restored.previous_database }}"
      restored_oid: "{{ restored.restored_oid }}"
    check_databases: false
  become: true
  become_user: postgres

- name: Close it and read the timeline
  tokotani.dr.recovery_run:
    database: tokotani
    state: finished
    state_dir: /srv/tokotani/shared/backups
    run_id: "{{ run.run_id }}"
    outcome: recovered
    check_databases: false
  become: true
  become_user: postgres
  register: closed

- name: Is a recovery in progress, or did one never finish?
  tokotani.dr.recovery_run:
    database: tokotani
    state_dir: /srv/tokotani/shared/backups
  become: true
  become_user: postgres
"""

RETURN = r"""
run_id:
  description: The run's id (16 hex characters), to pass to the next calls.
  returned: success, with O(state=started), O(state=step) and O(state=finished)
  type: str
  sample: 3f9c0a7d51e2b864
record:
  description:
    - The record as it is now - C(run_id), C(procedure), C(operator), C(controller), C(host), C(state), C(step),
      C(started_at), C(updated_at), C(finished_at) (epoch seconds), C(steps) (each C(step) and C(at)), C(databases),
      C(message). Null when there is none.
  returned: always
  type: dict
record_path:
  description: The record's file.
  returned: with O(state=started) and O(state=status)
  type: str
  sample: /srv/tokotani/shared/backups/.tokotani-recovery.tokotani.json
live_oid:
  description: The live database's OID when the run started (null when it is missing or O(check_databases=false)).
  returned: with O(state=started)
  type: int
  sample: 16384
previous_run:
  description:
    - The run before this one - C(run_id), C(description); for a run that never finished also C(why_stale) and
      C(left_behind), sentences on what it left, checked on the server.
  returned: with O(state=started)
  type: dict
timeline:
  description: Every step with C(step), C(started_at), C(finished_at) (epoch seconds) and C(seconds).
  returned: with O(state=finished)
  type: list
  elements: dict
downtime:
  description:
    - Seconds the shop was down - from the start of step C(stop) to the start of step C(serving) (the moment
      M(tokotani.dr.recovery_commit) saw it healthy), else to the end of step C(health) or of the run; null when the
      run never stopped the app.
  returned: with O(state=finished)
  type: float
  sample: 6.4
facts:
  description:
    - What the run leaves, checked on the server by OID when O(check_databases) is set (the live database untouched,
      or the backup it restored; whether its staging and kept databases are there), one sentence each.
    - With O(state=status), the same of the open run, alive or not (empty when no run is open).
  returned: with O(state=finished) and O(state=status)
  type: list
  elements: str
started_at:
  description: When the run started, epoch seconds (the server's clock).
  returned: with O(state=finished)
  type: float
finished_at:
  description: When it was closed, epoch seconds.
  returned: with O(state=finished)
  type: float
duration:
  description: Seconds from start to close.
  returned: with O(state=finished)
  type: float
in_progress:
  description: Whether a recovery of the database is in progress (an open record of a live run).
  returned: with O(state=status)
  type: bool
stale:
  description: Whether the open record belongs to a run judged dead (null when there is no open record).
  returned: with O(state=status)
  type: bool
left_behind:
  description: With a stale record, what the dead run left, checked on the server.
  returned: with O(state=status)
  type: list
  elements: str
holder:
  description: When the record is held by another run, that run's record.
  returned: failure
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tokotani.dr.plugins.module_utils.errors import call
from ansible_collections.tokotani.dr.plugins.module_utils.pg_cli import Connection, Psql
from ansible_collections.tokotani.dr.plugins.module_utils.recovery_run import run
from ansible_collections.tokotani.dr.plugins.module_utils.specs import recovery_run_argument_spec


def main():
    module = AnsibleModule(
        argument_spec=recovery_run_argument_spec(),
        required_if=[("state", "step", ["run_id", "step"]), ("state", "finished", ["run_id", "outcome"])],
        supports_check_mode=True,
    )
    p = module.params
    psql = Psql(Connection.from_params(p)) if p["check_databases"] else None
    result, failure = call(run, p, psql=psql, check_mode=module.check_mode)
    if failure:
        module.fail_json(changed=False, database=p["database"], **failure)
    for warning in result.pop("warnings", []):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
