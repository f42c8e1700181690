"""Testinfra checks of the backup scenario: the daily timer, what a run leaves behind, retention, failures.

The checks run in file order: the runs of the later ones build on the backups of the earlier ones.
"""

import json
import os
import time

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"]).get_hosts(
    "tokotani_servers"
)

SERVICE = "tokotani-backup.service"
TIMER = "tokotani-backup.timer"
CONFIG = "/etc/tokotani-dr/backup.json"
ENV_FILE = "/etc/tokotani-dr/backup.env"
STATUS = "/var/lib/tokotani-dr/backup-status.json"
RUNNER_LIB = "/usr/local/lib/tokotani-dr"
DROPIN_DIR = f"/etc/systemd/system/{SERVICE}.d"
OLD_STAMPS = ["2020-01-01_02-00-00", "2020-01-02_02-00-00", "2020-01-03_02-00-00", "2020-01-04_02-00-00"]

# The local catalog through the runner's own copy of the engine: every backup, checksums re-verified.
SCAN = f"""
import json, sys
sys.path.insert(0, "{RUNNER_LIB}")
from ansible_collections.tokotani.dr.plugins.module_utils import backup_catalog as c
out = []
for e in c.scan(sys.argv[1])["backups"]:
    c.verify_entry(e)
    out.append({{"name": e["name"], "valid": e["valid"], "problems": e["problems"], "label": e["label"],
                "path": e["path"], "started_at": e["started_at"]}})
print(json.dumps(out))
"""

# What is in the bucket under a prefix: key -> size (moto's S3 API over the sandbox network).
LIST_BUCKET = """
import json, sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id="sandbox", aws_secret_access_key="sandbox")
keys = {}
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=sys.argv[2], Prefix=sys.argv[3]):
    for obj in page.get("Contents") or []:
        keys[obj["Key"]] = obj["Size"]
print(json.dumps(keys))
"""

# Aged copies of the newest backup, locally and offsite: data copied, manifest renamed and back-dated.
SEED = """
import json, os, shutil, subprocess, sys, boto3
directory, newest, endpoint, bucket, prefix = sys.argv[1:6]
stamps = sys.argv[6:]
manifest = json.load(open(os.path.join(directory, newest + ".manifest.json")))
ext = manifest["data"][len(newest):]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="sandbox", aws_secret_access_key="sandbox")
for stamp in stamps:
    name = "backup_" + stamp
    started = stamp[:10] + "T" + stamp[11:].replace("-", ":") + "Z"
    doc = dict(manifest, name=name, data=name + ext, started_at=started, finished_at=started)
    subprocess.run(["cp", "-a", os.path.join(directory, manifest["data"]), os.path.join(directory, doc["data"])],
                   check=True)
    path = os.path.join(directory, name + ".manifest.json")
    with open(path, "w") as handle:
        json.dump(doc, handle)
    shutil.chown(path, "postgres", "postgres")
    os.chmod(path, 0o600)
    for rel in sorted(manifest.get("files") or {}):
        s3.copy_object(Bucket=bucket, Key=f"{prefix}/{doc['data']}/{rel}",
                       CopySource={"Bucket": bucket, "Key": f"{prefix}/{manifest['data']}/{rel}"})
    s3.put_object(Bucket=bucket, Key=f"{prefix}/{name}.manifest.json", Body=json.dumps(doc).encode())
"""


WRITE = "import sys; open(sys.argv[1], 'w').write(sys.argv[2])"


def write_file(host, path, content, owner, mode):
    host.check_output("python3 -c %s %s %s", WRITE, path, content)
    host.check_output("chown %s %s && chmod %s %s", owner, path, mode, path)


def config(host):
    return json.loads(host.check_output(f"cat {CONFIG}"))


def status(host):
    out = host.run(f"cat {STATUS}")
    return json.loads(out.stdout) if out.rc == 0 else {}


def backups(host):
    return json.loads(host.check_output("python3 -c %s %s", SCAN, config(host)["backup"]["backup_dir"]))


def offsite_keys(host):
    off = config(host)["offsite"]
    out = host.check_output("python3 -c %s %s %s %s/", LIST_BUCKET, off["endpoint_url"], off["bucket"], off["prefix"])
    return json.loads(out)


def offsite_names(host):
    return sorted(
        os.path.basename(k)[: -len(".manifest.json")] for k in offsite_keys(host) if k.endswith(".manifest.json")
    )


def run_service(host):
    started = time.monotonic()
    cmd = host.run(f"systemctl start {SERVICE}")
    return cmd, time.monotonic() - started


def journal(host, since):
    return host.check_output(f"journalctl -u {SERVICE} --no-pager -o cat --since @{since}")


def test_packages_and_runner_installed(host):
    for package in ("zstd", "python3-boto3", "python3-psycopg2", "postgresql-client-15"):
        assert host.package(package).is_installed, package
    launcher = host.file("/usr/local/sbin/tokotani-dr")
    assert launcher.user == "root"
    assert launcher.mode == 0o755
    assert host.run("/usr/local/sbin/tokotani-dr --help").rc == 0
    # The runner works without Ansible on the host.
    assert host.run("python3 -c 'import ansible'").rc != 0


def test_timer_enabled_and_active(host):
    timer = host.service(TIMER)
    assert timer.is_enabled
    assert timer.is_running  # active (waiting)
    listing = host.check_output(f"systemctl list-timers --all --no-pager {TIMER}")
    assert TIMER in listing and SERVICE in listing
    unit = host.file(f"/etc/systemd/system/{TIMER}").content_string
    assert "OnCalendar=*-*-* 02:00:00" in unit
    assert "Persistent=true" in unit
    assert "RandomizedDelaySec=15min" in unit
    assert host.check_output(f"systemctl show -p Type,User --value {SERVICE}").split() == ["oneshot", "postgres"]


def test_configuration_is_private_and_holds_no_secret(host):
    secret = host.ansible.get_variables()["tokotani_offsite_secret_key"]
    conf = host.file(CONFIG)
    assert (conf.user, conf.group, conf.mode) == ("root", "postgres", 0o640)
    assert secret not in conf.content_string
    assert "secret" not in json.dumps(config(host)).lower()
    env = host.file(ENV_FILE)
    assert (env.user, env.group, env.mode) == ("root", "root", 0o600)
    backup_dir = host.file(config(host)["backup"]["backup_dir"])
    assert (backup_dir.user, backup_dir.group, backup_dir.mode) == ("postgres", "postgres", 0o700)


def test_environment_file_gives_the_service_the_exact_secret(host):
    """systemd reads the quoted value back byte for byte ($, quotes, backslash, backtick)."""
    secret = host.ansible.get_variables()["tokotani_offsite_secret_key"]
    got = host.check_output(
        f"systemd-run --quiet --wait --pipe -p EnvironmentFile={ENV_FILE} /usr/bin/printenv AWS_SECRET_ACCESS_KEY"
    )
    assert got == secret


def test_manual_backup_from_the_playbook_is_valid_and_offsite(host):
    manual = [b for b in backups(host) if b["label"] == "manual"]
    assert manual, backups(host)
    assert all(b["valid"] for b in manual), manual
    assert manual[0]["name"] in offsite_names(host)


def test_a_run_makes_a_valid_backup_pushes_it_and_records_its_status(host):
    before = {b["name"] for b in backups(host)}
    previous = status(host)
    since = int(time.time()) - 1
    cmd, seconds = run_service(host)
    assert cmd.rc == 0, journal(host, since)
    new = [b for b in backups(host) if b["name"] not in before]
    assert len(new) == 1, new
    backup = new[0]
    assert backup["valid"], backup["problems"]  # every file's sha256 re-computed against the manifest
    assert backup["label"] == "daily"
    # An independent check: sha256sum of every file agrees with the manifest, and pg_restore reads the TOC.
    manifest = json.loads(host.check_output(f"cat {backup['path'][: -len('.dir')]}.manifest.json"))
    for rel, info in manifest["files"].items():
        assert host.check_output(f"sha256sum {backup['path']}/{rel}").split()[0] == info["sha256"], rel
    toc = host.check_output(f"runuser -u postgres -- pg_restore -l {backup['path']}")
    assert "TABLE DATA public products" in toc
    assert {t["name"] for t in manifest["tables"]} >= {"products", "orders", "users"}
    # Offsite: the manifest and every data file, with the manifest's sizes.
    keys = offsite_keys(host)
    prefix = config(host)["offsite"]["prefix"]
    assert f"{prefix}/{backup['name']}.manifest.json" in keys
    for rel, info in manifest["files"].items():
        assert keys.get(f"{prefix}/{manifest['data']}/{rel}") == info["size"], rel
    # The status file: this run, and it is the last success.
    doc = status(host)
    assert doc["last_run"]["ok"] is True
    assert doc["last_success"] == doc["last_run"]
    assert doc["last_success"] != previous.get("last_success")
    summary = doc["last_success"]["summary"]
    assert summary["name"] == backup["name"]
    assert summary["size"] == manifest["size"] > 0
    assert summary["sha256"] == manifest["sha256"]
    assert summary["duration"] > 0
    assert summary["offsite"]["pushed"] is True
    assert summary["offsite"]["key"] == f"{prefix}/{manifest['data']}/"
    assert host.file(STATUS).user == "postgres"
    assert "ok in" in journal(host, since)
    print(f"backup run: {seconds:.1f} s (backup {summary['duration']} s, {summary['size']} bytes)")


def test_retention_prunes_old_backups_locally_and_offsite_but_keeps_keep_min(host):
    conf = config(host)
    keep_min = conf["backup"]["keep_min"]
    current = backups(host)
    newest = current[0]["name"]
    off = conf["offsite"]
    host.check_output(
        "python3 -c %s %s %s %s %s %s " + " ".join(["%s"] * len(OLD_STAMPS)),
        SEED,
        conf["backup"]["backup_dir"],
        newest,
        off["endpoint_url"],
        off["bucket"],
        off["prefix"],
        *OLD_STAMPS,
    )
    seeded = {"backup_" + s for s in OLD_STAMPS}
    assert seeded <= {b["name"] for b in backups(host)}
    assert seeded <= set(offsite_names(host))
    since = int(time.time()) - 1
    cmd, _seconds = run_service(host)
    assert cmd.rc == 0, journal(host, since)
    # The run adds one backup; the newest keep_min valid ones stay, whatever their age.
    recent = len([b for b in current if b["name"] not in seeded]) + 1
    kept_old = sorted(seeded, reverse=True)[: max(0, keep_min - recent)]
    local = {b["name"] for b in backups(host)}
    assert seeded & local == set(kept_old), sorted(local)
    assert len([b for b in backups(host) if b["valid"]]) >= keep_min
    offsite = set(offsite_names(host))
    assert seeded & offsite == set(kept_old), sorted(offsite)
    pruned = status(host)["last_success"]["summary"]
    assert sorted(set(pruned["pruned"])) == sorted(seeded - set(kept_old))
    assert sorted(set(pruned["offsite"]["pruned"])) == sorted(seeded - set(kept_old))


def test_failing_run_exits_non_zero_is_in_the_journal_and_keeps_last_success(host):
    """A run against a database that does not exist (a drop-in swaps the configuration)."""
    previous = status(host)
    assert previous["last_success"]
    before = {b["name"] for b in backups(host)}
    broken = config(host)
    broken["backup"]["database"] = "no_such_database"
    write_file(host, "/etc/tokotani-dr/broken.json", json.dumps(broken), "root:postgres", "0640")
    host.check_output(f"mkdir -p {DROPIN_DIR}")
    write_file(
        host,
        f"{DROPIN_DIR}/broken.conf",
        "[Service]\nExecStart=\nExecStart=/usr/local/sbin/tokotani-dr backup --config /etc/tokotani-dr/broken.json\n",
        "root:root",
        "0644",
    )
    host.check_output("systemctl daemon-reload")
    since = int(time.time()) - 1
    try:
        cmd, _seconds = run_service(host)
        assert cmd.rc != 0
        assert host.run(f"systemctl is-failed {SERVICE}").stdout.strip() == "failed"
        logs = journal(host, since)
        assert "FAILED" in logs and "no_such_database" in logs, logs
        doc = status(host)
        assert doc["last_run"]["ok"] is False
        assert "no_such_database" in doc["last_run"]["msg"]
        assert doc["last_success"] == previous["last_success"]
        assert {b["name"] for b in backups(host)} == before
    finally:
        host.run(f"rm -rf {DROPIN_DIR} /etc/tokotani-dr/broken.json && systemctl daemon-reload")
        host.run(f"systemctl reset-failed {SERVICE}")
    # The next good run recovers.
    cmd, _seconds = run_service(host)
    assert cmd.rc == 0
    assert status(host)["last_run"]["ok"] is True


def test_secret_never_in_the_journal(host):
    secret = host.ansible.get_variables()["tokotani_offsite_secret_key"]
    logs = host.check_output(f"journalctl -u {SERVICE} --no-pager -o cat")
    assert "tokotani-dr backup: started" in logs
    assert secret not in logs
