"""tokotani.dr.offsite_object against a real S3 API (moto server over HTTP on loopback), through ansible.

The evidence of a breach goes offsite with it: written once, its sha256 checked by the endpoint and read back,
locked by S3 Object Lock when the bucket has it (and the lock proven by a delete that S3 refuses).
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
from pathlib import Path

import pytest
from backup_support import run_module
from s3_support import serve_moto, verbose_outputs


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    yield from serve_moto(tmp_path_factory.mktemp("moto_object"))


def locked_bucket(moto, default_days: int | None = None) -> str:
    name = "tt-lock-" + secrets.token_hex(5)
    client = moto.client()
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    if default_days:
        client.put_object_lock_configuration(
            Bucket=name,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": default_days}},
            },
        )
    return name


def evidence(tmp_path: Path, size: int = 200_000) -> tuple[Path, str]:
    path = tmp_path / "evidence-shop1-20261208T031500Z.tar.gz"
    data = secrets.token_bytes(size)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def put(moto, bucket: str, src: Path, check: bool = False, **extra) -> dict:
    args = moto.args(bucket, src=str(src), name=f"evidence/{src.name}", prefix="prod/shop1", **extra)
    return run_module("offsite_object", args, check=check)


def test_locked_in_compliance_mode_and_a_delete_is_refused(moto, tmp_path):
    bucket = locked_bucket(moto)
    src, digest = evidence(tmp_path)
    before = datetime.datetime.now(datetime.UTC)
    result = put(moto, bucket, src, retention_days=90, lock_mode="compliance", object_lock="required")
    assert result["_rc"] == 0, result
    assert result["changed"] is True
    assert result["key"] == f"prod/shop1/evidence/{src.name}"
    assert result["sha256"] == digest and result["size"] == src.stat().st_size
    lock = result["object_lock"]
    assert lock["bucket_enabled"] is True and lock["locked"] is True and lock["mode"] == "compliance"
    until = datetime.datetime.fromisoformat(lock["retain_until"].replace("Z", "+00:00"))
    assert datetime.timedelta(days=89, hours=23) < until - before < datetime.timedelta(days=90, minutes=5)

    client = moto.client()
    # (moto's GetObjectRetention answers 500; the object's head carries the same retention)
    head = client.head_object(Bucket=bucket, Key=result["key"], VersionId=result["version_id"])
    assert head["ObjectLockMode"] == "COMPLIANCE" and head["ObjectLockRetainUntilDate"] == until
    body = client.get_object(Bucket=bucket, Key=result["key"])["Body"].read()
    assert hashlib.sha256(body).hexdigest() == digest
    # What an intruder holding the server's keys would try: S3 refuses to delete the locked version.
    with pytest.raises(client.exceptions.ClientError) as refused:
        client.delete_object(Bucket=bucket, Key=result["key"], VersionId=result["version_id"])
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert hashlib.sha256(client.get_object(Bucket=bucket, Key=result["key"])["Body"].read()).hexdigest() == digest


def test_same_bytes_again_change_nothing_other_bytes_are_refused(moto, tmp_path):
    bucket = locked_bucket(moto)
    src, digest = evidence(tmp_path)
    first = put(moto, bucket, src, retention_days=1)
    assert first["_rc"] == 0 and first["changed"] is True, first
    assert first["object_lock"]["mode"] == "governance"
    again = put(moto, bucket, src, retention_days=1)
    assert again["_rc"] == 0 and again["changed"] is False, again
    assert again["version_id"] == first["version_id"]

    src.write_bytes(b"what an intruder would rather the evidence said")
    other = put(moto, bucket, src, retention_days=1)
    assert other["_rc"] != 0
    assert other["error"] == "conflict"
    assert "already holds another object" in other["msg"] and "never replaced" in other["msg"]
    assert digest in other["msg"]
    versions = moto.client().list_object_versions(Bucket=bucket, Prefix=first["key"])["Versions"]
    assert [v["VersionId"] for v in versions] == [first["version_id"]]


def test_bucket_without_object_lock(moto, tmp_path):
    bucket = moto.bucket()
    src, digest = evidence(tmp_path)
    refused = put(moto, bucket, src, retention_days=30, object_lock="required")
    assert refused["_rc"] != 0 and refused["error"] == "object_lock_missing"
    assert f"the bucket {bucket} has no Object Lock" in refused["msg"] and "nothing was uploaded" in refused["msg"]
    assert moto.keys(bucket) == {}

    stored = put(moto, bucket, src, retention_days=30)
    assert stored["_rc"] == 0 and stored["changed"] is True, stored
    assert stored["object_lock"] == {
        "bucket_enabled": False,
        "bucket_default_mode": None,
        "bucket_default_days": None,
        "mode": None,
        "retain_until": None,
        "retain_until_epoch": None,
        "locked": False,
    }
    assert any("has no Object Lock" in w and "without retention" in w for w in stored.get("warnings", []))
    head = moto.client().head_object(Bucket=bucket, Key=stored["key"])
    assert head["Metadata"]["sha256"] == digest


def test_bucket_default_retention_applies(moto, tmp_path):
    bucket = locked_bucket(moto, default_days=7)
    src, _digest = evidence(tmp_path)
    result = put(moto, bucket, src)
    assert result["_rc"] == 0, result
    lock = result["object_lock"]
    assert lock["bucket_default_mode"] == "GOVERNANCE" and lock["bucket_default_days"] == 7
    assert lock["locked"] is True and lock["mode"] == "governance"


def test_check_mode_uploads_nothing(moto, tmp_path):
    bucket = locked_bucket(moto)
    src, digest = evidence(tmp_path)
    planned = put(moto, bucket, src, check=True, retention_days=3, lock_mode="compliance")
    assert planned["_rc"] == 0 and planned["changed"] is True, planned
    assert planned["sha256"] == digest
    assert planned["object_lock"]["locked"] is True and planned["object_lock"]["mode"] == "compliance"
    assert moto.keys(bucket) == {}


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../escape.tar.gz", "segments"),
        ("evidence/../../x", "segments"),
        ("/abs/path", "segments"),
        ("evidence/.hidden", "segments"),
        ("evidence/a b", "segments"),
        ("evidence/x\nSet-Cookie: y", "segments"),
    ],
)
def test_hostile_names_are_refused_before_anything_is_sent(moto, tmp_path, name, why):
    bucket = moto.bucket()
    src, _digest = evidence(tmp_path, size=10)
    result = run_module("offsite_object", moto.args(bucket, src=str(src), name=name))
    assert result["_rc"] != 0
    assert "name must be a relative key" in result["msg"] and why in result["msg"]
    assert moto.keys(bucket) == {}


def test_a_symbolic_link_is_not_uploaded(moto, tmp_path):
    bucket = moto.bucket()
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$...")
    link = tmp_path / "evidence.tar.gz"
    link.symlink_to(secret)
    result = run_module("offsite_object", moto.args(bucket, src=str(link), name="evidence/e.tar.gz"))
    assert result["_rc"] != 0 and "is not a regular file" in result["msg"]
    assert moto.keys(bucket) == {}


def test_the_secret_key_is_not_in_the_output_at_vvv(moto, tmp_path):
    bucket = locked_bucket(moto)
    src, _digest = evidence(tmp_path, size=100)
    args = moto.args(bucket, src=str(src), name="evidence/vvv.tar.gz", retention_days=1)
    (output,) = verbose_outputs("offsite_object", [(args, {})])
    assert moto.secret_key not in output
    assert "evidence/vvv.tar.gz" in output
