"""The post-recovery checklist's items from what each check found (checklist.py): pass, fail, n/a, not run,
and the exact evidence texts docs/procedures/post_recovery.md explains and the drill report quotes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.tokotani.dr.plugins.module_utils import checklist as cl  # noqa: E402
from ansible_collections.tokotani.dr.plugins.module_utils import db_checks  # noqa: E402

APPS = ["tokotani-nextjs", "tokotani-engine-hub"]
ASSERTIONS = [{"name": "migrations applied", "sql": "x"}, {"name": "sessions table present", "sql": "y"}]
MANIFEST = "/srv/tokotani/shared/backups/backup_2026-11-26_01-34-44.manifest.json"
REFUSED = "Status code was -1 and not [200]: Request failed: <urlopen error [Errno 111] Connection refused>"
NO_ANSWER = "no answer: <urlopen error [Errno 111] Connection refused>"
ORDER = {"id": 1530, "total": "36171500.00", "user_id": 34, "email": "rina_utami34@gmail.com", "items": 4}
UNEXPECTED = "Query the database - row counts, products, an order: boom"
PM2 = {
    "status": {"tokotani-nextjs": "online", "tokotani-engine-hub": "online"},
    "online": APPS,
    "processes": [
        {"name": "tokotani-nextjs", "pid": 20934, "uptime": 105, "restarts": 0},
        {"name": "tokotani-engine-hub", "pid": 21577, "uptime": 84, "restarts": 0},
    ],
}


def counts(*rows, growing=("engine_heartbeat", "sessions")):
    return {
        "ok": True,
        "value": db_checks.compare_counts(
            [{"table": f"{s}.{n}", "schema": s, "name": n, "expected": e, "actual": a} for s, n, e, a in rows],
            growing,
        ),
    }


def database(**parts):
    db = {
        "ok": True,
        "version": "15.20",
        "counts": counts(("public", "orders", 1530, 1530), ("public", "sessions", 390, 390)),
        "products": {"ok": True, "value": [1, 2, 3]},
        "order_pick": {"ok": True, "value": ORDER},
    }
    db.update(parts)
    return db


DB_DOWN = {
    "ok": False,
    "error": 'unable to connect to database: connection to server on socket "/var/run/postgresql/.s.PGSQL.5432" '
    'failed: FATAL:  database "tokotani" does not exist',
}


def http(status=200, body=None, msg="OK (12 bytes)", **extra):
    return {"status": status, "msg": msg, "json": body, **extra}


# ---- helpers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("msg", "short"),
    [
        (REFUSED, NO_ANSWER),
        (
            "Status code was -1 and not [200, 201, 202]: Connection failure: timed out",
            "no answer: Connection failure: timed out",
        ),
        ("Remote end closed connection without response", "Remote end closed connection without response"),
        ("Status code was 500 and not [200]: HTTP Error 500", "Status code was 500 and not [200]: HTTP Error 500"),
    ],
)
def test_no_answer_shortens_only_what_nothing_answered(msg, short):
    assert cl.no_answer(msg) == short


@pytest.mark.parametrize(("value", "number"), [(3, 3), ("12", 12), ("7.9", 7), (None, 0), ("x", 0), (2.5, 2)])
def test_to_int_is_jinjas_int_filter(value, number):
    assert cl.to_int(value) == number


def test_not_run_says_why():
    assert cl.not_run() == "not checked (an earlier task failed)"
    assert cl.not_run(UNEXPECTED) == f"not checked ({UNEXPECTED})"


# ---- item 1 -------------------------------------------------------------------------------------------


def test_services_pass_with_pid_uptime_restarts_and_the_server_version():
    item = cl.services_item(APPS, PM2, database(), "tokotani")
    assert item == {
        "item": "All services running",
        "passed": True,
        "evidence": "tokotani-nextjs online (pid 20934, up 105 s, 0 restarts); tokotani-engine-hub online "
        "(pid 21577, up 84 s, 0 restarts); PostgreSQL 15.20 accepting connections (database tokotani)",
    }


def test_services_fail_naming_a_stopped_absent_app_and_an_unknown_uptime():
    pm2 = {
        "status": {"tokotani-nextjs": "online", "tokotani-engine-hub": "stopped"},
        "online": ["tokotani-nextjs"],
        "processes": [
            {"name": "tokotani-nextjs", "pid": 1, "uptime": 0, "restarts": 1},
            {"name": "tokotani-nextjs", "pid": 2, "uptime": None, "restarts": 2},
        ],
    }
    item = cl.services_item([*APPS, "ghost"], pm2, database(), "tokotani")
    assert item["passed"] is False
    assert item["evidence"] == (
        "tokotani-nextjs online (pid 1, 2, up ?, ? s, 3 restarts); tokotani-engine-hub stopped; ghost absent; "
        "PostgreSQL 15.20 accepting connections (database tokotani)"
    )


def test_services_fail_when_pm2_or_postgresql_cannot_be_asked():
    item = cl.services_item(APPS, {"failed": True, "msg": "pm2 not found"}, DB_DOWN, "tokotani")
    assert item["passed"] is False
    assert item["evidence"] == f"pm2: pm2 not found; PostgreSQL: {DB_DOWN['error']}"
    assert cl.services_item([], PM2, database(), "tokotani")["passed"] is False


def test_services_not_run():
    item = cl.services_item(APPS, None, None, "tokotani", UNEXPECTED)
    assert item["passed"] is False
    assert item["evidence"] == f"pm2: not checked ({UNEXPECTED}); PostgreSQL: not checked ({UNEXPECTED})"


# ---- item 2 -------------------------------------------------------------------------------------------

HELD = {
    "failed": False,
    "assertions": [{"name": "migrations applied", "ok": True}, {"name": "sessions table present", "ok": True}],
}


def test_integrity_passes_with_every_table_and_a_grown_one():
    db = database(
        counts=counts(("public", "orders", 1530, 1530), ("public", "sessions", 390, 402), ("toko", "x", 0, 0))
    )
    item = cl.integrity_item("tokotani", ASSERTIONS, HELD, db, MANIFEST)
    assert item == {
        "item": "Database integrity verified",
        "passed": True,
        "evidence": "2 assertions hold (migrations applied, sessions table present); row counts match the manifest "
        "backup_2026-11-26_01-34-44.manifest.json (3 tables: orders 1530, sessions 402 (>= 390), toko.x 0)",
    }


def test_integrity_fails_naming_a_shrunk_growing_table_a_changed_and_a_missing_one():
    db = database(
        counts=counts(
            ("public", "orders", 1530, 1500),
            ("public", "sessions", 390, 389),
            ("public", "secret_rotations", 0, None),
            ("toko", "sessions", 3, 4),
        )
    )
    item = cl.integrity_item("tokotani", ASSERTIONS, HELD, db, MANIFEST)
    assert item["passed"] is False
    assert item["evidence"] == (
        "2 assertions hold (migrations applied, sessions table present); row counts differ from the manifest "
        "backup_2026-11-26_01-34-44.manifest.json: orders has 1500 rows, expected 1530, sessions has 389 rows, "
        "expected at least 390, secret_rotations is missing (0 rows in the manifest), toko.sessions has 4 rows, "
        "expected 3"
    )


def test_integrity_without_a_manifest_is_not_compared_but_passes():
    item = cl.integrity_item("tokotani", ASSERTIONS, HELD, database(counts=None), "")
    assert item["passed"] is True
    assert item["evidence"].endswith("; row counts not compared (post_recovery_manifest not set)")
    assert cl.count_check("", None, database()) == (None, "row counts not compared (post_recovery_manifest not set)")


def test_integrity_fails_when_the_manifest_is_not_usable():
    db = database(counts={"ok": False, "error": "the signature of the manifest of backup x does not match its content"})
    item = cl.integrity_item("tokotani", ASSERTIONS, HELD, db, MANIFEST)
    assert item["passed"] is False
    assert item["evidence"].endswith(
        f"; row counts not compared with the manifest {MANIFEST}: "
        "the signature of the manifest of backup x does not match its content"
    )
    assert cl.count_check(MANIFEST, None, database()) == (
        False,
        f"row counts not compared with the manifest {MANIFEST}: not run",
    )


def test_integrity_names_failed_assertions_and_none_checked():
    failed = {
        "failed": False,
        "assertions": [
            {"name": "migrations applied", "ok": False, "problem": "returned false"},
            {"name": "b", "ok": False},
        ],
    }
    item = cl.integrity_item("tokotani", ASSERTIONS, failed, database(counts=None), "")
    assert item["passed"] is False
    assert item["evidence"] == (
        "assertion failed: migrations applied (returned false); b (failed); "
        "row counts not compared (post_recovery_manifest not set)"
    )
    gone = {"failed": True, "msg": "the database tokotani does not exist: nothing to check"}
    assert cl.assertion_failures(gone) == ["none checked (the database tokotani does not exist: nothing to check)"]
    assert cl.integrity_item("tokotani", [], {"failed": False, "assertions": []}, database(counts=None), "")[
        "evidence"
    ].startswith("0 assertions hold (); ")


def test_integrity_when_the_database_cannot_be_queried_and_not_run():
    assert cl.integrity_item("tokotani", ASSERTIONS, HELD, DB_DOWN, MANIFEST) == {
        "item": "Database integrity verified",
        "passed": False,
        "evidence": f"cannot query tokotani: {DB_DOWN['error']}",
    }
    item = cl.integrity_item("tokotani", ASSERTIONS, None, None, MANIFEST, unexpected=UNEXPECTED)
    assert item == {
        "item": "Database integrity verified",
        "passed": False,
        "evidence": f"cannot query tokotani: not checked ({UNEXPECTED})",
    }


# ---- item 3 -------------------------------------------------------------------------------------------

PRODUCTS = http(
    body={
        "products": [{"id": 1, "sku": "PTN-0000001"}, {"id": 2, "sku": "PTN-0000002"}, {"id": 3, "sku": "PTN-0000003"}]
    }
)
API_ORDER = {
    "id": 1530,
    "total": "36171500.0",
    "user": {"id": 34, "email": "rina_utami34@gmail.com"},
    "items": [1, 2, 3, 4],
}


def test_health():
    ok = http(body={"status": "ok", "version": "1.0.0", "database": "ok"})
    assert cl.health_check(ok) == (True, "/api/health 200, database ok (version 1.0.0)")
    assert cl.health_check(http(body={"database": "ok"})) == (True, "/api/health 200, database ok (version ?)")
    down = http(503, {"status": "error", "database": "error", "error": "connect ECONNREFUSED 127.0.0.1:5432"})
    assert cl.health_check(down) == (False, "/api/health HTTP 503, database error: connect ECONNREFUSED 127.0.0.1:5432")
    assert cl.health_check(http(502, None)) == (False, "/api/health HTTP 502, database ?")
    assert cl.health_check(http(200, {"database": "error"})) == (False, "/api/health HTTP 200, database error")
    assert cl.health_check(http(-1, msg=REFUSED)) == (False, f"/api/health: {NO_ANSWER}")
    assert cl.health_check(None, UNEXPECTED) == (False, f"/api/health: not checked ({UNEXPECTED})")


def test_products():
    path = "/api/products?limit=5"
    assert cl.products_check(5, PRODUCTS, {"ok": True, "value": [1, 2, 3]}, database()) == (
        True,
        f"{path} listed 3 products, all in the database (ids 1, 2, 3)",
    )
    assert cl.products_check(5, PRODUCTS, {"ok": True, "value": [1, 2]}, database()) == (
        False,
        f"{path} listed 3 products, 1 not in the database: 3 PTN-0000003",
    )
    assert cl.products_check(5, PRODUCTS, {"ok": True, "value": None}, database())[1].endswith(
        "3 not in the database: 1 PTN-0000001, 2 PTN-0000002, 3 PTN-0000003"
    )
    assert cl.products_check(5, http(body={"products": []}), None, database()) == (False, f"{path} listed no products")
    assert cl.products_check(5, http(500, {"error": "database unavailable"}), None, database()) == (
        False,
        f"{path}: HTTP 500: database unavailable",
    )
    assert cl.products_check(5, http(400, None), None, database()) == (False, f"{path}: HTTP 400")
    assert cl.products_check(5, http(-1, msg=REFUSED), None, database()) == (False, f"{path}: {NO_ANSWER}")
    lookup_failed = {"ok": False, "error": 'relation "products" does not exist'}
    assert cl.products_check(5, PRODUCTS, lookup_failed, database()) == (
        False,
        f'{path} listed 3 products, not compared with the database: relation "products" does not exist',
    )
    assert cl.products_check(5, PRODUCTS, None, DB_DOWN) == (
        False,
        f"{path} listed 3 products, not compared with the database: {DB_DOWN['error']}",
    )
    assert cl.products_check(5, None, None, None, UNEXPECTED) == (False, f"{path}: not checked ({UNEXPECTED})")


def test_product_pairs_are_data_for_a_query_variable_whatever_the_sku_holds():
    hostile = "'); DROP TABLE x; --"
    assert cl.product_pairs([{"id": "7", "sku": hostile}, {"id": None, "sku": 5}]) == [
        {"id": 7, "sku": hostile},
        {"id": 0, "sku": "5"},
    ]
    assert cl.api_products(http(503, {"products": [{"id": 1}]})) == []
    assert cl.api_products(None) == []


def test_order_read_end_to_end():
    assert cl.order_check(database(), http(body=API_ORDER)) == (
        True,
        "order 1530 read end to end (total 36171500.00, user 34 rina_utami34@gmail.com, 4 items, as in the database)",
    )


def test_order_differences_each_named():
    wrong = {"id": "1531", "total": "1.00", "user": {"id": 35, "email": "x@y"}, "items": []}
    assert cl.order_check(database(), http(body=wrong)) == (
        False,
        "order 1530 read through /api/orders/1530 differs from the database: id 1531, total 1.00 (database "
        "36171500.00), user 35 x@y (database 34 rina_utami34@gmail.com), 0 items (database 4)",
    )
    assert cl.order_check(database(), http(body={"id": 1530}))[1] == (
        "order 1530 read through /api/orders/1530 differs from the database: total missing (database 36171500.00), "
        "user missing  (database 34 rina_utami34@gmail.com), 0 items (database 4)"
    )


def test_order_not_picked_missing_unanswered_not_run():
    assert cl.order_check(database(order_pick={"ok": True, "value": None}), None) == (
        False,
        "no order in the database to read back",
    )
    assert cl.order_check(database(order_pick={"ok": False, "error": 'relation "orders" does not exist'}), None) == (
        False,
        'no order picked from the database: relation "orders" does not exist',
    )
    assert cl.order_check(DB_DOWN, None) == (False, f"no order picked from the database: {DB_DOWN['error']}")
    assert cl.order_check(database(), http(404, {"error": "order 1530 not found"})) == (
        False,
        "/api/orders/1530: HTTP 404: order 1530 not found",
    )
    assert cl.order_check(database(), http(-1, msg=REFUSED)) == (False, f"/api/orders/1530: {NO_ANSWER}")
    assert cl.order_check(None, None, UNEXPECTED) == (
        False,
        f"no order picked from the database: not checked ({UNEXPECTED})",
    )


def test_app_item_joins_the_three():
    item = cl.app_item((True, "a"), (False, "b"), (True, "c"))
    assert item == {"item": "Application functionality tested", "passed": False, "evidence": "a; b; c"}
    assert cl.app_item((True, "a"), (True, "b"), (True, "c"))["passed"] is True


# ---- item 4 -------------------------------------------------------------------------------------------

STALE = {"name": "EngineHubHeartbeatStale", "severity": "critical", "summary": "last engine hub heartbeat 64.2 s ago"}


def test_alerts_cleared_at_once_and_after_some_attempts():
    assert cl.alerts_item(http(body={"alerts": []}, attempts=1, seconds=0.01)) == {
        "item": "Monitoring alerts cleared",
        "passed": True,
        "evidence": "/api/alerts: no active alerts after 1 attempt",
    }
    item = cl.alerts_item(http(body={"alerts": []}, attempts=3, seconds=2.04))
    assert item["passed"] is True and item["evidence"] == "/api/alerts: no active alerts after 3 attempts in 2.0 s"


def test_alerts_still_active_http_error_and_no_answer():
    one = cl.alerts_item(http(body={"alerts": [STALE]}, attempts=16, seconds=15.27))
    assert one["passed"] is False
    assert one["evidence"] == (
        "/api/alerts: 1 active alert after 16 attempts in 15.3 s: EngineHubHeartbeatStale (critical): "
        "last engine hub heartbeat 64.2 s ago"
    )
    two = cl.alerts_item(http(body={"alerts": [STALE, {"name": "DatabaseUnreachable"}]}, attempts=1))
    assert two["evidence"].startswith("/api/alerts: 2 active alerts after 1 attempt: EngineHubHeartbeatStale")
    assert two["evidence"].endswith("; DatabaseUnreachable (?): ")
    assert cl.alerts_item(http(503, {"error": "x"}, attempts=2, seconds=1.0))["evidence"] == (
        "/api/alerts HTTP 503 after 2 attempts in 1.0 s (no alert list)"
    )
    assert cl.alerts_item(http(200, {"status": "ok"}, attempts=1))["evidence"] == (
        "/api/alerts HTTP 200 after 1 attempt (no alert list)"
    )
    assert cl.alerts_item(http(-1, msg=REFUSED, attempts=1))["evidence"] == f"/api/alerts after 1 attempt: {NO_ANSWER}"


def test_alerts_not_run_and_the_wait():
    assert cl.alerts_item(None, UNEXPECTED) == {
        "item": "Monitoring alerts cleared",
        "passed": False,
        "evidence": f"/api/alerts: not checked ({UNEXPECTED})",
    }
    assert cl.alerts_attempts(15, 1) == 16 and cl.alerts_attempts(1, 0) == 11 and cl.alerts_attempts(0, 1) == 1
    assert cl.alerts_done(http(body={"alerts": []})) and not cl.alerts_done(http(body={"alerts": [STALE]}))
    assert not cl.alerts_done(http(body=None)) and not cl.alerts_done(None)


# ---- item 5 -------------------------------------------------------------------------------------------

HOOK = "https://hooks.example.com/services/T000/B000/XXXX"


def test_users_notified_not_configured_is_na():
    assert cl.notified_item([]) == {
        "item": "Users notified",
        "passed": None,
        "evidence": "not configured (set post_recovery_notify_webhook_url or post_recovery_notify_tasks)",
    }


def test_webhook_outcomes_name_only_the_host():
    assert cl.webhook_check(HOOK, {"status": 200}) == (True, "POST to the webhook at hooks.example.com: HTTP 200")
    assert cl.webhook_check(HOOK, {"status": 500}) == (
        False,
        "POST to the webhook at hooks.example.com: HTTP 500 (not 2xx)",
    )
    timed_out = {
        "status": -1,
        "msg": "Status code was -1 and not [200, 201]: Request failed: <urlopen error timed out>",
    }
    assert cl.webhook_check(HOOK, timed_out) == (
        False,
        "POST to the webhook at hooks.example.com: no answer: <urlopen error timed out>",
    )
    assert cl.webhook_check(HOOK, {"skipped": True}) == (
        None,
        "POST to the webhook at hooks.example.com: not sent (check mode)",
    )
    assert (
        cl.webhook_check(HOOK, None)[1]
        == "POST to the webhook at hooks.example.com: not checked (an earlier task failed)"
    )


def test_task_file_outcomes():
    assert cl.notify_tasks_check("/etc/notify.yml", {"ok": True, "evidence": ""}) == (True, "ran /etc/notify.yml")
    assert cl.notify_tasks_check("/etc/notify.yml", {"ok": True, "evidence": "mailed 3 people"}) == (
        True,
        "mailed 3 people",
    )
    assert cl.notify_tasks_check("/etc/notify.yml", {"ok": False, "task": "Mail the team", "msg": "smtp refused"}) == (
        False,
        "/etc/notify.yml failed at 'Mail the team': smtp refused",
    )
    assert cl.notify_tasks_check("/etc/notify.yml", {"ok": False}) == (False, "/etc/notify.yml failed at '?': failed")
    assert cl.notify_tasks_check("/etc/notify.yml", None) == (
        False,
        "/etc/notify.yml: not checked (an earlier task failed)",
    )


def test_users_notified_combines_the_hooks():
    assert cl.notified_item([(True, "ran t"), (False, "POST ... HTTP 500")]) == {
        "item": "Users notified",
        "passed": False,
        "evidence": "ran t; POST ... HTTP 500",
    }
    assert cl.notified_item([(True, "a"), (None, "b")])["passed"] is True
    assert cl.notified_item([(None, "not sent (check mode)")])["passed"] is None


# ---- the whole ----------------------------------------------------------------------------------------


def test_result_summary_and_report():
    items = [
        cl.services_item(APPS, PM2, database(), "tokotani"),
        {"item": "Database integrity verified", "passed": False, "evidence": "x"},
        {"item": "Users notified", "passed": None, "evidence": cl.NOT_CONFIGURED},
    ]
    result = cl.result(items, 100.0, 104.04)
    assert result["passed"] is False and set(result) == {"passed", "started_at", "finished_at", "items"}
    assert cl.summary("shop-1", result) == (
        "TokoTani post-recovery checklist on shop-1: FAILED (1 of 3 checks passed, failed: Database integrity verified)"
    )
    assert cl.report(result) == [
        "Post-recovery checklist FAILED in 4.0 s",
        f"[pass] All services running: {items[0]['evidence']}",
        "[FAIL] Database integrity verified: x",
        f"[n/a] Users notified: {cl.NOT_CONFIGURED}",
    ]
    fine = cl.result(items[:1] + items[2:], 1.0, 5.0)
    assert fine["passed"] is True
    assert cl.summary("shop-1", fine) == "TokoTani post-recovery checklist on shop-1: PASSED (1 of 2 checks passed)"
