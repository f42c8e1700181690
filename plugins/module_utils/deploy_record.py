# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The deploy record: which version of the application is live, kept in the offsite bucket.

A server rebuilt from nothing (new infrastructure, another host name) must deploy the version that
was live, not the newest commit of a branch. The deploy role records it after every successful
deployment (``put``); the rebuild reads it back (``get``). The objects, under the offsite prefix::

    <prefix>/deploy/current.json                                  the record (the commit point)
    <prefix>/deploy/history/20260105T020000Z-3f9a0c2d81b4.json    a copy per deploy (UTC time, short commit)

A record is one JSON object: ``record_version`` (1), ``version`` (the git ref deployed), ``commit``,
``release`` (the release directory), ``deployed_at`` (epoch seconds), ``host``, and a ``signature``
made by ``backup_keys.KeyRing.sign`` with the backup key, as manifests are signed.

Order of work, and the code keeps it:

put
1. ``new_record``: the inputs are checked against the very schema a get applies (``record_problems``);
   nothing is read or written while one is wrong, and without a backup key nothing is written unless
   ``allow_unsigned`` says so.
2. The record in place is read as a get reads it (``read_record``). One that is accepted, names the same
   version, commit and release, and (with a key) is signed by the current key, is left alone:
   ``changed: false``. A refused one is replaced, with a warning saying why it was refused.
3. Check mode stops here and reports what would be written.
4. The history copy is written first, then ``current.json``, byte for byte the same.

get (``read_record``) trusts nothing: the bucket may have been written by an intruder.
1. HEAD ``current.json``: none means ``found: false`` (the caller decides). Larger than
   ``MAX_RECORD_BYTES`` is refused before a byte is downloaded (and again after, should it grow).
2. Strict parsing (``parse_record``): UTF-8, JSON, one object, no duplicate keys, no NaN or Infinity.
3. ``record_problems``: exactly the expected keys, each of its type and confined form (a git ref, hex
   commit, a release directory name, a host name, a finite time after 2000 and not in the future).
4. The signature, by ``KeyRing.verdict``: unsigned is refused unless ``allow_unsigned``; an unknown key
   or a MAC that does not match is always refused, naming the key id (never a key).
A refusal fails with a message an on-call operator can act on; nothing of a refused record is returned.
Values of a record are only ever returned, never put in a shell, a path or SQL by this engine.
"""

from __future__ import annotations

import datetime
import json
import math
import socket

from ansible_collections.tokotani.dr.plugins.module_utils import backup_catalog as catalog
from ansible_collections.tokotani.dr.plugins.module_utils.manifest_schema import END, MANIFEST_SCHEMA, schema_problems
from ansible_collections.tokotani.dr.plugins.module_utils.s3_offsite import (
    KIB,
    OffsiteError,
    Store,
    normalize_prefix,
    object_key,
    s3_url,
)
from ansible_collections.tokotani.dr.plugins.module_utils.specs import key_argument_spec, s3_argument_spec

RECORD_VERSION = 1
MAX_RECORD_BYTES = 64 * KIB
DEPLOY_DIR = "deploy"
CURRENT_NAME = "current.json"
HISTORY_DIR = "history"
SHORT_COMMIT = 12
EARLIEST = 946684800  # 2000-01-01T00:00:00Z
LATEST = 4102444800  # 2100-01-01T00:00:00Z
# A record up to a day ahead of this host's clock is the deploying host's clock, not a forgery.
FUTURE_TOLERANCE = 86400
MODES = ["put", "get"]
SAME_DEPLOYMENT = ("version", "commit", "release")
WHAT = "the deploy record"
CHOOSE = "give -e version=<tag> to choose the version yourself"
# The kinds of a refused record (every other failure is the store's: bucket_missing, access_denied, ...).
REFUSALS = ("too_large", "invalid", "not_signed", "unknown_key", "not_authentic", "key_missing")

# A git ref as `git check-ref-format` accepts one, narrowed: letters, digits and . _ / + - only (so no
# space, control character, ~ ^ : ? * [ \ @ { or quote can occur), a letter or digit first (no leading
# '-' or '.'), no '..', no '//', no component starting with '.' or ending in '.lock', no final '.' or '/'.
VERSION_PATTERN = (
    r"^(?!.*\.\.)(?!.*//)(?!.*/\.)(?!.*\.lock(?:/|(?!\n)$))[A-Za-z0-9][A-Za-z0-9._/+-]{0,127}(?<![./])" + END
)
COMMIT_PATTERN = rf"^[0-9a-f]{{7,64}}{END}"
RELEASE_PATTERN = rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,127}}{END}"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOST_PATTERN = rf"^{_LABEL}(?:\.{_LABEL})*{END}"

RECORD_SCHEMA = {
    "type": "object",
    "required": ["record_version", "version", "commit", "release", "deployed_at", "host"],
    "additionalProperties": False,
    "properties": {
        "record_version": {"enum": [RECORD_VERSION]},
        "version": {"type": "string", "maxLength": 128, "pattern": VERSION_PATTERN},
        "commit": {"type": "string", "maxLength": 64, "pattern": COMMIT_PATTERN},
        "release": {"type": "string", "maxLength": 128, "pattern": RELEASE_PATTERN},
        "deployed_at": {"type": "number", "minimum": EARLIEST, "maximum": LATEST},
        "host": {"type": "string", "maxLength": 253, "pattern": HOST_PATTERN},
        "signature": MANIFEST_SCHEMA["properties"]["signature"],
    },
}

# What each field must look like, added to a message about it.
FORMS = {
    "version": "a git tag, branch or ref of letters, digits and . _ / + -, at most 128 characters, starting with "
    "a letter or digit, without '..', '//', a component starting with '.', or a final '.', '/' or '.lock'",
    "commit": "7 to 64 lowercase hex digits",
    "release": "a release directory name of letters, digits and . _ -, at most 128 characters, starting with a "
    "letter or digit",
    "deployed_at": f"epoch seconds, a finite number from {EARLIEST} (2000-01-01) and not in the future",
    "host": "a host name: dot-separated labels of letters, digits and -, at most 253 characters",
}


def argument_spec():
    """tokotani.dr.deploy_record: the S3 connection and backup key options of backup_offsite, and the record."""
    spec = s3_argument_spec()
    spec.update(
        mode={"type": "str", "required": True, "choices": MODES},
        version={"type": "str"},
        commit={"type": "str"},
        release={"type": "str"},
        deployed_at={"type": "float"},
        host={"type": "str"},
    )
    spec.update(key_argument_spec())
    return spec


def current_key(prefix):
    return object_key(prefix, DEPLOY_DIR, CURRENT_NAME)


def history_key(prefix, record):
    """<prefix>/deploy/history/<UTC yyyymmddThhmmssZ>-<short commit>.json of a checked record."""
    stamp = datetime.datetime.fromtimestamp(record["deployed_at"], datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    return object_key(prefix, DEPLOY_DIR, HISTORY_DIR, f"{stamp}-{record['commit'][:SHORT_COMMIT]}.json")


def iso_seconds(epoch):
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- checking a record


def _no_duplicates(pairs):
    seen = {}
    for name, value in pairs:
        if name in seen:
            shown = repr(name) if len(repr(name)) <= 40 else repr(name)[:37] + "..."
            raise ValueError(f"the key {shown} appears twice")
        seen[name] = value
    return seen


def _no_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def parse_record(raw):
    """The JSON value of raw bytes; raises ValueError saying why they are not strict JSON (no content quoted)."""
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def record_problems(doc, now):
    """What makes doc (parsed JSON) not a deploy record, as sentences; empty when it is one (signature unchecked)."""
    problems = schema_problems(doc, RECORD_SCHEMA, limit=10, what=WHAT)
    stamp = doc.get("deployed_at") if isinstance(doc, dict) else None
    if isinstance(stamp, (int, float)) and not isinstance(stamp, bool):
        if math.isnan(stamp):  # passes every comparison of the schema; an infinity fails its bounds
            problems.append(f"{WHAT}'s deployed_at is NaN, not a number")
        elif stamp > now.timestamp() + FUTURE_TOLERANCE and stamp <= LATEST:
            problems.append(
                f"{WHAT}'s deployed_at {stamp} ({iso_seconds(stamp)}) is in the future (this host's clock says "
                f"{iso_seconds(now.timestamp())})"
            )
    return problems


def explain(problems):
    """problems joined, with the form of every field they name."""
    named = [field for field in FORMS if any(p.startswith(f"{WHAT}'s {field} ") for p in problems)]
    forms = "".join(f"; {field} must be {FORMS[field]}" for field in named)
    return "; ".join(problems) + forms


def check_signature(doc, ring, allow_unsigned, url):
    """(key_id of the key that verified doc or None, warning or None); raises OffsiteError when refused.

    ring is the backup_keys.KeyRing of the run, or None when no backup_key is given.
    """
    if ring is None:
        if allow_unsigned:
            return None, f"{WHAT} {url} was taken unchecked: no backup_key was given (allow_unsigned=true)"
        raise OffsiteError(
            "key_missing",
            f"no backup_key is given, so {WHAT} {url} cannot be checked: it may have been written by someone "
            "else. Give backup_key (the vault's backup key, or TOKOTANI_BACKUP_KEY), or allow_unsigned=true to "
            "take it unchecked",
        )
    verdict = ring.verdict(doc)
    if verdict == "signed":
        return doc["signature"]["key_id"], None
    if verdict == "unsigned":
        if allow_unsigned:
            return None, f"{WHAT} {url} is not signed: taken because allow_unsigned is true"
        raise OffsiteError(
            "not_signed",
            f"{WHAT} {url} is not signed, and a backup key is configured: it may have been written by someone "
            "else (or by a deploy without the backup key). If you know where it comes from, take it with "
            "allow_unsigned=true",
        )
    if verdict == "unknown_key":
        key_id = doc["signature"]["key_id"]
        raise OffsiteError(
            "unknown_key",
            f"{WHAT} {url} is not signed by a known backup key (key id {key_id}; the keys given: {ring.key_ids()}): "
            "it may have been written by someone else. If that key is an earlier backup key of yours, give it in "
            "backup_previous_keys",
            key_id=key_id,
        )
    key_id = doc["signature"].get("key_id") if isinstance(doc.get("signature"), dict) else None
    raise OffsiteError(
        "not_authentic",
        f"the signature of {WHAT} {url} (key id {key_id}) does not match its content: the record was changed "
        "after it was signed (forged or damaged), and nothing from it is used",
        key_id=key_id,
    )


def public_record(doc, key_id):
    """What a result shows of an accepted record."""
    out = {name: doc[name] for name in ("version", "commit", "release", "deployed_at", "host")}
    out["key_id"] = key_id
    return out


def read_record(store, key, allow_unsigned, now):
    """(record, warning) of the record at key, or (None, None) when there is none; raises OffsiteError.

    record is ``public_record`` of an accepted record. A refusal raises with one of REFUSALS as its kind.
    """
    url = s3_url(store.bucket, key)
    too_large = (
        f"{WHAT} {url} is larger than {MAX_RECORD_BYTES} bytes: a deploy record is a few hundred bytes, so this is "
        "none (it may have been written by someone else), and it is not read"
    )
    head = store.head(key)
    if head is None:
        return None, None
    if int(head.get("ContentLength") or 0) > MAX_RECORD_BYTES:
        raise OffsiteError("too_large", too_large, size=int(head["ContentLength"]))
    try:
        raw = store.get_bytes(key, limit=MAX_RECORD_BYTES)
    except OffsiteError as err:
        if err.kind != "object_missing":  # removed between the HEAD and the GET: there is none
            raise
        raw = None
    if raw is None:
        return None, None
    if len(raw) > MAX_RECORD_BYTES:
        raise OffsiteError("too_large", too_large, size=len(raw))
    try:
        doc = parse_record(raw)
    except ValueError as err:
        raise OffsiteError(
            "invalid",
            f"{WHAT} {url} is not JSON ({err}): it may have been written by someone else, or damaged, and "
            "nothing from it is used",
        ) from None
    problems = record_problems(doc, now)
    if problems:
        raise OffsiteError(
            "invalid",
            f"{WHAT} {url} is not a valid deploy record ({explain(problems)}): it may have been written by someone "
            "else, or damaged, and nothing from it is used",
            problems=problems,
        )
    key_id, warning = check_signature(doc, store.keys, allow_unsigned, url)
    return public_record(doc, key_id), warning


# --------------------------------------------------------------------------- put and get


def new_record(opts, now):
    """The unsigned record of a put from its options, checked as a get would check it; raises OffsiteError."""
    deployed_at = opts.get("deployed_at")
    if deployed_at is None:
        deployed_at = int(now.timestamp())
    elif isinstance(deployed_at, float) and math.isfinite(deployed_at):
        deployed_at = int(deployed_at) if deployed_at.is_integer() else round(deployed_at, 3)
    doc = {
        "record_version": RECORD_VERSION,
        "version": opts.get("version"),
        "commit": opts.get("commit"),
        "release": opts.get("release"),
        "deployed_at": deployed_at,
        "host": opts.get("host") or socket.gethostname(),
    }
    problems = record_problems(doc, now)
    if problems:
        hint = "" if opts.get("host") else " (host defaults to this server's host name: give host when it is not one)"
        raise OffsiteError(
            "invalid",
            f"refusing to record the deployment, since a rebuild would refuse the record: {explain(problems)}"
            + (hint if any(p.startswith(f"{WHAT}'s host ") for p in problems) else ""),
            problems=problems,
        )
    return doc


def encode(doc):
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=True, allow_nan=False) + "\n").encode("ascii")


def describe(record):
    return (
        f"version {record['version']} (commit {record['commit']}, release {record['release']}), deployed on "
        f"{record['host']} at {iso_seconds(record['deployed_at'])}"
    )


def put(opts, store, check_mode=False, now=None):
    """Record a deployment: history copy first, then current.json. Returns the module result."""
    now = now or catalog.utcnow()
    ring = store.keys
    allow_unsigned = bool(opts.get("allow_unsigned"))
    doc = new_record(opts, now)
    key = current_key(store.prefix)
    url = s3_url(store.bucket, key)
    warnings = []
    if ring is None and not allow_unsigned:
        raise OffsiteError(
            "key_missing",
            f"no backup_key is given: {WHAT} is signed with it so that a rebuild can trust it. Give backup_key "
            "(the vault's backup key, or TOKOTANI_BACKUP_KEY), or allow_unsigned=true to write an unsigned record "
            "(a rebuild then reads it only with allow_unsigned=true)",
        )
    try:
        existing, _warning = read_record(store, key, allow_unsigned, now)
    except OffsiteError as err:
        if err.kind not in REFUSALS:
            raise
        existing = None
        warnings.append(f"the record in place is replaced, since a rebuild would refuse it: {err.msg}")
    same = (
        existing is not None
        and all(existing[name] == doc[name] for name in SAME_DEPLOYMENT)
        and (ring is None or existing["key_id"] == ring.current.id)
    )
    if same:
        return {
            "changed": False,
            "record": existing,
            "object": url,
            "msg": f"{WHAT} {url} already says {describe(existing)}: nothing to write",
            "warnings": warnings,
        }
    signed = ring.sign(doc) if ring is not None else doc
    record = public_record(signed, ring.current.id if ring is not None else None)
    history = history_key(store.prefix, doc)
    if ring is None:
        warnings.append(f"{WHAT} is written unsigned (no backup_key): a rebuild reads it only with allow_unsigned=true")
    result = {
        "changed": True,
        "record": record,
        "object": url,
        "history_object": s3_url(store.bucket, history),
        "warnings": warnings,
    }
    if check_mode:
        result["msg"] = f"would record {describe(record)} in {url} (and {result['history_object']})"
        return result
    body = encode(signed)
    extra = {"ContentType": "application/json"}
    store.put_bytes(history, body, extra)
    store.put_bytes(key, body, extra)
    result["msg"] = f"recorded {describe(record)} in {url} (and {result['history_object']})"
    return result


def get(opts, store, now=None):
    """Read the record of the live version. Returns the module result; raises OffsiteError when refused."""
    now = now or catalog.utcnow()
    key = current_key(store.prefix)
    url = s3_url(store.bucket, key)
    try:
        record, warning = read_record(store, key, bool(opts.get("allow_unsigned")), now)
    except OffsiteError as err:
        if err.kind not in REFUSALS:
            raise
        raise OffsiteError(err.kind, f"{err.msg}; {CHOOSE}", object=url, found=True, **err.details) from None
    if record is None:
        return {
            "changed": False,
            "found": False,
            "record": None,
            "object": url,
            "msg": f"there is no deploy record at {url}: no deployment has recorded its version there yet (the "
            f"deploy role writes it after every successful deployment); {CHOOSE}",
            "warnings": [],
        }
    signed = f", signed by backup key {record['key_id']}" if record["key_id"] else ", not signed"
    return {
        "changed": False,
        "found": True,
        "record": record,
        "object": url,
        "signed": record["key_id"] is not None,
        "msg": f"{WHAT} {url} says {describe(record)}{signed}",
        "warnings": [warning] if warning else [],
    }


def run(opts, check_mode=False, store=None, now=None):
    """The module's entry point: put or get. Raises OffsiteError (and BackupKeyError for an unusable key)."""
    mode = opts["mode"]
    if mode not in MODES:
        raise OffsiteError("invalid", f"unknown mode {mode}")
    store = store or Store(opts)
    store.check_bucket()
    result = put(opts, store, check_mode, now) if mode == "put" else get(opts, store, now)
    result.update(mode=mode, bucket=opts["bucket"], prefix=normalize_prefix(opts.get("prefix")))
    return result
