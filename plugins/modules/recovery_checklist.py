#!/usr/bin/python
# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Engine: plugins/module_utils/checklist_run.py (Run, notify: the checks), checklist.py (the items).

DOCUMENTATION = r"""
module: recovery_checklist
short_description: The post-recovery checklist (plan 6.1) on the server, each item a real check with evidence
version_added: "0.3.0"
description:
  - Runs on the TokoTani server, after a recovery (or at any time - it only reads, apart from the webhook), the
    checks of the plan's post-recovery checklist, every one whatever the others found, and returns the checklist's
    items C(item), C(passed) (V(true), V(false) or V(null) - not applicable) and C(evidence) - what was seen. The
    role C(tokotani.dr.post_recovery) calls it; docs/procedures/post_recovery.md says how to read each item.
  - 1. All services running - every app of O(pm2_apps) online in pm2 (as M(tokotani.dr.pm2_info) reads it) and
    PostgreSQL accepting a connection to O(database).
  - 2. Database integrity verified - every query of O(assertions) returns true (read-only at the server, as
    M(tokotani.dr.postgresql_check) runs them), and with O(manifest), every table of that backup's manifest has
    the manifest's row count - at least that many for O(growing_tables). The manifest is checked first (schema,
    signature with O(backup_key)); its table names reach the server only as quoted identifiers.
  - 3. Application functionality tested - C(GET <app_url>/api/health) answers 200 with C(database=ok);
    C(/api/products?limit=<products_limit>) lists products whose ids and skus are all in the database (looked up
    with one parameterized query); the newest order of the database, read through C(/api/orders/<id>), has the
    database's total, user and number of items. Requests go from the server itself, without a proxy.
  - 4. Monitoring alerts cleared - C(/api/alerts) lists no active alert, asked every O(alerts_delay) seconds for
    at most O(alerts_timeout) seconds.
  - 5. Users notified - a JSON summary POSTed to O(notify_webhook_url) and/or the operator's task file
    O(notify_tasks) (which the role includes between the two stages); neither set records the item as not
    configured (passed null).
  - With O(stage=checks) (the default), items 1-4, and item 5 too unless O(notify_tasks) is set. With
    O(stage=notify), item 5 for the items 1-4 of O(checklist), after the task file ran (O(notify_tasks_outcome)).
author:
  - TokoTani DevOps Team (@tokotani)
extends_documentation_fragment:
  - tokotani.dr.postgres
  - tokotani.dr.backup_key
attributes:
  check_mode:
    support: full
    description: The checks only read and run the same in check mode; the webhook is not POSTed (item 5 is then null).
  diff_mode:
    support: none
    description: There is nothing to compare; the result describes what was found.
options:
  stage:
    description:
      - V(checks) - run the checks (items 1-4; item 5 as well unless O(notify_tasks) is set).
      - V(notify) - item 5 for the items of O(checklist), once the operator's task file ran.
    type: str
    choices: [checks, notify]
    default: checks
  server_name:
    description:
      - The server's name in the webhook's summary (the role passes C(inventory_hostname)); defaults to the node name.
    type: str
  database:
    description: The application database. Required with O(stage=checks).
    type: str
    aliases: [db]
  login_os_user:
    description:
      - The operating system user C(psql) runs as - V(postgres) for peer authentication over the Unix socket, as
        C(become_user=postgres) gives the PostgreSQL modules. The module must run as root to switch (it reads pm2
        as O(pm2_user) the same way). Empty - as the module's own user.
    type: str
  assertions:
    description:
      - SQL checks, each a query that must return exactly one row whose first column is V(true), run as
        M(tokotani.dr.postgresql_check) runs them - read-only at the server, one query each.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: What the check proves, as the evidence names it.
        type: str
        required: true
      sql:
        description: The query.
        type: str
        required: true
  manifest:
    description:
      - Path on the server of a backup's C(.manifest.json) (or its name in the directory of the path); every table
        it lists must have its row count. Empty - row counts are not compared (passed null for that part).
    type: str
    default: ""
  growing_tables:
    description:
      - Tables the running application writes to, which only need at least the manifest's row count - a name (a
        table of the C(public) schema) or C(schema.name).
    type: list
    elements: str
    default: []
  pm2_apps:
    description: The pm2 processes that must be online.
    type: list
    elements: str
    default: []
  pm2_user:
    description:
      - The user whose pm2 daemon runs the app, as O(tokotani.dr.pm2_info#module:user) of M(tokotani.dr.pm2_info).
    type: str
  pm2_home:
    description: C(PM2_HOME) of that daemon; defaults to C(~/.pm2) of O(pm2_user).
    type: path
  pm2_executable:
    description: The pm2 executable; found as M(tokotani.dr.pm2_info) finds it when not set.
    type: path
  app_url:
    description: Base URL of the application, asked from the server itself (never through a proxy).
    type: str
    default: http://127.0.0.1:3000
  products_limit:
    description: How many products to ask C(/api/products) for.
    type: int
    default: 5
  http_timeout:
    description: Seconds each HTTP request may take.
    type: int
    default: 10
  alerts_timeout:
    description: Seconds to keep asking C(/api/alerts) until no alert is active (it is asked at least once).
    type: float
    default: 15
  alerts_delay:
    description: Seconds between two questions to C(/api/alerts).
    type: float
    default: 1
  notify_tasks:
    description:
      - The operator's task file that notifies users (the role includes it between O(stage=checks) and
        O(stage=notify)); here only its name, for the evidence. Empty - not used.
    type: str
    default: ""
  notify_tasks_outcome:
    description:
      - With O(stage=notify) - how the task file ended - C(ok) (bool), and C(evidence) (what it says it did, may be
        empty) when it ran, or C(task) and C(msg) of the task that failed. Not set - it did not run.
    type: dict
  notify_webhook_url:
    description:
      - A URL to POST a JSON summary to from the server - C(text) (one line, as Slack and Mattermost incoming
        webhooks expect), C(host), C(passed), C(started_at), C(finished_at) and C(items) (items 1-4). An answer
        other than 2xx fails the item. Never returned nor printed; the evidence names only its host.
    type: str
    default: ""
  notify_webhook_headers:
    description: Extra HTTP headers of the webhook POST (for example C(Authorization)); never returned.
    type: dict
    default: {}
  notify_validate_certs:
    description: Whether the webhook's TLS certificate is verified.
    type: bool
    default: true
  checklist:
    description:
      - With O(stage=notify) - the result of O(stage=checks) (C(passed), C(started_at), C(finished_at), C(items)).
    type: dict
notes:
  - The evidence texts are the ones docs/procedures/post_recovery.md explains; the drill report quotes them.
seealso:
  - module: tokotani.dr.postgresql_check
  - module: tokotani.dr.pm2_info
"""

EXAMPLES = r"""
- name: The post-recovery checklist, row counts against the backup just restored
  tokotani.dr.recovery_checklist:
    database: tokotani
    login_unix_socket: /var/run/postgresql
    login_os_user: postgres
    pm2_apps: [tokotani-nextjs, tokotani-engine-hub]
    pm2_user: tokotani
    assertions:
      - name: migrations applied
        sql: SELECT EXISTS (SELECT 1 FROM _prisma_migrations)
    manifest: /srv/tokotani/shared/backups/backup_2026-01-05_02-00-00.manifest.json
    backup_key: "{{ tokotani_backup_key }}"
    growing_tables: [engine_heartbeat, sessions]
    notify_webhook_url: "{{ tokotani_status_webhook }}"
    server_name: "{{ inventory_hostname }}"
  become: true
  register: checklist

- name: Print it
  ansible.builtin.debug:
    msg: "{{ checklist.report }}"
"""

RETURN = r"""
passed:
  description: No item failed (items with passed null do not count).
  returned: always
  type: bool
  sample: true
started_at:
  description: When the checklist started, epoch seconds.
  returned: always
  type: float
  sample: 1795657247.1
finished_at:
  description: When it ended, epoch seconds.
  returned: always
  type: float
  sample: 1795657251.12
items:
  description: The checklist's items in the plan's order (items 1-4, and item 5 unless RV(complete) is false).
  returned: always
  type: list
  elements: dict
  contains:
    item:
      description: The item's name.
      type: str
      sample: All services running
    passed:
      description: V(true), V(false), or V(null) when it does not apply.
      type: bool
    evidence:
      description: What was seen.
      type: str
      sample: >-
        tokotani-nextjs online (pid 20934, up 105 s, 0 restarts); PostgreSQL 15.20 accepting connections (database
        tokotani)
complete:
  description: Whether RV(items) holds item 5 (false after O(stage=checks) with O(notify_tasks) set).
  returned: always
  type: bool
  sample: true
report:
  description: The lines to print - the verdict with the duration, then C([pass]), C([FAIL]) or C([n/a]) per item.
  returned: always
  type: list
  elements: str
  sample:
    - Post-recovery checklist PASSED in 4.0 s
    - "[pass] Monitoring alerts cleared: /api/alerts: no active alerts after 1 attempt"
summary:
  description: The one-line summary a webhook gets as C(text).
  returned: always
  type: str
  sample: "TokoTani post-recovery checklist on shop-1: PASSED (4 of 4 checks passed)"
table_counts:
  description:
    - Each table of O(manifest) - C(table) (schema.name), C(expected) (the manifest's rows), C(actual) (null when
      missing), C(growing) and C(ok); null when not compared.
  returned: always
  type: list
  elements: dict
  sample:
    - {table: public.sessions, expected: 390, actual: 402, growing: true, ok: true}
assertions:
  description: Each assertion run, in order, with C(name), C(ok) and, when it failed, C(problem).
  returned: always
  type: list
  elements: dict
"""

import platform
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tokotani.dr.plugins.module_utils import checklist as cl
from ansible_collections.tokotani.dr.plugins.module_utils import db_checks
from ansible_collections.tokotani.dr.plugins.module_utils.checklist_run import Run, notify
from ansible_collections.tokotani.dr.plugins.module_utils.specs import checklist_argument_spec


def main():
    module = AnsibleModule(
        argument_spec=checklist_argument_spec(),
        required_if=[("stage", "checks", ["database"]), ("stage", "notify", ["checklist"])],
        supports_check_mode=True,
    )
    p = module.params
    host = p.get("server_name") or platform.node()
    extra = {"table_counts": None, "assertions": []}
    if p["stage"] == "checks":
        started = time.time()
        run = Run(module)
        so_far = cl.result(run.checks(), started, time.time())
        counts = ((run.found.get("db") or {}).get("counts") or {}).get("value")
        extra = {
            "table_counts": db_checks.public_counts(counts) if counts is not None else None,
            "assertions": (run.found.get("assertions") or {}).get("assertions") or [],
        }
        complete = not p["notify_tasks"]
        outcome_given = False
    else:
        given = p["checklist"]
        started = float(given.get("started_at") or time.time())
        so_far = cl.result(given.get("items") or [], started, given.get("finished_at") or time.time())
        complete = True
        outcome_given = p.get("notify_tasks_outcome") is not None
    items = so_far["items"]
    if complete:
        items = [*items, notify(module, host, so_far, outcome_given)]
    checklist = cl.result(items, started, time.time())
    module.exit_json(
        changed=False,
        complete=complete,
        report=cl.report(checklist),
        summary=cl.summary(host, checklist),
        **checklist,
        **extra,
    )


if __name__ == "__main__":
    main()
