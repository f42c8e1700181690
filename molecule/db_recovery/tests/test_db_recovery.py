"""Testinfra checks after side_effect.yml broke and recovered the database eight ways."""

import json
import os

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"]).get_hosts(
    "tokotani_servers"
)


def psql(host, sql, db="tokotani"):
    return host.check_output("runuser -u postgres -- psql -XAtq -d %s -c %s", db, sql)


def test_both_processes_online(host):
    procs = json.loads(host.check_output("pm2 jlist"))
    assert {p["name"]: p["pm2_env"]["status"] for p in procs} == {
        "tokotani-nextjs": "online",
        "tokotani-engine-hub": "online",
    }


# Runs inside the container (no curl there, no host-to-container traffic).
HEALTH = """
import json, urllib.request
with urllib.request.urlopen("http://127.0.0.1:3000/api/health", timeout=5) as answer:
    print(answer.status, json.load(answer)["database"])
"""


def test_health_answers_with_the_database(host):
    assert host.check_output("python3 -c %s", HEALTH) == "200 ok"


def test_every_database_is_accounted_for(host):
    names = psql(host, "SELECT datname FROM pg_database WHERE datname LIKE 'tokotani%' ORDER BY 1", "postgres").split()
    assert "tokotani" in names
    # the corrupted-table recovery kept its previous database; the failed one was kept after the swap back
    assert any(n.startswith("tokotani__pre_restore_") for n in names), names
    assert any(n.startswith("tokotani__failed_restore_") for n in names), names
    # no half-restored staging database is ever left behind
    assert not any(n.startswith("tokotani__restore_") for n in names), names


def test_live_database_is_the_last_good_backup_not_the_damaged_one(host):
    # the last case recovered from the good backup, passing over the backup of the half-deleted table;
    # both were taken after the recoveries of case 9, which restored the backup from before the markers
    markers = "SELECT to_regclass('before_failed_recovery') IS NULL AND to_regclass('after_backup') IS NULL"
    assert psql(host, markers) == "t"
    assert int(psql(host, "SELECT count(*) FROM order_items WHERE id % 2 = 0")) > 0
    assert int(psql(host, "SELECT count(*) FROM products")) > 0


def test_offsite_pull_left_a_verified_copy(host):
    pulled = host.file("/srv/tokotani/shared/backups/offsite-pull")
    assert pulled.is_directory
    assert pulled.user == "postgres"
    assert any(name.endswith(".manifest.json") for name in pulled.listdir())


# Runs inside the container: every manifest, local and pulled, carries the signature of the backup key.
SIGNED = """
import glob, json
docs = [json.load(open(p)) for p in glob.glob("/srv/tokotani/shared/backups/**/*.manifest.json", recursive=True)]
print(len(docs), sum(1 for d in docs if (d.get("signature") or {}).get("algorithm") == "HMAC-SHA256"))
"""


def test_every_backup_is_signed_and_the_key_is_on_disk_only_in_the_root_only_environment_file(host):
    total, signed = host.check_output("python3 -c %s", SIGNED).split()
    assert int(total) > 0 and signed == total
    key = host.ansible.get_variables()["tokotani_backup_key"]
    holders = host.run("grep -rlF -- %s /etc /srv/tokotani/shared /var/lib/tokotani-dr", key).stdout.split()
    assert holders == ["/etc/tokotani-dr/backup.env"], holders
    env = host.file("/etc/tokotani-dr/backup.env")
    assert (env.user, env.group, env.mode) == ("root", "root", 0o600)
