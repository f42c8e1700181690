"""Backup keys: signing a manifest, checking it, rotation, refusals, and what a key never shows."""

from __future__ import annotations

import copy
import json

import pytest
from ansible_collections.tokotani.dr.plugins.module_utils import backup_catalog as catalog
from ansible_collections.tokotani.dr.plugins.module_utils import backup_keys, specs
from ansible_collections.tokotani.dr.plugins.module_utils.manifest_schema import schema_problems

KEY = "k" * 20 + "-current-backup-key-0001"
OLD = "o" * 20 + "-previous-backup-key-0001"
OTHER = "x" * 20 + "-somebody-elses-key-0001"


def manifest(**extra) -> dict:
    doc = {
        "manifest_version": 1,
        "name": "backup_2026-01-05_02-00-00",
        "data": "backup_2026-01-05_02-00-00.dump",
        "database": "shop",
        "format": "custom",
        "compression": "gzip",
        "size": 10,
        "sha256": "a" * 64,
        "started_at": "2026-01-05T02:00:00.000000Z",
        "finished_at": "2026-01-05T02:00:09.000000Z",
        "tables": [{"schema": "public", "name": "orders", "rows": 3}],
        "label": "ünïcode",
    }
    doc.update(extra)
    return doc


def ring(*keys: str, allow_unsigned: bool = False) -> backup_keys.KeyRing:
    return backup_keys.keyring(
        {"backup_key": keys[0], "backup_previous_keys": list(keys[1:]), "allow_unsigned": allow_unsigned}
    )


def test_a_signed_manifest_checks_with_the_key_that_signed_it_and_conforms_to_the_schema():
    keys = ring(KEY)
    signed = keys.sign(manifest())
    assert signed["signature"]["algorithm"] == "HMAC-SHA256"
    assert signed["signature"]["key_id"] == keys.current.id
    assert keys.check(signed, "backup x") == ("signed", [])
    assert [p for p in schema_problems(signed) if "signature" in p] == []


def test_the_signature_survives_a_json_round_trip_and_key_order():
    keys = ring(KEY)
    signed = keys.sign(manifest())
    again = json.loads(json.dumps(dict(reversed(list(signed.items()))), indent=4, ensure_ascii=False))
    assert keys.check(again, "backup x") == ("signed", [])


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(sha256="b" * 64),
        lambda d: d["tables"][0].update(rows=4),
        lambda d: d.update(extra_field=True),
        lambda d: d.pop("label"),
        lambda d: d["signature"].update(value="0" * 64),
    ],
)
def test_any_change_after_signing_is_refused(change):
    keys = ring(KEY)
    forged = copy.deepcopy(keys.sign(manifest()))
    change(forged)
    status, problems = keys.check(forged, "backup x")
    assert status is None
    assert problems == [
        "the signature of the manifest of backup x does not match its content: the manifest was changed after "
        "it was signed (forged or damaged). Do not use this backup: take another one"
    ]


def test_a_manifest_signed_by_an_unknown_key_names_the_key_ids():
    signed = ring(OTHER).sign(manifest())
    keys = ring(KEY, OLD)
    status, problems = keys.check(signed, "backup x")
    assert status is None
    assert problems[0].startswith(f"the manifest of backup x is signed with key {ring(OTHER).current.id}, ")
    assert f"(backup_key {keys.current.id}, {keys.keys[1].id})" in problems[0]
    assert "backup_previous_keys" in problems[0]


def test_rotation_previous_keys_verify_and_only_the_current_key_signs():
    old_signed = ring(OLD).sign(manifest())
    keys = ring(KEY, OLD)
    assert keys.check(old_signed, "backup x") == ("signed", [])
    assert keys.sign(manifest())["signature"]["key_id"] == keys.current.id != ring(OLD).current.id


def test_an_unsigned_manifest_is_refused_with_a_key_unless_allowed():
    status, problems = ring(KEY).check(manifest(), "backup x")
    assert status is None
    assert "is not signed, and a backup key is configured" in problems[0]
    assert "allow_unsigned=true" in problems[0]
    assert ring(KEY, allow_unsigned=True).check(manifest(), "backup x") == ("unsigned", [])


def test_allow_unsigned_never_accepts_a_bad_signature():
    forged = ring(KEY).sign(manifest())
    forged["size"] = 11
    status, _problems = ring(KEY, allow_unsigned=True).check(forged, "backup x")
    assert status is None


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"backup_key": "short"}, "backup_key is 5 characters long; a backup key needs at least 32"),
        ({"backup_key": " " * 40}, "backup_key is 0 characters long"),
        ({"backup_key": KEY, "backup_previous_keys": ["s"]}, "backup_previous_keys[0] is 1 characters long"),
        ({"backup_key": KEY, "backup_previous_keys": [KEY]}, "backup_previous_keys[0] is the same key as backup_key"),
        ({"backup_previous_keys": [OLD]}, "backup_previous_keys is given without backup_key"),
    ],
)
def test_unusable_keys_are_clear_errors(params, message):
    with pytest.raises(backup_keys.BackupKeyError) as err:
        backup_keys.keyring(params)
    assert message in err.value.msg
    assert KEY not in err.value.msg and OLD not in err.value.msg


def test_no_key_means_no_ring_and_nothing_checked():
    assert backup_keys.keyring({}) is None
    assert backup_keys.keyring({"backup_key": "", "backup_previous_keys": []}) is None


def test_a_key_never_shows_in_repr_ids_or_signatures():
    keys = ring(KEY, OLD)
    shown = repr(keys.keys) + str(keys.current) + json.dumps(keys.sign(manifest()))
    assert KEY not in shown and OLD not in shown
    assert KEY[:16] not in shown
    assert len(keys.current.id) == backup_keys.KEY_ID_CHARS


def test_subkeys_differ_by_purpose_and_from_the_key():
    key = ring(KEY).current
    assert key.subkey(b"a") != key.subkey(b"b")
    assert KEY.encode() not in key.subkey(b"a")
    assert len(key.subkey(b"offsite encryption")) == 32


def test_canonical_json_is_sorted_compact_ascii_and_skips_the_signature():
    doc = {"b": 1, "a": "é", "signature": {"x": 1}}
    assert backup_keys.canonical(doc) == b'{"a":"\\u00e9","b":1}'


@pytest.mark.parametrize(
    "signature",
    [
        {"algorithm": "HMAC-SHA256", "key_id": "z" * 16, "value": "0" * 64},
        {"algorithm": "HMAC-MD5", "key_id": "0" * 16, "value": "0" * 64},
        {"algorithm": "HMAC-SHA256", "key_id": "0" * 16, "value": "0" * 64, "note": "x"},
        {"algorithm": "HMAC-SHA256", "key_id": "0" * 16},
        "HMAC-SHA256:0000",
    ],
)
def test_a_malformed_signature_breaks_the_schema(signature):
    assert any("signature" in p for p in schema_problems(manifest(signature=signature)))


def test_runner_options_take_previous_keys_from_a_comma_separated_environment():
    params = specs.resolve(
        specs.key_argument_spec(),
        {},
        {backup_keys.ENV_KEY: KEY, backup_keys.ENV_PREVIOUS_KEYS: f"{OLD}, {OTHER}"},
    )
    assert params == {"backup_key": KEY, "backup_previous_keys": [OLD, OTHER], "allow_unsigned": False}
    assert [k.origin for k in backup_keys.keyring(params).keys] == [
        "backup_key",
        "backup_previous_keys[0]",
        "backup_previous_keys[1]",
    ]


def test_every_reading_module_and_job_takes_the_key_options_as_secrets():
    for spec in (specs.backup_argument_spec(), specs.restore_argument_spec(), specs.offsite_argument_spec()):
        assert spec["backup_key"]["no_log"] is True
        assert spec["backup_previous_keys"]["no_log"] is True
        assert spec["allow_unsigned"]["default"] is False


def test_check_entry_marks_a_refused_entry_invalid_and_records_the_signer():
    keys = ring(KEY)
    good = {"name": "n", "manifest": keys.sign(manifest()), "problems": [], "valid": True}
    assert backup_keys.check_entry(good, keys)["signed"] is True
    assert good["signed_by"] == keys.current.id and good["valid"]
    bad = {"name": "n", "manifest": manifest(), "problems": [], "valid": True}
    backup_keys.check_entry(bad, keys)
    assert bad["valid"] is False and bad["signed"] is False and "not signed" in bad["problems"][0]
    unchecked = {"name": "n", "manifest": keys.sign(manifest()), "problems": [], "valid": True}
    assert backup_keys.check_entry(unchecked, None)["signed"] is None and unchecked["valid"]


def test_retention_never_counts_a_forged_newer_backup_among_keep_min(tmp_path):
    keys = ring(KEY)
    now = catalog.parse_timestamp("2026-01-20T00:00:00Z")
    entries = []
    for day, doc_keys in ((5, keys), (6, keys), (19, ring(OTHER))):
        name = f"backup_2026-01-{day:02d}_02-00-00"
        doc = doc_keys.sign(manifest(name=name, started_at=f"2026-01-{day:02d}T02:00:00.000000Z"))
        entry = {
            "name": name,
            "kind": "managed",
            "database": "shop",
            "manifest": doc,
            "problems": [],
            "valid": True,
            "timestamp": catalog.parse_timestamp(doc["started_at"]).timestamp(),
        }
        entries.append(backup_keys.check_entry(entry, keys))
    entries.sort(key=lambda e: e["timestamp"], reverse=True)
    prune, keep = catalog.plan_retention(entries, "shop", now, keep_days=1, keep_min=2)
    assert prune == []
    reasons = {e["name"]: r for e, r in keep}
    assert reasons["backup_2026-01-19_02-00-00"] == "invalid or incomplete: never pruned"
    assert reasons["backup_2026-01-05_02-00-00"] == "among the newest 2 that are not suspicious (keep_min)"
