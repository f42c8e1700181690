#!/usr/bin/python
# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Engine: plugins/module_utils/dr_runner.py (execute), backup_job.py, verify_job.py - the jobs of the systemd timers.

DOCUMENTATION = r"""
module: dr_job
short_description: Run a job of the systemd timers now (the daily backup, the weekly verification) as the timer does
version_added: "0.2.0"
description:
  - Runs one job of the host-side runner C(tokotani-dr) (the C(ExecStart) of C(tokotani-backup.service) and
    C(tokotani-backup-verify.service)) with the same engines, the same configuration and the same result, from a
    playbook. The roles C(tokotani.dr.backup) and C(tokotani.dr.backup_verify) call it from their entry point
    C(now) with the configuration their timers read, so a manual run and a timer run cannot differ.
  - V(backup) - first removes what interrupted runs left, backs the database up (M(tokotani.dr.postgresql_backup)),
    applies the local retention, then, with an C(offsite) section, pushes the new backup, catches up older local
    backups that never reached the bucket, and applies the offsite retention (M(tokotani.dr.backup_offsite)).
  - V(verify) - first drops scratch databases and work directories that killed runs left, then restores the newest
    valid backup (local, or pulled from offsite) into a scratch database with M(tokotani.dr.postgresql_restore),
    checks it, drops the scratch database whatever happened and records the result beside the backup's manifest.
  - Writes the job's status file (C(status_file) of the configuration) as the timer does, so monitoring sees the
    manual run too; a status file that cannot be written fails the run.
  - A failed job fails the task with the job's message (for V(verify), naming the failed check). Secrets are options
    (never printed), given to the job the way systemd's C(EnvironmentFile) gives them to the timer; a secret in the
    configuration is used with a warning, as in the timer's file, and is printed with the task's arguments.
author:
  - TokoTani DevOps Team (@tokotani)
attributes:
  check_mode:
    support: full
    description: The job's own check mode (the runner's C(--check)) - what it would back up or verify, nothing written.
  diff_mode:
    support: none
    description: The result describes what was done.
options:
  job:
    description: The job to run.
    type: str
    required: true
    choices: [backup, verify]
  config:
    description:
      - The job's configuration, the JSON object the role writes to C(/etc/tokotani-dr/backup.json) or
        C(/etc/tokotani-dr/verify.json) (see C(docs/development.md)) - its sections take the options of the modules
        the job chains, with the same names.
      - Should not hold secrets (the task's arguments are printed at C(-vvv)); give them with the options below.
    type: dict
    required: true
  backup_key:
    description: The backup key that signs and verifies manifests (C(TOKOTANI_BACKUP_KEY) for the job).
    type: str
  backup_previous_keys:
    description: Earlier backup keys, still accepted to verify and decrypt what they made.
    type: list
    elements: str
  login_password:
    description: The PostgreSQL password (C(PGPASSWORD) for the job); not needed with peer authentication.
    type: str
  access_key:
    description: S3 access key for the C(offsite) section (C(AWS_ACCESS_KEY_ID) for the job).
    type: str
    aliases: [aws_access_key_id, aws_access_key, ec2_access_key]
  secret_key:
    description: S3 secret key (C(AWS_SECRET_ACCESS_KEY) for the job).
    type: str
    aliases: [aws_secret_access_key, aws_secret_key, ec2_secret_key]
  session_token:
    description: S3 session token (C(AWS_SESSION_TOKEN) for the job).
    type: str
    aliases: [aws_session_token, security_token, aws_security_token, access_token]
notes:
  - Each secret option also falls back to its environment variable on the managed host, as the job itself does.
seealso:
  - module: tokotani.dr.postgresql_backup
  - module: tokotani.dr.postgresql_restore
  - module: tokotani.dr.backup_offsite
"""

EXAMPLES = r"""
- name: Take a backup now, exactly as the daily timer does (the role's own configuration)
  tokotani.dr.dr_job:
    job: backup
    config: "{{ lookup('ansible.builtin.file', '/etc/tokotani-dr/backup.json') | from_json }}"
    backup_key: "{{ tokotani_backup_key }}"
  become: true
  become_user: postgres

- name: Verify the newest local backup
  tokotani.dr.dr_job:
    job: verify
    config:
      status_file: /var/lib/tokotani-dr/verify-status.json
      restore:
        source_database: tokotani
        backup_dir: /srv/tokotani/shared/backups
        login_unix_socket: /var/run/postgresql
        assertions:
          - name: migrations applied
            sql: SELECT EXISTS (SELECT 1 FROM _prisma_migrations)
    backup_key: "{{ tokotani_backup_key }}"
  become: true
  become_user: postgres
"""

RETURN = r"""
msg:
  description: The job's one-line account of the run (the line the timer writes to the journal).
  returned: always
  type: str
  sample: "backup backup_2026-01-05_02-00-00 of tokotani: 131.2 MB in 9.8 s (...); offsite s3://... pushed"
summary:
  description: What the job writes to its status file as the run's summary.
  returned: always
  type: dict
duration:
  description: Seconds the job took.
  returned: always
  type: float
  sample: 9.913
log:
  description: The progress lines the job logged (what the timer writes to the journal), in order.
  returned: always
  type: list
  elements: str
backup:
  description: For V(backup) - the new backup (name, path, manifest_path, size, sha256, duration, tables, rows...).
  returned: job is backup and the backup was taken
  type: dict
offsite:
  description: For V(backup) with an C(offsite) section - url, pushed, key, status, caught_up, pruned, error.
  returned: job is backup and offsite is configured
  type: dict
result:
  description: For V(verify) - V(pass) or V(fail); the whole verification record is returned alongside.
  returned: job is verify
  type: str
  sample: pass
failed_check:
  description: For V(verify) - the check that did not hold (null when it passed).
  returned: job is verify
  type: str
  sample: row counts
record:
  description: For V(verify) - where the verification record was written beside the backup, or null.
  returned: job is verify
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tokotani.dr.plugins.module_utils.jobs import runner as dr_runner
from ansible_collections.tokotani.dr.plugins.module_utils.specs import job_argument_spec, job_environ


def main():
    module = AnsibleModule(argument_spec=job_argument_spec(), supports_check_mode=True)
    lines = []
    result = dr_runner.execute(
        module.params["job"],
        module.params["config"],
        lines.append,
        check_mode=module.check_mode,
        environ=job_environ(module.params, os.environ),
        via="playbook",
    )
    result["log"] = lines
    result.setdefault("changed", not module.check_mode and result.get("error") != "config")
    for line in lines:
        if line.startswith("warning: "):
            module.warn(line[len("warning: ") :])
    if result.pop("failed"):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
