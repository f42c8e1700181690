# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Offsite copies of backups on any S3 API: push, pull, list, prune.

The object layout under ``<prefix>/`` mirrors a local backup directory::

    <prefix>/backup_2026-01-05_02-00-00.manifest.json       the manifest, byte for byte
    <prefix>/backup_2026-01-05_02-00-00.sql.gz              a single-file backup
    <prefix>/backup_2026-01-05_02-00-00.dir/<relative path> each file of a directory backup

Every data object carries the sha256 from the manifest in its metadata (``x-amz-meta-sha256``;
for a directory backup, each file's own sha256) and is uploaded with an S3 additional checksum
(CRC32 by default) that the endpoint checks on every part. The manifest is uploaded last and
deleted first: it is the commit point, so an interrupted push or prune never leaves something
that lists as a complete backup. Data objects without a manifest are listed as incomplete.

A pull downloads into ``<backup_dir>/<data>.partial``, verifies the sha256 against the manifest
(every file and the listing digest for a directory backup), writes the manifest atomically, and
renames the data into place last - the same commit order as ``postgresql_backup``. Any failure
removes the ``.partial``: a pull that does not verify leaves nothing behind. With ``backup=latest`` and
``fallback``, a copy that is damaged or gone (FALLBACK_KINDS) is passed over and the previous valid one tried.

With a backup key (``backup_key``) and ``client_encryption`` (the default), every data object is
encrypted on this host as it is read for the upload (offsite_crypto: AES-256-GCM in 1 MiB chunks,
one key per object): the bucket holds only ciphertext and the (signed) manifest. The listing tells
an encrypted copy from a plain one by the objects' sizes; a pull reads each object's header first
(a missing key fails before anything is downloaded), authenticates and decrypts every chunk as it
arrives into the ``.partial``, and only then checks the plaintext's sha256 and renames.

Large files go up in multipart uploads through boto3's transfer manager, streaming from disk
(memory stays flat): the part size grows with the file so that a 1 TiB backup stays within
S3's 10,000 parts. botocore retries each request (standard retry mode); on top, every
operation is retried with jittered exponential backoff when the endpoint throttles, answers
with a 5xx, or drops a connection mid-way. Errors are mapped to specific, operator-facing
messages (bucket missing, access denied, endpoint unreachable, object missing, checksum mismatch).

Retention reuses ``backup_catalog.plan_retention`` on entries built from the listing, so
offsite copies follow the same rules as local ones.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import ctypes.util
import hashlib
import inspect
import json
import os
import secrets
import threading
import time
import traceback

from ansible_collections.tokotani.dr.plugins.module_utils import backup_catalog as catalog
from ansible_collections.tokotani.dr.plugins.module_utils import backup_keys
from ansible_collections.tokotani.dr.plugins.module_utils import offsite_crypto as crypto
from ansible_collections.tokotani.dr.plugins.module_utils.errors import DrError

try:
    import boto3
    import botocore.exceptions
    from boto3.s3.transfer import TransferConfig, create_transfer_manager
    from botocore.config import Config
    from s3transfer.utils import OSUtils
except ImportError:
    OSUtils = object
    HAS_BOTO3 = False
    BOTO3_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_BOTO3 = True
    BOTO3_IMPORT_ERROR = None

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
TIB = 1024 * GIB

MAX_PARTS = 10000
MIN_PART_SIZE = 5 * MIB
MAX_PART_SIZE = 5 * GIB
MAX_OBJECT_SIZE = 5 * TIB
DEFAULT_PART_SIZE = 16 * MIB
DEFAULT_THRESHOLD = 16 * MIB
DEFAULT_CONCURRENCY = 8
MAX_MANIFEST_BYTES = 64 * MIB
DELETE_BATCH = 1000
PULL_LOCK_KEY = "offsite-pull"
# The kinds of pull failure that mean "this offsite copy is bad" (changed, damaged, truncated or gone), not the
# endpoint, the credentials, the key, the archive tier or this host: what a pull of latest with fallback passes over.
FALLBACK_KINDS = frozenset(("checksum_mismatch", "not_authentic", "object_missing"))

SHA256_META = "sha256"
CHECKSUM_ALGORITHMS = ("CRC32", "CRC32C", "SHA256", "none")
DEFAULT_CHECKSUM = "CRC32"
ENCRYPTIONS = ("AES256", "aws:kms")
STORAGE_CLASSES = (
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
)

THROTTLING_CODES = frozenset(
    (
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    )
)
TRANSIENT_CODES = frozenset(
    ("RequestTimeout", "RequestTimeoutException", "InternalError", "ServiceUnavailable", "500", "502", "503", "504")
)
ACCESS_CODES = frozenset(
    (
        "AccessDenied",
        "403",
        "Forbidden",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AccountProblem",
        "KMS.AccessDeniedException",
    )
)
MISSING_BUCKET_CODES = frozenset(("NoSuchBucket",))
MISSING_OBJECT_CODES = frozenset(("NoSuchKey", "404", "NotFound", "NoSuchUpload"))


class OffsiteError(DrError):
    """An offsite problem with an operator-facing message and a kind a playbook can test.

    kind is one of: bucket_missing, access_denied, no_credentials, endpoint_unreachable, tls,
    object_missing, checksum_mismatch, throttled, archived, no_backup, conflict, local, invalid, s3,
    object_lock_missing (offsite_object),
    and from client-side encryption (offsite_crypto) key_missing, not_authentic.
    """

    def __init__(self, kind, msg, **details):
        super().__init__(msg, **details)
        self.kind = kind

    def to_dict(self):
        return {"msg": self.msg, "error": self.kind, **self.details}


# --------------------------------------------------------------------------- pure helpers


def part_size(size, requested=None):
    """The multipart chunk size for an object of size bytes.

    At least requested (default 16 MiB) and S3's 5 MiB minimum; raised, in whole MiB, when the
    object would need more than 10,000 parts (a 1 TiB backup gets 105 MiB parts, 9,987 of them).
    """
    if size > MAX_OBJECT_SIZE:
        raise OffsiteError(
            "invalid", f"{size} bytes is more than S3's largest object ({MAX_OBJECT_SIZE} bytes, 5 TiB)", size=size
        )
    chunk = max(int(requested or DEFAULT_PART_SIZE), MIN_PART_SIZE)
    needed = -(-int(size) // MAX_PARTS)
    if needed > chunk:
        chunk = -(-needed // MIB) * MIB
    return min(chunk, MAX_PART_SIZE)


def part_count(size, chunk):
    """Parts of a multipart upload of size bytes in chunk-byte parts (at least 1)."""
    return max(1, -(-int(size) // int(chunk)))


def normalize_prefix(prefix):
    """'' or 'a/b' (no leading/trailing slashes, no empty segments)."""
    return "/".join(part for part in str(prefix or "").split("/") if part)


def object_key(prefix, *parts):
    """The key of parts (joined with /) under prefix."""
    base = normalize_prefix(prefix)
    tail = "/".join(p.strip("/") for p in parts if p)
    return f"{base}/{tail}" if base else tail


def key_layout(prefix, doc):
    """(manifest_key, data_key, {relative path: key}) of a backup described by its manifest doc.

    data_key is the object of a single-file backup, or the key prefix (ending in /) of a
    directory backup whose files are listed in the returned dict.
    """
    manifest_key = object_key(prefix, catalog.manifest_name(doc["name"]))
    if doc["format"] == "directory":
        data_key = object_key(prefix, doc["data"]) + "/"
        files = {rel: data_key + rel for rel in sorted(doc.get("files") or {})}
    else:
        data_key = object_key(prefix, doc["data"])
        files = {}
    return manifest_key, data_key, files


def s3_url(bucket, key=""):
    return f"s3://{bucket}/{key}"


def jittered_delay(attempt, base=0.5, cap=20.0):
    """Full-jitter exponential backoff: a random delay in [0, min(cap, base * 2**attempt)]."""
    return secrets.SystemRandom().uniform(0, min(cap, base * (2**attempt)))


def error_code(err):
    """The S3 error code of a botocore ClientError (or None)."""
    response = getattr(err, "response", None)
    if not isinstance(response, dict):
        return None
    code = (response.get("Error") or {}).get("Code")
    if code:
        return str(code)
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return str(status) if status else None


def is_retryable(err):
    """Throttling, 5xx and connections dropped mid-way: worth another attempt of the whole operation.

    An endpoint that refuses connections or cannot be resolved is not retried here: botocore
    has already retried those requests (``retries``) and the operator needs the message now.
    """
    if not HAS_BOTO3:
        return False
    cause = _root_cause(err)
    if _is_client_error(cause):
        return error_code(cause) in THROTTLING_CODES or error_code(cause) in TRANSIENT_CODES
    dropped = (
        botocore.exceptions.ConnectionClosedError,
        botocore.exceptions.ReadTimeoutError,
        botocore.exceptions.ResponseStreamingError,
        botocore.exceptions.IncompleteReadError,
    )
    if isinstance(cause, dropped):
        return True
    return type(cause).__name__ == "RetriesExceededError"


def _is_client_error(err):
    """A botocore ClientError, or anything shaped like one (a DeleteObjects per-key error)."""
    response = getattr(err, "response", None)
    return isinstance(response, dict) and isinstance(response.get("Error"), dict)


def _root_cause(err):
    """Unwrap s3transfer/boto3 wrappers (RetriesExceededError.last_exception, S3UploadFailedError.__cause__)."""
    seen = 0
    while seen < 5:
        inner = getattr(err, "last_exception", None) or (
            err.__cause__ if type(err).__name__ in ("S3UploadFailedError", "S3TransferFailedError") else None
        )
        if inner is None or inner is err:
            return err
        err = inner
        seen += 1
    return err


CLIENT_ERRORS = (
    (
        MISSING_BUCKET_CODES,
        "bucket_missing",
        "the bucket {bucket} does not exist{at}: create it (or fix bucket, endpoint_url and region)",
    ),
    (
        ("InvalidAccessKeyId",),
        "access_denied",
        "access denied{at}: the access key is not known there (InvalidAccessKeyId); check access_key / "
        "AWS_ACCESS_KEY_ID",
    ),
    (
        ("SignatureDoesNotMatch",),
        "access_denied",
        "access denied{at}: the secret key does not match the access key (SignatureDoesNotMatch); check "
        "secret_key / AWS_SECRET_ACCESS_KEY",
    ),
    (
        ("ExpiredToken", "InvalidToken", "TokenRefreshRequired"),
        "access_denied",
        "access denied{at}: the session token is expired or invalid ({code}); refresh the credentials",
    ),
    (
        ACCESS_CODES,
        "access_denied",
        "access denied to {where}{at} while trying to {action} ({code}): the credentials need s3:ListBucket, "
        "s3:GetObject, s3:PutObject and s3:DeleteObject on the bucket and prefix (and kms:GenerateDataKey and "
        "kms:Decrypt with aws:kms encryption)",
    ),
    (MISSING_OBJECT_CODES, "object_missing", "{where} does not exist{at}"),
    (
        ("InvalidObjectState",),
        "archived",
        "{where} is archived (GLACIER/DEEP_ARCHIVE storage class): restore it in S3 first, then pull again",
    ),
    (
        ("PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"),
        "s3",
        "the bucket {bucket} is in another region than the one used{at} ({code}: {message}): set region",
    ),
    (
        THROTTLING_CODES | TRANSIENT_CODES,
        "throttled",
        "the endpoint{at} kept answering {code} while trying to {action} {where}, after every retry: try again "
        "later, or lower concurrency",
    ),
)


def _transport_errors():
    """(exception classes, kind, message) for errors below HTTP; built lazily (botocore may be missing)."""
    exc = botocore.exceptions
    return (
        (
            (exc.SSLError,),
            "tls",
            "TLS verification of the S3 endpoint{at} failed ({cause}): set ca_bundle to the CA that signed its "
            "certificate (validate_certs=false only for a throwaway sandbox)",
        ),
        (
            (exc.NoCredentialsError, exc.PartialCredentialsError),
            "no_credentials",
            "no usable AWS credentials ({cause}): set access_key and secret_key (or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY), a profile, or run where an instance or task role is available",
        ),
        ((exc.ProfileNotFound,), "no_credentials", "the AWS profile is not configured: {cause}"),
        (
            (exc.EndpointConnectionError, exc.ConnectTimeoutError),
            "endpoint_unreachable",
            "the S3 endpoint {url} is unreachable ({cause}) while trying to {action} {where}: check endpoint_url "
            "and region, the network, and that the service is running",
        ),
        (
            (
                exc.ConnectionClosedError,
                exc.ReadTimeoutError,
                exc.ResponseStreamingError,
                exc.IncompleteReadError,
                exc.HTTPClientError,
            ),
            "endpoint_unreachable",
            "the S3 endpoint {url} dropped the connection while trying to {action} {where} ({name}: {cause}), "
            "after every retry: is the service still running?",
        ),
        ((exc.ParamValidationError,), "invalid", "invalid S3 request to {action} {where}: {cause}"),
    )


def describe_error(err, bucket, key=None, endpoint=None, action="access"):
    """Map a boto3/botocore exception to an OffsiteError with a specific message and kind."""
    if isinstance(err, (OffsiteError, crypto.EncryptionError)):
        return err if isinstance(err, OffsiteError) else from_crypto(err)
    cause = _root_cause(err)
    ctx = {
        "bucket": bucket,
        "where": s3_url(bucket, key or ""),
        "at": f" at {endpoint}" if endpoint else "",
        "url": endpoint or (getattr(cause, "kwargs", None) or {}).get("endpoint_url") or "(default endpoint)",
        "action": action,
        "name": type(cause).__name__,
        "cause": cause,
    }
    details = {"bucket": bucket, "key": key}
    if _is_client_error(cause):
        code = error_code(cause) or "unknown"
        ctx.update(code=code, message=(cause.response.get("Error") or {}).get("Message") or str(cause))
        details["code"] = code
        for codes, kind, template in CLIENT_ERRORS:
            if code in codes:
                return OffsiteError(kind, template.format(**ctx), **details)
        return OffsiteError("s3", "S3 refused to {action} {where}{at}: {code}: {message}".format(**ctx), **details)
    if HAS_BOTO3:
        for classes, kind, template in _transport_errors():
            if isinstance(cause, classes):
                return OffsiteError(kind, template.format(**ctx), **details)
    if isinstance(cause, OSError):
        return OffsiteError(
            "local", "local I/O failed while trying to {action} {where}: {cause}".format(**ctx), key=key
        )
    return OffsiteError("s3", "could not {action} {where}{at}: {name}: {cause}".format(**ctx), **details)


# --------------------------------------------------------------------------- catalog of a listing


def _remote_entry(name, manifest_key):
    return catalog.blank_entry(
        name,
        kind="managed",
        data=None,
        manifest_key=manifest_key,
        data_key=None,
        storage_class=None,
        last_modified=None,
        objects=0,
        encrypted=None,
        key_id=None,
    )


def split_listing(objects, prefix):
    """Sort listed keys into manifests, data (by data name) and foreign keys.

    objects maps key -> {size, last_modified (epoch), storage_class}. Returns
    (manifests {stem: key}, data {data name: {relative path or '': key}}, foreign [keys]).
    """
    base = object_key(prefix, "x")[:-1]
    manifests = {}
    data = {}
    foreign = []
    for key in sorted(objects):
        rel = key[len(base) :] if key.startswith(base) else None
        if not rel:
            foreign.append(key)
            continue
        top, sep, rest = rel.partition("/")
        if not sep and top.endswith(catalog.MANIFEST_SUFFIX) and catalog.parse_name(top):
            manifests[top[: -len(catalog.MANIFEST_SUFFIX)]] = key
        elif catalog.parse_name(top) and not top.endswith(catalog.MANIFEST_SUFFIX) and (not sep or rest):
            data.setdefault(top, {})[rest] = key
        else:
            foreign.append(key)
    return manifests, data, foreign


def build_entries(objects, prefix, docs, keys=None):
    """Catalog entries (newest first) and incomplete data from a listing and the manifests' contents.

    docs maps manifest key -> parsed manifest (or a str: why it could not be read). An entry is
    valid when its manifest is well-formed and every data object is there with the manifest's
    size, and, with keys (a backup_keys.KeyRing), signed by one of them. Returns (entries,
    incomplete): incomplete lists data without a manifest (an interrupted push or prune) as
    {name, keys, size, last_modified}.
    """
    manifests, data, _foreign = split_listing(objects, prefix)
    entries = []
    claimed = set()
    for stem, manifest_key in sorted(manifests.items()):
        entry = _remote_entry(stem, manifest_key)
        doc = docs.get(manifest_key)
        mobj = objects.get(manifest_key) or {}
        entry["last_modified"] = catalog.epoch_to_iso(mobj.get("last_modified"))
        if not isinstance(doc, dict):
            entry["problems"].append(f"the manifest {manifest_key} cannot be read: {doc or 'not fetched'}")
            entries.append(entry)
            continue
        problems = catalog.manifest_problems(doc)
        if problems:
            entry["problems"].extend(problems)
            entries.append(entry)
            continue
        entry["manifest"] = doc
        claimed.add(doc["data"])
        _fill_entry(entry, doc, prefix, objects, data.get(doc["data"], {}))
        backup_keys.check_entry(entry, keys, f"the offsite backup {stem}")
        entries.append(entry)
    entries.sort(key=lambda e: (e["timestamp"] or 0, e["name"]), reverse=True)
    incomplete = []
    for name, parts in sorted(data.items()):
        if name in claimed:
            continue
        infos = [objects[k] for k in parts.values()]
        incomplete.append(
            {
                "name": name,
                "keys": sorted(parts.values()),
                "size": sum(int(i.get("size") or 0) for i in infos),
                "last_modified": max((i.get("last_modified") or 0) for i in infos) if infos else None,
            }
        )
    return entries, incomplete


def _fill_entry(entry, doc, prefix, objects, present):
    manifest_key, data_key, files = key_layout(prefix, doc)
    catalog.fill_from_manifest(entry, doc, entry["name"], manifest_key)
    entry.update(data=doc["data"], data_key=data_key, objects=len(present))
    forms = set()
    if doc["format"] == "directory":
        missing = [rel for rel in files if rel not in present]
        extra = sorted(rel for rel in present if rel not in files)
        if missing:
            entry["problems"].append(f"objects missing under {data_key}: {', '.join(missing[:10])}")
        if extra:
            entry["problems"].append(f"unexpected objects under {data_key}: {', '.join(extra[:10])}")
        for rel in files:
            obj = objects.get(files[rel])
            want = doc["files"][rel].get("size")
            if obj is not None:
                forms.add(_size_form(entry, files[rel], obj.get("size"), want))
        classes = {objects[k].get("storage_class") for k in files.values() if k in objects}
        entry["storage_class"] = classes.pop() if len(classes) == 1 else None
    else:
        obj = objects.get(data_key)
        if obj is None or "" not in present:
            entry["problems"].append(f"the data object {data_key} is missing")
        else:
            forms.add(_size_form(entry, data_key, obj.get("size"), doc["size"]))
            entry["storage_class"] = obj.get("storage_class")
    forms.discard(None)
    if len(forms) > 1:
        entry["problems"].append(f"some objects under {data_key} are encrypted client-side and others are not")
    elif forms:
        entry["encrypted"] = forms.pop() == "encrypted"
    entry["valid"] = not entry["problems"]


def _size_form(entry, key, size, want):
    """plain or encrypted (the object's size against the manifest's), or None with the problem recorded."""
    form = crypto.object_form(size, want)
    if form is None:
        encrypted = f" ({crypto.encrypted_size(want)} encrypted)" if isinstance(want, int) else ""
        entry["problems"].append(f"{key} has {size} bytes, the manifest says {want}{encrypted}")
    return form


def public_entry(entry, now):
    out = {k: v for k, v in entry.items() if k not in ("manifest", "kind")}
    if entry.get("timestamp") is not None:
        out["age_seconds"] = max(0, int(now.timestamp() - entry["timestamp"]))
    return out


WRITTEN_AFTER = "written to the bucket at"


def mark_written_after(entries, objects, prefix, limit):
    """Make invalid, for this pull, each entry whose manifest or data reached the bucket at or after limit.

    LastModified is the bucket's own clock, which no client sets. After a breach, a backup whose manifest says it
    ended before the breach but that was written to the bucket after it may be the intruder's: signed with a key
    read on the server, pushed with the server's keys. Returns the entries marked.
    """
    cutoff = limit.timestamp()
    marked = []
    for entry in entries:
        keys = [entry["manifest_key"]]
        doc = entry.get("manifest")
        if isinstance(doc, dict):
            _manifest_key, data_key, files = key_layout(prefix, doc)
            keys.extend(files.values() if files else [data_key])
        times = [
            objects[k]["last_modified"]
            for k in keys
            if isinstance(objects.get(k), dict) and isinstance(objects[k].get("last_modified"), (int, float))
        ]
        if not times:
            continue
        written = max(times)
        entry["written_at"] = catalog.epoch_to_iso(written)
        if written >= cutoff:
            entry["problems"].append(
                f"{WRITTEN_AFTER} {entry['written_at']}, not before {catalog.iso(limit)} (written_before): "
                "it may have been made or replaced by whoever was in, and is not used"
            )
            entry["valid"] = False
            marked.append(entry)
    return marked


def select_entry(entries, backup="latest", before=None, database=None, accept_suspicious=False):
    """The entry a pull means: by name (stem, data or manifest name), or the newest valid (before a time)
    that is not suspicious (unless accept_suspicious).

    Returns (entry, skipped) where skipped lists newer entries passed over (invalid, or suspicious).
    """
    pool = [e for e in entries if database is None or e["database"] == database]
    if backup and backup != "latest":
        name = os.path.basename(str(backup).rstrip("/"))
        if name.endswith(catalog.MANIFEST_SUFFIX):
            name = name[: -len(catalog.MANIFEST_SUFFIX)]
        for entry in pool:
            if name in (entry["name"], entry["data"]):
                return entry, []
        return None, []
    chosen = catalog.newest(pool, before=before, accept_suspicious=accept_suspicious)
    skipped = []
    for entry in pool:
        if entry is chosen:
            break
        if before is not None and entry["timestamp"] is not None and entry["timestamp"] >= before.timestamp():
            continue
        if not entry["valid"] or entry.get("suspicious"):
            skipped.append(entry)
    return chosen, skipped


def fallback_candidates(entries, chosen, count, *, before=None, database=None, accept_suspicious=False):
    """Up to count entries older than chosen that a pull of latest falls back to, newest first.

    Each is the one select_entry would pick were the ones before it gone: valid, of database, ended strictly
    before before, not suspicious unless accept_suspicious. Returns [(entry, skipped)] where skipped lists the
    entries passed over between the previous one and it (invalid, or suspicious), as select_entry does.
    """
    found = []
    rest = entries
    current = chosen
    while current is not None and len(found) < count:
        rest = _after(rest, current)
        current, skipped = select_entry(rest, "latest", before, database, accept_suspicious)
        if current is not None:
            found.append((current, skipped))
    return found


def _after(entries, entry):
    """The entries after entry (the same object) in entries; [] when it is not there."""
    for index, item in enumerate(entries):
        if item is entry:
            return entries[index + 1 :]
    return []


def retention_plan(entries, database, now, keep_days, keep_min):
    """plan_retention of backup_catalog, per database: (prune, keep) lists of (entry, reason)."""
    databases = [database] if database else sorted({e["database"] for e in entries if e["database"]})
    prune = []
    keep = []
    for db in databases:
        p, k = catalog.plan_retention(entries, db, now, keep_days=keep_days, keep_min=keep_min)
        prune.extend(p)
        keep.extend(k)
    if not database:
        keep.extend((e, "the manifest cannot be read: never pruned") for e in entries if not e["database"])
    return prune, keep


# --------------------------------------------------------------------------- connection


class Retrier:
    """Retry a whole operation with full-jitter exponential backoff while the error is retryable."""

    def __init__(self, retries=3, base=0.5, cap=20.0, sleep=time.sleep):
        self.attempts = max(1, int(retries) + 1)
        self.base = base
        self.cap = cap
        self.sleep = sleep

    def call(self, fn, *args, **kwargs):
        attempt = 0
        while True:
            try:
                return fn(*args, **kwargs)
            except Exception as err:
                attempt += 1
                if attempt >= self.attempts or not is_retryable(err):
                    raise
                self.sleep(jittered_delay(attempt - 1, self.base, self.cap))


def client_config(opts):
    """The botocore Config of the client: standard retries, timeouts, pool size, addressing, checksums."""
    kwargs = {
        "retries": {"mode": "standard", "total_max_attempts": max(1, int(opts.get("retries", 3)) + 1)},
        "connect_timeout": opts.get("connect_timeout", 10),
        "read_timeout": opts.get("read_timeout", 120),
        "max_pool_connections": max(10, int(opts.get("concurrency") or DEFAULT_CONCURRENCY) + 2),
        "s3": {"addressing_style": opts.get("addressing_style") or "auto"},
        "user_agent_extra": "tokotani.dr/backup_offsite",
    }
    if opts.get("checksum_algorithm") == "none":
        kwargs.update(request_checksum_calculation="when_required", response_checksum_validation="when_required")
    return Config(**kwargs)


def connect(opts):
    """A boto3 S3 client from the connection options (the usual credential chain fills what is not set)."""
    if not HAS_BOTO3:
        raise OffsiteError("invalid", "boto3 is required on the target host (pip install boto3)")
    try:
        session = boto3.session.Session(
            aws_access_key_id=opts.get("access_key") or None,
            aws_secret_access_key=opts.get("secret_key") or None,
            aws_session_token=opts.get("session_token") or None,
            profile_name=opts.get("profile") or None,
            region_name=opts.get("region") or None,
        )
        verify = opts.get("ca_bundle") or bool(opts.get("validate_certs", True))
        return session.client(
            "s3", endpoint_url=opts.get("endpoint_url") or None, verify=verify, config=client_config(opts)
        )
    except Exception as err:  # profile missing, bad endpoint URL, ...
        raise describe_error(err, opts.get("bucket"), endpoint=opts.get("endpoint_url"), action="connect") from err


_MALLOC_TUNED = []


def flatten_malloc():
    """Keep the transfer threads' buffers from piling up in glibc's per-thread arenas (best effort).

    A download moves data in 256 KiB chunks from many threads; glibc serves those from per-thread
    arenas once its dynamic mmap threshold has grown, and the freed chunks stay in the process
    (measured: 120 MB resident for a 500 MB pull, 180 MB for 1 GB). A fixed mmap threshold returns
    every such buffer to the system when it is freed: about 70 MB, whatever the size of the backup.
    Uploads read parts straight from the file and stay flat without it.
    """
    if _MALLOC_TUNED:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return False
    m_mmap_threshold = -3
    m_arena_max = -8
    ok = mallopt(m_mmap_threshold, 128 * KIB) == 1 and mallopt(m_arena_max, 2) == 1
    _MALLOC_TUNED.append(ok)
    return ok


class Store:
    """One bucket and prefix, through one client, with retries and error mapping on every call."""

    def __init__(self, opts, client=None):
        self.opts = opts
        self.bucket = opts["bucket"]
        self.prefix = normalize_prefix(opts.get("prefix"))
        self.endpoint = opts.get("endpoint_url") or None
        self.keys = backup_keys.keyring(opts)
        self.client = client or connect(opts)
        self.retrier = Retrier(opts.get("retries", 3))
        self.concurrency = max(1, int(opts.get("concurrency") or DEFAULT_CONCURRENCY))

    # -- basic calls

    def _call(self, action, key, fn, **kwargs):
        try:
            return self.retrier.call(fn, **kwargs)
        except Exception as err:
            raise describe_error(err, self.bucket, key, self.endpoint, action) from err

    def check_bucket(self):
        """Fail early and clearly: bucket missing, access denied, endpoint unreachable, wrong region."""
        try:
            self.retrier.call(self.client.head_bucket, Bucket=self.bucket)
        except Exception as err:
            code = error_code(err) if _is_client_error(err) else None
            if code in ("404", "NotFound", "NoSuchBucket"):
                raise OffsiteError(
                    "bucket_missing",
                    f"the bucket {self.bucket} does not exist"
                    f"{' at ' + self.endpoint if self.endpoint else ''}: create it (or fix bucket, endpoint_url "
                    "and region)",
                    bucket=self.bucket,
                ) from err
            if code in ("403", "Forbidden"):
                # HEAD answers carry no error code: ask again with a GET to say exactly what is wrong.
                self._explain_forbidden(err)
                return
            if code in ("301", "400"):
                raise OffsiteError(
                    "s3",
                    f"the bucket {self.bucket} answered HTTP {code} to HeadBucket: it is probably in another "
                    "region than the one used - set region",
                    bucket=self.bucket,
                ) from err
            raise describe_error(err, self.bucket, None, self.endpoint, "reach the bucket") from err

    def _explain_forbidden(self, head_error):
        try:
            self.client.list_objects_v2(Bucket=self.bucket, MaxKeys=1)
        except Exception as err:
            mapped = describe_error(err, self.bucket, None, self.endpoint, "list the bucket")
            if mapped.kind in ("access_denied", "bucket_missing", "endpoint_unreachable"):
                raise mapped from err
            raise OffsiteError(
                "access_denied",
                f"access denied to the bucket {self.bucket}{' at ' + self.endpoint if self.endpoint else ''} "
                "(HTTP 403): check the credentials (access_key/secret_key, AWS_ACCESS_KEY_ID, profile) and that "
                "they may s3:ListBucket it",
                bucket=self.bucket,
            ) from head_error

    def list_objects(self):
        """Every object under the prefix: key -> {size, last_modified (epoch), storage_class, etag}."""
        base = object_key(self.prefix, "x")[:-1]

        def run():
            found = {}
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base):
                for obj in page.get("Contents") or []:
                    modified = obj.get("LastModified")
                    found[obj["Key"]] = {
                        "size": obj.get("Size"),
                        "last_modified": modified.timestamp() if modified else None,
                        "storage_class": obj.get("StorageClass"),
                        "etag": obj.get("ETag"),
                    }
            return found

        return self._call("list", base, run)

    def head(self, key):
        """The object's head, or None when it does not exist."""
        try:
            return self.retrier.call(self.client.head_object, Bucket=self.bucket, Key=key)
        except Exception as err:
            if _is_client_error(err) and error_code(err) in ("404", "NotFound"):
                return None
            raise describe_error(err, self.bucket, key, self.endpoint, "read the metadata of") from err

    def get_bytes(self, key, limit=MAX_MANIFEST_BYTES):
        def run():
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            if int(response.get("ContentLength") or 0) > limit:
                response["Body"].close()
                raise OffsiteError("invalid", f"{s3_url(self.bucket, key)} is larger than {limit} bytes")
            return response["Body"].read()

        return self._call("read", key, run)

    def get_head_bytes(self, key, count):
        """The first count bytes of an object (fewer when it is shorter): a ranged GET."""

        def run():
            response = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=0-{count - 1}")
            return response["Body"].read(count)

        return self._call("read", key, run)

    def put_bytes(self, key, body, extra):
        kwargs = dict(extra)
        kwargs.update(Bucket=self.bucket, Key=key, Body=body)
        return self._call("upload", key, self.client.put_object, **kwargs)

    def delete_keys(self, keys):
        keys = list(keys)
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            response = self._call(
                "delete",
                batch[0],
                self.client.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
            )
            errors = response.get("Errors") or []
            if errors:
                first = errors[0]
                raise describe_error(
                    _FakeClientError(first.get("Code"), first.get("Message")),
                    self.bucket,
                    first.get("Key"),
                    self.endpoint,
                    "delete",
                )
        return len(keys)

    # -- catalog

    def catalog(self):
        """(entries newest first, incomplete data, objects) of the prefix, manifests fetched in parallel."""
        objects = self.list_objects()
        manifests, _data, _foreign = split_listing(objects, self.prefix)
        docs = {}

        def fetch(key):
            try:
                raw = self.get_bytes(key)
            except OffsiteError as err:
                if err.kind == "object_missing":  # deleted between the listing and now
                    return key, "deleted while listing"
                raise
            try:
                return key, json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as err:
                return key, f"not JSON ({err})"

        keys = list(manifests.values())
        if keys:
            with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(keys))) as pool:
                for key, doc in pool.map(fetch, keys):
                    docs[key] = doc
        entries, incomplete = build_entries(objects, self.prefix, docs, self.keys)
        return entries, incomplete, objects

    # -- transfers

    def transfer_config(self, largest, threshold=None, chunk=None):
        size = part_size(largest, chunk)
        kwargs = {
            "multipart_threshold": max(int(threshold or DEFAULT_THRESHOLD), MIN_PART_SIZE),
            "multipart_chunksize": size,
            "max_concurrency": self.concurrency,
            "use_threads": True,
            "num_download_attempts": self.retrier.attempts,
        }
        # boto3 >= 1.33 may pick the CRT transfer client; Debian 12's python3-boto3 (1.26) has no such option.
        if "preferred_transfer_client" in inspect.signature(TransferConfig.__init__).parameters:
            kwargs["preferred_transfer_client"] = "classic"
        return TransferConfig(**kwargs)

    def run_transfers(self, jobs, config, action, osutil=None):
        """Run jobs (each a dict with key and submit(manager) -> future) concurrently through one manager.

        A job whose error is retryable is submitted again (whole object) with backoff, up to retries.
        osutil is s3transfer's file access (EncryptingOSUtils for an encrypted push).
        """
        pending = list(jobs)
        attempt = 0
        while pending:
            failed = []
            with create_transfer_manager(self.client, config, osutil) as manager:
                futures = [(job, job["submit"](manager)) for job in pending]
                for job, future in futures:
                    try:
                        future.result()
                    except Exception as err:  # collected, mapped below
                        failed.append((job, err))
            if not failed:
                return
            attempt += 1
            fatal = [(job, err) for job, err in failed if not is_retryable(err)]
            if fatal or attempt >= self.retrier.attempts:
                job, err = (fatal or failed)[0]
                raise describe_error(err, self.bucket, job["key"], self.endpoint, action) from err
            time.sleep(jittered_delay(attempt - 1))
            for job, _err in failed:
                if job.get("reset"):
                    job["reset"]()
            pending = [job for job, _err in failed]


class _FakeClientError(Exception):
    """A per-key error of DeleteObjects, shaped like a ClientError for describe_error."""

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.response = {"Error": {"Code": code or "unknown", "Message": message or ""}}


# --------------------------------------------------------------------------- push


def upload_extra(opts, sha256, name, database, backup_key=None):
    """ExtraArgs of every data object: the sha256 in metadata, checksum, encryption, storage class.

    With backup_key (client-side encryption), the metadata also says so, for humans: a pull trusts the
    object's header and chunks, never its metadata.
    """
    extra = {"Metadata": {SHA256_META: sha256, "backup": name, "database": database}}
    if backup_key is not None:
        extra["Metadata"].update(crypto.METADATA, **{"tokotani-key-id": backup_key.id})
    algorithm = opts.get("checksum_algorithm") or DEFAULT_CHECKSUM
    if algorithm != "none":
        extra["ChecksumAlgorithm"] = algorithm
    if opts.get("encryption"):
        extra["ServerSideEncryption"] = opts["encryption"]
        if opts["encryption"] == "aws:kms" and opts.get("kms_key_id"):
            extra["SSEKMSKeyId"] = opts["kms_key_id"]
    if opts.get("storage_class"):
        extra["StorageClass"] = opts["storage_class"]
    return extra


def local_sources(opts, keys):
    """The local catalog entries a push means: latest (default), all, or a name/path."""
    wanted = opts.get("backup") or "latest"
    directory = opts.get("backup_dir")
    if wanted not in ("latest", "all") and os.path.isabs(wanted):
        directory = os.path.dirname(wanted.rstrip("/"))
    if not directory:
        raise OffsiteError("invalid", "push needs backup_dir (or backup as an absolute path)")
    if not os.path.isdir(directory):
        raise OffsiteError("local", f"backup_dir {directory} does not exist (or is not a directory)")
    entries = catalog.scan(directory, database=opts.get("database"), include_legacy=True, keys=keys)["backups"]
    what = f" of database {opts['database']}" if opts.get("database") else ""
    if wanted == "latest":
        entry = catalog.newest([e for e in entries if e["kind"] == "managed"])
        if entry is None:
            raise OffsiteError("no_backup", f"no valid backup{what} with a manifest in {directory}: nothing to push")
        return [entry]
    if wanted == "all":
        return [e for e in entries if e["kind"] == "managed" and e["valid"]]
    name = os.path.basename(wanted.rstrip("/"))
    if name.endswith(catalog.MANIFEST_SUFFIX):
        name = name[: -len(catalog.MANIFEST_SUFFIX)]
    parsed = catalog.parse_name(name) or catalog.parse_name(name + ".x")
    stem = parsed["stem"] if parsed else name
    for entry in entries:
        if entry["name"] == stem or os.path.basename(entry.get("path") or "") == name:
            if entry["kind"] != "managed":
                raise OffsiteError(
                    "invalid",
                    f"{entry['path']} has no manifest (a legacy .sql.gz): backup_offsite pushes backups made by "
                    "tokotani.dr.postgresql_backup, whose manifest carries the sha256 that every pull verifies",
                )
            if not entry["valid"]:
                raise OffsiteError(
                    "invalid",
                    f"the local backup {entry['name']} is not valid: {'; '.join(entry['problems'])}",
                    problems=entry["problems"],
                )
            return [entry]
    raise OffsiteError("no_backup", f"no backup named {name}{what} in {directory}")


def _verify_local(entry, outcome):
    """Recompute a local backup's checksums (runs beside the upload); records problems in outcome."""
    doc = entry["manifest"]
    try:
        if doc["format"] == "directory":
            digest, files = catalog.digest_tree(entry["path"])
            problems = [
                f"checksum mismatch: {doc['data']}/{rel} differs from the manifest"
                for rel in sorted(set(files) | set(doc["files"]))
                if files.get(rel, {}).get("sha256") != doc["files"].get(rel, {}).get("sha256")
            ]
            if not problems and digest != doc["sha256"]:
                problems.append(f"checksum mismatch: the listing of {doc['data']} does not match the manifest")
        else:
            digest = catalog.sha256_file(entry["path"])
            problems = []
            if digest != doc["sha256"]:
                problems.append(
                    f"checksum mismatch: {doc['data']} has sha256 {digest}, the manifest says {doc['sha256']}"
                )
        outcome["problems"] = problems
    except OSError as err:
        outcome["problems"] = [f"cannot read {entry['path']}: {err}"]


def push(opts, check_mode=False, store=None):
    """Push local backups (data first, manifest last). Returns the module result."""
    started = time.monotonic()
    keys = backup_keys.keyring(opts)
    sources = local_sources(opts, keys)
    backup_key = encryption_key(keys, opts)
    store = store or Store(opts)
    store.check_bucket()
    entries, _incomplete, objects = store.catalog()
    remote = {e["name"]: e for e in entries}
    results = []
    warnings = []
    for entry in sources:
        results.append(
            _push_one(
                store,
                opts,
                entry,
                remote=remote.get(entry["name"]),
                objects=objects,
                check_mode=check_mode,
                warnings=warnings,
                backup_key=backup_key,
            )
        )
    moved = [r for r in results if r["status"] == "pushed"]
    total = sum(r["size"] for r in moved)
    duration = time.monotonic() - started
    out = {
        "changed": any(r["status"] in ("pushed", "would_push") for r in results),
        "backups": results,
        "pushed": [r["name"] for r in results if r["status"] in ("pushed", "would_push")],
        "already_offsite": [r["name"] for r in results if r["status"] == "already_offsite"],
        "bytes": total,
        "duration": round(duration, 3),
        "throughput_mb_s": round(total / 1e6 / duration, 1) if moved and duration > 0 else None,
        "warnings": warnings,
    }
    if len(results) == 1:
        out.update({k: results[0][k] for k in ("name", "key", "manifest_key", "size", "sha256", "encrypted", "key_id")})
    return out


def _push_one(store, opts, entry, *, remote, objects, check_mode, warnings, backup_key=None):
    doc = entry["manifest"]
    manifest_key, data_key, files = key_layout(store.prefix, doc)
    result = {
        "name": doc["name"],
        "database": doc["database"],
        "key": data_key,
        "manifest_key": manifest_key,
        "size": doc["size"],
        "sha256": doc["sha256"],
        "objects": len(files) or 1,
        "encrypted": backup_key is not None,
        "key_id": backup_key.id if backup_key else None,
        "status": None,
        "duration": None,
        "throughput_mb_s": None,
    }
    if remote is not None and not opts.get("force") and _already_offsite(store, doc, remote, warnings, backup_key):
        result.update(status="already_offsite", encrypted=remote["encrypted"], key_id=copy_key_id(store, remote))
        return result
    if check_mode:
        result["status"] = "would_push"
        return result
    began = time.monotonic()
    if remote is not None:
        # Re-pushing over an older copy: it stops being listed as complete until the new manifest is in.
        store.delete_keys([manifest_key])
    # A shared lock on what is read: local retention skips the backup until the push is done.
    with catalog.hold_backup(entry, f"offsite push of {doc['name']}") as hold:
        if hold.warning:
            warnings.append(hold.warning)
        _upload_backup(store, opts, entry, objects, backup_key=backup_key)
    duration = time.monotonic() - began
    result.update(
        status="pushed",
        duration=round(duration, 3),
        throughput_mb_s=round(doc["size"] / 1e6 / duration, 1) if duration > 0 else None,
    )
    return result


def _already_offsite(store, doc, remote, warnings, backup_key=None):
    """Whether the offsite copy is this backup, complete; fails on a different backup of the same name."""
    manifest_key = remote["manifest_key"]
    if remote["manifest"] is not None and remote["sha256"] != doc["sha256"]:
        raise OffsiteError(
            "conflict",
            f"a different backup named {doc['name']} is already offsite at {s3_url(store.bucket, manifest_key)} "
            f"(sha256 {remote['sha256']}, local {doc['sha256']}): use another prefix, or force=true to replace it",
            name=doc["name"],
        )
    if remote["valid"] and backup_key is not None and not remote["encrypted"]:
        warnings.append(f"the offsite copy of {doc['name']} is not encrypted client-side: pushed again, encrypted")
        return False
    if remote["valid"] and _metadata_matches(store, remote, doc):
        return True
    if remote["problems"]:
        warnings.append(
            f"the offsite copy of {doc['name']} was not valid ({'; '.join(remote['problems'])}): pushed again"
        )
    else:
        warnings.append(
            f"the offsite data of {doc['name']} does not carry the manifest's sha256 in its metadata "
            "(replaced by something else?): pushed again"
        )
    return False


def _upload_backup(store, opts, entry, objects, backup_key=None):
    """Upload the data (verifying the local copy alongside), then the manifest: the commit point.

    With backup_key, every data object is encrypted as s3transfer reads it (EncryptingOSUtils).
    """
    doc = entry["manifest"]
    manifest_key, data_key, files = key_layout(store.prefix, doc)
    with open(entry["manifest_path"], "rb") as handle:
        manifest_bytes = handle.read()
    extra_base = upload_extra(opts, doc["sha256"], doc["name"], doc["database"], backup_key)
    osutil = None if backup_key is None else EncryptingOSUtils(backup_key, doc)
    jobs = []
    if doc["format"] == "directory":
        largest = max([info.get("size") or 0 for info in doc["files"].values()] or [0])
        for rel, key in files.items():
            extra = dict(extra_base, Metadata=dict(extra_base["Metadata"], sha256=doc["files"][rel]["sha256"]))
            jobs.append(_upload_job(store, os.path.join(entry["path"], rel), key, extra, osutil, rel=rel))
    else:
        largest = doc["size"]
        jobs.append(_upload_job(store, entry["path"], data_key, extra_base, osutil))
    if osutil is not None:
        largest = crypto.encrypted_size(largest)
    config = store.transfer_config(largest, opts.get("multipart_threshold"), opts.get("multipart_chunksize"))
    outcome = {}
    checker = None
    if opts.get("verify", True):
        checker = threading.Thread(target=_verify_local, args=(entry, outcome), daemon=True)
        checker.start()
    try:
        store.run_transfers(jobs, config, "upload", osutil)
    finally:
        if checker is not None:
            checker.join()
    if outcome.get("problems"):
        _forget(store, [job["key"] for job in jobs])
        raise OffsiteError(
            "checksum_mismatch",
            f"the local backup {doc['name']} does not match its manifest ({'; '.join(outcome['problems'][:5])}): "
            "it was not pushed (the uploaded data was removed). Take a new backup.",
            name=doc["name"],
            problems=outcome["problems"],
        )
    if doc["format"] == "directory":
        wanted = set(files.values())
        stale = [k for k in objects if k.startswith(data_key) and k not in wanted]
        if stale:
            store.delete_keys(stale)
    store.put_bytes(manifest_key, manifest_bytes, manifest_extra(extra_base, manifest_bytes, doc["name"]))


def manifest_extra(extra_base, manifest_bytes, name):
    """ExtraArgs of the manifest object: its own sha256, the data's encryption, a readable storage class."""
    extra = {
        "Metadata": {SHA256_META: hashlib.sha256(manifest_bytes).hexdigest(), "backup": name},
        "ContentType": "application/json",
    }
    for arg in ("ServerSideEncryption", "SSEKMSKeyId", "StorageClass", "ChecksumAlgorithm"):
        if arg in extra_base:
            extra[arg] = extra_base[arg]
    if extra.get("StorageClass") in ("GLACIER", "DEEP_ARCHIVE"):
        extra.pop("StorageClass")  # list and pull read manifests without an S3 restore
    return extra


def _metadata_matches(store, remote, doc):
    """Whether the offsite data carries the manifest's sha256 in its metadata (a HEAD per single-file backup)."""
    if doc["format"] == "directory":
        return True  # the listing already matched every file's size; the manifests' sha256 are equal
    head = store.head(remote["data_key"])
    return head is not None and (head.get("Metadata") or {}).get(SHA256_META) == doc["sha256"]


def _upload_job(store, path, key, extra, osutil=None, *, rel=""):
    """An upload of path to key; with an EncryptingOSUtils, encrypted (a retry gets a fresh salt)."""

    def submit(manager):
        return manager.upload(path, store.bucket, key, extra_args=extra)

    return {"key": key, "submit": submit, "reset": osutil.add(path, rel) if osutil is not None else None}


def _forget(store, keys):
    """Best-effort removal of uploaded data after a failed verification."""
    with contextlib.suppress(OffsiteError):
        store.delete_keys(keys)


# --------------------------------------------------------------------------- client-side encryption


def encryption_key(ring, opts):
    """The BackupKey a push encrypts with (ring's current key), or None: no backup_key, or client_encryption=false."""
    if ring is None or not opts.get("client_encryption", True):
        return None
    with encryption_errors():
        crypto.require("encrypt")
    return ring.current


def object_name(doc, rel=""):
    """What an object's encryption is bound to: the data name, or <data>/<relative path> in a directory backup."""
    return f"{doc['data']}/{rel}" if rel else doc["data"]


def from_crypto(err):
    """The OffsiteError of an offsite_crypto.EncryptionError (same kind, message and details)."""
    return OffsiteError(err.kind, err.msg, **err.details)


@contextlib.contextmanager
def encryption_errors():
    """Raise offsite_crypto's errors as OffsiteError, as every caller of this engine expects."""
    try:
        yield
    except crypto.EncryptionError as err:
        raise from_crypto(err) from None


class EncryptingOSUtils(OSUtils):
    """s3transfer's file access for an encrypted push: the files added are read as their ciphertext.

    s3transfer asks it for a file's size (the encrypted size) and opens the file once per part
    (in the thread that sends the part), seeking to the part's first byte: each part streams from
    its own EncryptingReader, so memory stays as flat as for a plain upload.
    """

    def __init__(self, key, doc):
        super().__init__()
        self.key = key
        self.doc = doc
        self.ciphers = {}

    def add(self, path, rel=""):
        """Encrypt path as the data of doc (rel: a file of a directory backup); returns a reset: a fresh salt."""
        size = self.doc["files"][rel]["size"] if rel else self.doc["size"]

        def fresh():
            self.ciphers[path] = crypto.ObjectCipher.new(self.key, object_name(self.doc, rel), size)

        fresh()
        return fresh

    def get_file_size(self, filename):
        cipher = self.ciphers.get(filename)
        return cipher.object_size if cipher is not None else super().get_file_size(filename)

    def open(self, filename, mode):
        cipher = self.ciphers.get(filename)
        if cipher is None:
            return super().open(filename, mode)
        return crypto.EncryptingReader(cipher, filename)


def read_headers(store, keys):
    """key -> the first bytes (an encryption header's worth) of each object, read in parallel."""
    keys = list(keys)
    if not keys:
        return {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(store.concurrency, len(keys))) as pool:
        heads = pool.map(lambda key: store.get_head_bytes(key, crypto.HEADER_SIZE), keys)
        return dict(zip(keys, heads, strict=True))


def copy_key_id(store, entry):
    """The key id the header of an encrypted copy names (its first data object), or None (plain, unreadable)."""
    if not entry.get("encrypted"):
        return None
    _manifest_key, data_key, files = key_layout(store.prefix, entry["manifest"])
    first = next(iter(files.values()), None) if files else data_key
    try:
        head = store.get_head_bytes(first, crypto.HEADER_SIZE)
        return crypto.parse_header(head, s3_url(store.bucket, first))[0]
    except (OffsiteError, crypto.EncryptionError):
        return None


def pull_ciphers(store, entry):
    """rel ('' for a single file) -> ObjectCipher of each object of an encrypted copy; None for a plain copy.

    Reads every object's header first, so that a missing key, an unknown key id or a damaged header
    fails before anything is downloaded, with the key id to give.
    """
    if not entry.get("encrypted"):
        return None
    doc = entry["manifest"]
    _manifest_key, data_key, files = key_layout(store.prefix, doc)
    ring = store.keys
    keys = files if doc["format"] == "directory" else {"": data_key}
    headers = read_headers(store, keys.values())
    ciphers = {}
    with encryption_errors():
        for rel, key in keys.items():
            size = doc["files"][rel]["size"] if rel else doc["size"]
            where = s3_url(store.bucket, key)
            ciphers[rel] = crypto.ObjectCipher.open(ring, headers[key], object_name(doc, rel), size, where=where)
    return ciphers


def _key_ids(ciphers):
    ids = sorted({c.key_id for c in (ciphers or {}).values()})
    return ", ".join(ids) or None


# --------------------------------------------------------------------------- pull


def pull(opts, check_mode=False, store=None):
    """Pull one backup into backup_dir: download to .partial, verify sha256, commit with renames.

    With backup=latest and fallback N, a copy that turns out damaged or gone (FALLBACK_KINDS) is passed over,
    nothing of it kept, and the next older candidate latest would consider is tried, up to N of them.
    """
    directory = opts.get("backup_dir")
    if not directory:
        raise OffsiteError("invalid", "pull needs backup_dir, the local directory to pull into")
    fallback = int(opts.get("fallback") or 0)
    if fallback < 0:
        raise OffsiteError("invalid", f"fallback must be 0 or more (got {fallback})")
    wanted = opts.get("backup") or "latest"
    if wanted != "latest":
        fallback = 0  # a named backup never falls back
    before = catalog.parse_timestamp(opts["before"]) if opts.get("before") else None
    written_before = catalog.parse_timestamp(opts["written_before"]) if opts.get("written_before") else None
    store = store or Store(opts)
    store.check_bucket()
    entries, _incomplete, objects = store.catalog()
    if written_before is not None:
        mark_written_after(entries, objects, store.prefix, written_before)
    database, accept = opts.get("database"), opts.get("accept_suspicious")
    entry, skipped = select_entry(entries, wanted, before, database, accept)
    _check_selection(store, entry, wanted, before, opts, skipped=skipped)
    older = fallback_candidates(entries, entry, fallback, before=before, database=database, accept_suspicious=accept)
    attempts = [(entry, skipped), *older]
    result = None
    passed = []  # (entry, OffsiteError) of each candidate passed over, in the order tried
    for candidate, _passed_by in attempts:
        try:
            result = _pull_entry(store, opts, candidate, directory, check_mode)
            break
        except OffsiteError as err:
            if not fallback or err.kind not in FALLBACK_KINDS:
                if passed:
                    raise _failed_while_falling_back(err, passed) from err
                raise
            passed.append((candidate, err))
    if result is None:
        raise _none_verified(passed, fallback, database) from passed[-1][1]
    warnings = _skip_warnings(skipped)
    for index, (bad, err) in enumerate(passed):
        last = index == len(passed) - 1
        warnings.append(_passed_over_warning(bad, err, attempts[index + 1][0], result["status"] if last else None))
        warnings.extend(_skip_warnings(attempts[index + 1][1]))
    result.update(warnings=warnings, passed_over=[_passed_over_item(bad, err) for bad, err in passed])
    return result


def _pull_entry(store, opts, entry, directory, check_mode):
    """Pull the backup of one catalog entry into directory (or say what would be done): the result of pull."""
    doc = entry["manifest"]
    manifest_key, data_key, files = key_layout(store.prefix, doc)
    path = os.path.join(directory, doc["data"])
    manifest_path = os.path.join(directory, catalog.manifest_name(doc["name"]))
    result = {
        "name": doc["name"],
        "database": doc["database"],
        "format": doc["format"],
        "compression": doc["compression"],
        "started_at": doc["started_at"],
        "path": path,
        "manifest_path": manifest_path,
        "key": data_key,
        "manifest_key": manifest_key,
        "size": doc["size"],
        "sha256": doc["sha256"],
        "manifest": doc,
        "signed": entry["signed"],
        "signed_by": entry["signed_by"],
        "encrypted": entry["encrypted"],
        "key_id": None,
        "verified": False,
        "status": None,
        "duration": None,
        "throughput_mb_s": None,
    }
    if os.path.lexists(path) or os.path.lexists(manifest_path):
        local = _local_copy(directory, doc, store.keys)
        if local is not None:
            result.update(status="already_local", changed=False)
            return result
        raise OffsiteError(
            "conflict",
            f"{path} (or its manifest) already exists in {directory} and is not the offsite backup {doc['name']}: "
            "move it away, or pull into another backup_dir",
            path=path,
        )
    if doc["format"] != "directory":
        head = store.head(data_key)
        if head is None:
            raise OffsiteError("object_missing", f"{s3_url(store.bucket, data_key)} does not exist", key=data_key)
        meta = (head.get("Metadata") or {}).get(SHA256_META)
        if meta and meta != doc["sha256"]:
            raise OffsiteError(
                "checksum_mismatch",
                f"checksum mismatch: {s3_url(store.bucket, data_key)} carries sha256 {meta} in its metadata, the "
                f"manifest says {doc['sha256']}: the offsite copy was replaced or damaged; nothing was downloaded",
                key=data_key,
            )
    ciphers = pull_ciphers(store, entry)
    result["key_id"] = _key_ids(ciphers)
    if check_mode:
        result.update(status="would_pull", changed=True)
        return result
    if not os.path.isdir(directory):
        catalog.ensure_directory(directory)
    free = catalog.free_bytes(directory)
    if free < doc["size"]:
        raise OffsiteError(
            "local",
            f"{directory} has {free} bytes free, the backup {doc['name']} needs {doc['size']}: make room first",
        )
    began = time.monotonic()
    flatten_malloc()
    target = {"directory": directory, "name": doc["name"], "path": path}
    with (
        catalog.DirLock(directory, PULL_LOCK_KEY).acquire(opts.get("lock_timeout", 300)),
        catalog.hold_backup(target, f"offsite pull of {doc['name']}", must_exist=False),
    ):
        _download_verify_commit(
            store, opts, doc, path=path, manifest_key=manifest_key, data_key=data_key, files=files, ciphers=ciphers
        )
    duration = time.monotonic() - began
    result.update(
        status="pulled",
        changed=True,
        verified=True,
        duration=round(duration, 3),
        throughput_mb_s=round(doc["size"] / 1e6 / duration, 1) if duration > 0 else None,
    )
    return result


def _skip_warnings(skipped):
    """What an operator reads about the newer entries latest passed over (invalid, or suspicious)."""
    return [
        catalog.suspicious_warning(e)
        if e["valid"]
        else f"the newer offsite backup {e['name']} is not valid ({'; '.join(e['problems'])}): skipped"
        for e in skipped
    ]


# How a warning about a backup passed over ends: what became of the next one tried (None: it failed too).
FALLBACK_OUTCOMES = {
    None: "tried the previous valid one, {name}",
    "pulled": "pulled the previous valid one, {name}",
    "would_pull": "would pull the previous valid one, {name}",
    "already_local": "the previous valid one, {name}, is already in backup_dir",
}


def _passed_over_warning(bad, err, tried, outcome):
    return (
        f"the offsite backup {bad['name']} did not verify on download ({err.msg}): nothing of it was kept; "
        + FALLBACK_OUTCOMES[outcome].format(name=tried["name"])
    )


def _passed_over_item(entry, err):
    return {"name": entry["name"], "error": err.kind, "msg": err.msg}


def _reasons(passed):
    return "; ".join(f"{entry['name']}: {err.msg}" for entry, err in passed)


def _none_verified(passed, fallback, database):
    """The error of a pull of latest whose every candidate failed (kind: the last one's)."""
    what = database or ", ".join(sorted({entry["database"] for entry, _err in passed if entry["database"]}))
    what = f" of {what}" if what else ""
    ran_out = "" if len(passed) > fallback else ": no older valid backup left to try"
    return OffsiteError(
        passed[-1][1].kind,
        f"no offsite backup{what} verified on download ({len(passed)} tried, fallback={fallback}{ran_out}): "
        f"{_reasons(passed)}; nothing was kept",
        passed_over=[_passed_over_item(entry, err) for entry, err in passed],
    )


def _failed_while_falling_back(err, passed):
    """err (not a damaged copy: the endpoint, the key, this host) met by a fallback, with what was passed over."""
    return OffsiteError(
        err.kind,
        f"{err.msg} (while falling back from the offsite backups that did not verify on download - "
        f"{_reasons(passed)}; nothing of them was kept)",
        **dict(err.details, passed_over=[_passed_over_item(entry, e) for entry, e in passed]),
    )


def _check_selection(store, entry, wanted, before, opts, *, skipped=()):
    if entry is not None and entry["valid"]:
        return
    where = s3_url(store.bucket, object_key(store.prefix, ""))
    what = f" of database {opts['database']}" if opts.get("database") else ""
    if entry is None and wanted not in (None, "latest"):
        raise OffsiteError(
            "object_missing",
            f"no offsite backup named {os.path.basename(wanted)}{what} in {where} (its manifest is missing)",
        )
    if entry is None:
        when = f" from before {catalog.iso(before)}" if before else ""
        passed = [catalog.suspicious_warning(e) for e in skipped if e["valid"]]
        passed += [
            f"{e['name']} was {p}"
            for e in skipped
            for p in e["problems"]
            if not e["valid"] and p.startswith(WRITTEN_AFTER)
        ]
        why = f" ({passed[0]})" if passed else ""
        raise OffsiteError("no_backup", f"no valid offsite backup{what}{when} in {where}{why}")
    problems = "; ".join(entry["problems"])
    kind = "checksum_mismatch" if "bytes, the manifest says" in problems else "object_missing"
    if "manifest" in problems and entry["manifest"] is None:
        kind = "invalid"
    raise OffsiteError(kind, f"the offsite backup {entry['name']} is not valid: {problems}", problems=entry["problems"])


def _local_copy(directory, doc, keys):
    """The local entry of the same backup (same sha256, valid, signed when keys are given) or None."""
    manifest_file = catalog.manifest_name(doc["name"])
    if not os.path.exists(os.path.join(directory, manifest_file)):
        return None
    local = backup_keys.check_entry(catalog.managed_entry(directory, manifest_file), keys)
    if local["valid"] and local["sha256"] == doc["sha256"]:
        return local
    return None


def _download_verify_commit(store, opts, doc, *, path, manifest_key, data_key, files, ciphers=None):
    """Download into .partial (decrypting and authenticating every chunk of an encrypted copy), check the
    sha256 of the plaintext against the manifest, then write the manifest and rename the data into place."""
    partial = path + catalog.PARTIAL_SUFFIX
    directory = os.path.dirname(path)
    manifest_path = os.path.join(directory, catalog.manifest_name(doc["name"]))
    catalog.remove_path(partial)  # a leftover of a killed pull of this backup (we hold the pull lock)
    committed_manifest = False
    try:
        raw_manifest = store.get_bytes(manifest_key)
        if _parse_json(raw_manifest) != doc:
            raise OffsiteError(
                "checksum_mismatch",
                f"the manifest {s3_url(store.bucket, manifest_key)} changed while pulling: pull again",
                key=manifest_key,
            )
        if doc["format"] == "directory":
            _download_tree(store, opts, doc, partial, files, ciphers=ciphers)
            digest, found = catalog.digest_tree(partial)
            bad = sorted(
                rel
                for rel in set(found) | set(doc["files"])
                if found.get(rel, {}).get("sha256") != doc["files"].get(rel, {}).get("sha256")
            )
            if bad or digest != doc["sha256"]:
                raise OffsiteError(
                    "checksum_mismatch",
                    f"checksum mismatch after pulling {s3_url(store.bucket, data_key)}: "
                    f"{', '.join(bad[:10]) or 'the file listing'} differ from the manifest; nothing was kept. "
                    "The offsite copy is damaged: pull an older backup (backup or before)",
                    key=data_key,
                    files=bad[:50],
                )
        else:
            _download_file(store, opts, doc, partial, data_key, cipher=ciphers and ciphers[""])
            digest = catalog.sha256_file(partial)
            if digest != doc["sha256"]:
                raise OffsiteError(
                    "checksum_mismatch",
                    f"checksum mismatch after pulling {s3_url(store.bucket, data_key)}: sha256 {digest}, the manifest "
                    f"says {doc['sha256']}; nothing was kept. The offsite copy is damaged: pull an older backup "
                    "(backup or before)",
                    key=data_key,
                    actual=digest,
                    expected=doc["sha256"],
                )
        catalog.fsync_tree(partial)
        catalog.write_atomic(manifest_path, raw_manifest, sync_dir=False)
        committed_manifest = True
        os.rename(partial, path)
        catalog.fsync_path(directory)
    except BaseException as err:
        catalog.remove_path(partial)
        if committed_manifest and not os.path.lexists(path):
            catalog.remove_path(manifest_path)
        if isinstance(err, OSError):
            raise OffsiteError("local", f"writing the pulled backup into {directory} failed: {err}") from err
        raise


def _parse_json(raw):
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _download_file(store, opts, doc, partial, data_key, *, cipher=None):
    if cipher is not None:
        writer = crypto.DecryptingWriter(cipher, partial, s3_url(store.bucket, data_key), catalog.FILE_MODE)
        with writer, encryption_errors():
            config = store.transfer_config(
                cipher.object_size, opts.get("multipart_threshold"), opts.get("multipart_chunksize")
            )
            store.run_transfers([_download_job(store, data_key, writer)], config, "download")
            writer.finish()
        return
    fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_EXCL, catalog.FILE_MODE)
    with os.fdopen(fd, "w+b") as handle:

        def submit(manager):
            return manager.download(store.bucket, data_key, handle)

        def reset():
            handle.seek(0)
            handle.truncate()

        config = store.transfer_config(doc["size"], opts.get("multipart_threshold"), opts.get("multipart_chunksize"))
        store.run_transfers([{"key": data_key, "submit": submit, "reset": reset}], config, "download")
        handle.flush()
        os.fsync(handle.fileno())


def _download_tree(store, opts, doc, partial, files, *, ciphers=None):
    """Every file of a directory backup into partial; each name is confined to partial before anything is made.

    With ciphers (rel -> ObjectCipher), each object goes through a DecryptingWriter into its file.
    """
    targets = {}
    for rel, key in files.items():
        try:
            targets[rel] = catalog.confined_join(partial, rel)
        except catalog.CatalogError as err:
            raise OffsiteError("invalid", f"{err.msg}; nothing was downloaded", key=key) from None
    os.mkdir(partial, catalog.DIR_MODE)
    jobs = []
    writers = []
    for rel, key in files.items():
        parent = os.path.dirname(targets[rel])
        if not os.path.isdir(parent):
            os.makedirs(parent, catalog.DIR_MODE)
        target = catalog.confined_join(partial, rel)
        if ciphers:
            target = crypto.DecryptingWriter(ciphers[rel], target, s3_url(store.bucket, key), catalog.FILE_MODE)
            writers.append(target)
        jobs.append(_download_job(store, key, target))
    if ciphers:
        largest = max(c.object_size for c in ciphers.values())
    else:
        largest = max([info.get("size") or 0 for info in doc["files"].values()] or [0])
    config = store.transfer_config(largest, opts.get("multipart_threshold"), opts.get("multipart_chunksize"))
    try:
        with encryption_errors():
            store.run_transfers(jobs, config, "download")
            for writer in writers:
                writer.finish()
    finally:
        for writer in writers:
            writer.close()
    for rel in files:
        os.chmod(catalog.confined_join(partial, rel), catalog.FILE_MODE)


def _download_job(store, key, target):
    """A download of key into target: a path, or a DecryptingWriter (which starts over on a retry)."""

    def submit(manager):
        return manager.download(store.bucket, key, target)

    return {"key": key, "submit": submit, "reset": getattr(target, "reset", None)}


# --------------------------------------------------------------------------- list and prune


def list_offsite(opts, store=None, now=None):
    """What is offsite under the prefix (read-only)."""
    now = now or catalog.utcnow()
    before = catalog.parse_timestamp(opts["before"]) if opts.get("before") else None
    store = store or Store(opts)
    store.check_bucket()
    entries, incomplete, _objects = store.catalog()
    if opts.get("database"):
        entries = [e for e in entries if e["database"] == opts["database"]]
    _fill_key_ids(store, entries)
    public = [public_entry(e, now) for e in entries]
    by_name = {p["name"]: p for p in public}
    latest = catalog.newest(entries)
    result = {
        "changed": False,
        "backups": public,
        "count": len(public),
        "valid_count": len([e for e in entries if e["valid"]]),
        "total_size": sum(e["size"] or 0 for e in entries),
        "newest": by_name[latest["name"]] if latest else None,
        "newest_age_seconds": by_name[latest["name"]]["age_seconds"] if latest else None,
        "incomplete": [_public_incomplete(i) for i in incomplete],
    }
    if before is not None:
        chosen = catalog.newest(entries, before=before)
        result["newest_before"] = by_name[chosen["name"]] if chosen else None
    return result


def _fill_key_ids(store, entries):
    """Each encrypted entry's key_id, from the header of its first data object (read in parallel)."""
    encrypted = [e for e in entries if e["encrypted"]]
    if encrypted:
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(encrypted))) as pool:
            for entry, key_id in zip(encrypted, pool.map(lambda e: copy_key_id(store, e), encrypted), strict=True):
                entry["key_id"] = key_id


def _public_incomplete(item):
    return {
        "name": item["name"],
        "keys": len(item["keys"]),
        "size": item["size"],
        "last_modified": catalog.epoch_to_iso(item["last_modified"]),
    }


def prune(opts, check_mode=False, store=None, now=None):
    """Apply retention (keep_days, keep_min) to offsite copies: manifest first, then data."""
    now = now or catalog.utcnow()
    keep_days = opts.get("keep_days", 14)
    keep_min = opts.get("keep_min", 3)
    if keep_days < 0 or keep_min < 0:
        raise OffsiteError("invalid", "keep_days and keep_min must not be negative")
    store = store or Store(opts)
    store.check_bucket()
    entries, incomplete, objects = store.catalog()
    doomed, kept = retention_plan(entries, opts.get("database"), now, keep_days, keep_min)
    cutoff = now.timestamp() - keep_days * 86400
    stale = [i for i in incomplete if i["last_modified"] is not None and i["last_modified"] < cutoff]
    if opts.get("database"):
        stale = []  # data without a manifest has no database: only a prune of every database removes it
    deleted = 0
    if not check_mode:
        for entry, _reason in doomed:
            deleted += store.delete_keys([entry["manifest_key"]])
            data_keys = sorted(
                k
                for k in objects
                if k == entry["data_key"] or (entry["data_key"].endswith("/") and k.startswith(entry["data_key"]))
            )
            deleted += store.delete_keys(data_keys)
        for item in stale:
            deleted += store.delete_keys(item["keys"])
    return {
        "changed": bool(doomed or stale),
        "pruned": [{"name": e["name"], "database": e["database"], "reason": r} for e, r in doomed],
        "kept": [{"name": e["name"], "database": e["database"], "reason": r} for e, r in kept],
        "removed_incomplete": [i["name"] for i in stale],
        "deleted_objects": deleted,
        "freed_bytes": sum(e["size"] or 0 for e, _r in doomed) + sum(i["size"] for i in stale),
    }


def run(opts, mode, check_mode=False):
    """The module's entry point: one of push, pull, list, prune. Raises OffsiteError."""
    if mode == "push":
        result = push(opts, check_mode=check_mode)
    elif mode == "pull":
        result = pull(opts, check_mode=check_mode)
    elif mode == "list":
        result = list_offsite(opts)
    elif mode == "prune":
        result = prune(opts, check_mode=check_mode)
    else:
        raise OffsiteError("invalid", f"unknown mode {mode}")
    result.update(mode=mode, bucket=opts["bucket"], prefix=normalize_prefix(opts.get("prefix")))
    result.setdefault("changed", False)
    result.setdefault("warnings", [])
    return result
