"""Unit tests of the deploy record engine: every field against crafted hostile values, strict parsing, the
signature checks, the messages an operator reads, and put/get against an in-memory S3 client."""

from __future__ import annotations

import copy
import datetime
import io
import json
import sys
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.tokotani.dr.plugins.module_utils import backup_keys, specs  # noqa: E402
from ansible_collections.tokotani.dr.plugins.module_utils import deploy_record as dr  # noqa: E402
from ansible_collections.tokotani.dr.plugins.module_utils.s3_offsite import OffsiteError, Store  # noqa: E402

KEY = "k" * 20 + "-current-backup-key-0001"
OLD = "o" * 20 + "-previous-backup-key-0001"
OTHER = "x" * 20 + "-somebody-elses-key-0001"
NOW = datetime.datetime(2026, 1, 20, 2, 0, 0, tzinfo=datetime.UTC)
DEPLOYED = 1768874400  # 2026-01-20T02:00:00Z
COMMIT = "3f9a0c2d81b47e65a1c0d2e3f4a5b6c7d8e9f001"
BUCKET = "tokotani-dr"
URL = f"s3://{BUCKET}/prod/deploy/current.json"


def record(**changes) -> dict:
    doc = {
        "record_version": 1,
        "version": "v1.4.2",
        "commit": COMMIT,
        "release": "20260120T020000Z-3f9a0c2",
        "deployed_at": DEPLOYED,
        "host": "web1.tokotani.internal",
    }
    doc.update(changes)
    return doc


def ring(*keys: str, allow_unsigned: bool = False):
    return backup_keys.keyring(
        {"backup_key": keys[0], "backup_previous_keys": list(keys[1:]), "allow_unsigned": allow_unsigned}
    )


def problems_of(doc) -> list[str]:
    return dr.record_problems(doc, NOW)


# --------------------------------------------------------------------------- the fields


def test_a_well_formed_record_has_no_problems_signed_or_not():
    assert problems_of(record()) == []
    assert problems_of(ring(KEY).sign(record())) == []
    assert problems_of(record(deployed_at=DEPLOYED + 0.25, version="release/2026-01+hotfix_1", commit="abcdef1")) == []


HOSTILE_VERSIONS = [
    "../../etc/passwd",
    "v1/../../x",
    "v1..2",
    "v1;rm -rf /",
    "$(reboot)",
    "`id`",
    "v1|sh",
    "v1 && curl evil",
    "v1\nv2",
    "v1\n",
    "\nv1",
    "-rf",
    "--upload-pack=touch /tmp/x",
    ".hidden",
    "a//b",
    "a/.hidden",
    "refs/heads/x.lock",
    "x.lock/y",
    "x/",
    "x.",
    "@{-1}",
    "HEAD@{1}",
    "v1~1",
    "v1^",
    "v1:x",
    "v*",
    "v[1]",
    "v\\1",
    "v\x00",
    "v1\t",
    "'v1'",
    "ü1",
    "",
    "v" * 129,
    "v" * 70000,
]


@pytest.mark.parametrize("value", HOSTILE_VERSIONS)
def test_a_hostile_version_is_refused(value):
    problems = problems_of(record(version=value))
    assert problems, value
    assert all(p.startswith("the deploy record's version ") for p in problems)
    assert len(dr.explain(problems)) < 1000  # a huge value is never quoted whole


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("commit", "ABCDEF1"),
        ("commit", "abcdef"),
        ("commit", "ghijklm"),
        ("commit", "a" * 65),
        ("commit", "abcdef1\n"),
        ("commit", "abcdef1; ls"),
        ("commit", "$(id)abcdef"),
        ("release", "../x"),
        ("release", ".."),
        ("release", ".hidden"),
        ("release", "a/b"),
        ("release", "a b"),
        ("release", "$(id)"),
        ("release", "r1\n"),
        ("release", "-r"),
        ("release", ""),
        ("release", "r" * 129),
        ("host", "web_1"),
        ("host", "-web"),
        ("host", "web-"),
        ("host", "a" * 64),
        ("host", ".".join(["a" * 60] * 5)),
        ("host", "web1;id"),
        ("host", "web1\n"),
        ("host", "web1..x"),
        ("host", ""),
    ],
)
def test_a_hostile_commit_release_or_host_is_refused(field, value):
    problems = problems_of(record(**{field: value}))
    assert problems and all(p.startswith(f"the deploy record's {field} ") for p in problems), problems


@pytest.mark.parametrize("field", ["version", "commit", "release", "host"])
@pytest.mark.parametrize("value", [1234567, 1.5, True, None, ["v1.4.2"], {"v": 1}])
def test_a_text_field_of_another_type_is_refused(field, value):
    problems = problems_of(record(**{field: value}))
    assert problems and "not a string" in problems[0], problems


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (True, "a boolean, not a number"),
        (False, "a boolean, not a number"),
        ("1768874400", "a string, not a number"),
        (None, "null, not a number"),
        ([DEPLOYED], "an array, not a number"),
        (float("nan"), "NaN"),
        (float("inf"), "above"),
        (float("-inf"), "below"),
        (0, "below"),
        (946684799, "below"),
        (10**30, "above"),
        (DEPLOYED + 2 * 86400, "in the future"),
    ],
)
def test_a_deployed_at_that_is_not_a_sane_time_is_refused(value, words):
    problems = problems_of(record(deployed_at=value))
    assert len(problems) == 1 and words in problems[0], problems
    assert problems[0].startswith("the deploy record's deployed_at")


def test_a_deploying_hosts_clock_a_little_ahead_is_not_a_forgery():
    assert problems_of(record(deployed_at=DEPLOYED + 3600)) == []


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        (record(record_version=2), "record_version is 2, not one of 1"),
        (record(record_version=True), "record_version is True, not one of 1"),
        (record(record_version="1"), "not one of 1"),
        (record(extra="x"), "has an unknown field 'extra'"),
        (record(previous={"version": "v1"}), "has an unknown field 'previous'"),
        ({k: v for k, v in record().items() if k != "commit"}, "has no commit"),
        ({k: v for k, v in record().items() if k != "record_version"}, "has no record_version"),
        (["v1.4.2"], "is not a JSON object"),
        ("v1.4.2", "is not a JSON object"),
        (None, "is not a JSON object"),
        (7, "is not a JSON object"),
    ],
)
def test_a_record_without_exactly_the_expected_keys_is_refused(doc, words):
    problems = problems_of(doc)
    assert any(words in p for p in problems), problems


@pytest.mark.parametrize(
    "signature",
    [
        "HMAC-SHA256:00",
        {"algorithm": "HMAC-MD5", "key_id": "0" * 16, "value": "0" * 64},
        {"algorithm": "HMAC-SHA256", "key_id": "../../x", "value": "0" * 64},
        {"algorithm": "HMAC-SHA256", "key_id": "0" * 16},
        {"algorithm": "HMAC-SHA256", "key_id": "0" * 16, "value": "0" * 64, "note": "x"},
    ],
)
def test_a_malformed_signature_is_a_schema_problem(signature):
    assert any("signature" in p for p in problems_of(record(signature=signature)))


def test_the_message_says_what_each_field_named_must_look_like():
    text = dr.explain(problems_of(record(version="../x", commit="XYZ")))
    assert "version must be a git tag" in text and "commit must be 7 to 64 lowercase hex digits" in text
    assert "release must be" not in text


# --------------------------------------------------------------------------- strict JSON


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b'{"deployed_at": NaN}', "NaN is not a JSON number"),
        (b'{"deployed_at": Infinity}', "Infinity is not a JSON number"),
        (b'{"deployed_at": -Infinity}', "-Infinity is not a JSON number"),
        (b'{"version": "v1", "version": "v2"}', "the key 'version' appears twice"),
        (b"[" * 60000 + b"]" * 60000, "nested too deeply"),
        (b"\xff\xfe{}", "can't decode"),
        (b'{"version": "v1"', "Expecting"),
        (b"", "Expecting value"),
        (b'{"deployed_at": ' + b"9" * 5000 + b"}", "digits"),
    ],
)
def test_what_is_not_strict_json_is_refused_with_a_reason(raw, words):
    with pytest.raises(ValueError) as err:
        dr.parse_record(raw)
    assert words in str(err.value)


def test_a_duplicate_key_is_quoted_short_and_escaped():
    raw = b'{"' + b"a\\n" * 200 + b'": 1, "' + b"a\\n" * 200 + b'": 2}'
    with pytest.raises(ValueError) as err:
        dr.parse_record(raw)
    assert "\n" not in str(err.value) and len(str(err.value)) < 80


# --------------------------------------------------------------------------- signatures


def test_a_record_signed_by_the_current_key_is_accepted_with_its_key_id():
    keys = ring(KEY)
    assert dr.check_signature(keys.sign(record()), keys, False, URL) == (keys.current.id, None)


def test_a_record_signed_by_a_previous_key_is_accepted():
    keys = ring(KEY, OLD)
    old_id = ring(OLD).current.id
    assert dr.check_signature(ring(OLD).sign(record()), keys, False, URL) == (old_id, None)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(version="v0.9.0"),
        lambda d: d.update(commit="0" * 40),
        lambda d: d.update(deployed_at=DEPLOYED + 1),
        lambda d: d.update(host="evil"),
        lambda d: d["signature"].update(value="0" * 64),
    ],
)
def test_a_record_changed_after_signing_is_refused_naming_the_key_id(change):
    keys = ring(KEY)
    forged = copy.deepcopy(keys.sign(record()))
    change(forged)
    with pytest.raises(OffsiteError) as err:
        dr.check_signature(forged, keys, True, URL)  # allow_unsigned never accepts a bad signature
    assert err.value.kind == "not_authentic"
    assert err.value.msg == (
        f"the signature of the deploy record {URL} (key id {keys.current.id}) does not match its content: the "
        "record was changed after it was signed (forged or damaged), and nothing from it is used"
    )
    assert KEY not in err.value.msg


def test_a_record_signed_by_an_unknown_key_names_its_id_and_the_ids_given_never_a_key():
    keys = ring(KEY, OLD)
    foreign = ring(OTHER)
    with pytest.raises(OffsiteError) as err:
        dr.check_signature(foreign.sign(record()), keys, True, URL)
    assert err.value.kind == "unknown_key" and err.value.details["key_id"] == foreign.current.id
    assert err.value.msg.startswith(
        f"the deploy record {URL} is not signed by a known backup key (key id {foreign.current.id}; the keys given: "
        f"backup_key {keys.current.id}, {keys.keys[1].id}): it may have been written by someone else"
    )
    assert "backup_previous_keys" in err.value.msg
    for secret in (KEY, OLD, OTHER, KEY[:16]):
        assert secret not in err.value.msg


def test_an_unsigned_record_is_refused_with_a_key_unless_allowed():
    with pytest.raises(OffsiteError) as err:
        dr.check_signature(record(), ring(KEY), False, URL)
    assert err.value.kind == "not_signed"
    assert f"the deploy record {URL} is not signed, and a backup key is configured" in err.value.msg
    assert "allow_unsigned=true" in err.value.msg
    key_id, warning = dr.check_signature(record(), ring(KEY), True, URL)
    assert key_id is None and "is not signed: taken because allow_unsigned is true" in warning


def test_without_any_key_a_record_is_refused_unless_allowed_and_then_taken_unchecked():
    signed = ring(KEY).sign(record())
    with pytest.raises(OffsiteError) as err:
        dr.check_signature(signed, None, False, URL)
    assert err.value.kind == "key_missing" and "no backup_key is given" in err.value.msg
    key_id, warning = dr.check_signature(signed, None, True, URL)
    assert key_id is None and "taken unchecked" in warning


def test_the_key_ids_of_a_ring_name_every_key_by_id_only():
    keys = ring(KEY, OLD)
    assert keys.key_ids() == f"backup_key {keys.current.id}, {keys.keys[1].id}"
    assert keys.verdict(keys.sign(record())) == "signed"
    assert keys.verdict(record()) == "unsigned"
    assert keys.verdict(ring(OTHER).sign(record())) == "unknown_key"
    assert keys.verdict(record(signature={"algorithm": "x"})) == "unknown_format"


# --------------------------------------------------------------------------- put and get on an in-memory S3


class FakeS3:
    """Just enough of a boto3 S3 client for Store (boto3's argument names): objects in a dict, a log of the calls."""

    def __init__(self):
        self.objects: dict[str, bytes] = {}
        self.calls: list[tuple[str, str]] = []

    @staticmethod
    def _missing(code, operation):
        return ClientError({"Error": {"Code": code, "Message": "Not Found"}}, operation)

    def head_bucket(self, Bucket):
        self.calls.append(("head_bucket", Bucket))
        return {}

    def head_object(self, Bucket, Key):
        self.calls.append(("head_object", Key))
        if Key not in self.objects:
            raise self._missing("404", "HeadObject")
        return {"ContentLength": len(self.objects[Key])}

    def get_object(self, Bucket, Key):
        self.calls.append(("get_object", Key))
        if Key not in self.objects:
            raise self._missing("NoSuchKey", "GetObject")
        body = self.objects[Key]
        return {"ContentLength": len(body), "Body": io.BytesIO(body)}

    def put_object(self, Bucket, Key, Body, **extra):
        self.calls.append(("put_object", Key))
        assert extra == {"ContentType": "application/json"}
        self.objects[Key] = bytes(Body)
        return {}


def options(**values) -> dict:
    """The module's parameters as AnsibleModule would give them (defaults filled, no environment)."""
    values.setdefault("bucket", BUCKET)
    values.setdefault("prefix", "/prod/")
    return specs.resolve(dr.argument_spec(), values, environ={})


def put_options(**values) -> dict:
    base = {"mode": "put", "version": "v1.4.2", "commit": COMMIT, "release": "r-20260120", "host": "web1"}
    base["deployed_at"] = DEPLOYED
    base.update(values)
    return options(**base)


def run(opts, s3, check_mode=False):
    return dr.run(opts, check_mode=check_mode, store=Store(opts, client=s3), now=NOW)


def refused(opts, s3) -> OffsiteError:
    with pytest.raises(OffsiteError) as err:
        run(opts, s3)
    return err.value


CURRENT = "prod/deploy/current.json"


def test_put_writes_the_history_copy_first_then_current_and_get_reads_it_back():
    s3 = FakeS3()
    keys = ring(KEY)
    put = run(put_options(backup_key=KEY), s3)
    history = "prod/deploy/history/20260120T020000Z-3f9a0c2d81b4.json"
    assert put["changed"] and put["object"] == URL and put["history_object"] == f"s3://{BUCKET}/{history}"
    assert [c for c in s3.calls if c[0] == "put_object"] == [("put_object", history), ("put_object", CURRENT)]
    assert s3.objects[history] == s3.objects[CURRENT]
    stored = json.loads(s3.objects[CURRENT])
    assert stored["signature"]["key_id"] == keys.current.id and keys.verdict(stored) == "signed"
    assert put["record"] == {
        "version": "v1.4.2",
        "commit": COMMIT,
        "release": "r-20260120",
        "deployed_at": DEPLOYED,
        "host": "web1",
        "key_id": keys.current.id,
    }
    got = run(options(mode="get", backup_key=KEY), s3)
    assert got["found"] and got["signed"] and not got["changed"] and got["record"] == put["record"]
    assert got["msg"] == (
        f"the deploy record {URL} says version v1.4.2 (commit {COMMIT}, release r-20260120), deployed on web1 at "
        f"2026-01-20T02:00:00Z, signed by backup key {keys.current.id}"
    )
    assert (got["mode"], got["bucket"], got["prefix"]) == ("get", BUCKET, "prod")


def test_put_of_the_same_deployment_changes_nothing_and_a_new_one_adds_history():
    s3 = FakeS3()
    run(put_options(backup_key=KEY), s3)
    written = dict(s3.objects)
    again = run(put_options(backup_key=KEY, deployed_at=DEPLOYED + 600, host="web2"), s3)
    assert not again["changed"] and "already says version v1.4.2" in again["msg"], again
    assert again["record"]["host"] == "web1" and s3.objects == written
    newer = run(put_options(backup_key=KEY, version="v1.5.0", commit="b" * 40, deployed_at=DEPLOYED + 60), s3)
    assert newer["changed"] and len(s3.objects) == 3
    assert "prod/deploy/history/20260120T020100Z-bbbbbbbbbbbb.json" in s3.objects


def test_after_a_key_rotation_the_same_deployment_is_signed_again_with_the_current_key():
    s3 = FakeS3()
    run(put_options(backup_key=OLD), s3)
    rotated = run(put_options(backup_key=KEY, backup_previous_keys=[OLD]), s3)
    assert rotated["changed"] and rotated["record"]["key_id"] == ring(KEY).current.id


def test_check_mode_put_reports_what_it_would_write_and_writes_nothing():
    s3 = FakeS3()
    would = run(put_options(backup_key=KEY), s3, check_mode=True)
    assert would["changed"] and would["msg"].startswith("would record version v1.4.2")
    assert s3.objects == {}


def test_put_replaces_a_refused_record_and_says_why():
    s3 = FakeS3()
    s3.objects[CURRENT] = json.dumps(ring(OTHER).sign(record())).encode()
    put = run(put_options(backup_key=KEY), s3)
    assert put["changed"] and "is not signed by a known backup key" in put["warnings"][0]
    assert "-e version" not in put["warnings"][0]


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"version": "$(reboot)"}, "the deploy record's version '$(reboot)' is not of the allowed form"),
        ({"commit": "HEAD"}, "commit must be 7 to 64 lowercase hex digits"),
        ({"release": "../../srv"}, "release must be a release directory name"),
        ({"host": "web_1"}, "host must be a host name"),
        ({"deployed_at": float("nan")}, "deployed_at is NaN"),
    ],
)
def test_put_refuses_inputs_a_rebuild_would_refuse_and_writes_nothing(values, words):
    s3 = FakeS3()
    err = refused(put_options(backup_key=KEY, **values), s3)
    assert err.kind == "invalid" and err.msg.startswith("refusing to record the deployment") and words in err.msg
    assert s3.objects == {} and not [c for c in s3.calls if c[0] in ("head_object", "put_object")]


def test_put_without_a_key_writes_only_with_allow_unsigned_and_warns():
    s3 = FakeS3()
    err = refused(put_options(), s3)
    assert err.kind == "key_missing" and "allow_unsigned=true" in err.msg and s3.objects == {}
    put = run(put_options(allow_unsigned=True), s3)
    assert put["changed"] and put["record"]["key_id"] is None and "written unsigned" in put["warnings"][0]
    assert "signature" not in json.loads(s3.objects[CURRENT])
    assert not run(put_options(allow_unsigned=True), s3)["changed"]
    got = run(options(mode="get", allow_unsigned=True), s3)
    assert got["found"] and not got["signed"] and got["record"]["key_id"] is None


def test_get_with_no_record_is_found_false_and_says_so():
    got = run(options(mode="get", backup_key=KEY), FakeS3())
    assert got["found"] is False and got["record"] is None and not got["changed"]
    assert got["msg"].startswith(f"there is no deploy record at {URL}: no deployment has recorded")
    assert "-e version=<tag>" in got["msg"]


def test_get_refuses_an_oversized_record_before_downloading_it():
    s3 = FakeS3()
    s3.objects[CURRENT] = b" " * (dr.MAX_RECORD_BYTES + 1)
    err = refused(options(mode="get", backup_key=KEY), s3)
    assert err.kind == "too_large" and f"larger than {dr.MAX_RECORD_BYTES} bytes" in err.msg
    assert ("get_object", CURRENT) not in s3.calls


@pytest.mark.parametrize(
    ("body", "kind", "words"),
    [
        (json.dumps(record()).encode(), "not_signed", "is not signed, and a backup key is configured"),
        (json.dumps(ring(OTHER).sign(record())).encode(), "unknown_key", "is not signed by a known backup key"),
        (b"not json at all", "invalid", "is not JSON (Expecting value"),
        (b"[1, 2]", "invalid", "is not a valid deploy record (the deploy record is not a JSON object)"),
        (json.dumps(record(version="../../etc")).encode(), "invalid", "version '../../etc' is not of the allowed"),
    ],
)
def test_get_refuses_a_crafted_record_with_a_message_naming_the_object_and_what_to_do(body, kind, words):
    s3 = FakeS3()
    s3.objects[CURRENT] = body
    err = refused(options(mode="get", backup_key=KEY), s3)
    assert err.kind == kind and words in err.msg, err.msg
    assert err.msg.startswith(f"the deploy record {URL} ") or err.msg.startswith("the signature of")
    assert err.msg.endswith("; give -e version=<tag> to choose the version yourself")
    assert err.to_dict()["object"] == URL and err.to_dict()["found"] is True
    assert KEY not in err.msg


def test_get_of_a_forged_record_names_the_key_id_and_says_nothing_is_used():
    s3 = FakeS3()
    forged = ring(KEY).sign(record())
    forged["version"] = "v0.0.1-vulnerable"
    s3.objects[CURRENT] = json.dumps(forged).encode()
    err = refused(options(mode="get", backup_key=KEY), s3)
    assert err.kind == "not_authentic" and ring(KEY).current.id in err.msg and "nothing from it is used" in err.msg


def test_an_unusable_backup_key_fails_before_anything_is_asked():
    s3 = FakeS3()
    with pytest.raises(backup_keys.BackupKeyError) as err:
        run(options(mode="get", backup_key="short"), s3)
    assert "at least 32" in err.value.msg and s3.calls == []


# --------------------------------------------------------------------------- options


def test_the_options_are_backup_offsites_connection_and_key_options_with_their_secrets_hidden():
    spec = dr.argument_spec()
    offsite = specs.offsite_argument_spec()
    for name in (*specs.s3_argument_spec(), *specs.key_argument_spec()):
        assert spec[name] == offsite[name], name
    for secret in ("secret_key", "session_token", "backup_key", "backup_previous_keys"):
        assert spec[secret]["no_log"] is True
    assert spec["mode"]["choices"] == ["put", "get"]


def test_credentials_and_the_key_come_from_the_environment_as_for_backup_offsite():
    params = specs.resolve(
        dr.argument_spec(),
        {"bucket": BUCKET, "mode": "get"},
        {"AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "s3cr3t", backup_keys.ENV_KEY: KEY},
    )
    assert (params["access_key"], params["secret_key"], params["backup_key"]) == ("AKIA", "s3cr3t", KEY)
