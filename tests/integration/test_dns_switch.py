"""tokotani.dr.dns_switch against real DNS services: a BIND 9 named of the test's own (nsupdate with a TSIG key) and
moto server's Route 53 API, both on 127.0.0.1. The role runs through ansible-playbook; every record is checked
independently, with dig against named and with boto3 against the API.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from dns_support import HostedZone, Named, hosted_zone, run_role, serve_named
from helpers import free_port
from s3_support import MotoServer, moto_servers, serve_moto

NEW = "198.51.100.20"
OLD = "192.0.2.10"


@pytest.fixture(scope="module")
def named(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Named]:
    yield from serve_named(tmp_path_factory.mktemp("named"))


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    yield from serve_moto(tmp_path_factory.mktemp("moto-route53"))


@pytest.fixture
def dedicated_moto(tmp_path: Path) -> Iterator:
    yield from moto_servers(tmp_path)


def record_name() -> str:
    return "shop-" + secrets.token_hex(3)


@pytest.fixture
def zone(moto: MotoServer) -> HostedZone:
    return hosted_zone(moto.url, f"r53-{secrets.token_hex(3)}.test")


def assert_secret_never_printed(output: str, *values: str) -> None:
    flat = "".join(output.split())
    for value in values:
        assert value not in output and value not in flat, "a secret was printed"


# nsupdate against BIND 9


def test_nsupdate_switch_moves_the_record_keeps_the_old_address_and_never_prints_the_secret(named, tmp_path):
    name = record_name()
    named.set(name, "A", [OLD], ttl=300)

    run = run_role(
        tmp_path, named.settings(dns_switch_record=name, dns_switch_values=[NEW], dns_switch_ttl=60), flags=("-vvv",)
    )

    assert run.rc == 0, run.output[-6000:]
    assert named.dig(name) == [(NEW, 60)]
    assert named.dig(name, tcp=True) == [(NEW, 60)]
    result = run.result
    assert result["action"] == "switch"
    assert result["provider"] == "nsupdate"
    assert result["record"] == f"{name}.{named.zone}."
    assert result["type"] == "A"
    assert result["previous"] == [OLD]
    assert result["previous_ttl"] == 300
    assert result["current"] == [NEW]
    assert result["ttl"] == 60
    assert result["changed"] is True
    assert result["failed"] is False
    assert isinstance(result["propagation_seconds"], float)
    assert 0 <= result["propagation_seconds"] <= 10
    assert result["started_at"] <= result["finished_at"]
    assert f"switched from {OLD} (TTL 300) to {NEW} (TTL 60)" in run.text
    assert_secret_never_printed(run.output, named.secret)


def test_nsupdate_switching_to_the_address_already_there_is_not_a_change(named, tmp_path):
    name = record_name()
    named.set(name, "A", [NEW], ttl=300)

    run = run_role(tmp_path, named.settings(dns_switch_record=name, dns_switch_values=[NEW], dns_switch_ttl=300))

    assert run.rc == 0, run.output[-4000:]
    assert run.result["changed"] is False
    assert run.result["previous"] == run.result["current"] == [NEW]
    assert run.result["propagation_seconds"] == 0.0
    assert run.changed_count == 0
    assert "nothing to change" in run.text
    assert named.dig(name) == [(NEW, 300)]


def test_nsupdate_a_new_ttl_alone_is_a_change(named, tmp_path):
    name = record_name()
    named.set(name, "A", [NEW], ttl=300)

    run = run_role(tmp_path, named.settings(dns_switch_record=name, dns_switch_values=[NEW], dns_switch_ttl=30))

    assert run.rc == 0, run.output[-4000:]
    assert run.result["changed"] is True
    assert named.dig(name) == [(NEW, 30)]


def test_nsupdate_undo_in_the_same_play_puts_the_old_address_back(named, tmp_path):
    name = record_name()
    named.set(name, "A", [OLD], ttl=300)

    run = run_role(
        tmp_path,
        named.settings(dns_switch_record=name, dns_switch_values=[NEW], dns_switch_ttl=60),
        entry_points=("main", "undo"),
    )

    assert run.rc == 0, run.output[-4000:]
    assert named.dig(name) == [(OLD, 300)]
    assert run.result["action"] == "undo"
    assert run.result["previous"] == [NEW]
    assert run.result["current"] == [OLD]
    assert run.result["changed"] is True
    assert f"put back from {NEW} (TTL 60) to {OLD} (TTL 300)" in run.text


def test_nsupdate_a_later_undo_takes_the_previous_address_as_the_switch_printed_it(named, tmp_path):
    name = record_name()
    named.set(name, "A", [NEW], ttl=60)

    run = run_role(
        tmp_path,
        named.settings(dns_switch_record=name, dns_switch_previous=[OLD], dns_switch_previous_ttl=300),
        entry_points=("undo",),
    )

    assert run.rc == 0, run.output[-4000:]
    assert named.dig(name) == [(OLD, 300)]
    assert run.result["previous"] == [NEW]


def test_nsupdate_undo_without_previous_values_fails_and_changes_nothing(named, tmp_path):
    name = record_name()
    named.set(name, "A", [NEW], ttl=60)

    run = run_role(tmp_path, named.settings(dns_switch_record=name), entry_points=("undo",))

    assert run.rc != 0
    assert "Nothing to undo: dns_switch_previous is not set" in run.text
    assert named.dig(name) == [(NEW, 60)]


def test_nsupdate_a_record_created_from_nothing_is_removed_by_undo(named, tmp_path):
    name = record_name()
    assert named.dig(name) == []

    run = run_role(
        tmp_path, named.settings(dns_switch_record=name, dns_switch_values=[NEW]), entry_points=("main", "undo")
    )

    assert run.rc == 0, run.output[-4000:]
    assert named.dig(name) == []
    assert run.result["previous"] == [NEW]
    assert run.result["current"] == []


def test_nsupdate_a_wrong_tsig_secret_fails_clearly_and_leaves_the_record(named, tmp_path):
    name = record_name()
    named.set(name, "A", [OLD], ttl=300)
    wrong = "d3Jvbmctc2VjcmV0LW9mLXRoZS1yaWdodC1sZW5ndGg="

    run = run_role(
        tmp_path,
        named.settings(dns_switch_record=name, dns_switch_values=[NEW], dns_switch_tsig_secret=wrong),
        flags=("-vvv",),
    )

    assert run.rc != 0
    assert "did not take the update" in run.text
    assert "PeerBadSignature" in run.text
    assert "dns_switch_tsig_secret" in run.text
    assert named.dig(name) == [(OLD, 300)]
    assert run.result["failed"] is True
    assert run.result["current"] == [OLD]
    assert run.result["previous"] == [OLD]
    assert_secret_never_printed(run.output, wrong, named.secret)


def test_nsupdate_a_missing_tsig_secret_fails_naming_the_variable(named, tmp_path):
    name = record_name()
    named.set(name, "A", [OLD], ttl=300)

    run = run_role(tmp_path, named.settings(dns_switch_record=name, dns_switch_values=[NEW], dns_switch_tsig_secret=""))

    assert run.rc != 0
    assert "dns_switch_tsig_secret is empty" in run.text
    assert "vault_tokotani_dns_tsig_secret" in run.text
    assert named.dig(name) == [(OLD, 300)]


def test_nsupdate_a_server_that_does_not_answer_fails_before_anything_changes(named, tmp_path):
    run = run_role(
        tmp_path, named.settings(dns_switch_record="www", dns_switch_values=[NEW], dns_switch_nsupdate_port=free_port())
    )

    assert run.rc != 0
    assert "does not answer for the zone shop.test." in run.text


def test_nsupdate_invalid_values_are_refused_with_what_is_wrong(named, tmp_path):
    run = run_role(tmp_path, named.settings(dns_switch_record="www", dns_switch_values=["300.1.2.3", NEW]))

    assert run.rc != 0
    assert "of which not valid: 300.1.2.3" in run.text
    assert named.dig("www") == [(OLD, 300)]


def test_nsupdate_aaaa_values_compare_in_canonical_form(named, tmp_path):
    name = record_name()
    named.set(name, "AAAA", ["2001:db8::10"], ttl=300)
    wanted = ["2001:DB8:0:0::0:21", "2001:db8:0:0:1:0:0:22"]
    settings = named.settings(dns_switch_record=name, dns_switch_type="AAAA", dns_switch_values=wanted)

    first = run_role(tmp_path / "first", settings)
    second = run_role(tmp_path / "second", settings)

    assert first.rc == 0, first.output[-4000:]
    assert named.values(name, "AAAA") == ["2001:db8::1:0:0:22", "2001:db8::21"]
    assert first.result["previous"] == ["2001:db8::10"]
    assert second.rc == 0, second.output[-4000:]
    assert second.result["changed"] is False
    assert second.changed_count == 0


def test_nsupdate_a_record_reduced_to_some_of_its_addresses_loses_the_others(named, tmp_path):
    name = record_name()
    named.set(name, "A", ["192.0.2.21", "192.0.2.22"], ttl=300)

    run = run_role(
        tmp_path, named.settings(dns_switch_record=name, dns_switch_values=["192.0.2.21"], dns_switch_ttl=300)
    )

    assert run.rc == 0, run.output[-4000:]
    assert named.dig(name) == [("192.0.2.21", 300)]
    assert run.result["previous"] == ["192.0.2.21", "192.0.2.22"]


def test_nsupdate_a_cname_is_switched_and_an_address_beside_it_is_refused(named, tmp_path):
    name = record_name()
    named.set(name, "CNAME", ["lb1.example.net."], ttl=300)

    address = run_role(tmp_path / "a", named.settings(dns_switch_record=name, dns_switch_values=[NEW]))
    alias = run_role(
        tmp_path / "cname",
        named.settings(dns_switch_record=name, dns_switch_type="CNAME", dns_switch_values="lb2.example.net"),
    )

    assert address.rc != 0
    assert "is an alias (CNAME lb1.example.net.)" in address.text
    assert "Could not read" not in address.text
    assert named.values(name, "A") == []
    assert alias.rc == 0, alias.output[-4000:]
    assert named.values(name, "CNAME") == ["lb2.example.net."]
    assert alias.result["previous"] == ["lb1.example.net."]


def test_nsupdate_check_mode_says_what_it_would_do_and_changes_nothing(named, tmp_path):
    name = record_name()
    named.set(name, "A", [OLD], ttl=300)

    run = run_role(tmp_path, named.settings(dns_switch_record=name, dns_switch_values=[NEW]), flags=("--check",))

    assert run.rc == 0, run.output[-4000:]
    assert named.dig(name) == [(OLD, 300)]
    assert run.result["changed"] is True
    assert run.result["check_mode"] is True
    assert run.result["current"] == [OLD]
    assert run.result["propagation_seconds"] is None
    assert "Check mode, nothing was changed" in run.text


# route53 against moto server's Route 53 API


def test_route53_switch_moves_the_record_keeps_the_old_address_and_never_prints_the_keys(zone, moto, tmp_path):
    run = run_role(
        tmp_path, zone.settings(dns_switch_record="www", dns_switch_values=[NEW], dns_switch_ttl=60), flags=("-vvv",)
    )

    assert run.rc == 0, run.output[-6000:]
    assert zone.records("www") == [(NEW, 60)]
    result = run.result
    assert result["provider"] == "route53"
    assert result["record"] == f"www.{zone.name}."
    assert result["previous"] == [OLD]
    assert result["previous_ttl"] == 300
    assert result["current"] == [NEW]
    assert result["changed"] is True
    assert zone.zone_id in result["server"]
    assert isinstance(result["propagation_seconds"], float)
    assert result["started_at"] <= result["finished_at"]
    # the change was waited for through GetChange (INSYNC), which moto answers
    assert "GET /2013-04-01/change/" in moto.log.read_text()
    assert_secret_never_printed(run.output, zone.secret_key, zone.access_key)


def test_route53_switching_to_the_address_already_there_is_not_a_change(zone, tmp_path):
    settings = zone.settings(dns_switch_record="www", dns_switch_values=[NEW], dns_switch_ttl=60)

    first = run_role(tmp_path / "first", settings)
    second = run_role(tmp_path / "second", settings)

    assert first.rc == 0, first.output[-4000:]
    assert second.rc == 0, second.output[-4000:]
    assert second.result["changed"] is False
    assert second.result["previous"] == [NEW]
    assert second.changed_count == 0
    assert zone.records("www") == [(NEW, 60)]


def test_route53_undo_puts_the_old_address_back_by_hosted_zone_id(zone, tmp_path):
    settings = zone.settings(
        dns_switch_record=f"www.{zone.name}.",
        dns_switch_values=[NEW],
        dns_switch_ttl=60,
        dns_switch_route53_hosted_zone_id=zone.zone_id,
    )

    run = run_role(tmp_path, settings, entry_points=("main", "undo"))

    assert run.rc == 0, run.output[-4000:]
    assert zone.records("www") == [(OLD, 300)]
    assert run.result["action"] == "undo"
    assert run.result["previous"] == [NEW]
    assert run.result["current"] == [OLD]


def test_route53_a_record_created_from_nothing_is_removed_by_undo(zone, tmp_path):
    name = record_name()

    run = run_role(
        tmp_path, zone.settings(dns_switch_record=name, dns_switch_values=[NEW]), entry_points=("main", "undo")
    )

    assert run.rc == 0, run.output[-4000:]
    assert zone.records(name) == []
    assert run.result["previous"] == [NEW]
    assert run.result["current"] == []


def test_route53_wrong_keys_fail_clearly_and_leave_the_record(dedicated_moto, tmp_path):
    server = dedicated_moto()
    zone = hosted_zone(server.url, "auth.test")
    server.set_auth(enforced=True)
    wrong_secret = "wrong-" + secrets.token_urlsafe(20)
    settings = zone.settings(
        dns_switch_record="www",
        dns_switch_values=[NEW],
        dns_switch_route53_access_key="AKIAWRONGWRONGWRONG1",
        dns_switch_route53_secret_key=wrong_secret,
    )

    run = run_role(tmp_path, settings, flags=("-vvv",))
    server.set_auth(enforced=False)

    assert run.rc != 0
    assert "Could not read www.auth.test. A through the Route 53 API" in run.text
    # moto refuses the keys (HTTP 403 InvalidClientTokenId), but writes the error in the query-API layout, which
    # botocore's Route 53 parser does not read: the module's message names the call, with an empty error code.
    assert "when calling the ListHostedZones operation" in run.text
    assert "dns_switch_route53_access_key" in run.text
    assert zone.records("www") == [(OLD, 300)]
    assert run.result["failed"] is True
    assert_secret_never_printed(run.output, wrong_secret, zone.secret_key, "AKIAWRONGWRONGWRONG1")


def test_route53_a_secret_key_without_its_access_key_is_refused(zone, tmp_path):
    run = run_role(
        tmp_path, zone.settings(dns_switch_record="www", dns_switch_values=[NEW], dns_switch_route53_access_key="")
    )

    assert run.rc != 0
    assert "dns_switch_route53_access_key and dns_switch_route53_secret_key go together" in run.text
    assert zone.records("www") == [(OLD, 300)]
    assert_secret_never_printed(run.output, zone.secret_key)


def test_route53_an_alias_record_is_refused_and_left_alone(zone, tmp_path):
    zone.alias("shop", "www")

    run = run_role(tmp_path, zone.settings(dns_switch_record="shop", dns_switch_values=[NEW]))

    assert run.rc != 0
    assert f"shop.{zone.name}. A is a Route 53 alias" in run.text
    assert "Nothing was changed" in run.text
    assert zone.records("shop") == []
    aliases = [
        r
        for r in zone.client().list_resource_record_sets(HostedZoneId=zone.zone_id)["ResourceRecordSets"]
        if r["Name"] == f"shop.{zone.name}."
    ]
    assert aliases and "AliasTarget" in aliases[0]
