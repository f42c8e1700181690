"""tokotani.dr.recovery_checklist on a real PostgreSQL 15 (a shop database and the manifest of a real
postgresql_backup run), a real pm2 daemon, and a small shop API served by the test on 127.0.0.1, whose
answers each test sets: the checklist's items and their exact evidence, nothing written anywhere."""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from backup_support import MIGRATION_SQL, conn_args, drop_db, load_shop, run_module, table_checksums
from helpers import LOOPBACK, free_port, wait_until
from pm2_support import PlaybookRun, pm2_daemon, run_tasks

DB = "rc_shop"
KEY = "rc-backup-key-" + "r" * 32
ASSERTIONS = [
    {"name": "migrations applied", "sql": "SELECT EXISTS (SELECT 1 FROM _prisma_migrations)"},
    {"name": "sessions table present", "sql": "SELECT to_regclass('public.sessions') IS NOT NULL"},
]
GROWING = ["engine_heartbeat", "sessions"]
HOSTILE_SKU = "'); DROP TABLE x; --"


@dataclass
class FakeShop:
    """The shop's API as the checklist asks it: each route answers (status, JSON body) from ``answers``;
    /api/alerts answers the next of ``alerts`` each time (the last one again and again)."""

    port: int
    answers: dict[str, tuple[int, object]] = field(default_factory=dict)
    alerts: list[tuple[int, object]] = field(default_factory=list)
    requests: list[tuple[str, str, bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, object]:
        self.requests.append((method, path, body))
        if path == "/api/alerts" and self.alerts:
            return self.alerts.pop(0) if len(self.alerts) > 1 else self.alerts[0]
        return self.answers.get(path, (404, {"error": f"no route {path}"}))


def serve(shop: FakeShop) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, method):
            length = int(self.headers.get("Content-Length") or 0)
            status, body = shop.answer(method, self.path, self.rfile.read(length) if length else b"")
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._reply("GET")

        def do_POST(self):
            self._reply("POST")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer((LOOPBACK, shop.port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def backup(pg_cluster, tmp_path_factory):
    """The shop database and a signed backup of it (its manifest lists every table with its rows)."""
    load_shop(pg_cluster, DB, fidelity=False, seed=21)
    pg_cluster.psql(MIGRATION_SQL, db=DB)
    pg_cluster.psql("CREATE TABLE x (v int); INSERT INTO x VALUES (1);", db=DB)
    directory = tmp_path_factory.mktemp("rc_backups")
    made = run_module(
        "postgresql_backup", conn_args(pg_cluster, database=DB, backup_dir=str(directory), backup_key=KEY)
    )
    assert not made.get("failed"), made
    yield {
        "manifest": made["manifest_path"],
        "name": made["name"],
        "doc": json.loads(Path(made["manifest_path"]).read_text()),
    }
    drop_db(pg_cluster, DB)


@pytest.fixture(scope="module")
def pm2():
    with pm2_daemon("checklist") as daemon:
        daemon.pm2("start", str(daemon.apps / "ecosystem.config.js"))
        wait_until(
            lambda: {p["status"] for p in daemon.jlist().values()} == {"online"}, message="web and worker online"
        )
        yield daemon


def db_value(cluster, sql: str):
    return json.loads(cluster.psql(sql, db=DB))


def products_of(cluster, limit: int = 5) -> list[dict]:
    return db_value(
        cluster,
        f"SELECT json_agg(p ORDER BY p.id) FROM (SELECT id, sku, name FROM products ORDER BY id LIMIT {limit}) p",  # noqa: S608
    )


def newest_order(cluster) -> dict:
    return db_value(
        cluster,
        "SELECT row_to_json(o) FROM (SELECT o.id, o.total::text AS total, o.user_id, u.email, "
        "(SELECT count(*) FROM order_items i WHERE i.order_id = o.id) AS items "
        "FROM orders o JOIN users u ON u.id = o.user_id ORDER BY o.id DESC LIMIT 1) o",
    )


def api_order(order: dict, **changes) -> dict:
    body = {
        "id": order["id"],
        "total": order["total"],
        "user": {"id": order["user_id"], "email": order["email"]},
        "items": [{"id": i} for i in range(order["items"])],
    }
    body.update(changes)
    return body


@pytest.fixture
def shop(pg_cluster, backup) -> Iterator[FakeShop]:
    """A healthy shop API answering with the database's products and newest order; no alert."""
    fake = FakeShop(port=free_port())
    order = newest_order(pg_cluster)
    fake.answers = {
        "/api/health": (200, {"status": "ok", "version": "9.9.9-it", "database": "ok"}),
        "/api/products?limit=5": (200, {"products": products_of(pg_cluster)}),
        f"/api/orders/{order['id']}": (200, api_order(order)),
    }
    fake.alerts = [(200, {"alerts": []})]
    server = serve(fake)
    yield fake
    server.shutdown()
    server.server_close()


def checklist(cluster, backup, pm2, shop, **extra) -> dict:
    args = conn_args(
        cluster,
        database=DB,
        assertions=ASSERTIONS,
        manifest=backup["manifest"],
        backup_key=KEY,
        growing_tables=GROWING,
        pm2_apps=["web", "worker"],
        pm2_home=str(pm2.home),
        pm2_executable=str(pm2.executable),
        app_url=shop.url,
        alerts_timeout=3,
        alerts_delay=0.2,
        server_name="it-shop",
    )
    args.update(extra)
    result = run_module("recovery_checklist", args)
    assert not result.get("failed"), result
    assert [i["item"] for i in result["items"]][:4] == [
        "All services running",
        "Database integrity verified",
        "Application functionality tested",
        "Monitoring alerts cleared",
    ]
    return result


def evidence(result: dict, index: int) -> str:
    return result["items"][index]["evidence"]


def counts_text(backup) -> str:
    tables = ", ".join(f"{t['name']} {t['rows']}" for t in backup["doc"]["tables"])
    count = len(backup["doc"]["tables"])
    return f"row counts match the manifest {Path(backup['manifest']).name} ({count} tables: {tables})"


def test_a_healthy_shop_passes_every_item_with_its_evidence(pg_cluster, backup, pm2, shop):
    before = table_checksums(pg_cluster, DB)
    result = checklist(pg_cluster, backup, pm2, shop)
    assert result["passed"] is True and result["complete"] is True and result["changed"] is False, "\n".join(
        result["report"]
    )
    assert [i["passed"] for i in result["items"]] == [True, True, True, True, None]

    version = pg_cluster.psql("SELECT split_part(current_setting('server_version'), ' ', 1)").strip()
    procs = pm2.jlist()
    assert re.fullmatch(
        rf"web online \(pid {procs['web']['pid']}, up (\d+|\?) s, 0 restarts\); "
        rf"worker online \(pid {procs['worker']['pid']}, up (\d+|\?) s, 0 restarts\); "
        rf"PostgreSQL {re.escape(version)} accepting connections \(database {DB}\)",
        evidence(result, 0),
    ), evidence(result, 0)
    assert evidence(result, 1) == (
        "2 assertions hold (migrations applied, sessions table present); " + counts_text(backup)
    )
    order = newest_order(pg_cluster)
    ids = ", ".join(str(p["id"]) for p in products_of(pg_cluster))
    assert evidence(result, 2) == (
        "/api/health 200, database ok (version 9.9.9-it); "
        f"/api/products?limit=5 listed 5 products, all in the database (ids {ids}); "
        f"order {order['id']} read end to end (total {order['total']}, user {order['user_id']} {order['email']}, "
        f"{order['items']} items, as in the database)"
    )
    assert evidence(result, 3) == "/api/alerts: no active alerts after 1 attempt"
    assert result["items"][4] == {
        "item": "Users notified",
        "passed": None,
        "evidence": "not configured (set post_recovery_notify_webhook_url or post_recovery_notify_tasks)",
    }
    assert result["report"][0].startswith("Post-recovery checklist PASSED in ")
    assert result["report"][1:] == [
        ("[pass] " if i["passed"] else "[n/a] ") + f"{i['item']}: {i['evidence']}" for i in result["items"]
    ]
    assert result["summary"] == "TokoTani post-recovery checklist on it-shop: PASSED (4 of 5 checks passed)"
    assert all(t["ok"] for t in result["table_counts"]) and len(result["table_counts"]) == len(backup["doc"]["tables"])
    assert result["assertions"] == [{"name": a["name"], "ok": True} for a in ASSERTIONS]
    assert table_checksums(pg_cluster, DB) == before
    assert [r[:2] for r in shop.requests] == [
        ("GET", "/api/health"),
        ("GET", "/api/products?limit=5"),
        ("GET", f"/api/orders/{order['id']}"),
        ("GET", "/api/alerts"),
    ]


def test_growing_tables_may_grow_and_nothing_else_may_change(pg_cluster, backup, pm2, shop):
    rows = {t["name"]: t["rows"] for t in backup["doc"]["tables"]}
    name = Path(backup["manifest"]).name
    pg_cluster.psql(
        'INSERT INTO sessions ("sessionToken", "userId", expires) SELECT "sessionToken" || \'-rc\', "userId", expires '
        "FROM sessions ORDER BY id LIMIT 2;",
        db=DB,
    )
    try:
        grown = checklist(pg_cluster, backup, pm2, shop)
        assert grown["items"][1]["passed"] is True, grown["items"][1]
        assert f", sessions {rows['sessions'] + 2} (>= {rows['sessions']})," in evidence(grown, 1), evidence(grown, 1)
        by_table = {t["table"]: t for t in grown["table_counts"]}
        assert by_table["public.sessions"] == {
            "table": "public.sessions",
            "expected": rows["sessions"],
            "actual": rows["sessions"] + 2,
            "growing": True,
            "ok": True,
        }

        pg_cluster.psql(
            "CREATE TABLE rc_keep AS SELECT * FROM sessions ORDER BY id LIMIT 3; "
            "DELETE FROM sessions WHERE id IN (SELECT id FROM rc_keep); "
            "INSERT INTO users (email, name) VALUES ('rc-late@example.com', 'late');",
            db=DB,
        )
        shrunk = checklist(pg_cluster, backup, pm2, shop)
        assert shrunk["items"][1]["passed"] is False
        assert evidence(shrunk, 1) == (
            f"2 assertions hold (migrations applied, sessions table present); row counts differ from the manifest "
            f"{name}: users has {rows['users'] + 1} rows, expected {rows['users']}, "
            f"sessions has {rows['sessions'] - 1} rows, expected at least {rows['sessions']}"
        ) or evidence(shrunk, 1) == (
            f"2 assertions hold (migrations applied, sessions table present); row counts differ from the manifest "
            f"{name}: sessions has {rows['sessions'] - 1} rows, expected at least {rows['sessions']}, "
            f"users has {rows['users'] + 1} rows, expected {rows['users']}"
        ), evidence(shrunk, 1)
        by_table = {t["table"]: t for t in shrunk["table_counts"]}
        assert by_table["public.sessions"]["ok"] is False and by_table["public.users"]["growing"] is False
    finally:
        pg_cluster.psql(
            "CREATE TABLE IF NOT EXISTS rc_keep (LIKE sessions); "
            "INSERT INTO sessions SELECT * FROM rc_keep ON CONFLICT DO NOTHING; DROP TABLE rc_keep; "
            "DELETE FROM sessions WHERE \"sessionToken\" LIKE '%-rc'; "
            "DELETE FROM users WHERE email = 'rc-late@example.com';",
            db=DB,
        )


def test_a_missing_table_is_named_and_the_others_still_compared(pg_cluster, backup, pm2, shop):
    rows = {t["name"]: t["rows"] for t in backup["doc"]["tables"]}
    pg_cluster.psql("ALTER TABLE secret_rotations RENAME TO rc_gone;", db=DB)
    try:
        result = checklist(pg_cluster, backup, pm2, shop)
    finally:
        pg_cluster.psql("ALTER TABLE rc_gone RENAME TO secret_rotations;", db=DB)
    assert result["items"][1]["passed"] is False
    assert evidence(result, 1).endswith(
        f"row counts differ from the manifest {Path(backup['manifest']).name}: "
        f"secret_rotations is missing ({rows['secret_rotations']} rows in the manifest)"
    ), evidence(result, 1)
    missing = next(t for t in result["table_counts"] if t["table"] == "public.secret_rotations")
    assert missing["actual"] is None and missing["ok"] is False
    assert all(t["ok"] for t in result["table_counts"] if t is not missing)


def test_a_product_the_api_lists_that_the_database_lacks_and_a_hostile_sku(pg_cluster, backup, pm2, shop):
    listed = products_of(pg_cluster)
    listed[1] = {**listed[1], "sku": HOSTILE_SKU}
    listed.append({"id": 999999, "sku": "RC-NOPE"})
    shop.answers["/api/products?limit=5"] = (200, {"products": listed})
    before = table_checksums(pg_cluster, DB)
    result = checklist(pg_cluster, backup, pm2, shop)
    assert result["items"][2]["passed"] is False
    assert (
        "/api/products?limit=5 listed 6 products, 2 not in the database: "
        f"{listed[1]['id']} {HOSTILE_SKU}, 999999 RC-NOPE" in evidence(result, 2)
    ), evidence(result, 2)
    assert table_checksums(pg_cluster, DB) == before
    assert pg_cluster.psql("SELECT count(*) FROM x", db=DB).strip() == "1"


def test_an_order_the_api_shows_differently_is_named(pg_cluster, backup, pm2, shop):
    order = newest_order(pg_cluster)
    shop.answers[f"/api/orders/{order['id']}"] = (
        200,
        api_order(order, total="1.00", user={"id": order["user_id"], "email": "someone@else.example"}),
    )
    result = checklist(pg_cluster, backup, pm2, shop)
    assert result["items"][2]["passed"] is False
    assert evidence(result, 2).endswith(
        f"order {order['id']} read through /api/orders/{order['id']} differs from the database: "
        f"total 1.00 (database {order['total']}), user {order['user_id']} someone@else.example "
        f"(database {order['user_id']} {order['email']})"
    ), evidence(result, 2)


def test_alerts_that_clear_after_a_few_attempts_pass_and_ones_that_stay_fail(pg_cluster, backup, pm2, shop):
    stale = {"name": "EngineHubHeartbeatStale", "severity": "critical", "summary": "last beat 64.2 s ago"}
    shop.alerts = [(200, {"alerts": [stale]}), (200, {"alerts": [stale]}), (200, {"alerts": []})]
    cleared = checklist(pg_cluster, backup, pm2, shop)
    assert cleared["items"][3]["passed"] is True
    assert re.fullmatch(r"/api/alerts: no active alerts after 3 attempts in 0\.[4-9] s", evidence(cleared, 3)), (
        evidence(cleared, 3)
    )

    shop.alerts = [(200, {"alerts": [stale, {"name": "DatabaseUnreachable"}]})]
    stuck = checklist(pg_cluster, backup, pm2, shop, alerts_timeout=1, alerts_delay=0.3)
    assert stuck["items"][3]["passed"] is False
    assert re.fullmatch(
        r"/api/alerts: 2 active alerts after \d attempts in \d\.\d s: EngineHubHeartbeatStale \(critical\): "
        r"last beat 64\.2 s ago; DatabaseUnreachable \(\?\): ",
        evidence(stuck, 3),
    ), evidence(stuck, 3)

    shop.alerts = [(503, {"error": "down"})]
    broken = checklist(pg_cluster, backup, pm2, shop, alerts_timeout=0)
    assert evidence(broken, 3) == "/api/alerts HTTP 503 after 1 attempt (no alert list)"


def test_an_app_that_does_not_answer(pg_cluster, backup, pm2, shop):
    result = checklist(pg_cluster, backup, pm2, shop, app_url=f"http://{LOOPBACK}:{free_port()}", alerts_timeout=0)
    assert result["passed"] is False
    refused = "no answer: <urlopen error [Errno 111] Connection refused>"
    order = newest_order(pg_cluster)
    assert evidence(result, 2) == (
        f"/api/health: {refused}; /api/products?limit=5: {refused}; /api/orders/{order['id']}: {refused}"
    )
    assert evidence(result, 3) == f"/api/alerts after 1 attempt: {refused}"
    assert result["items"][1]["passed"] is True


def test_an_unhealthy_app_and_a_stopped_process(pg_cluster, backup, pm2, shop):
    shop.answers["/api/health"] = (503, {"status": "error", "database": "error", "error": "connect ECONNREFUSED"})
    shop.answers["/api/products?limit=5"] = (500, {"error": "database unavailable"})
    pm2.pm2("stop", "worker")
    try:
        result = checklist(pg_cluster, backup, pm2, shop)
    finally:
        pm2.pm2("restart", "worker")
    assert result["items"][0]["passed"] is False
    assert "; worker stopped; PostgreSQL " in evidence(result, 0)
    assert evidence(result, 2).startswith(
        "/api/health HTTP 503, database error: connect ECONNREFUSED; "
        "/api/products?limit=5: HTTP 500: database unavailable; order "
    ), evidence(result, 2)


def test_a_missing_database_and_an_unchecked_manifest(pg_cluster, backup, pm2, shop, tmp_path):
    gone = checklist(pg_cluster, backup, pm2, shop, database="rc_nope", alerts_timeout=0)
    reason = (
        f'unable to connect to database: connection to server at "{LOOPBACK}", port {pg_cluster.port} failed: '
        'FATAL:  database "rc_nope" does not exist'
    )
    assert evidence(gone, 0).endswith(f"; PostgreSQL: {reason}"), evidence(gone, 0)
    assert evidence(gone, 1) == f"cannot query rc_nope: {reason}"
    assert evidence(gone, 2).endswith(f"; no order picked from the database: {reason}"), evidence(gone, 2)

    forged = json.loads(Path(backup["manifest"]).read_text())
    forged["tables"][0]["rows"] += 1
    copy = Path(backup["manifest"]).parent / "forged"
    copy.mkdir(exist_ok=True)
    target = copy / Path(backup["manifest"]).name
    target.write_text(json.dumps(forged))
    (copy / forged["data"]).symlink_to(Path(backup["manifest"]).parent / forged["data"])
    result = checklist(pg_cluster, backup, pm2, shop, manifest=str(target))
    assert result["items"][1]["passed"] is False
    assert f"row counts not compared with the manifest {target}: " in evidence(result, 1)
    assert "does not match its content" in evidence(result, 1) or "symbolic link" in evidence(result, 1)

    unset = checklist(pg_cluster, backup, pm2, shop, manifest="")
    assert unset["items"][1]["passed"] is True and unset["table_counts"] is None
    assert evidence(unset, 1).endswith("; row counts not compared (post_recovery_manifest not set)")


def test_psql_runs_as_login_os_user_over_the_unix_socket(pg_cluster, backup, pm2, shop):
    socket = {"login_host": None, "login_password": None, "login_unix_socket": str(pg_cluster.socket_dir)}
    as_postgres = checklist(pg_cluster, backup, pm2, shop, login_os_user="postgres", **socket)
    assert as_postgres["items"][1]["passed"] is True, as_postgres["items"][1]
    # the socket's directory is postgres's alone (0700): only a psql that really switched is refused
    as_nobody = checklist(pg_cluster, backup, pm2, shop, login_os_user="nobody", alerts_timeout=0, **socket)
    assert "Permission denied" in evidence(as_nobody, 1), evidence(as_nobody, 1)


def test_the_webhook_gets_the_summary_and_the_notify_stage_adds_the_task_file(pg_cluster, backup, pm2, shop):
    hook = f"{shop.url}/hooks/T000/secret-token"
    shop.answers["/hooks/T000/secret-token"] = (200, {"ok": True})
    result = checklist(pg_cluster, backup, pm2, shop, notify_webhook_url=hook)
    assert result["items"][4] == {
        "item": "Users notified",
        "passed": True,
        "evidence": f"POST to the webhook at {LOOPBACK}: HTTP 200",
    }
    posted = json.loads(next(body for method, path, body in shop.requests if method == "POST"))
    assert posted["text"] == "TokoTani post-recovery checklist on it-shop: PASSED (4 of 4 checks passed)"
    assert posted["host"] == "it-shop" and posted["passed"] is True and len(posted["items"]) == 4
    assert "secret-token" not in json.dumps(result)

    first = checklist(pg_cluster, backup, pm2, shop, notify_tasks="/etc/notify.yml", notify_webhook_url=hook)
    assert first["complete"] is False and len(first["items"]) == 4
    shop.answers["/hooks/T000/secret-token"] = (500, {"error": "boom"})
    checklist_so_far = {k: first[k] for k in ("passed", "started_at", "finished_at", "items")}
    notified = run_module(
        "recovery_checklist",
        {
            "stage": "notify",
            "checklist": checklist_so_far,
            "notify_tasks": "/etc/notify.yml",
            "notify_tasks_outcome": {"ok": False, "task": "Mail the team", "msg": "smtp refused"},
            "notify_webhook_url": hook,
            "server_name": "it-shop",
        },
    )
    assert not notified.get("failed"), notified
    assert notified["items"][:4] == first["items"] and notified["passed"] is False
    assert notified["items"][4] == {
        "item": "Users notified",
        "passed": False,
        "evidence": (
            "/etc/notify.yml failed at 'Mail the team': smtp refused; "
            f"POST to the webhook at {LOOPBACK}: HTTP 500 (not 2xx)"
        ),
    }
    assert notified["started_at"] == first["started_at"]


def role_play(pg_cluster, backup, pm2, shop, tmp_path, **role_vars) -> PlaybookRun:
    """The role tokotani.dr.post_recovery on localhost against the test cluster (its Unix socket, as
    postgres), the test's pm2 daemon (PM2_HOME) and the fake shop; then post_recovery_result is printed."""
    variables = {
        "post_recovery_database": DB,
        "post_recovery_login_unix_socket": str(pg_cluster.socket_dir),
        "post_recovery_login_port": pg_cluster.port,
        "post_recovery_pm2_apps": ["web", "worker"],
        "post_recovery_pm2_user": "root",
        "post_recovery_assertions": ASSERTIONS,
        "post_recovery_manifest": backup["manifest"],
        "post_recovery_backup_key": KEY,
        "post_recovery_app_url": shop.url,
        "post_recovery_alerts_timeout": 1,
        **role_vars,
    }
    tasks = [
        {"ansible.builtin.include_role": {"name": "tokotani.dr.post_recovery"}, "vars": variables},
        {"name": "result", "ansible.builtin.debug": {"var": "post_recovery_result"}},
    ]
    path = f"{pm2.executable.parent}{os.pathsep}{os.environ['PATH']}"
    return run_tasks(tasks, env={"PM2_HOME": str(pm2.home), "PATH": path})


def test_the_role_records_post_recovery_result_reports_and_fails_at_the_end(pg_cluster, backup, pm2, shop, tmp_path):
    notify = tmp_path / "notify.yml"
    notify.write_text(
        "- name: Tell the team\n  ansible.builtin.set_fact:\n    post_recovery_notify_evidence: told the team\n"
    )
    hook = f"{shop.url}/hooks/role"
    shop.answers["/hooks/role"] = (204, {})
    run = role_play(
        pg_cluster,
        backup,
        pm2,
        shop,
        tmp_path,
        post_recovery_notify_tasks=str(notify),
        post_recovery_notify_webhook_url=hook,
        post_recovery_fail_on_error=False,
    )
    assert run.rc == 0, run.output[-3000:]
    result = run.results[-1]["post_recovery_result"]
    assert set(result) == {"passed", "started_at", "finished_at", "items"}
    assert result["passed"] is True and result["finished_at"] >= result["started_at"]
    assert [i["passed"] for i in result["items"]] == [True, True, True, True, True], result["items"]
    assert result["items"][4]["evidence"] == f"told the team; POST to the webhook at {LOOPBACK}: HTTP 204"
    assert "Post-recovery checklist PASSED in " in run.output and "[pass] Users notified: told the team" in run.output
    assert hook not in run.output

    shop.answers["/api/health"] = (503, {"database": "error", "error": "down"})
    failed = role_play(pg_cluster, backup, pm2, shop, tmp_path)
    assert failed.rc != 0
    flat = " ".join(failed.output.split())
    assert "Post-recovery checklist failed on localhost: Application functionality tested: /api/health HTTP 503" in flat
    assert "[n/a] Users notified: not configured" in flat
