# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The post-recovery checklist (plan §6.1) as pure functions: what each check found, turned into the
checklist's items ``{item, passed, evidence}``.

tokotani.dr.recovery_checklist runs the checks (pm2, HTTP, PostgreSQL through the checks engine)
and hands their results here; nothing in this file does any I/O, so every wording is unit-tested.

The results keep the shape the checks have always produced:

- pm2: the result of ``pm2.process_info`` (``status``, ``processes``, ``online``), or
  ``{"failed": True, "msg": ...}``;
- HTTP: ``{"status": int, "msg": str, "json": parsed body or None}`` as ansible.builtin.uri
  registers it - ``status`` -1 and a ``msg`` starting ``Status code was -1 and not [...]:`` when
  nothing answered (``no_answer`` shortens that), plus ``attempts`` and ``seconds`` for the alerts;
- the database: ``{"ok", "error", "version", "counts", "products", "order_pick"}``, each of the
  last three ``{"ok": bool, "value": ..., "error": str}`` - one failing never hides the others;
- the assertions: tokotani.dr.postgresql_check's result (``assertions``), or ``{"failed": True, "msg": ...}``.

``None`` for a result means the check did not run (an unexpected error stopped the run): its item
fails with ``not checked (<why>)``.
"""

from __future__ import annotations

import math
import posixpath
import re
from urllib.parse import urlsplit

ITEMS = (
    "All services running",
    "Database integrity verified",
    "Application functionality tested",
    "Monitoring alerts cleared",
    "Users notified",
)
NOT_CONFIGURED = "not configured (set post_recovery_notify_webhook_url or post_recovery_notify_tasks)"
_NO_ANSWER_RE = re.compile(r"^Status code was -1 and not \[[^\]]*\]: (Request failed: )?")
_MISSING = object()


def not_run(unexpected=""):
    """The evidence of a check that did not run."""
    return f"not checked ({unexpected or 'an earlier task failed'})"


def no_answer(msg):
    """ansible.builtin.uri's message when nothing answered, shortened to the reason."""
    return _NO_ANSWER_RE.sub("no answer: ", str(msg), count=1)


def to_int(value):
    """Jinja's ``int`` filter: int, else int of a float, else 0."""
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError, OverflowError):
            return 0


def to_float(value):
    """Jinja's ``float`` filter: float, else 0.0."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _dict(value):
    """A body or field as a mapping (``default({}, true)``: anything empty or not a mapping is {})."""
    return value if isinstance(value, dict) and value else {}


def _result(result, unexpected):
    """A check's result, or the result of one that did not run."""
    return result if result is not None else {"failed": True, "status": -1, "msg": not_run(unexpected)}


def _is_list(value):
    """Jinja's ``sequence and not string`` (a mapping is one too)."""
    return isinstance(value, (list, tuple, dict))


def _length(value):
    return len(value) if hasattr(value, "__len__") else 0


# ---- the database --------------------------------------------------------------------------------


def db_ok(db):
    """Whether PostgreSQL answered the checklist's connection (with its version)."""
    return db is not None and bool(db.get("ok")) and bool(db.get("version"))


def db_error(db, unexpected=""):
    return not_run(unexpected) if db is None else (db.get("error") or "failed")


def _part(db, name):
    return _dict((db or {}).get(name))


# ---- item 1: all services running ------------------------------------------------------------------


def services_item(apps, pm2, db, database, unexpected=""):
    """pm2 shows every app online, and PostgreSQL accepts a connection to the database."""
    pm2 = _result(pm2, unexpected)
    failed = pm2.get("failed", False)
    online = pm2.get("online") or []
    pm2_ok = not failed and len(apps) > 0 and all(app in online for app in apps)
    parts = []
    if failed:
        parts.append("pm2: " + str(pm2.get("msg", "failed")))
    else:
        for app in apps:
            status = (pm2.get("status") or {}).get(app, "absent")
            procs = [p for p in pm2.get("processes") or [] if p.get("name") == app]
            if status == "online" and procs:
                parts.append(
                    "{} online (pid {}, up {} s, {} restarts)".format(
                        app,
                        ", ".join(str(p.get("pid")) for p in procs),
                        ", ".join(str(p.get("uptime") or "?") for p in procs),
                        sum(p.get("restarts") or 0 for p in procs),
                    )
                )
            else:
                parts.append(f"{app} {status}")
    if db_ok(db):
        parts.append(f"PostgreSQL {db['version']} accepting connections (database {database})")
    else:
        parts.append("PostgreSQL: " + db_error(db, unexpected))
    return {"item": ITEMS[0], "passed": bool(pm2_ok and db_ok(db)), "evidence": "; ".join(parts)}


# ---- item 2: database integrity verified ----------------------------------------------------------


def assertion_failures(check, unexpected=""):
    """``name (problem)`` of every assertion that did not hold; ``none checked (why)`` when none ran."""
    check = _result(check, unexpected)
    if check.get("failed", False):
        return ["none checked ({})".format(check.get("msg", "failed"))]
    return [
        "{} ({})".format(a["name"], a.get("problem", "failed")) for a in check.get("assertions") or [] if not a["ok"]
    ]


def count_check(manifest, counts, db, unexpected=""):
    """(passed, text) of the row counts against the manifest; passed is None when no manifest was given.

    counts: {"ok": true, "value": [db_checks.compare_counts entries]} or {"ok": false, "error": why}.
    """
    if not manifest:
        return None, "row counts not compared (post_recovery_manifest not set)"
    counts = _dict(counts)
    if not counts.get("ok"):
        why = counts.get("error") or (db_error(db, unexpected) if not db_ok(db) else "not run")
        return False, f"row counts not compared with the manifest {manifest}: {why}"
    name = posixpath.basename(manifest)
    good, bad = [], []
    for table in counts.get("value") or []:
        shown = table["table"][len("public.") :] if table["table"].startswith("public.") else table["table"]
        actual, expected = table["actual"], table["expected"]
        if actual is None:
            bad.append(f"{shown} is missing ({expected} rows in the manifest)")
        elif table["ok"]:
            good.append(f"{shown} {actual}" + (f" (>= {expected})" if actual != expected else ""))
        else:
            bad.append(
                f"{shown} has {actual} rows, expected " + ("at least " if table["growing"] else "") + str(expected)
            )
    if bad:
        return False, f"row counts differ from the manifest {name}: " + ", ".join(bad)
    return True, f"row counts match the manifest {name} ({len(good)} tables: " + ", ".join(good) + ")"


def integrity_item(database, assertions, assertion_check, db, manifest, *, unexpected=""):
    """Every assertion holds and (with a manifest) every table has the manifest's row count."""
    failures = assertion_failures(assertion_check, unexpected)
    counted, counts_text = count_check(manifest, _part(db, "counts") if db else None, db, unexpected)
    passed = db_ok(db) and not failures and counted is not False
    if not db_ok(db):
        evidence = f"cannot query {database}: {db_error(db, unexpected)}"
    elif failures:
        evidence = "assertion failed: " + "; ".join(failures) + "; " + counts_text
    else:
        names = ", ".join(a["name"] for a in assertions)
        evidence = f"{len(assertions)} assertions hold ({names}); {counts_text}"
    return {"item": ITEMS[1], "passed": bool(passed), "evidence": evidence}


# ---- item 3: application functionality tested -----------------------------------------------------


def _http_problem(result, body):
    """``HTTP <status>[: <error>]`` of an answer that is not 200, or why nothing answered."""
    status = result.get("status", -1)
    if status > 0:
        return f"HTTP {status}" + (f": {body['error']}" if "error" in body else "")
    return no_answer(result.get("msg", "no answer"))


def health_check(health, unexpected=""):
    """(passed, text): /api/health answers 200 with database ok."""
    result = _result(health, unexpected)
    body = _dict(result.get("json"))
    status = result.get("status", -1)
    if status == 200 and body.get("database", "") == "ok":
        return True, "/api/health 200, database ok (version {})".format(body.get("version", "?"))
    if status > 0:
        error = f": {body['error']}" if "error" in body else ""
        return False, "/api/health HTTP {}, database {}{}".format(status, body.get("database", "?"), error)
    return False, "/api/health: " + no_answer(result.get("msg", "no answer"))


def api_products(products):
    """The products /api/products listed (only from a 200 answer)."""
    if not products or products.get("status", 0) != 200:
        return []
    listed = _dict(products.get("json")).get("products")
    return listed if isinstance(listed, list) else []


def product_pairs(listed):
    """The (id, sku) pairs to look up: ids as Jinja's ``int``, skus as text - data for a query variable."""
    return [{"id": to_int(p.get("id")), "sku": str(p.get("sku"))} for p in listed]


def products_check(limit, products, lookup, db, unexpected=""):
    """(passed, text): /api/products lists products whose id and sku are all in the database.

    lookup: {"ok": true, "value": [ids found, ascending]} or {"ok": false, "error": why}.
    """
    result = _result(products, unexpected)
    path = f"/api/products?limit={limit}"
    if result.get("status", -1) != 200:
        return False, f"{path}: " + _http_problem(result, _dict(result.get("json")))
    listed = api_products(result)
    if not listed:
        return False, f"{path} listed no products"
    lookup = _dict(lookup)
    if not lookup.get("ok"):
        why = lookup.get("error") or db_error(db, unexpected)
        return False, f"{path} listed {len(listed)} products, not compared with the database: {why}"
    found = lookup.get("value") if isinstance(lookup.get("value"), list) else []
    missing = [p for p in listed if p.get("id") not in found]
    if missing:
        names = ", ".join("{} {}".format(p.get("id"), p.get("sku")) for p in missing)
        return False, f"{path} listed {len(listed)} products, {len(missing)} not in the database: {names}"
    ids = ", ".join(str(i) for i in found)
    return True, f"{path} listed {len(listed)} products, all in the database (ids {ids})"


def picked_order(db):
    """The newest order the database holds ({} when none was picked)."""
    value = _part(db, "order_pick").get("value")
    return value if isinstance(value, dict) else {}


def order_check(db, order, unexpected=""):
    """(passed, text): the newest order, read through /api/orders/<id>, is the database's."""
    pick = _part(db, "order_pick")
    if not pick.get("ok"):
        return False, "no order picked from the database: " + (pick.get("error") or db_error(db, unexpected))
    row = picked_order(db)
    if "id" not in row:
        return False, "no order in the database to read back"
    oid = row["id"]
    result = _result(order, unexpected)
    api = _dict(result.get("json"))
    user = _dict(api.get("user"))
    if result.get("status", -1) != 200:
        return False, f"/api/orders/{oid}: " + _http_problem(result, api)
    diffs = []
    if to_int(api.get("id", -1)) != to_int(oid):
        diffs.append("id {}".format(api.get("id", "missing")))
    if "total" not in api or to_float(api["total"]) != to_float(row["total"]):
        diffs.append("total {} (database {})".format(api.get("total", "missing"), row["total"]))
    if to_int(user.get("id", -1)) != to_int(row["user_id"]) or user.get("email", "") != row["email"]:
        diffs.append(
            "user {} {} (database {} {})".format(
                user.get("id", "missing"), user.get("email", ""), row["user_id"], row["email"]
            )
        )
    items = _length(api.get("items") or [])
    if items != to_int(row["items"]):
        diffs.append("{} items (database {})".format(items, row["items"]))
    if diffs:
        return False, f"order {oid} read through /api/orders/{oid} differs from the database: " + ", ".join(diffs)
    return True, "order {} read end to end (total {}, user {} {}, {} items, as in the database)".format(
        oid, row["total"], row["user_id"], row["email"], row["items"]
    )


def app_item(health, products, order):
    """Item 3 from the three (passed, text) checks."""
    checks = (health, products, order)
    return {
        "item": ITEMS[2],
        "passed": all(c[0] for c in checks),
        "evidence": "; ".join(c[1] for c in checks),
    }


# ---- item 4: monitoring alerts cleared ------------------------------------------------------------


def alerts_done(result):
    """Whether asking /api/alerts again is pointless: it listed no alert."""
    return _dict((result or {}).get("json")).get("alerts", _MISSING) == []


def alerts_attempts(timeout, delay):
    """How many times /api/alerts may be asked: timeout / delay (at least 0.1 s), rounded up, plus one."""
    return math.ceil(float(timeout) / max(float(delay), 0.1)) + 1


def alerts_item(alerts, unexpected=""):
    """/api/alerts lists no active alert (after ``attempts`` questions in ``seconds``)."""
    result = _result(alerts, unexpected)
    listed = _dict(result.get("json")).get("alerts")
    tries = ""
    if alerts is not None:
        attempts = to_int(result.get("attempts", 1))
        tries = " after {} attempt{}".format(result.get("attempts", 1), "s" if attempts > 1 else "")
        if attempts > 1:
            tries += " in {} s".format(round(float(result.get("seconds", 0)), 1))
    status = result.get("status", -1)
    if status == 200 and _is_list(listed) and not listed:
        passed, text = True, "/api/alerts: no active alerts" + tries
    elif status == 200 and _is_list(listed):
        names = "; ".join(
            "{} ({}): {}".format(_dict(a).get("name", "?"), _dict(a).get("severity", "?"), _dict(a).get("summary", ""))
            for a in listed
        )
        passed = False
        text = "/api/alerts: {} active alert{}{}: {}".format(len(listed), "s" if len(listed) > 1 else "", tries, names)
    elif status > 0:
        passed, text = False, f"/api/alerts HTTP {status}{tries} (no alert list)"
    else:
        passed, text = False, f"/api/alerts{tries}: " + no_answer(result.get("msg", "no answer"))
    return {"item": ITEMS[3], "passed": passed, "evidence": text}


# ---- item 5: users notified -------------------------------------------------------------------------


def notify_tasks_check(tasks, outcome, unexpected=""):
    """(passed, text) of the operator's task file.

    outcome: None (it did not run), {"ok": true, "evidence": what the file said it did (may be empty)},
    or {"ok": false, "task": the failing task's name, "msg": its message}.
    """
    if outcome is None:
        return False, f"{tasks}: {not_run(unexpected)}"
    if outcome.get("ok"):
        return True, outcome.get("evidence") or f"ran {tasks}"
    return False, "{} failed at '{}': {}".format(tasks, outcome.get("task") or "?", outcome.get("msg") or "failed")


def webhook_where(url):
    return f"POST to the webhook at {urlsplit(url).hostname}"


def webhook_check(url, result, unexpected=""):
    """(passed, text) of the webhook POST; passed None when it was not sent (check mode)."""
    result = _result(result, unexpected)
    where = webhook_where(url)
    status = result.get("status", -1)
    if result.get("skipped"):
        return None, f"{where}: not sent (check mode)"
    if 200 <= status < 300:
        return True, f"{where}: HTTP {status}"
    if status > 0:
        return False, f"{where}: HTTP {status} (not 2xx)"
    return False, f"{where}: " + no_answer(result.get("msg", "no answer"))


def notified_item(checks):
    """Item 5 from the (passed, text) of each configured hook (none: not configured, passed None)."""
    if not checks:
        return {"item": ITEMS[4], "passed": None, "evidence": NOT_CONFIGURED}
    results = [c[0] for c in checks]
    passed = False if any(r is False for r in results) else True if any(r is True for r in results) else None
    return {"item": ITEMS[4], "passed": passed, "evidence": "; ".join(c[1] for c in checks)}


# ---- the whole checklist ----------------------------------------------------------------------------


def passed(items):
    """No item failed (items with passed None do not count)."""
    return not any(i["passed"] is False for i in items)


def result(items, started_at, finished_at):
    """post_recovery_result: passed, started_at, finished_at, items."""
    return {"passed": passed(items), "started_at": started_at, "finished_at": finished_at, "items": list(items)}


def summary(host, checklist):
    """The one line a webhook shows (Slack's and Mattermost's ``text``)."""
    items = checklist["items"]
    ok = checklist["passed"]
    failed = "" if ok else ", failed: " + ", ".join(i["item"] for i in items if i["passed"] is False)
    good = len([i for i in items if i["passed"] is True])
    return "TokoTani post-recovery checklist on {}: {} ({} of {} checks passed{})".format(
        host, "PASSED" if ok else "FAILED", good, len(items), failed
    )


def report(checklist):
    """The lines the role prints: the verdict with the duration, then one line per item."""
    seconds = round(float(checklist["finished_at"]) - float(checklist["started_at"]), 1)
    lines = ["Post-recovery checklist {} in {} s".format("PASSED" if checklist["passed"] else "FAILED", seconds)]
    for item in checklist["items"]:
        mark = "[pass] " if item["passed"] else "[n/a] " if item["passed"] is None else "[FAIL] "
        lines.append(f"{mark}{item['item']}: {item['evidence']}")
    return lines
