"""Checks of the rebuilt server (tokotani-rebuild-new) and of the incident report the rebuild wrote."""

import hashlib
import json
import os
import pathlib

import jsonschema
import pytest
import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"]).get_hosts(
    "tokotani_servers"
)

EPHEMERAL = pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
SCHEMA = pathlib.Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "docs" / "drill_report.schema.json"
HEALTH = "python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:3000/api/health').read().decode())\""


def incident():
    return json.loads((EPHEMERAL / "rebuild-incident.json").read_text())


def scenario():
    return incident()["scenarios"][0]


def test_the_shop_serves_the_version_the_last_deploy_recorded(host):
    health = json.loads(host.check_output(HEALTH))
    assert health["database"] == "ok"
    assert health["version"] == "1.0.0"


def test_the_shop_data_of_the_old_server_is_back(host):
    before = (EPHEMERAL / "orders-before.txt").read_text().strip()
    after = host.check_output("runuser -u postgres -- psql -XAtq -d tokotani -c 'select count(*) from orders'")
    assert after.strip() == before and int(before) > 0


def test_the_backup_and_verification_timers_are_armed(host):
    for unit in ("tokotani-backup.timer", "tokotani-backup-verify.timer"):
        assert host.service(unit).is_enabled, unit
        assert host.service(unit).is_running, unit


def test_the_incident_report_is_valid_and_says_recovered():
    doc = incident()
    jsonschema.validate(doc, json.loads(SCHEMA.read_text()))
    item = scenario()
    assert item["id"] == "2.3" and item["name"] == "full_system_recovery"
    assert item["recovery"]["status"] == "recovered", item.get("reasons")
    assert item["verdict"] == "pass", item.get("reasons")


def test_rto_and_rpo_are_measured_from_the_loss_of_the_old_server():
    item = scenario()
    rto, rpo = item["rto"]["measured_seconds"], item["rpo"]["measured_seconds"]
    assert rto > 0 and item["rto"]["objective_seconds"] == 14400
    assert rpo > 0 and item["rpo"]["objective_seconds"] == 86400
    assert item["healthy_at"] - item["disaster"]["at"] == pytest.approx(rto, abs=0.01)


def dns_switched(host):
    return host.ansible.get_variables().get("dns", True) is not False


def test_the_timeline_has_every_step_in_order(host):
    steps = [phase["name"] for phase in scenario()["phases"] if phase["kind"] == "recovery"]
    expected = ["identify", "packages", "nodejs", "fetch", "npm_ci", "build", "migrate", "start", "restore", "timers"]
    expected += ["dns", "load_test"]
    assert steps == [step for step in expected if step != "dns" or dns_switched(host)], steps


def test_the_dns_name_points_at_the_new_server(host):
    if not dns_switched(host):
        pytest.skip("the DNS switch is off in this scenario's inventory (dns: false)")
    dns = json.loads((EPHEMERAL / "dns.json").read_text())
    assert dns["www"] == dns["address"], "the authoritative server answers the new server's address"
    assert f"to {dns['address']}" in scenario()["disaster"]["description"], "the report names the new address"


def test_a_nightly_backup_on_the_new_server_keeps_the_history_it_inherited(host):
    count = (
        'python3 -c "import boto3; '
        "s3 = boto3.client('s3', endpoint_url='http://tokotani-s3:5000', region_name='us-east-1', "
        "aws_access_key_id='sandbox', aws_secret_access_key='sandbox-secret-do-not-print'); "
        "print(sum(1 for o in s3.list_objects_v2(Bucket='tokotani-sandbox-backups', Prefix='tokotani-rebuild/')"
        ".get('Contents', []) if o['Key'].endswith('.manifest.json')))\""
    )
    before = int(host.check_output(count))
    host.run_expect([0], "systemctl start tokotani-backup.service")
    after = int(host.check_output(count))
    assert before >= 1 and after == before + 1


def test_the_report_names_the_damaged_newest_backup_it_passed_over():
    item = scenario()
    described = item["disaster"]["description"]
    assert "passed over" in described, described
    passed = described.split("(the newer ", 1)[1].split(" passed over", 1)[0]
    assert passed.startswith("backup_") and passed != item["recovery"]["backup"], described


def test_the_secret_rotated_on_the_old_server_was_carried_over(host):
    """-e secrets_from: the NEXTAUTH_SECRET the app rotated on the old server (not in the vault) is the new server's,
    and a second run, with the old server gone, kept it (customers stay logged in). Compared by digest."""
    value = host.check_output("sed -n 's/^NEXTAUTH_SECRET=//p' /srv/tokotani/current/.env")
    digest = hashlib.sha256(value.strip().encode()).hexdigest()
    assert digest == (EPHEMERAL / "nextauth-rotated.sha256").read_text().strip()
    description = scenario()["disaster"]["description"]
    expected = "NEXTAUTH_SECRET taken from the live .env of tokotani-rebuild-old (NEXTAUTH_SECRET differing from the"
    assert expected in description, description
