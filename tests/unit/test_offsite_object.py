"""Unit tests of offsite_object's checks of what it is given and of what the bucket answers (crafted answers).

The uploads themselves, the lock and the refused delete are proven against moto in
tests/integration/test_offsite_object.py.
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

import pytest
from botocore import exceptions as bexc

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.tokotani.dr.plugins.module_utils import offsite_object as oo  # noqa: E402
from ansible_collections.tokotani.dr.plugins.module_utils.s3_offsite import OffsiteError  # noqa: E402

SHA = "b" * 64


def params(tmp_path, **extra):
    src = tmp_path / "bundle.tar.gz"
    src.write_bytes(b"evidence")
    base = {
        "src": str(src),
        "name": "evidence/bundle.tar.gz",
        "retention_days": 0,
        "lock_mode": "governance",
        "object_lock": "auto",
    }
    base.update(extra)
    return base


@pytest.mark.parametrize(
    "name",
    ["evidence/e.tar.gz", "e", "a/b/c/d/e/f/g/h", "prod_1/evidence-x.2026.tar.gz"],
)
def test_names_accepted(tmp_path, name):
    oo.check(params(tmp_path, name=name))


@pytest.mark.parametrize(
    "name",
    [
        *["", "/e", "e/", "../e", "a/../e", "a/.e", ".env", "a//b", "a b", "a\nb", "e\n", "a/b/c/d/e/f/g/h/i"],
        *["é", None, 7, "x" * 201],
    ],
)
def test_names_refused(tmp_path, name):
    with pytest.raises(OffsiteError, match="name must be a relative key"):
        oo.check(params(tmp_path, name=name))


def test_retention_bounds(tmp_path):
    with pytest.raises(OffsiteError, match="retention_days must be between 0 and 36500"):
        oo.check(params(tmp_path, retention_days=-1))
    with pytest.raises(OffsiteError, match="retention_days must be between 0 and 36500"):
        oo.check(params(tmp_path, retention_days=36501))


def test_src_must_be_a_regular_file(tmp_path):
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "bundle.tar.gz")
    p = params(tmp_path)
    with pytest.raises(OffsiteError, match="is not a regular file"):
        oo.check(dict(p, src=str(link)))
    with pytest.raises(OffsiteError, match="is not a regular file"):
        oo.check(dict(p, src=str(tmp_path)))


class FakeStore:
    bucket = "b"
    endpoint = None

    def __init__(self, answer=None, error=None):
        self.client = self
        self._answer, self._error = answer, error

    def get_object_lock_configuration(self, Bucket):
        if self._error:
            raise self._error
        return self._answer


def client_error(code, status=404):
    return bexc.ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetObjectLockConfiguration",
    )


def test_bucket_without_lock_configuration():
    assert oo.bucket_lock(FakeStore(error=client_error("ObjectLockConfigurationNotFoundError"))) == {
        "enabled": False,
        "default_mode": None,
        "default_days": None,
    }


def test_bucket_lock_other_errors_are_reported():
    with pytest.raises(OffsiteError) as err:
        oo.bucket_lock(FakeStore(error=client_error("AccessDenied", 403)))
    assert "Object Lock configuration" in err.value.msg


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"ObjectLockConfiguration": {"ObjectLockEnabled": "Enabled"}}, (True, None, None)),
        (
            {
                "ObjectLockConfiguration": {
                    "ObjectLockEnabled": "Enabled",
                    "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 30}},
                }
            },
            (True, "COMPLIANCE", 30),
        ),
        (
            {
                "ObjectLockConfiguration": {
                    "ObjectLockEnabled": "Enabled",
                    "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Years": 2}},
                }
            },
            (True, "GOVERNANCE", 730),
        ),
        # crafted answers: wrong types and values are ignored, never used
        ({"ObjectLockConfiguration": {"ObjectLockEnabled": "enabled"}}, (False, None, None)),
        ({"ObjectLockConfiguration": "Enabled"}, (False, None, None)),
        ({"ObjectLockConfiguration": {"ObjectLockEnabled": "Enabled", "Rule": ["x"]}}, (True, None, None)),
        (
            {
                "ObjectLockConfiguration": {
                    "ObjectLockEnabled": "Enabled",
                    "Rule": {"DefaultRetention": {"Mode": "'; DROP", "Days": "30"}},
                }
            },
            (True, None, None),
        ),
        (
            {
                "ObjectLockConfiguration": {
                    "ObjectLockEnabled": "Enabled",
                    "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": True}},
                }
            },
            (True, "GOVERNANCE", None),
        ),
        (None, (False, None, None)),
        ([], (False, None, None)),
    ],
)
def test_bucket_lock_answers(answer, expected):
    got = oo.bucket_lock(FakeStore(answer=answer))
    assert (got["enabled"], got["default_mode"], got["default_days"]) == expected


def test_lock_and_sha256_of_a_head_are_type_checked():
    until = datetime.datetime(2027, 1, 1, tzinfo=datetime.UTC)
    assert oo._lock_of({"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": until}) == (
        "COMPLIANCE",
        until.timestamp(),
    )
    assert oo._lock_of({"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": "2027-01-01"}) == (None, None)
    assert oo._lock_of({"ObjectLockMode": "LEGAL", "ObjectLockRetainUntilDate": until}) == (None, None)
    assert oo._meta_sha256({"Metadata": {"sha256": SHA}}) == SHA
    assert oo._meta_sha256({"Metadata": {"sha256": SHA.upper()}}) is None
    assert oo._meta_sha256({"Metadata": {"sha256": SHA + "\n"}}) is None
    assert oo._meta_sha256({"Metadata": "sha256"}) is None
    assert oo._meta_sha256({}) is None
