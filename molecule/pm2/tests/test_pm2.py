"""Testinfra checks of the pm2 scenario: the processes come back after a pm2 unit restart and a container reboot.

The order matters: the read-only checks first, then the restart of pm2's systemd unit, then a
restart of the whole container (its systemd boots again and starts pm2-root, which resurrects
the list saved with `save: true`).
"""

import json
import os
import shutil
import subprocess
import time

import pytest
import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"]).get_hosts(
    "tokotani_servers"
)

APPS = ("tokotani-nextjs", "tokotani-engine-hub")
PM2_UNIT = "pm2-root"
HEALTH_URL = "http://127.0.0.1:3000/api/health"
HTTP_GET = """
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
        print(r.status)
except urllib.error.HTTPError as e:
    print(e.code)
except OSError:
    print(0)
"""


def pm2_info(host):
    """tokotani.dr.pm2_info on the server, through ansible."""
    return host.ansible("tokotani.dr.pm2_info", "name=" + ",".join(APPS), check=False)


def wait_until(check, timeout=120, interval=2):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except Exception:  # the container may be booting
            result = None
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)


def healthy(host):
    return host.run("python3 -c %s %s", HTTP_GET, HEALTH_URL).stdout.strip() == "200"


def both_online(host):
    info = pm2_info(host)
    return info if info.get("all_online") else None


def test_pm2_unit_installed_enabled_and_running(host):
    unit = host.file(f"/etc/systemd/system/{PM2_UNIT}.service")
    assert unit.exists
    assert "Environment=PM2_HOME=/root/.pm2" in unit.content_string
    assert host.service(PM2_UNIT).is_enabled
    assert host.service(PM2_UNIT).is_running


def test_saved_list_is_private(host):
    dump = host.file("/root/.pm2/dump.pm2")
    assert dump.exists
    assert dump.mode == 0o600
    names = {entry["name"] for entry in json.loads(dump.content_string)}
    assert set(APPS) <= names


def test_daemon_runs_as_the_unit(host):
    """The daemon is the unit's main process, so stopping the unit (or shutting down) stops it."""
    main_pid = host.check_output(f"systemctl show -p MainPID --value {PM2_UNIT}")
    assert main_pid == host.file("/root/.pm2/pm2.pid").content_string.strip()


def test_pm2_info_reports_both_online_without_secrets(host):
    info = pm2_info(host)
    assert info["all_online"] is True, info["status"]
    assert info["status"] == {app: "online" for app in APPS}
    assert info["daemon_running"] is True
    env = host.file("/srv/tokotani/current/.env").content_string
    secrets = [
        line.split("=", 1)[1] for line in env.splitlines() if line.startswith(("NEXTAUTH_SECRET=", "ADMIN_TOKEN="))
    ]
    assert secrets
    text = json.dumps(info)
    assert not [s for s in secrets if s in text], "a secret of .env appears in pm2_info's result"
    release = host.file("/srv/tokotani/current").linked_to
    assert {p["cwd"] for p in info["processes"]} == {release}


def test_processes_come_back_after_pm2_unit_restart(host):
    before = {p["name"]: p["pid"] for p in pm2_info(host)["processes"]}
    host.run_expect([0], f"systemctl restart {PM2_UNIT}")
    info = wait_until(lambda: both_online(host))
    assert info, pm2_info(host)["status"]
    after = {p["name"]: p["pid"] for p in info["processes"]}
    assert all(after[app] != before[app] for app in APPS), "the processes must have been started again"
    assert wait_until(lambda: healthy(host))


@pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is needed to restart the container")
def test_processes_come_back_after_container_restart(host):
    """A reboot: docker restarts the container, its systemd boots and starts pm2-root, which resurrects the list."""
    name = host.backend.get_hostname()
    marker = "/run/tokotani-before-restart"  # /run is a tmpfs: a new boot starts without it
    host.run_expect([0], f"touch {marker}")
    subprocess.run(["docker", "restart", "--time", "30", name], check=True, capture_output=True, timeout=120)
    state = wait_until(lambda: host.run("systemctl is-system-running --wait").stdout.strip() in ("running", "degraded"))
    assert state, "systemd did not finish booting after the container restart"
    assert not host.file(marker).exists, "the container did not boot again"
    assert host.service(PM2_UNIT).is_running
    info = wait_until(lambda: both_online(host))
    assert info, pm2_info(host)["status"]
    assert wait_until(lambda: healthy(host)), "the app did not become healthy after the restart"
