# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Engine of tokotani.dr.offsite_object: one local file into the bucket, written once, locked when it can be.

What a breach response keeps (the evidence bundle) and what a recovery reports must outlive the server and
whoever broke into it. So a put never replaces an object: the same bytes under the same name change nothing,
other bytes under it are refused. When the bucket has S3 Object Lock, the object gets a retention
(GOVERNANCE or COMPLIANCE, O(retention_days)) that nobody holding the server's keys can shorten; what the
bucket answered is read back and reported, never assumed.

Everything read back (the head of an existing object, the bucket's lock configuration) is checked for type
before it is used: the bucket may hold what an intruder wrote.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import time

from ansible_collections.tokotani.dr.plugins.module_utils import s3_offsite
from ansible_collections.tokotani.dr.plugins.module_utils.s3_offsite import OffsiteError

# A name under the prefix: up to 8 segments of safe characters, none starting with a dot (no "..", no hidden).
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}(/[A-Za-z0-9][A-Za-z0-9._-]{0,199}){0,7}$")
LOCK_MODES = {"governance": "GOVERNANCE", "compliance": "COMPLIANCE"}
OBJECT_LOCK = ("auto", "required", "off")
MAX_RETENTION_DAYS = 36500
SHA256_META = s3_offsite.SHA256_META
_NO_LOCK_CODES = (
    "ObjectLockConfigurationNotFoundError",
    "ObjectLockConfigurationNotFound",
    "NoSuchObjectLockConfiguration",
)


def check(params):
    """Refuse bad options before anything is read or sent."""
    name = params.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise OffsiteError(
            "invalid",
            f"name must be a relative key of letters, digits, '.', '_', '-' and up to 8 '/'-separated segments, "
            f"none starting with a dot (got {name!r})",
        )
    days = params.get("retention_days") or 0
    if not 0 <= days <= MAX_RETENTION_DAYS:
        raise OffsiteError("invalid", f"retention_days must be between 0 and {MAX_RETENTION_DAYS} (got {days})")
    if params.get("object_lock") not in OBJECT_LOCK:
        raise OffsiteError("invalid", f"object_lock must be one of {', '.join(OBJECT_LOCK)}")
    if params.get("lock_mode") not in LOCK_MODES:
        raise OffsiteError("invalid", f"lock_mode must be one of {', '.join(LOCK_MODES)}")
    src = params.get("src")
    if not src or not os.path.isfile(src) or os.path.islink(src):
        raise OffsiteError("invalid", f"src {src!r} is not a regular file")


def file_sha256(path):
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def bucket_lock(store):
    """{enabled, default_mode, default_days} of the bucket's Object Lock configuration (types checked)."""
    try:
        answer = store.client.get_object_lock_configuration(Bucket=store.bucket)
    except Exception as err:
        if s3_offsite.error_code(err) in _NO_LOCK_CODES:
            return {"enabled": False, "default_mode": None, "default_days": None}
        raise s3_offsite.describe_error(
            err, store.bucket, None, store.endpoint, "read the Object Lock configuration of"
        ) from err
    conf = answer.get("ObjectLockConfiguration") if isinstance(answer, dict) else None
    conf = conf if isinstance(conf, dict) else {}
    rule = conf.get("Rule")
    retention = rule.get("DefaultRetention") if isinstance(rule, dict) else None
    retention = retention if isinstance(retention, dict) else {}
    mode = retention.get("Mode") if retention.get("Mode") in LOCK_MODES.values() else None
    days = retention.get("Days")
    years = retention.get("Years")
    if not isinstance(days, int) or isinstance(days, bool):
        days = years * 365 if isinstance(years, int) and not isinstance(years, bool) else None
    return {"enabled": conf.get("ObjectLockEnabled") == "Enabled", "default_mode": mode, "default_days": days}


def _iso(when):
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _lock_of(head):
    """(mode, retain_until epoch) an object's head says, or (None, None); types checked."""
    mode = head.get("ObjectLockMode")
    until = head.get("ObjectLockRetainUntilDate")
    if mode not in LOCK_MODES.values() or not isinstance(until, datetime.datetime):
        return None, None
    if until.tzinfo is None:
        until = until.replace(tzinfo=datetime.UTC)
    return mode, until.timestamp()


def _meta_sha256(head):
    meta = head.get("Metadata")
    value = meta.get(SHA256_META) if isinstance(meta, dict) else None
    return value if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) else None


def _result(store, key, stored, head, lock_conf, *, changed, warnings):
    """The module's result; stored is {sha256, size} of the file."""
    sha256, size = stored["sha256"], stored["size"]
    mode, until = _lock_of(head or {})
    version = (head or {}).get("VersionId")
    return {
        "changed": changed,
        "bucket": store.bucket,
        "key": key,
        "url": s3_offsite.s3_url(store.bucket, key),
        "sha256": sha256,
        "size": size,
        "version_id": version if isinstance(version, str) else None,
        "object_lock": {
            "bucket_enabled": lock_conf["enabled"],
            "bucket_default_mode": lock_conf["default_mode"],
            "bucket_default_days": lock_conf["default_days"],
            "mode": mode.lower() if mode else None,
            "retain_until": _iso(datetime.datetime.fromtimestamp(until, datetime.UTC)) if until else None,
            "retain_until_epoch": until,
            "locked": mode is not None,
        },
        "warnings": warnings,
    }


def put(params, check_mode=False, store=None, now=time.time):
    """Put params['src'] at <prefix>/<name>: write-once, sha256 in metadata and checked by the endpoint, locked."""
    check(params)
    store = store or s3_offsite.Store(params)
    store.check_bucket()
    sha256, size = file_sha256(params["src"])
    stored = {"sha256": sha256, "size": size}
    key = s3_offsite.object_key(store.prefix, params["name"])
    warnings = []
    lock_conf = (
        {"enabled": False, "default_mode": None, "default_days": None}
        if params["object_lock"] == "off"
        else bucket_lock(store)
    )
    existing = store.head(key)
    if existing is not None:
        theirs = _meta_sha256(existing)
        if theirs == sha256 and existing.get("ContentLength") == size:
            return _result(store, key, stored, existing, lock_conf, changed=False, warnings=warnings)
        raise OffsiteError(
            "conflict",
            f"{s3_offsite.s3_url(store.bucket, key)} already holds another object "
            f"(sha256 {theirs or 'not recorded'}, not {sha256}): an object written here is never replaced. "
            "Nothing was uploaded; choose another name.",
            key=key,
        )
    if params["object_lock"] == "required" and not lock_conf["enabled"]:
        raise OffsiteError(
            "object_lock_missing",
            f"the bucket {store.bucket} has no Object Lock, and object_lock=required: nothing was uploaded. "
            "Object Lock can only be enabled on a bucket created with it (amazon.aws.s3_bucket "
            "object_lock_enabled: true), or use object_lock=auto to store it unlocked.",
        )
    extra = {"Metadata": {SHA256_META: sha256}, "ChecksumAlgorithm": "SHA256"}
    if params.get("content_type"):
        extra["ContentType"] = params["content_type"]
    days = params.get("retention_days") or 0
    wants_lock = lock_conf["enabled"] and days > 0
    if wants_lock:
        until = datetime.datetime.fromtimestamp(now() + days * 86400, datetime.UTC).replace(microsecond=0)
        extra.update(ObjectLockMode=LOCK_MODES[params["lock_mode"]], ObjectLockRetainUntilDate=until)
    elif params["object_lock"] == "auto" and not lock_conf["enabled"]:
        warnings.append(
            f"the bucket {store.bucket} has no Object Lock: {key} is stored without retention, and whoever holds "
            "keys that may delete it can remove it"
        )
    elif lock_conf["enabled"] and not lock_conf["default_mode"]:
        warnings.append(
            f"retention_days is 0 and the bucket {store.bucket} has no default retention: {key} is not locked"
        )
    if check_mode:
        planned = _result(store, key, stored, None, lock_conf, changed=True, warnings=warnings)
        if wants_lock:
            planned["object_lock"].update(
                mode=params["lock_mode"], retain_until=_iso(until), retain_until_epoch=until.timestamp(), locked=True
            )
        return planned
    job = s3_offsite._upload_job(store, params["src"], key, extra)
    store.run_transfers([job], store.transfer_config(size), "upload")
    head = store.head(key)
    if head is None or head.get("ContentLength") != size or _meta_sha256(head) != sha256:
        raise OffsiteError(
            "checksum_mismatch",
            f"{s3_offsite.s3_url(store.bucket, key)} does not read back as what was uploaded "
            f"({size} bytes, sha256 {sha256})",
            key=key,
        )
    result = _result(store, key, stored, head, lock_conf, changed=True, warnings=warnings)
    if wants_lock and not result["object_lock"]["locked"]:
        raise OffsiteError(
            "object_lock_missing",
            f"{result['url']} was uploaded but the bucket did not lock it (no retention on the object, though "
            f"the bucket says Object Lock is enabled): it is stored, unprotected",
            key=key,
            version_id=result["version_id"],
        )
    return result
