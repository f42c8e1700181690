"""Testinfra checks of the backup_verify scenario: the weekly timer, a passing run, a corrupted backup."""

import json
import os

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"]).get_hosts(
    "tokotani_servers"
)

BACKUP_DIR = "/srv/tokotani/shared/backups"
SERVICE = "tokotani-backup-verify.service"
TIMER = "tokotani-backup-verify.timer"
STATUS = "/var/lib/tokotani-dr/verify-status.json"

# Runs inside the container, as postgres: a copy of the newest backup, one byte flipped in its largest
# data file, the manifest kept as it was (renamed), made the newest.
CORRUPT = """
import datetime, glob, json, os, shutil, sys
d = sys.argv[1]
src = json.load(open(sorted(glob.glob(d + "/backup_*.manifest.json"))[-1]))
when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=1)
stem = when.strftime("backup_%Y-%m-%d_%H-%M-%S")
data = stem + src["data"][len(src["name"]):]
shutil.copytree(os.path.join(d, src["data"]), os.path.join(d, data))
victim = max(glob.glob(os.path.join(d, data, "*.zst")), key=os.path.getsize)
raw = bytearray(open(victim, "rb").read())
raw[len(raw) // 2] ^= 1
open(victim, "wb").write(bytes(raw))
src.update(name=stem, data=data, started_at=when.strftime("%Y-%m-%dT%H:%M:%S.000000Z"))
json.dump(src, open(os.path.join(d, stem + ".manifest.json"), "w"))
print(stem + " " + os.path.basename(victim))
"""


def manifests(host):
    out = host.check_output(f"ls {BACKUP_DIR}")
    return sorted(n[: -len(".manifest.json")] for n in out.split() if n.endswith(".manifest.json"))


def record(host, stem):
    return json.loads(host.check_output(f"cat {BACKUP_DIR}/{stem}.verify.json"))


def scratch_databases(host):
    sql = "SELECT datname FROM pg_database WHERE starts_with(datname, 'tokotani__verify')"
    out = host.check_output("runuser -u postgres -- psql -XAtq -c %s", sql)
    return out.split()


def test_weekly_timer_enabled(host):
    timer = host.service(TIMER)
    assert timer.is_enabled and timer.is_running
    unit = host.check_output(f"systemctl cat {TIMER}")
    assert "OnCalendar=Sun *-*-* 04:00:00" in unit and "Persistent=true" in unit
    service = host.check_output(f"systemctl show -p User,EnvironmentFiles {SERVICE}")
    assert "User=postgres" in service and "/etc/tokotani-dr/verify.env" in service
    config = host.file("/etc/tokotani-dr/verify.json")
    assert config.user == "root" and config.group == "postgres" and config.mode == 0o640
    assert json.loads(config.content_string)["restore"]["assertions"][0]["name"] == "migrations applied"


def test_the_playbook_recorded_its_last_run(host):
    # side_effect's last run was the one with a false assertion.
    last = record(host, manifests(host)[-1])
    assert last["via"] == "playbook" and last["result"] == "fail"
    assert last["failed_check"] == "assertion 'no customers at all'"
    assert scratch_databases(host) == []


def test_service_passes_on_a_good_backup(host):
    stem = manifests(host)[-1]
    run = host.run(f"systemctl start {SERVICE}")
    assert run.rc == 0, host.run(f"journalctl -u {SERVICE} --no-pager -n 30").stdout
    result = record(host, stem)
    assert result["result"] == "pass" and result["backup"] == stem and "via" not in result
    assert [a["name"] for a in result["assertions"]] == ["migrations applied", "sessions table present"]
    assert result["rows"] > 0 and result["duration"] > 0
    status = json.loads(host.check_output(f"cat {STATUS}"))
    assert status["last_run"]["ok"] and status["last_success"]["summary"]["backup"] == stem
    assert host.file(f"{BACKUP_DIR}/{stem}.verify.json").user == "postgres"
    assert scratch_databases(host) == []


def test_a_corrupted_backup_fails_clearly(host):
    good = manifests(host)[-1]
    stem, victim = host.check_output("runuser -u postgres -- python3 -c %s %s", CORRUPT, BACKUP_DIR).split()
    assert manifests(host)[-1] == stem
    run = host.run(f"systemctl start {SERVICE}")
    assert run.rc != 0
    assert host.check_output(f"systemctl show -p Result --value {SERVICE}") == "exit-code"
    journal = host.check_output(f"journalctl -u {SERVICE} --no-pager -n 50")
    assert f"FAILED: verification of backup {stem} of tokotani FAILED (check: backup integrity)" in journal
    assert "checksum mismatch" in journal and victim in journal
    result = record(host, stem)
    assert result["result"] == "fail" and result["failed_check"] == "backup integrity"
    status = json.loads(host.check_output(f"cat {STATUS}"))
    assert not status["last_run"]["ok"] and status["last_success"]["summary"]["backup"] == good
    assert scratch_databases(host) == []
    host.check_output(f"rm -rf {BACKUP_DIR}/{stem}.*")
