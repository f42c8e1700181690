# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The run of tokotani.dr.recovery_checklist on the server: each check of the plan's section 6.1 in order, whatever
the others found (pm2 through the pm2 engine, HTTP through Ansible's open_url, the database through db_checks and
the restore's own checks); checklist.py turns what they found into the items.

Needs Ansible's module_utils (open_url, the module for pm2), unlike the engines the host-side runner uses.
"""

from __future__ import annotations

import http.client
import json
import re
import time
from urllib.error import HTTPError, URLError

from ansible.module_utils.urls import open_url
from ansible_collections.tokotani.dr.plugins.module_utils import checklist as cl
from ansible_collections.tokotani.dr.plugins.module_utils.errors import DrError
from ansible_collections.tokotani.dr.plugins.module_utils.pg_cli import Connection, PgError, Psql
from ansible_collections.tokotani.dr.plugins.module_utils.pg_restore import RestoreEngine
from ansible_collections.tokotani.dr.plugins.module_utils.pm2 import process_info

JSON_SUBTYPES = ("json", "javascript")
PSQL_LOCATION_RE = re.compile(r"^psql:[^:]*:\d+:\s*")

VERSION_SQL = "SELECT json_build_object('version', split_part(current_setting('server_version'), ' ', 1));"
# The listed products come in as one psql variable holding JSON (never as SQL text): the ids found.
PRODUCTS_SQL = (
    "SELECT json_build_object('ids', (SELECT json_agg(p.id ORDER BY p.id) FROM products p "
    "JOIN json_to_recordset(:'pairs'::json) AS v(id bigint, sku text) ON p.id = v.id AND p.sku = v.sku));"
)
ORDER_SQL = (
    "SELECT json_build_object('order', (SELECT row_to_json(o) FROM (SELECT o.id, o.total::text AS total, o.user_id, "
    "u.email, (SELECT count(*) FROM order_items i WHERE i.order_id = o.id) AS items "
    "FROM orders o JOIN users u ON u.id = o.user_id ORDER BY o.id DESC LIMIT 1) o));"
)


def server_error(err):
    """What PostgreSQL said, as the checklist has always quoted it: the ERROR text, or libpq's reason
    prefixed ``unable to connect to database:``; else the engine's message."""
    for raw in (err.stderr or "").splitlines():
        line = PSQL_LOCATION_RE.sub("", raw)
        if line.startswith("psql: error: "):
            return "unable to connect to database: " + line[len("psql: error: ") :]
        if line.startswith("ERROR:"):
            return line[len("ERROR:") :].strip()
    return err.msg


def _json_body(content_type, body):
    main = (content_type or "").split(";", 1)[0].strip().lower()
    sub = main.partition("/")[2]
    sub = sub.partition("+")[2] or sub
    if sub not in JSON_SUBTYPES or not body:
        return None
    charset = "utf-8"
    for part in (content_type or "").split(";")[1:]:
        key, _sep, value = part.strip().partition("=")
        if key.lower() == "charset" and value:
            charset = value.strip("\"'")
    try:
        return json.loads(body.decode(charset, "replace"))
    except ValueError:
        return None


def http_request(
    url, timeout, *, method="GET", data=None, headers=None, validate_certs=True, use_proxy=False, ok=(200,)
):
    """One request, registered as ansible.builtin.uri registers it: status, msg, json (any status returned)."""
    codes = list(ok)
    content_type = body = None
    try:
        response = open_url(
            url,
            data=data,
            headers=headers,
            method=method,
            use_proxy=use_proxy,
            timeout=timeout,
            validate_certs=validate_certs,
            follow_redirects="safe",
            http_agent="ansible-httpget",
        )
        status = response.code
        content_type = response.headers.get("Content-Type")
        msg = "OK ({} bytes)".format(response.headers.get("Content-Length", "unknown"))
        try:
            body = response.read()
        except http.client.HTTPException as err:
            return {"status": -1, "msg": f"HTTP Error while fetching {url}: {err}", "json": None}
        except OSError as err:
            return {"status": -1, "msg": f"Connection failure: {err}", "json": None}
    except (ConnectionError, ValueError) as err:
        return {"status": -1, "msg": str(err), "json": None}
    except HTTPError as err:
        status = err.code
        msg = str(err)
        content_type = err.headers.get("Content-Type") if err.headers is not None else None
        try:
            body = err.read() if err.fp is not None else b""
        except (AttributeError, OSError, http.client.HTTPException):
            body = b""
    except URLError as err:
        status = int(getattr(err, "code", -1) or -1)
        msg = f"Request failed: {err}"
    except OSError as err:
        status, msg = -1, f"Connection failure: {err}"
    except http.client.BadStatusLine as err:
        status = -1
        msg = f"Connection failure: connection was closed before a valid response was received: {err.line}"
    except Exception as err:  # uri's "unknown error": recorded as the check's evidence
        status, msg = -1, f"An unknown error occurred: {err}"
    if status not in codes:
        msg = f"Status code was {status} and not {codes}: {msg}"
    return {"status": status, "msg": msg, "json": _json_body(content_type, body)}


class Run:
    """One checklist run: the checks in the order the role has always run them, each one whatever the
    others found. A check that breaks unexpectedly (a bug, not a finding) stops the run, and the items
    it left unchecked say ``not checked (<step>: <error>)``."""

    def __init__(self, module):
        self.module = module
        self.p = module.params
        self.found = {}
        self.unexpected = ""
        self.url = (self.p["app_url"] or "").rstrip("/")
        self.conn = Connection.from_params(self.p)
        self.engine = None

    def step(self, key, title, fn):
        if self.unexpected:
            return
        try:
            self.found[key] = fn()
        except Exception as err:  # any error of a check is its evidence, never a crash
            detail = getattr(err, "msg", None) or str(err) or type(err).__name__
            self.unexpected = f"{title}: {detail}"

    def get(self, path):
        return http_request(self.url + path, self.p["http_timeout"])

    # -- the checks ----------------------------------------------------------------------------
    def pm2(self):
        params = {
            "name": self.p["pm2_apps"],
            "user": self.p.get("pm2_user"),
            "pm2_home": self.p.get("pm2_home"),
            "executable": self.p.get("pm2_executable"),
        }
        try:
            return process_info(self.module, params)
        except DrError as err:
            return {"failed": True, "msg": err.msg}

    def make_engine(self):
        params = dict(self.p, mode="into", backup=self.p.get("manifest") or None, source_database=None)
        return RestoreEngine(self.conn, params)

    def assertions(self):
        try:
            self.engine = self.make_engine()
            self.engine.open_existing()
            return {"failed": False, "assertions": self.engine.assertion_report(self.p["database"])}
        except DrError as err:
            return {"failed": True, "msg": err.msg}

    def database(self):
        database = self.p["database"]
        try:
            psql = Psql(self.conn)
            version = psql.query_json(VERSION_SQL, database, what="connecting")[0]["version"]
        except PgError as err:
            return {"ok": False, "error": server_error(err)}
        db = {"ok": True, "version": version}
        db["counts"] = self.counts(psql) if self.p.get("manifest") else None
        listed = cl.api_products(self.found.get("products"))
        if listed:
            db["products"] = self.attempt(
                lambda: psql.query_json(
                    PRODUCTS_SQL,
                    database,
                    variables={"pairs": json.dumps(cl.product_pairs(listed))},
                    what="looking the products up",
                )[0]["ids"]
            )
        db["order_pick"] = self.attempt(
            lambda: psql.query_json(ORDER_SQL, database, what="picking the newest order")[0]["order"]
        )
        return db

    @staticmethod
    def attempt(fn):
        try:
            return {"ok": True, "value": fn()}
        except PgError as err:
            return {"ok": False, "error": server_error(err)}

    def counts(self, psql):
        try:
            engine = self.engine or self.make_engine()
            entry = engine.usable_manifest()
            if not (entry.get("manifest") or {}).get("tables"):
                return {"ok": False, "error": "it lists no tables"}
            engine.psql = psql
            return {
                "ok": True,
                "value": engine.compare_with_manifest(entry, self.p["database"], self.p["growing_tables"]),
            }
        except DrError as err:
            problems = err.details.get("problems") if isinstance(err.details.get("problems"), list) else None
            if problems:
                return {"ok": False, "error": "; ".join(problems)}
            return {"ok": False, "error": server_error(err) if isinstance(err, PgError) else err.msg}

    def order(self):
        return self.get(f"/api/orders/{cl.picked_order(self.found.get('db'))['id']}")

    def alerts(self):
        timeout, delay = float(self.p["alerts_timeout"]), float(self.p["alerts_delay"])
        retries = cl.alerts_attempts(timeout, delay)
        since = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            result = self.get("/api/alerts")
            if cl.alerts_done(result) or time.monotonic() - since + delay > timeout or attempts >= retries:
                break
            time.sleep(delay)
        result.update(attempts=attempts, seconds=time.monotonic() - since)
        return result

    # -- the run -------------------------------------------------------------------------------
    def checks(self):
        limit = self.p["products_limit"]
        self.step("pm2", "All services running - read the pm2 processes", self.pm2)
        self.step("health", "Application functionality tested - GET /api/health", lambda: self.get("/api/health"))
        self.step(
            "products",
            "Application functionality tested - GET /api/products",
            lambda: self.get(f"/api/products?limit={limit}"),
        )
        self.step("assertions", "Database integrity verified - the assertions, read-only", self.assertions)
        self.step("db", "Query the database - row counts, products, an order", self.database)
        if "id" in cl.picked_order(self.found.get("db")):
            self.step(
                "order", "Application functionality tested - GET /api/orders/<id> of the newest order", self.order
            )
        self.step("alerts", "Monitoring alerts cleared - GET /api/alerts until empty", self.alerts)
        return self.items()

    def items(self):
        f, why, db = self.found, self.unexpected, self.found.get("db")
        p = self.p
        return [
            cl.services_item(p["pm2_apps"], f.get("pm2"), db, p["database"], why),
            cl.integrity_item(p["database"], p["assertions"], f.get("assertions"), db, p["manifest"], unexpected=why),
            cl.app_item(
                cl.health_check(f.get("health"), why),
                cl.products_check(p["products_limit"], f.get("products"), (db or {}).get("products"), db, why),
                cl.order_check(db, f.get("order"), why),
            ),
            cl.alerts_item(f.get("alerts"), why),
        ]


def post_webhook(module, url, host, checklist):
    """POST the summary (from the server, through its proxy settings); a result as uri registers it."""
    if module.check_mode:
        return {"skipped": True}
    body = {
        "text": cl.summary(host, checklist),
        "host": host,
        "passed": checklist["passed"],
        "started_at": checklist["started_at"],
        "finished_at": checklist["finished_at"],
        "items": checklist["items"],
    }
    headers = {"Content-Type": "application/json", **(module.params["notify_webhook_headers"] or {})}
    result = http_request(
        url,
        module.params["http_timeout"],
        method="POST",
        data=json.dumps(body),
        headers=headers,
        validate_certs=module.params["notify_validate_certs"],
        use_proxy=True,
        ok=range(200, 300),
    )
    result["msg"] = result["msg"].replace(url, "<the webhook URL>")
    result.pop("json", None)
    return result


def notify(module, host, checklist, outcome_given):
    """Item 5: the task file's outcome (when configured) and the webhook POST (when configured)."""
    p = module.params
    checks = []
    if p["notify_tasks"]:
        checks.append(
            cl.notify_tasks_check(p["notify_tasks"], p.get("notify_tasks_outcome") if outcome_given else None)
        )
    if p["notify_webhook_url"]:
        result = post_webhook(module, p["notify_webhook_url"], host, checklist)
        checks.append(cl.webhook_check(p["notify_webhook_url"], result))
    return cl.notified_item(checks)
