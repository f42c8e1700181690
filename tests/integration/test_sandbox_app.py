"""The stand-in TokoTani app and the shop data generator against a real PostgreSQL 15 cluster.

One database and role for the module: the app's migrations (`npm run migrate`, in name order)
create the schema, generate.py fills it, then server.js and engine-hub.js run under node on a
random loopback port, with their secrets in a `.env` file in their working directory, as pm2 runs
them in the sandbox. The admin API, logins, sessions and the audit log are tested last, after the
tests that expect the secrets and rows as the fixtures left them.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import (
    LOOPBACK,
    ROOT,
    PgCluster,
    free_port,
    http_request,
    quote_ident,
    stop_process,
    tail,
    wait_for_http,
    wait_until,
)

GENERATOR = ROOT / "sandbox" / "data" / "generate.py"
MIGRATIONS_DIR = ROOT / "sandbox" / "app" / "prisma" / "migrations"
MIGRATIONS = ("20240115093000_init", "20240301000000_admin_audit")  # the order npm run migrate applies them in
PUBLIC_TABLES = (
    "_prisma_migrations,audit_log,engine_heartbeat,order_items,orders,products,secret_rotations,sessions,users"
)
SESSION_COOKIE = "next-auth.session-token"
SEED = 42
SHOP_TABLES = ("users", "products", "orders", "order_items", "sessions")
HEARTBEAT_MS = 500
APP_VERSION = "1.0.0-it"


@dataclass
class ShopDb:
    name: str
    role: str
    password: str = field(repr=False)
    port: int

    def url(self, db: str | None = None) -> str:
        return f"postgres://{self.role}:{self.password}@{LOOPBACK}:{self.port}/{db or self.name}"


def run_npm(app_dir: Path, script: str, database_url: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DATABASE_URL=database_url)
    return subprocess.run(
        ["npm", "run", "--silent", script],
        cwd=app_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def load_shop_data(pg_cluster: PgCluster, db: str, *args: str) -> None:
    """generate.py --scale tiny ... | psql -v ON_ERROR_STOP=1, checking both exit codes."""
    generator = subprocess.Popen(
        [sys.executable, str(GENERATOR), "--scale", "tiny", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    psql = subprocess.Popen(
        [str(pg_cluster.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db],
        stdin=generator.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=pg_cluster.env(db),
    )
    generator.stdout.close()  # psql alone reads it: if psql dies, the generator gets EPIPE
    _out, psql_err = psql.communicate(timeout=300)
    gen_err = generator.stderr.read()
    generator.stderr.close()
    generator.wait(timeout=60)
    assert psql.returncode == 0, f"psql failed loading generate.py {args}: {psql_err.decode()}"
    assert generator.returncode == 0, f"generate.py {args} failed: {gen_err.decode()}"


def table_counts(pg_cluster: PgCluster, db: str) -> dict[str, int]:
    sql = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t}" for t in SHOP_TABLES)  # noqa: S608 (constants)
    return {name: int(n) for name, n in (line.split("|") for line in pg_cluster.psql(sql, db).split())}


def table_digests(pg_cluster: PgCluster, db: str) -> dict[str, str]:
    sql = " UNION ALL ".join(
        f"SELECT '{t}', md5(string_agg(t::text, E'\\n' ORDER BY t.id)) FROM {t} t"  # noqa: S608 (constants)
        for t in SHOP_TABLES
    )
    return dict(line.split("|") for line in pg_cluster.psql(sql, db).split())


def create_app_database(pg_cluster: PgCluster, shop: ShopDb, db: str) -> None:
    pg_cluster.createdb(db, owner=shop.role)


def drop_database(pg_cluster: PgCluster, db: str) -> None:
    pg_cluster.psql(f"DROP DATABASE IF EXISTS {quote_ident(db)} WITH (FORCE);")


@pytest.fixture(scope="module")
def shop_db(pg_cluster: PgCluster) -> Iterator[ShopDb]:
    """An empty database owned by a fresh login role, as the postgresql_server role creates it."""
    suffix = secrets.token_hex(3)
    shop = ShopDb(
        name=f"tokotani_it_{suffix}",
        role=f"tokotani_app_{suffix}",
        password=secrets.token_urlsafe(18),
        port=pg_cluster.port,
    )
    pg_cluster.psql(f"CREATE ROLE {quote_ident(shop.role)} LOGIN PASSWORD '{shop.password}';")
    create_app_database(pg_cluster, shop, shop.name)
    yield shop
    drop_database(pg_cluster, shop.name)
    pg_cluster.psql(f"DROP ROLE {quote_ident(shop.role)};")


@pytest.fixture(scope="module")
def first_migration(shop_db: ShopDb, shop_app_dir: Path) -> subprocess.CompletedProcess:
    return run_npm(shop_app_dir, "migrate", shop_db.url())


@pytest.fixture(scope="module")
def loaded_db(shop_db: ShopDb, first_migration, pg_cluster: PgCluster) -> ShopDb:
    assert first_migration.returncode == 0, first_migration.stderr
    load_shop_data(pg_cluster, shop_db.name, "--seed", str(SEED))
    return shop_db


@dataclass
class RunningApp:
    app_dir: Path
    run_dir: Path
    shop: ShopDb
    port: int
    build_id: str
    secrets: dict[str, str] = field(repr=False)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def env_file(self) -> Path:
        return self.run_dir / ".env"

    def get(self, path: str, **kwargs):
        return http_request(self.base_url + path, **kwargs)

    def post(self, path: str, body=None, token: str | None = None):
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return http_request(self.base_url + path, method="POST", body=body, headers=headers)

    def call(self, method: str, path: str, body=None, token: str | None = None, cookie: str | None = None):
        """One request with an optional bearer token and an optional session cookie (the token's value)."""
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if cookie is not None:
            headers["Cookie"] = f"{SESSION_COOKIE}={cookie}"
        return http_request(self.base_url + path, method=method, body=body, headers=headers)

    def admin_token(self) -> str:
        """The ADMIN_TOKEN the server uses now: .env's (a rotation rewrites it there)."""
        return re.search(r'^ADMIN_TOKEN="?([^"\n]*)"?$', self.env_file.read_text(), re.MULTILINE).group(1)

    def log(self, name: str) -> Path:
        return self.run_dir / f"{name}.log"

    def start(self, name: str, script: str) -> subprocess.Popen:
        """node <app_dir>/<script> in run_dir: PORT, HOST and APP_VERSION by environment, the rest from .env."""
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(self.run_dir),
            "PORT": str(self.port),
            "HOST": LOOPBACK,
            "APP_VERSION": APP_VERSION,
        }
        with self.log(name).open("a") as log:
            process = subprocess.Popen(
                [shutil.which("node"), str(self.app_dir / script)],
                cwd=self.run_dir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.processes[name] = process
        return process

    def stop(self, name: str, sig: int = signal.SIGTERM) -> int:
        process = self.processes.pop(name)
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
                raise AssertionError(f"{name} ignored signal {sig} for 15 s:\n{tail(self.log(name))}") from None
        return process.returncode

    def alerts(self) -> list[dict]:
        response = self.get("/api/alerts")
        assert response.status == 200, response.text
        return response.json()["alerts"]

    def alert_names(self) -> set[str]:
        return {a["name"] for a in self.alerts()}


def write_dotenv(path: Path, app_secrets: dict[str, str]) -> None:
    """The app's .env, in the forms such files take: comments, blank lines, quotes, `export`."""
    path.write_text(
        "# TokoTani secrets (integration test)\n"
        f"DATABASE_URL={app_secrets['DATABASE_URL']}\n"
        f"NEXTAUTH_SECRET={app_secrets['NEXTAUTH_SECRET']}\n"
        f'ADMIN_TOKEN="{app_secrets["ADMIN_TOKEN"]}"\n'
        "\n"
        f"export HEARTBEAT_INTERVAL_MS={HEARTBEAT_MS}\n"
        "APP_VERSION=overridden-by-the-environment\n"
    )
    path.chmod(0o600)


@pytest.fixture(scope="module")
def app(loaded_db: ShopDb, shop_app_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    build = run_npm(shop_app_dir, "build", loaded_db.url())
    assert build.returncode == 0, build.stderr
    run_dir = tmp_path_factory.mktemp("shop-run")
    app_secrets = {
        "DATABASE_URL": loaded_db.url(),
        "NEXTAUTH_SECRET": secrets.token_urlsafe(32),
        "ADMIN_TOKEN": secrets.token_urlsafe(32),
    }
    write_dotenv(run_dir / ".env", app_secrets)
    running = RunningApp(
        app_dir=shop_app_dir,
        run_dir=run_dir,
        shop=loaded_db,
        port=free_port(),
        build_id=(shop_app_dir / ".next" / "BUILD_ID").read_text().strip(),
        secrets=app_secrets,
    )
    try:
        server = running.start("server", "server.js")
        wait_for_http(running.base_url + "/api/health", process=server)
        running.start("engine-hub", "engine-hub.js")
        yield running
    finally:
        for process in running.processes.values():
            stop_process(process)


def test_migration_applies_once(first_migration, shop_db: ShopDb, shop_app_dir: Path, pg_cluster: PgCluster):
    assert first_migration.returncode == 0, first_migration.stderr
    applied = [line for line in first_migration.stdout.splitlines() if line.startswith("migration ")]
    assert applied == [f"migration {name} applied" for name in MIGRATIONS]
    assert "already" not in first_migration.stdout

    again = run_npm(shop_app_dir, "migrate", shop_db.url())
    assert again.returncode == 0, again.stderr
    for name in MIGRATIONS:
        assert f"migration {name} already applied (" in again.stdout
    assert "all migrations already applied" in again.stdout

    rows = pg_cluster.psql(
        "SELECT migration_name, checksum, finished_at IS NOT NULL, rolled_back_at IS NULL, applied_steps_count "
        "FROM _prisma_migrations ORDER BY migration_name",
        shop_db.name,
    ).split()
    checksums = {
        name: hashlib.sha256((MIGRATIONS_DIR / name / "migration.sql").read_bytes()).hexdigest() for name in MIGRATIONS
    }
    assert rows == [f"{name}|{checksums[name]}|t|t|1" for name in MIGRATIONS]
    assert sorted(p.name for p in MIGRATIONS_DIR.iterdir() if (p / "migration.sql").is_file()) == list(MIGRATIONS)
    tables = pg_cluster.psql(
        "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'", shop_db.name
    ).strip()
    assert tables == PUBLIC_TABLES
    owners = pg_cluster.psql(
        "SELECT DISTINCT tableowner FROM pg_tables WHERE tablename IN ('orders', 'audit_log')", shop_db.name
    ).split()
    assert owners == [shop_db.role]
    comment = pg_cluster.psql("SELECT obj_description('audit_log'::regclass, 'pg_class')", shop_db.name).strip()
    assert comment == "Admin actions and logins, written by the app."


def test_seeded_users_are_customers_without_a_password(loaded_db: ShopDb, pg_cluster: PgCluster):
    """generate.py's COPY names the old columns only: the new ones take their defaults."""
    roles = pg_cluster.psql(
        "SELECT role, count(*), count(password_hash) FROM users GROUP BY role", loaded_db.name
    ).split()
    assert len(roles) == 1 and roles[0].startswith("customer|") and roles[0].endswith("|0"), roles
    assert pg_cluster.psql("SELECT count(*) FROM audit_log", loaded_db.name).strip() == "0"


def test_generated_data_is_deterministic_in_the_database(loaded_db: ShopDb, shop_app_dir: Path, pg_cluster: PgCluster):
    counts = table_counts(pg_cluster, loaded_db.name)
    assert all(n > 0 for n in counts.values()), counts
    mismatched = pg_cluster.psql("SELECT count(*) FROM order_totals WHERE total <> items_total", loaded_db.name)
    assert mismatched.strip() == "0"

    twin = f"{loaded_db.name}_twin"
    create_app_database(pg_cluster, loaded_db, twin)
    try:
        migrated = run_npm(shop_app_dir, "migrate", loaded_db.url(twin))
        assert migrated.returncode == 0, migrated.stderr
        load_shop_data(pg_cluster, twin, "--seed", str(SEED))
        assert table_counts(pg_cluster, twin) == counts
        digests = table_digests(pg_cluster, loaded_db.name)
        assert table_digests(pg_cluster, twin) == digests

        # --truncate replaces the data: another seed, then the first seed again gives the same rows.
        load_shop_data(pg_cluster, twin, "--seed", str(SEED + 1), "--truncate")
        assert table_digests(pg_cluster, twin)["users"] != digests["users"]
        load_shop_data(pg_cluster, twin, "--seed", str(SEED), "--truncate")
        assert table_digests(pg_cluster, twin) == digests

        # The sequences were moved past the loaded ids: the app's own inserts work.
        new_id = pg_cluster.psql(
            "INSERT INTO products (sku, name, category, price) VALUES ('NEW-1', 'Benih Baru', 'Benih', 1000) "
            "RETURNING id",
            twin,
        ).split()[0]
        assert int(new_id) == counts["products"] + 1
    finally:
        drop_database(pg_cluster, twin)


def test_health_reports_version_build_and_database(app: RunningApp):
    response = app.get("/api/health")
    assert response.status == 200, response.text
    assert response.json() == {"status": "ok", "version": APP_VERSION, "build_id": app.build_id, "database": "ok"}
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{10}", app.build_id)


def test_home_page_lists_products_from_the_database(app: RunningApp, pg_cluster: PgCluster):
    names = pg_cluster.psql("SELECT name FROM products ORDER BY id LIMIT 50", app.shop.name).splitlines()
    assert len(names) == 50
    response = app.get("/")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/html")
    page = html.unescape(response.text)
    assert all(name in page for name in names)
    beyond = pg_cluster.psql("SELECT name FROM products WHERE id = 51", app.shop.name).strip()
    assert f"<td>{beyond}</td>" not in page


def test_products_api(app: RunningApp):
    response = app.get("/api/products?limit=5")
    assert response.status == 200
    products = response.json()["products"]
    assert [p["id"] for p in products] == [1, 2, 3, 4, 5]
    assert set(products[0]) == {"id", "sku", "name", "category", "price", "stock"}
    assert app.get("/api/products?limit=0").status == 400
    assert app.get("/api/products?limit=abc").status == 400


def test_order_read_end_to_end(app: RunningApp, pg_cluster: PgCluster):
    order_id, email, name, total = (
        pg_cluster.psql(
            "SELECT o.id, u.email, u.name, o.total FROM orders o JOIN users u ON u.id = o.user_id "
            "WHERE (SELECT count(*) FROM order_items WHERE order_id = o.id) >= 2 ORDER BY o.id LIMIT 1",
            app.shop.name,
        )
        .strip()
        .split("|")
    )
    with pg_cluster.connect(app.shop.name) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT p.name, oi.quantity, oi.unit_price::text FROM order_items oi "
            "JOIN products p ON p.id = oi.product_id WHERE oi.order_id = %s ORDER BY oi.id",
            (int(order_id),),
        )
        items = [list(row) for row in cur.fetchall()]
    conn.close()
    response = app.get(f"/api/orders/{order_id}")
    assert response.status == 200, response.text
    order = response.json()
    assert order["id"] == int(order_id)
    assert order["total"] == total
    assert order["user"]["email"] == email and order["user"]["name"] == name
    assert [[i["product_name"], i["quantity"], i["unit_price"]] for i in order["items"]] == items
    assert sum(i["quantity"] * float(i["unit_price"]) for i in order["items"]) == float(total)

    missing = app.get("/api/orders/2147483647")
    assert missing.status == 404 and "not found" in missing.json()["error"]
    assert app.get("/api/orders/abc").status == 400
    assert app.get("/api/nothing-here").status == 404


def test_metrics(app: RunningApp, pg_cluster: PgCluster):
    for _attempt in range(3):
        assert app.get("/api/health").status == 200
    app.get("/api/orders/2147483647")
    text = app.get("/api/metrics").text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    assert values['tokotani_http_requests_total{method="GET",route="/api/health",status="200"}'] >= 3
    assert values['tokotani_http_requests_total{method="GET",route="/api/orders/:id",status="404"}'] >= 1
    assert "# TYPE tokotani_http_requests_total counter" in text
    assert values["tokotani_database_up"] == 1
    assert values["tokotani_process_uptime_seconds"] > 0
    counts = table_counts(pg_cluster, app.shop.name)
    assert values["tokotani_shop_products"] == counts["products"]
    assert values["tokotani_shop_orders"] == counts["orders"]
    assert values[f'tokotani_build_info{{version="{APP_VERSION}",build_id="{app.build_id}"}}'] == 1


def test_alerts_empty_while_the_engine_hub_beats(app: RunningApp, pg_cluster: PgCluster):
    wait_until(lambda: app.alerts() == [], timeout=20, message="alerts empty with the engine hub running")
    workers = pg_cluster.psql("SELECT worker, pid FROM engine_heartbeat", app.shop.name).split()
    assert workers == [f"engine-hub-0|{app.processes['engine-hub'].pid}"]
    assert f"every {HEARTBEAT_MS} ms" in tail(app.log("engine-hub"))  # from `export HEARTBEAT_INTERVAL_MS=` in .env


def test_engine_hub_down_raises_heartbeat_alerts(app: RunningApp, pg_cluster: PgCluster):
    wait_until(lambda: app.alerts() == [], timeout=20, message="alerts empty before stopping the engine hub")
    assert app.stop("engine-hub") == 0
    assert "stopped" in tail(app.log("engine-hub"), 3)

    stale = wait_until(
        lambda: "EngineHubHeartbeatStale" in app.alert_names(), timeout=20, message="stale heartbeat alert"
    )
    assert stale
    pg_cluster.psql("DELETE FROM engine_heartbeat", app.shop.name)
    assert app.alert_names() == {"EngineHubHeartbeatMissing"}

    app.start("engine-hub", "engine-hub.js")
    wait_until(lambda: app.alerts() == [], timeout=20, message="alerts cleared after the engine hub restarted")


def test_secret_rotation(app: RunningApp, pg_cluster: PgCluster):
    path = "/api/admin/secrets/rotate"
    token = app.secrets["ADMIN_TOKEN"]
    assert app.post(path, {"secretType": "NEXTAUTH_SECRET"}).status == 401
    assert app.post(path, {"secretType": "NEXTAUTH_SECRET"}, token="wrong-" + token).status == 401
    unknown = app.post(path, {"secretType": "DATABASE_URL"}, token=token)
    assert unknown.status == 400 and "NEXTAUTH_SECRET" in unknown.json()["error"]
    assert app.post(path, b"{not json", token=token).status == 400
    assert app.get(path).status == 405

    before = app.env_file.read_text()
    response = app.post(path, {"secretType": "NEXTAUTH_SECRET"}, token=token)
    assert response.status == 200, response.text
    body = response.json()
    assert body["rotated"] == "NEXTAUTH_SECRET" and body["rotated_at"]
    after = app.env_file.read_text()
    new_secret = re.search(r"^NEXTAUTH_SECRET=(.+)$", after, re.MULTILINE).group(1)
    assert new_secret != app.secrets["NEXTAUTH_SECRET"] and len(new_secret) >= 32
    assert new_secret not in response.text
    assert stat.S_IMODE(app.env_file.stat().st_mode) == 0o600
    # Only that line changed: comments, order and the other secrets are kept.
    assert [line for line in before.splitlines() if not line.startswith("NEXTAUTH_SECRET=")] == [
        line for line in after.splitlines() if not line.startswith("NEXTAUTH_SECRET=")
    ]
    assert not [p.name for p in app.run_dir.iterdir() if p.name.endswith(".tmp")]

    # Rotating the admin token revokes the old one at once.
    response = app.post(path, {"secretType": "ADMIN_TOKEN"}, token=token)
    assert response.status == 200, response.text
    new_token = re.search(r"^ADMIN_TOKEN=(.+)$", app.env_file.read_text(), re.MULTILINE).group(1)
    assert new_token != token and new_token not in response.text
    assert app.post(path, {"secretType": "NEXTAUTH_SECRET"}, token=token).status == 401
    assert app.post(path, {"secretType": "NEXTAUTH_SECRET"}, token=new_token).status == 200

    rotations = pg_cluster.psql("SELECT secret_type FROM secret_rotations ORDER BY id", app.shop.name).split()
    assert rotations == ["NEXTAUTH_SECRET", "ADMIN_TOKEN", "NEXTAUTH_SECRET"]

    logs = tail(app.log("server"), 100_000) + tail(app.log("engine-hub"), 100_000)
    leaked = [s for s in (*app.secrets.values(), new_secret, new_token, app.shop.password) if s in logs]
    assert not leaked, "a secret or the database password was logged"
    assert "***" in logs  # DATABASE_URL is logged redacted


def test_database_unreachable_then_back(app: RunningApp, pg_cluster: PgCluster):
    db = quote_ident(app.shop.name)
    # The app's role (not a superuser) can no longer connect, and its open connections are cut.
    conn = pg_cluster.connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"ALTER DATABASE {db} CONNECTION LIMIT 0")
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (app.shop.name,),
        )
    conn.close()
    try:
        response = wait_for_http(app.base_url + "/api/health", status=503, timeout=20)
        health = response.json()
        assert health["status"] == "degraded" and health["database"] == "error"
        assert health["error"]
        assert health["build_id"] == app.build_id
        alerts = app.alerts()
        assert [a["name"] for a in alerts] == ["DatabaseUnreachable"]
        assert alerts[0]["severity"] == "critical"
        assert app.get("/").status == 503
        assert app.get("/api/orders/1").status == 503
        metrics = app.get("/api/metrics")
        assert metrics.status == 200 and "\ntokotani_database_up 0\n" in metrics.text
        wait_until(
            lambda: "heartbeat failed" in tail(app.log("engine-hub")), timeout=20, message="the engine hub notices"
        )
        assert app.processes["engine-hub"].poll() is None, "the engine hub must survive a database outage"
    finally:
        pg_cluster.psql(f"ALTER DATABASE {db} CONNECTION LIMIT -1;")

    wait_for_http(app.base_url + "/api/health", status=200, timeout=20)
    wait_until(lambda: app.alerts() == [], timeout=20, message="alerts cleared once the database is back")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_server_stops_cleanly_on_signal(app: RunningApp, sig: int):
    extra = RunningApp(
        app_dir=app.app_dir,
        run_dir=app.run_dir,
        shop=app.shop,
        port=free_port(),
        build_id=app.build_id,
        secrets=app.secrets,
    )
    name = f"server-{sig.name}"
    try:
        wait_for_http(extra.base_url + "/api/health", process=extra.start(name, "server.js"))
        assert extra.stop(name, sig) == 0
    finally:
        for process in extra.processes.values():
            stop_process(process)
    assert f"{sig.name} received" in tail(extra.log(name)) and "stopped" in tail(extra.log(name), 2)


def test_server_without_database_url_explains(tmp_path: Path, shop_app_dir: Path):
    result = subprocess.run(
        [shutil.which("node"), str(shop_app_dir / "server.js")],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "PORT": str(free_port())},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "DATABASE_URL is not set" in result.stdout


@pytest.mark.parametrize(
    ("env_line", "mode", "instances", "cwd"),
    [
        (None, "fork", 1, "release"),
        ("PM2_NEXTJS_INSTANCES=1", "fork", 1, "release"),
        ("PM2_NEXTJS_INSTANCES=2", "cluster", 2, "current"),
        ("PM2_NEXTJS_INSTANCES='3'", "cluster", 3, "current"),
        ("PM2_NEXTJS_INSTANCES=many", "fork", 1, "release"),
        ("PM2_NEXTJS_INSTANCES=99", "fork", 1, "release"),
    ],
)
def test_ecosystem_cluster_mode_from_the_release_env(tmp_path: Path, env_line, mode, instances, cwd):
    """PM2_NEXTJS_INSTANCES in the release's .env: cluster mode with the current link as cwd (zero-downtime reload)."""
    release = tmp_path / "releases" / "v1"
    shutil.copytree(ROOT / "sandbox" / "app" / "lib", release / "lib")
    for name in ("ecosystem.config.js", "package.json"):
        shutil.copy(ROOT / "sandbox" / "app" / name, release)
    if env_line is not None:
        (release / ".env").write_text(f"NODE_ENV=production\n{env_line}\n")
    out = subprocess.run(
        [
            "node",
            "-e",
            "console.log(JSON.stringify(require(process.argv[1]).apps))",
            str(release / "ecosystem.config.js"),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    web, hub = json.loads(out)
    assert (web["name"], web["exec_mode"], web["instances"]) == ("tokotani-nextjs", mode, instances)
    assert web["cwd"] == str(tmp_path / "current" if cwd == "current" else release)
    assert (hub["exec_mode"], hub["cwd"]) == ("fork", str(release))


# --- logins, sessions, the admin API and the audit log (after every test above: they rotate the admin token,
# write users, products and audit rows)


@dataclass
class Account:
    id: int
    email: str
    name: str
    role: str
    password: str = field(repr=False)

    def public(self) -> dict:
        return {"id": self.id, "email": self.email, "name": self.name, "role": self.role}


def db_rows(pg_cluster: PgCluster, db: str, sql: str, params: tuple = ()) -> list[dict]:
    """The rows of one parameterised statement (as the superuser), each a dict by column name."""
    conn = pg_cluster.connect(db)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, params)
            if cur.description is None:
                return []
            names = [column.name for column in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        conn.close()


def audit_rows(pg_cluster: PgCluster, db: str, action: str) -> list[dict]:
    return db_rows(
        pg_cluster,
        db,
        "SELECT actor, target, detail, remote_addr FROM audit_log WHERE action = %s ORDER BY id",
        (action,),
    )


def new_user_body(role: str | None = "customer", **overrides) -> dict:
    suffix = secrets.token_hex(4)
    body = {
        "email": f"{role or 'user'}-{suffix}@it.tokotani.invalid",
        "name": f"Pengguna Uji {suffix}",
        "password": secrets.token_urlsafe(12),
    }
    if role is not None:
        body["role"] = role
    body.update(overrides)
    return body


def create_account(app: RunningApp, role: str) -> Account:
    body = new_user_body(role)
    response = app.call("POST", "/api/admin/users", body, token=app.admin_token())
    assert response.status == 201, response.text
    return Account(
        id=response.json()["id"], email=body["email"], name=body["name"], role=role, password=body["password"]
    )


def login(app: RunningApp, email, password):
    return app.call("POST", "/api/auth/login", {"email": email, "password": password})


def session_token(response) -> str:
    """The token of a login's Set-Cookie, which must be exactly NextAuth's session cookie."""
    cookie = response.headers.get("Set-Cookie", "")
    match = re.fullmatch(rf"{re.escape(SESSION_COOKIE)}=([A-Za-z0-9_-]{{43}}); Path=/; HttpOnly; SameSite=Lax", cookie)
    assert match, f"unexpected Set-Cookie: {cookie!r}"
    return match.group(1)


def login_token(app: RunningApp, account: Account) -> str:
    response = login(app, account.email, account.password)
    assert response.status == 200, response.text
    return session_token(response)


@pytest.fixture(scope="module")
def admin_account(app: RunningApp) -> Account:
    return create_account(app, "admin")


@pytest.fixture(scope="module")
def customer_account(app: RunningApp) -> Account:
    return create_account(app, "customer")


def test_an_admin_created_with_the_admin_token_logs_in_and_the_cookie_opens_a_session(
    app: RunningApp, admin_account: Account, pg_cluster: PgCluster
):
    response = login(app, admin_account.email, admin_account.password)
    assert response.status == 200, response.text
    body = response.json()
    assert body["user"] == admin_account.public()
    token = session_token(response)
    # The cookie is the sessions row's token itself; the row expires in 30 days.
    rows = db_rows(
        pg_cluster,
        app.shop.name,
        "SELECT \"userId\", expires - now() > interval '29 days 23 hours' AS thirty_days, "
        "expires <= now() + interval '30 days' AS at_most_thirty FROM sessions WHERE \"sessionToken\" = %s",
        (token,),
    )
    assert rows == [{"userId": admin_account.id, "thirty_days": True, "at_most_thirty": True}]

    session = app.call("GET", "/api/auth/session", cookie=token)
    assert session.status == 200, session.text
    assert session.json() == {"user": admin_account.public(), "expires": body["expires"]}

    logins = [r for r in audit_rows(pg_cluster, app.shop.name, "login") if r["target"] == str(admin_account.id)]
    assert logins == [
        {
            "actor": f"user:{admin_account.email}",
            "target": str(admin_account.id),
            "detail": None,
            "remote_addr": LOOPBACK,
        }
    ]
    logs = tail(app.log("server"), 100_000)
    assert admin_account.password not in logs and token not in logs
    stored = db_rows(pg_cluster, app.shop.name, "SELECT password_hash FROM users WHERE id = %s", (admin_account.id,))
    assert admin_account.password not in stored[0]["password_hash"]


def test_a_wrong_password_answers_401_and_writes_a_login_failed_audit_row(
    app: RunningApp, admin_account: Account, pg_cluster: PgCluster
):
    refused = {"error": "invalid email or password"}
    wrong = login(app, admin_account.email, admin_account.password + "x")
    assert (wrong.status, wrong.json()) == (401, refused)
    assert "Set-Cookie" not in wrong.headers
    unknown = login(app, "nobody@it.tokotani.invalid", "some-password")
    assert (unknown.status, unknown.json()) == (401, refused)
    long_email = "x" * 300 + "@it.tokotani.invalid"
    assert login(app, long_email, "some-password").status == 401

    failed = {r["actor"]: r for r in audit_rows(pg_cluster, app.shop.name, "login.failed")}
    assert failed[f"user:{admin_account.email}"] == {
        "actor": f"user:{admin_account.email}",
        "target": None,
        "detail": {"reason": "wrong password"},
        "remote_addr": LOOPBACK,
    }
    assert failed["user:nobody@it.tokotani.invalid"]["detail"] == {"reason": "unknown email"}
    assert failed["user:" + "x" * 200]["detail"] == {"reason": "unknown email"}  # the email as given, cut at 200
    passwords = db_rows(
        pg_cluster,
        app.shop.name,
        "SELECT count(*) AS n FROM audit_log WHERE audit_log::text LIKE %s",
        ("%some-password%",),
    )
    assert passwords == [{"n": 0}]

    for bad in ({"email": admin_account.email}, {"email": 1, "password": "x" * 8}, b'["not", "an", "object"]'):
        response = app.call("POST", "/api/auth/login", bad)
        assert response.status == 400, (bad, response.text)


def test_a_seeded_customer_without_a_password_cannot_log_in(app: RunningApp, pg_cluster: PgCluster):
    email = pg_cluster.psql(
        "SELECT email FROM users WHERE password_hash IS NULL AND role = 'customer' ORDER BY id LIMIT 1", app.shop.name
    ).strip()
    assert email
    for password in ("", "password", "x" * 64):
        response = login(app, email, password)
        assert (response.status, response.json()) == (401, {"error": "invalid email or password"})
    reasons = [
        r["detail"] for r in audit_rows(pg_cluster, app.shop.name, "login.failed") if r["actor"] == f"user:{email}"
    ]
    assert reasons == [{"reason": "no password set"}] * 3


def test_deleting_the_session_row_makes_the_same_cookie_401(
    app: RunningApp, admin_account: Account, pg_cluster: PgCluster
):
    token = login_token(app, admin_account)
    assert app.call("GET", "/api/auth/session", cookie=token).status == 200
    assert app.call("GET", "/api/admin/whoami", cookie=token).status == 200

    db_rows(pg_cluster, app.shop.name, 'DELETE FROM sessions WHERE "sessionToken" = %s', (token,))
    session = app.call("GET", "/api/auth/session", cookie=token)
    assert (session.status, session.json()) == (401, {"error": "no valid session"})
    assert app.call("GET", "/api/admin/whoami", cookie=token).status == 401


def test_an_expired_unknown_or_missing_session_cookie_answers_401(
    app: RunningApp, admin_account: Account, pg_cluster: PgCluster
):
    expired, live = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    db_rows(
        pg_cluster,
        app.shop.name,
        'INSERT INTO sessions ("sessionToken", "userId", expires) '
        "VALUES (%s, %s, now() - interval '1 second'), (%s, %s, now() + interval '1 hour')",
        (expired, admin_account.id, live, admin_account.id),
    )
    for cookie in (expired, secrets.token_urlsafe(32), None):
        response = app.call("GET", "/api/auth/session", cookie=cookie)
        assert (response.status, response.json()) == (401, {"error": "no valid session"}), cookie
        assert app.call("GET", "/api/admin/whoami", cookie=cookie).status == 401
    # A row written by other means (as NextAuth or a restore would) is a session as long as it has not expired.
    response = app.call("GET", "/api/auth/session", cookie=live)
    assert response.status == 200 and response.json()["user"] == admin_account.public()


def test_admin_routes_answer_401_without_the_admin_token_or_an_admin_session(
    app: RunningApp, customer_account: Account, pg_cluster: PgCluster
):
    customer = login_token(app, customer_account)
    assert app.call("GET", "/api/auth/session", cookie=customer).json()["user"]["role"] == "customer"
    stock = pg_cluster.psql("SELECT stock FROM products WHERE id = 1", app.shop.name).strip()
    rotations = pg_cluster.psql("SELECT count(*) FROM secret_rotations", app.shop.name).strip()
    user_body = new_user_body("admin")
    requests = [
        ("GET", "/api/admin/whoami", None),
        ("POST", "/api/admin/users", user_body),
        ("PATCH", "/api/admin/products/1", {"stock": 0}),
        ("POST", "/api/admin/secrets/rotate", {"secretType": "ADMIN_TOKEN"}),
    ]
    for method, path, body in requests:
        for credentials in ({}, {"token": "wrong-" + app.admin_token()}, {"cookie": customer}, {"token": ""}):
            response = app.call(method, path, body, **credentials)
            assert response.status == 401, (method, path, credentials, response.text)
            assert response.headers.get("WWW-Authenticate") == "Bearer"
            assert 'a valid "Authorization: Bearer <ADMIN_TOKEN>" header is required' in response.json()["error"]
    # Nothing was done.
    assert pg_cluster.psql("SELECT stock FROM products WHERE id = 1", app.shop.name).strip() == stock
    assert pg_cluster.psql("SELECT count(*) FROM secret_rotations", app.shop.name).strip() == rotations
    assert db_rows(pg_cluster, app.shop.name, "SELECT id FROM users WHERE email = %s", (user_body["email"],)) == []
    # A route that does not exist, or a method a route does not take, answers as before (404, 405).
    assert app.call("GET", "/api/admin/nothing-here").status == 404
    assert app.call("DELETE", "/api/admin/users").status == 405


def test_admin_routes_accept_the_admin_token_and_an_admin_session_cookie(app: RunningApp, admin_account: Account):
    by_token = app.call("GET", "/api/admin/whoami", token=app.admin_token())
    assert (by_token.status, by_token.json()) == (200, {"actor": "admin-token"})
    by_session = app.call("GET", "/api/admin/whoami", cookie=login_token(app, admin_account))
    assert (by_session.status, by_session.json()) == (200, {"actor": f"user:{admin_account.email}"})


def test_creating_users_answers_201_then_409_for_the_same_email_and_400_for_bad_input(
    app: RunningApp, admin_account: Account, pg_cluster: PgCluster
):
    cookie = login_token(app, admin_account)
    body = new_user_body("admin")
    created = app.call("POST", "/api/admin/users", body, cookie=cookie)
    assert created.status == 201, created.text
    new = created.json()
    assert new == {"id": new["id"], "email": body["email"], "role": "admin"}
    # The new admin can log in, and its session opens the admin API.
    token = login_token(app, Account(new["id"], body["email"], body["name"], "admin", body["password"]))
    assert app.call("GET", "/api/admin/whoami", cookie=token).json() == {"actor": f"user:{body['email']}"}

    # scrypt$<16-byte salt>$<32-byte key>, base64url: Python's hashlib.scrypt (Node's defaults) agrees.
    stored = db_rows(pg_cluster, app.shop.name, "SELECT role, password_hash FROM users WHERE id = %s", (new["id"],))[0]
    assert stored["role"] == "admin"
    match = re.fullmatch(r"scrypt\$([A-Za-z0-9_-]{22})\$([A-Za-z0-9_-]{43})", stored["password_hash"])
    assert match, stored["password_hash"]
    salt, key = (base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)) for part in match.groups())
    assert hashlib.scrypt(body["password"].encode(), salt=salt, n=16384, r=8, p=1, dklen=32) == key

    duplicate = app.call("POST", "/api/admin/users", dict(body, role="customer"), token=app.admin_token())
    assert duplicate.status == 409 and "already exists" in duplicate.json()["error"], duplicate.text
    bad_role = app.call("POST", "/api/admin/users", new_user_body("root"), cookie=cookie)
    assert (bad_role.status, bad_role.json()) == (400, {"error": "role must be one of customer, admin"})
    bad_inputs = [
        new_user_body(email="no-at-sign.tokotani.invalid"),
        new_user_body(email=""),
        new_user_body(email="a" * 190 + "@tokotani.invalid"),
        new_user_body(password="short"),
        new_user_body(password=12345678),
        new_user_body(name=""),
        {"email": "x@tokotani.invalid", "password": "long-enough"},
    ]
    for bad in [*bad_inputs, b'["not an object"]']:
        response = app.call("POST", "/api/admin/users", bad, cookie=cookie)
        assert response.status == 400, (bad, response.text)
    bad_user = bad_inputs[3]
    assert db_rows(pg_cluster, app.shop.name, "SELECT id FROM users WHERE email = %s", (bad_user["email"],)) == []

    # Without a role, a customer: the admin API refuses its session.
    plain = new_user_body(role=None)
    customer = app.call("POST", "/api/admin/users", plain, token=app.admin_token())
    assert customer.status == 201 and customer.json()["role"] == "customer", customer.text
    customer_token = login_token(
        app, Account(customer.json()["id"], plain["email"], plain["name"], "customer", plain["password"])
    )
    assert app.call("GET", "/api/admin/whoami", cookie=customer_token).status == 401

    audits = {r["target"]: r for r in audit_rows(pg_cluster, app.shop.name, "user.create")}
    assert audits[str(new["id"])] == {
        "actor": f"user:{admin_account.email}",
        "target": str(new["id"]),
        "detail": {"email": body["email"], "role": "admin"},
        "remote_addr": LOOPBACK,
    }
    assert audits[str(customer.json()["id"])]["actor"] == "admin-token"
    assert audits[str(customer.json()["id"])]["detail"] == {"email": plain["email"], "role": "customer"}
    assert audits[str(admin_account.id)]["detail"] == {"email": admin_account.email, "role": "admin"}
    assert len(audits) == len(audit_rows(pg_cluster, app.shop.name, "user.create"))  # no row for the refusals
    logs = tail(app.log("server"), 100_000)
    assert body["password"] not in logs and plain["password"] not in logs


def test_patching_a_product_changes_its_price_and_audits_before_and_after(
    app: RunningApp, admin_account: Account, pg_cluster: PgCluster
):
    product_id = 2
    [before] = db_rows(
        pg_cluster, app.shop.name, "SELECT price::text, stock, updated_at FROM products WHERE id = %s", (product_id,)
    )
    path = f"/api/admin/products/{product_id}"
    response = app.call("PATCH", path, {"price": 12345.5}, token=app.admin_token())
    assert response.status == 200, response.text
    product = response.json()
    assert set(product) == {"id", "sku", "name", "price", "stock", "updated_at"}
    assert (product["id"], product["price"], product["stock"]) == (product_id, "12345.50", before["stock"])
    [after] = db_rows(
        pg_cluster, app.shop.name, "SELECT price::text, stock, updated_at FROM products WHERE id = %s", (product_id,)
    )
    assert after["price"] == "12345.50" and after["updated_at"] > before["updated_at"]
    assert app.get("/api/products?limit=2").json()["products"][1]["price"] == "12345.50"

    by_session = app.call("PATCH", path, {"stock": 7}, cookie=login_token(app, admin_account))
    assert by_session.status == 200, by_session.text
    assert (by_session.json()["price"], by_session.json()["stock"]) == ("12345.50", 7)
    both = app.call("PATCH", path, {"price": 9999999999.99, "stock": 0}, token=app.admin_token())
    assert (both.status, both.json()["price"], both.json()["stock"]) == (200, "9999999999.99", 0), both.text

    updates = [r for r in audit_rows(pg_cluster, app.shop.name, "product.update") if r["target"] == str(product_id)]
    assert updates == [
        {
            "actor": "admin-token",
            "target": str(product_id),
            "detail": {
                "before": {"price": before["price"], "stock": before["stock"]},
                "after": {"price": "12345.50", "stock": before["stock"]},
            },
            "remote_addr": LOOPBACK,
        },
        {
            "actor": f"user:{admin_account.email}",
            "target": str(product_id),
            "detail": {
                "before": {"price": "12345.50", "stock": before["stock"]},
                "after": {"price": "12345.50", "stock": 7},
            },
            "remote_addr": LOOPBACK,
        },
        {
            "actor": "admin-token",
            "target": str(product_id),
            "detail": {"before": {"price": "12345.50", "stock": 7}, "after": {"price": "9999999999.99", "stock": 0}},
            "remote_addr": LOOPBACK,
        },
    ]

    bad_bodies = [
        {"price": -1},
        {"price": "100"},
        {"price": None},
        {"price": True},
        {"price": 1e11},
        {"price": 1e10},  # within the contract's bound, but NUMERIC(12, 2) cannot hold it
        {"stock": 1.5},
        {"stock": -1},
        {"stock": 2**31},
        {},
        {"name": "renamed"},
        b"[1]",
    ]
    for bad in bad_bodies:
        refused = app.call("PATCH", path, bad, token=app.admin_token())
        assert refused.status == 400, (bad, refused.text)
    assert "price must be" in app.call("PATCH", path, {"price": -1}, token=app.admin_token()).json()["error"]
    missing = app.call("PATCH", "/api/admin/products/2147483647", {"price": 1}, token=app.admin_token())
    assert (missing.status, missing.json()) == (404, {"error": "product 2147483647 not found"})
    assert app.call("PATCH", "/api/admin/products/abc", {"price": 1}, token=app.admin_token()).status == 400
    # The refusals changed nothing and wrote no audit row.
    now = db_rows(pg_cluster, app.shop.name, "SELECT price::text, stock FROM products WHERE id = %s", (product_id,))
    assert now == [{"price": "9999999999.99", "stock": 0}]
    assert len(audit_rows(pg_cluster, app.shop.name, "product.update")) == 3


def test_rotating_the_admin_token_refuses_the_old_one_at_once_and_writes_a_secret_rotate_row(
    app: RunningApp, admin_account: Account, pg_cluster: PgCluster
):
    old = app.admin_token()
    assert app.call("GET", "/api/admin/whoami", token=old).status == 200
    rotations = int(pg_cluster.psql("SELECT count(*) FROM secret_rotations", app.shop.name))
    audited = len(audit_rows(pg_cluster, app.shop.name, "secret.rotate"))

    response = app.call("POST", "/api/admin/secrets/rotate", {"secretType": "ADMIN_TOKEN"}, token=old)
    assert response.status == 200, response.text
    new = app.admin_token()
    assert new != old and new not in response.text
    refused = app.call("GET", "/api/admin/whoami", token=old)
    assert refused.status == 401 and refused.headers.get("WWW-Authenticate") == "Bearer"
    assert app.call("GET", "/api/admin/whoami", token=new).json() == {"actor": "admin-token"}

    # An admin's session may rotate too; rotating NEXTAUTH_SECRET does not end database sessions.
    cookie = login_token(app, admin_account)
    by_session = app.call("POST", "/api/admin/secrets/rotate", {"secretType": "NEXTAUTH_SECRET"}, cookie=cookie)
    assert by_session.status == 200, by_session.text
    assert app.call("GET", "/api/auth/session", cookie=cookie).status == 200

    rows = audit_rows(pg_cluster, app.shop.name, "secret.rotate")
    assert rows[audited:] == [
        {"actor": "admin-token", "target": "ADMIN_TOKEN", "detail": None, "remote_addr": LOOPBACK},
        {"actor": f"user:{admin_account.email}", "target": "NEXTAUTH_SECRET", "detail": None, "remote_addr": LOOPBACK},
    ]
    assert int(pg_cluster.psql("SELECT count(*) FROM secret_rotations", app.shop.name)) == rotations + 2
    secret = re.search(r"^NEXTAUTH_SECRET=(.+)$", app.env_file.read_text(), re.MULTILINE).group(1)
    for value in (new, secret):
        found = db_rows(
            pg_cluster,
            app.shop.name,
            "SELECT count(*) AS n FROM audit_log WHERE audit_log::text LIKE %s",
            (f"%{value}%",),
        )
        assert found == [{"n": 0}], "a secret was written to the audit log"
    logs = tail(app.log("server"), 100_000)
    assert new not in logs and secret not in logs and old not in logs


def test_responses_carry_nosniff_and_referrer_policy_but_not_hsts_csp_or_frame_options(app: RunningApp):
    responses = {
        "home": app.get("/"),
        "health": app.get("/api/health"),
        "metrics": app.get("/api/metrics"),
        "not found": app.get("/api/nothing-here"),
        "wrong method": app.get("/api/admin/secrets/rotate"),
        "admin without auth": app.call("GET", "/api/admin/whoami"),
        "failed login": login(app, "nobody@it.tokotani.invalid", "some-password"),
        "bad json": app.call("POST", "/api/auth/login", b"{not json"),
    }
    for what, response in responses.items():
        headers = {name.lower(): value for name, value in response.headers.items()}
        assert headers.get("x-content-type-options") == "nosniff", what
        assert headers.get("referrer-policy") == "strict-origin-when-cross-origin", what
        missing = {"strict-transport-security", "content-security-policy", "x-frame-options"} & set(headers)
        assert not missing, f"{what} sends {missing}: the hardening check expects them absent"


def test_the_admin_api_tests_left_no_internal_error_in_the_server_log(app: RunningApp):
    logs = tail(app.log("server"), 100_000)
    assert "internal error" not in logs, [line for line in logs.splitlines() if "internal error" in line]
