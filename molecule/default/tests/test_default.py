"""Testinfra checks of the default scenario: one TokoTani server built from scratch."""

import json
import os
import time

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"]).get_hosts(
    "tokotani_servers"
)

APPS = ("tokotani-nextjs", "tokotani-engine-hub")
HEALTH_URL = "http://127.0.0.1:3000/api/health"
PM2_UNIT = "pm2-root"

# Runs inside the container: there is no host-to-container IP traffic.
HTTP_GET = """
import json, sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
        status, body = r.status, r.read().decode()
except urllib.error.HTTPError as e:
    status, body = e.code, e.read().decode()
except OSError as e:
    status, body = 0, str(e)
print(json.dumps({"status": status, "body": body}))
"""


def http_get(host, url):
    out = host.check_output("python3 -c %s %s", HTTP_GET, url)
    return json.loads(out)


def health(host):
    answer = http_get(host, HEALTH_URL)
    try:
        body = json.loads(answer["body"])
    except ValueError:
        body = {}
    return answer["status"], body


def pm2_status(host):
    out = host.check_output("HOME=/root PM2_HOME=/root/.pm2 pm2 jlist")
    procs = json.loads(out[out.index("[") :])
    return {p["name"]: p["pm2_env"]["status"] for p in procs}


def wait_until(check, timeout=90, interval=2):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)


def test_postgresql_cluster_running_and_enabled(host):
    unit = host.service("postgresql@15-main")
    assert unit.is_running
    assert unit.is_enabled


def test_postgresql_listens_on_localhost_only(host):
    sockets = [str(s) for s in host.socket.get_listening_sockets() if s.endswith(":5432")]
    assert sockets, "PostgreSQL does not listen on port 5432"
    assert all("127.0.0.1" in s or "::1" in s for s in sockets), sockets


def test_app_role_cannot_log_in_without_password(host):
    cmd = host.run("PGCONNECT_TIMEOUT=5 psql -XAtq -w -h 127.0.0.1 -U tokotani -d tokotani -c 'SELECT 1'")
    assert cmd.rc != 0
    assert "password" in cmd.stderr


def test_both_pm2_processes_online(host):
    status = pm2_status(host)
    for app in APPS:
        assert status.get(app) == "online", status


def test_processes_run_the_live_release(host):
    current = host.file("/srv/tokotani/current")
    assert current.is_symlink
    release = current.linked_to
    out = host.check_output("HOME=/root PM2_HOME=/root/.pm2 pm2 jlist")
    procs = json.loads(out[out.index("[") :])
    for proc in procs:
        if proc["name"] in APPS:
            assert proc["pm2_env"]["pm_cwd"] == release


def test_health_ok_with_database(host):
    status, body = health(host)
    assert status == 200, body
    assert body.get("status") == "ok"
    assert body.get("database") == "ok"
    assert body.get("build_id")


def test_shop_data_present(host):
    count = host.check_output("runuser -u postgres -- psql -XAtq -d tokotani -c 'SELECT count(*) FROM products'")
    assert int(count) > 0


def test_migration_recorded(host):
    count = host.check_output(
        "runuser -u postgres -- psql -XAtq -d tokotani -c "
        "'SELECT count(*) FROM _prisma_migrations WHERE finished_at IS NOT NULL'"
    )
    assert int(count) >= 1


def test_env_file_is_private(host):
    env = host.file("/srv/tokotani/current/.env")
    assert env.is_file
    assert env.user == "root"
    assert env.mode == 0o600
    assert env.mode & 0o077 == 0
    content = env.content_string
    for key in ("DATABASE_URL=", "NEXTAUTH_SECRET=", "ADMIN_TOKEN=", "PORT=3000"):
        assert key in content


def test_pm2_unit_enabled(host):
    assert host.file(f"/etc/systemd/system/{PM2_UNIT}.service").exists
    assert host.service(PM2_UNIT).is_enabled
    assert host.file("/root/.pm2/dump.pm2").exists


def test_processes_come_back_after_pm2_unit_restart(host):
    """Last: restarting pm2's systemd unit (what a reboot does) brings both processes back."""
    host.run_expect([0], f"systemctl restart {PM2_UNIT}")
    assert host.service(PM2_UNIT).is_running

    def all_online():
        status = pm2_status(host)
        return all(status.get(app) == "online" for app in APPS)

    assert wait_until(all_online), pm2_status(host)

    def healthy():
        status, body = health(host)
        return status == 200 and body.get("database") == "ok"

    assert wait_until(healthy), health(host)
