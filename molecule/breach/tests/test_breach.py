"""Testinfra checks after side_effect.yml let an intruder in and ran the breach response."""

import os

import testinfra.utils.ansible_runner

testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"]).get_hosts(
    "tokotani_servers"
)


def psql(host, sql, db="tokotani"):
    return host.check_output("runuser -u postgres -- psql -XAtq -d %s -c %s", db, sql)


def test_the_shop_is_open_again_no_isolation_left(host):
    assert host.run("nft list table inet tokotani_breach").rc != 0
    assert not host.file("/srv/tokotani/shared/.breach-isolation.json").exists


def test_the_intruders_role_is_gone_and_the_app_role_has_no_privilege(host):
    roles = psql(host, "SELECT rolname FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1", "postgres").split()
    assert roles == ["postgres", "tokotani"]
    assert psql(host, "SELECT rolsuper FROM pg_roles WHERE rolname = 'tokotani'", "postgres") == "f"


def test_the_breached_database_is_kept_with_the_intruders_rows_and_the_live_one_has_none(host):
    kept = psql(host, "SELECT datname FROM pg_database WHERE datname LIKE 'tokotani__breached_%'", "postgres").split()
    assert len(kept) == 1
    assert psql(host, "SELECT count(*) FROM users WHERE email = 'ops-backup@evil.example'", kept[0]) == "1"
    assert psql(host, "SELECT count(*) FROM users WHERE email = 'ops-backup@evil.example'") == "0"


def test_every_release_env_has_the_live_secrets(host):
    live = host.file("/srv/tokotani/current/.env").content_string
    pick = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in live.splitlines() if "=" in line}
    for env in host.check_output("find /srv/tokotani/releases -maxdepth 2 -name .env").split():
        text = host.file(env).content_string
        assert f"ADMIN_TOKEN={pick['ADMIN_TOKEN']}" in text, env
        assert f"DATABASE_URL={pick['DATABASE_URL']}" in text, env
        assert host.file(env).mode == 0o600


def test_the_evidence_bundle_stays_on_the_server_mode_0600(host):
    bundles = host.check_output("find /srv/tokotani/shared/evidence -name 'evidence-*.tar.gz'").split()
    assert len(bundles) >= 2  # the evidence alone, then the responses
    for bundle in bundles:
        assert host.file(bundle).mode == 0o600
