"""Unit tests of the offsite engine: part sizes, key layout, catalog from listings, retention, error mapping."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

import pytest
from botocore import exceptions as bexc
from s3transfer.exceptions import RetriesExceededError

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.tokotani.dr.plugins.module_utils import s3_offsite as s3  # noqa: E402

UTC = datetime.UTC
NOW = datetime.datetime(2026, 1, 20, 2, 0, 0, tzinfo=UTC)
MIB = 1024 * 1024
SHA = "a" * 64


# --------------------------------------------------------------------------- part sizes


def test_one_tebibyte_stays_within_10000_parts():
    size = 1024**4
    chunk = s3.part_size(size)
    assert chunk == 105 * MIB
    assert s3.part_count(size, chunk) == 9987 <= s3.MAX_PARTS


def test_one_terabyte_and_the_largest_object_stay_within_10000_parts():
    for size in (10**12, 2 * 1024**4, s3.MAX_OBJECT_SIZE):
        chunk = s3.part_size(size)
        assert chunk % MIB == 0
        assert s3.part_count(size, chunk) <= s3.MAX_PARTS
        assert s3.MIN_PART_SIZE <= chunk <= s3.MAX_PART_SIZE


def test_small_files_keep_the_requested_part_size_and_never_go_below_5_mib():
    assert s3.part_size(200 * MIB) == s3.DEFAULT_PART_SIZE
    assert s3.part_size(200 * MIB, 64 * MIB) == 64 * MIB
    assert s3.part_size(10, 1) == 5 * MIB
    assert s3.part_count(0, 5 * MIB) == 1
    assert s3.part_count(23 * MIB + 1, 5 * MIB) == 5


def test_larger_than_s3_allows_is_refused():
    with pytest.raises(s3.OffsiteError) as err:
        s3.part_size(s3.MAX_OBJECT_SIZE + 1)
    assert err.value.kind == "invalid" and "5 TiB" in err.value.msg


# --------------------------------------------------------------------------- key layout


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [("", ""), ("/", ""), ("prod", "prod"), ("/prod/shop/", "prod/shop"), ("a//b", "a/b")],
)
def test_prefix_normalisation(prefix, expected):
    assert s3.normalize_prefix(prefix) == expected


def manifest(name, fmt="plain", database="shop", *, started=None, files=None, size=100):
    ext = {"plain": "sql.gz", "directory": "dir", "custom": "dump"}[fmt]
    doc = {
        "manifest_version": 1,
        "name": name,
        "data": f"{name}.{ext}",
        "database": database,
        "format": fmt,
        "compression": {"plain": "gzip", "directory": "zstd", "custom": "gzip"}[fmt],
        "size": size,
        "sha256": SHA,
        "started_at": started or f"{name[7:17]}T{name[18:20]}:{name[21:23]}:{name[24:26]}Z",
        "finished_at": started or f"{name[7:17]}T{name[18:20]}:{name[21:23]}:{name[24:26]}Z",
        "tables": [],
    }
    if fmt == "directory":
        doc["files"] = files or {"toc.dat": {"size": 40, "sha256": SHA}, "3001.dat.zst": {"size": 60, "sha256": SHA}}
    return doc


def test_key_layout_of_file_and_directory_backups():
    doc = manifest("backup_2026-01-05_02-00-00")
    assert s3.key_layout("prod/shop", doc) == (
        "prod/shop/backup_2026-01-05_02-00-00.manifest.json",
        "prod/shop/backup_2026-01-05_02-00-00.sql.gz",
        {},
    )
    doc = manifest("backup_2026-01-05_02-00-00", fmt="directory")
    manifest_key, data_key, files = s3.key_layout("", doc)
    assert manifest_key == "backup_2026-01-05_02-00-00.manifest.json"
    assert data_key == "backup_2026-01-05_02-00-00.dir/"
    assert files == {
        "3001.dat.zst": "backup_2026-01-05_02-00-00.dir/3001.dat.zst",
        "toc.dat": "backup_2026-01-05_02-00-00.dir/toc.dat",
    }


# --------------------------------------------------------------------------- listings


def listing(prefix, docs, extra=None, drop=(), sizes=None):
    """objects and manifest docs as S3 would list them for the given manifests."""
    objects = {}
    fetched = {}
    for doc in docs:
        manifest_key, data_key, files = s3.key_layout(prefix, doc)
        objects[manifest_key] = {"size": 500, "last_modified": NOW.timestamp(), "storage_class": "STANDARD"}
        fetched[manifest_key] = doc
        if files:
            for rel, key in files.items():
                objects[key] = {"size": doc["files"][rel]["size"], "last_modified": 1.0, "storage_class": "STANDARD"}
        else:
            objects[data_key] = {"size": doc["size"], "last_modified": 1.0, "storage_class": "STANDARD_IA"}
    for key in drop:
        objects.pop(key)
    for key, size in (sizes or {}).items():
        objects[key]["size"] = size
    objects.update(extra or {})
    return objects, fetched


def test_entries_from_a_listing_are_newest_first_and_checked_against_manifests():
    docs = [
        manifest("backup_2026-01-18_02-00-00"),
        manifest("backup_2026-01-19_02-00-00", fmt="directory"),
        manifest("backup_2026-01-17_02-00-00"),
        manifest("backup_2026-01-16_02-00-00", fmt="directory"),
    ]
    objects, fetched = listing(
        "p",
        docs,
        extra={
            "p/backup_2026-01-19_03-00-00.sql.gz": {"size": 7, "last_modified": 5.0},  # interrupted push
            "p/notes.txt": {"size": 1, "last_modified": 1.0},  # foreign: ignored
            "other/backup_2026-01-19_02-00-00.sql.gz": {"size": 1, "last_modified": 1.0},
            "p/backup_2026-01-16_02-00-00.dir/extra.dat": {"size": 1, "last_modified": 1.0},
        },
        drop=["p/backup_2026-01-17_02-00-00.sql.gz"],
        sizes={"p/backup_2026-01-18_02-00-00.sql.gz": 99},
    )
    entries, incomplete = s3.build_entries(objects, "p", fetched)
    by_name = {e["name"]: e for e in entries}
    assert [e["name"] for e in entries] == [
        "backup_2026-01-19_02-00-00",
        "backup_2026-01-18_02-00-00",
        "backup_2026-01-17_02-00-00",
        "backup_2026-01-16_02-00-00",
    ]
    assert by_name["backup_2026-01-19_02-00-00"]["valid"]
    assert by_name["backup_2026-01-19_02-00-00"]["objects"] == 2
    assert "has 99 bytes, the manifest says 100" in by_name["backup_2026-01-18_02-00-00"]["problems"][0]
    assert "missing" in by_name["backup_2026-01-17_02-00-00"]["problems"][0]
    assert "unexpected objects" in by_name["backup_2026-01-16_02-00-00"]["problems"][0]
    assert by_name["backup_2026-01-18_02-00-00"]["storage_class"] == "STANDARD_IA"
    orphan = "backup_2026-01-19_03-00-00.sql.gz"
    assert incomplete == [{"name": orphan, "keys": [f"p/{orphan}"], "size": 7, "last_modified": 5.0}]


def test_unreadable_and_malformed_manifests_make_invalid_entries():
    doc = manifest("backup_2026-01-18_02-00-00")
    objects, fetched = listing("", [doc, manifest("backup_2026-01-19_02-00-00")])
    fetched["backup_2026-01-19_02-00-00.manifest.json"] = "not JSON (Expecting value)"
    fetched["backup_2026-01-18_02-00-00.manifest.json"] = dict(doc, sha256="nope")
    entries, incomplete = s3.build_entries(objects, "", fetched)
    assert [e["valid"] for e in entries] == [False, False]
    assert "not JSON" in entries[0]["problems"][0]
    assert entries[1]["problems"][0] == "the manifest's sha256 'nope' is not of the allowed form"
    # data whose manifest cannot be read is not claimed by it, hence listed as incomplete
    assert {i["name"] for i in incomplete} == {
        "backup_2026-01-19_02-00-00.sql.gz",
        "backup_2026-01-18_02-00-00.sql.gz",
    }


def test_retention_from_a_listing_keeps_newest_keep_min_per_database_and_never_invalid():
    docs = []
    for days in (1, 2, 10, 20, 30, 40):
        when = NOW - datetime.timedelta(days=days)
        docs.append(manifest(when.strftime("backup_%Y-%m-%d_%H-%M-%S")))
    old_other = (NOW - datetime.timedelta(days=50)).strftime("backup_%Y-%m-%d_%H-%M-%S")
    docs.append(manifest(old_other, database="crm"))
    broken = (NOW - datetime.timedelta(days=60)).strftime("backup_%Y-%m-%d_%H-%M-%S")
    docs.append(manifest(broken))
    objects, fetched = listing("", docs, drop=[f"{broken}.sql.gz"])
    entries, _incomplete = s3.build_entries(objects, "", fetched)

    prune, keep = s3.retention_plan(entries, "shop", NOW, keep_days=14, keep_min=3)
    assert [e["name"] for e, _r in prune] == [docs[3]["name"], docs[4]["name"], docs[5]["name"]]
    kept = {e["name"]: r for e, r in keep}
    assert "keep_min" in kept[docs[2]["name"]]  # 10 days: among the newest 3
    assert "never pruned" in kept[broken]
    assert old_other not in kept  # another database: not this run's business

    prune, keep = s3.retention_plan(entries, None, NOW, keep_days=14, keep_min=3)
    assert {e["name"] for e, _r in prune} == {docs[3]["name"], docs[4]["name"], docs[5]["name"]}
    assert "keep_min" in {e["name"]: r for e, r in keep}[old_other]  # crm's only backup

    prune, _keep = s3.retention_plan(entries, "shop", NOW, keep_days=0, keep_min=0)
    assert broken not in {e["name"] for e, _r in prune} and len(prune) == 6


def test_selecting_what_to_pull():
    docs = [manifest(f"backup_2026-01-{day:02d}_02-00-00") for day in (10, 11, 12, 13)]
    objects, fetched = listing("", docs, sizes={"backup_2026-01-13_02-00-00.sql.gz": 1})
    entries, _incomplete = s3.build_entries(objects, "", fetched)
    chosen, skipped = s3.select_entry(entries)
    assert chosen["name"] == "backup_2026-01-12_02-00-00"
    assert [e["name"] for e in skipped] == ["backup_2026-01-13_02-00-00"]
    before = datetime.datetime(2026, 1, 12, 2, 0, 0, tzinfo=UTC)
    assert s3.select_entry(entries, before=before)[0]["name"] == "backup_2026-01-11_02-00-00"
    stem = "backup_2026-01-10_02-00-00"
    for wanted in (stem, f"{stem}.sql.gz", f"{stem}.manifest.json", f"/x/{stem}.sql.gz"):
        assert s3.select_entry(entries, wanted)[0]["name"] == "backup_2026-01-10_02-00-00"
    assert s3.select_entry(entries, "backup_2020-01-01_00-00-00") == (None, [])
    assert s3.select_entry(entries, database="crm") == (None, [])


def test_a_pull_of_latest_passes_over_a_suspicious_offsite_backup():
    docs = [manifest(f"backup_2026-01-{day:02d}_02-00-00") for day in (10, 11)]
    docs[1]["suspicious"] = {"compared_with": docs[0]["name"], "reason": "public.orders is gone", "tables": []}
    objects, fetched = listing("", docs)
    entries, _incomplete = s3.build_entries(objects, "", fetched)
    chosen, skipped = s3.select_entry(entries)
    assert chosen["name"] == docs[0]["name"] and [e["name"] for e in skipped] == [docs[1]["name"]]
    assert s3.select_entry(entries, accept_suspicious=True)[0]["name"] == docs[1]["name"]
    assert s3.select_entry(entries, docs[1]["name"])[0]["name"] == docs[1]["name"]


def test_fallback_candidates_are_what_latest_would_consider_newest_first():
    docs = [manifest(f"backup_2026-01-{day:02d}_02-00-00") for day in (10, 11, 12, 13, 14, 15)]
    docs[3]["suspicious"] = {"compared_with": docs[2]["name"], "reason": "public.orders is gone", "tables": []}
    docs[2]["database"] = "crm"
    objects, fetched = listing("", docs, sizes={"backup_2026-01-14_02-00-00.sql.gz": 1})
    entries, _incomplete = s3.build_entries(objects, "", fetched)
    chosen, _skipped = s3.select_entry(entries, database="shop")
    assert chosen["name"] == "backup_2026-01-15_02-00-00"

    def names(found):
        return [(e["name"][7:17], [s["name"][7:17] for s in skipped]) for e, skipped in found]

    # 14 is invalid and 13 suspicious (both passed over on the way to 11, as latest passes them), 12 is crm's.
    found = s3.fallback_candidates(entries, chosen, 5, database="shop")
    assert names(found) == [("2026-01-11", ["2026-01-14", "2026-01-13"]), ("2026-01-10", [])]
    assert names(s3.fallback_candidates(entries, chosen, 1, database="shop")) == [names(found)[0]]
    assert s3.fallback_candidates(entries, chosen, 0, database="shop") == []
    accepting = s3.fallback_candidates(entries, chosen, 2, database="shop", accept_suspicious=True)
    assert names(accepting) == [("2026-01-13", ["2026-01-14"]), ("2026-01-11", [])]
    assert names(s3.fallback_candidates(entries, chosen, 2))[0] == ("2026-01-12", ["2026-01-14", "2026-01-13"])
    # started strictly before before, like latest: from 12 (the newest before 13 of every database) to 11 and 10
    before = datetime.datetime(2026, 1, 13, 2, 0, 0, tzinfo=UTC)
    chosen = s3.select_entry(entries, before=before)[0]
    assert chosen["name"] == "backup_2026-01-12_02-00-00"
    assert names(s3.fallback_candidates(entries, chosen, 3, before=before)) == [
        ("2026-01-11", []),
        ("2026-01-10", []),
    ]
    assert s3.fallback_candidates(entries, entries[-1], 3) == []


# --------------------------------------------------------------------------- errors and retries


def client_error(code, status=400, message="boom", operation="GetObject"):
    return bexc.ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
    )


@pytest.mark.parametrize(
    ("err", "kind", "words"),
    [
        (client_error("NoSuchBucket", 404), "bucket_missing", ["bucket tokotani-dr does not exist", "create it"]),
        (client_error("AccessDenied", 403), "access_denied", ["access denied", "s3:GetObject"]),
        (client_error("InvalidAccessKeyId", 403), "access_denied", ["access key is not known", "AWS_ACCESS_KEY_ID"]),
        (client_error("SignatureDoesNotMatch", 403), "access_denied", ["secret key does not match"]),
        (client_error("ExpiredToken", 400), "access_denied", ["session token"]),
        (client_error("NoSuchKey", 404), "object_missing", ["s3://tokotani-dr/k does not exist"]),
        (client_error("InvalidObjectState", 403), "archived", ["GLACIER"]),
        (client_error("SlowDown", 503), "throttled", ["SlowDown", "after every retry"]),
        (client_error("PermanentRedirect", 301), "s3", ["set region"]),
        (client_error("Weird", 400, "odd"), "s3", ["Weird: odd"]),
        (bexc.EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), "endpoint_unreachable", ["unreachable"]),
        (bexc.ConnectTimeoutError(endpoint_url="http://10.0.0.1"), "endpoint_unreachable", ["unreachable"]),
        (bexc.ConnectionClosedError(endpoint_url="http://x"), "endpoint_unreachable", ["dropped the connection"]),
        (bexc.SSLError(endpoint_url="https://x", error="bad cert"), "tls", ["ca_bundle"]),
        (bexc.NoCredentialsError(), "no_credentials", ["AWS_ACCESS_KEY_ID"]),
        (bexc.ProfileNotFound(profile="dr"), "no_credentials", ["profile"]),
        (OSError(28, "No space left on device"), "local", ["No space left"]),
    ],
)
def test_errors_map_to_specific_messages(err, kind, words):
    mapped = s3.describe_error(err, "tokotani-dr", "k", "http://127.0.0.1:9000", "download")
    assert mapped.kind == kind, mapped.msg
    for word in words:
        assert word in mapped.msg
    assert mapped.to_dict()["error"] == kind


def test_wrapped_transfer_errors_are_unwrapped():
    wrapped = RetriesExceededError(bexc.ReadTimeoutError(endpoint_url="http://x"))
    assert s3.is_retryable(wrapped)
    assert s3.describe_error(wrapped, "b").kind == "endpoint_unreachable"


def test_retryable_errors():
    assert s3.is_retryable(client_error("SlowDown", 503))
    assert s3.is_retryable(client_error("Throttling", 400))
    assert s3.is_retryable(client_error("InternalError", 500))
    assert s3.is_retryable(bexc.ConnectionClosedError(endpoint_url="http://x"))
    assert not s3.is_retryable(client_error("AccessDenied", 403))
    assert not s3.is_retryable(client_error("NoSuchKey", 404))
    # botocore has already retried a refused connection: report it now
    assert not s3.is_retryable(bexc.EndpointConnectionError(endpoint_url="http://x"))
    assert not s3.is_retryable(ValueError("x"))


def test_retrier_backs_off_on_throttling_and_stops_on_other_errors():
    delays = []
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise client_error("SlowDown", 503)
        return "ok"

    assert s3.Retrier(retries=3, base=1, cap=8, sleep=delays.append).call(flaky) == "ok"
    assert len(calls) == 3 and len(delays) == 2
    assert 0 <= delays[0] <= 1 and 0 <= delays[1] <= 2

    calls.clear()

    def denied():
        calls.append(1)
        raise client_error("AccessDenied", 403)

    with pytest.raises(bexc.ClientError):
        s3.Retrier(retries=5, sleep=delays.append).call(denied)
    assert len(calls) == 1

    calls.clear()
    with pytest.raises(bexc.ClientError):
        s3.Retrier(retries=2, sleep=lambda delay: None).call(lambda: calls.append(1) or flaky_forever())
    assert len(calls) == 3


def flaky_forever():
    raise client_error("SlowDown", 503)


def test_client_config_retries_timeouts_and_checksums():
    config = s3.client_config({"retries": 4, "connect_timeout": 3, "read_timeout": 9, "concurrency": 20})
    assert config.retries == {"mode": "standard", "total_max_attempts": 5}
    assert (config.connect_timeout, config.read_timeout, config.max_pool_connections) == (3, 9, 22)
    assert s3.client_config({"addressing_style": "path"}).s3 == {"addressing_style": "path"}
    relaxed = s3.client_config({"checksum_algorithm": "none"})
    assert relaxed.request_checksum_calculation == "when_required"


def test_upload_arguments_carry_sha256_encryption_and_storage_class():
    extra = s3.upload_extra(
        {"encryption": "aws:kms", "kms_key_id": "alias/dr", "storage_class": "DEEP_ARCHIVE"}, SHA, "b", "shop"
    )
    assert extra == {
        "Metadata": {"sha256": SHA, "backup": "b", "database": "shop"},
        "ChecksumAlgorithm": "CRC32",
        "ServerSideEncryption": "aws:kms",
        "SSEKMSKeyId": "alias/dr",
        "StorageClass": "DEEP_ARCHIVE",
    }
    assert "ChecksumAlgorithm" not in s3.upload_extra({"checksum_algorithm": "none"}, SHA, "b", "shop")
    assert "SSEKMSKeyId" not in s3.upload_extra({"encryption": "AES256", "kms_key_id": "k"}, SHA, "b", "shop")
    # manifests stay readable without an S3 restore
    manifest_args = s3.manifest_extra(extra, b"{}", "b")
    assert "StorageClass" not in manifest_args and manifest_args["ServerSideEncryption"] == "aws:kms"
    assert manifest_args["Metadata"]["sha256"] == "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"


class FakeStore:
    """Just enough of s3_offsite.Store for prune(): a listing, manifests, and a log of deletions."""

    def __init__(self, objects, docs):
        self.objects = objects
        self.docs = docs
        self.deleted = []

    def check_bucket(self):
        pass

    def catalog(self):
        entries, incomplete = s3.build_entries(self.objects, "", self.docs)
        return entries, incomplete, self.objects

    def delete_keys(self, keys):
        self.deleted.append(list(keys))
        return len(keys)


def test_prune_deletes_the_manifest_first_and_old_incomplete_data_only_for_all_databases():
    docs = [manifest(f"backup_2026-01-{day:02d}_02-00-00", fmt="directory") for day in (1, 2, 18, 19)]
    objects, fetched = listing("", docs)
    old = (NOW - datetime.timedelta(days=20)).timestamp()
    objects["backup_2025-12-01_02-00-00.sql.gz"] = {"size": 5, "last_modified": old}
    objects["backup_2026-01-19_05-00-00.sql.gz"] = {"size": 5, "last_modified": NOW.timestamp()}  # in progress
    store = FakeStore(objects, fetched)

    checked = s3.prune({"keep_days": 14, "keep_min": 2}, check_mode=True, store=store, now=NOW)
    assert checked["changed"] and store.deleted == []
    assert [p["name"] for p in checked["pruned"]] == ["backup_2026-01-02_02-00-00", "backup_2026-01-01_02-00-00"]
    assert checked["removed_incomplete"] == ["backup_2025-12-01_02-00-00.sql.gz"]

    done = s3.prune({"keep_days": 14, "keep_min": 2, "database": "shop"}, store=store, now=NOW)
    assert done["removed_incomplete"] == []  # data without a manifest has no database
    assert store.deleted[0] == ["backup_2026-01-02_02-00-00.manifest.json"]
    assert store.deleted[1] == [
        "backup_2026-01-02_02-00-00.dir/3001.dat.zst",
        "backup_2026-01-02_02-00-00.dir/toc.dat",
    ]
    assert done["deleted_objects"] == 6 and done["freed_bytes"] == 200


class PullStore(FakeStore):
    """Enough of s3_offsite.Store for a pull in check mode: the listing, and each data object's head.

    heads maps a data key to its metadata sha256, or to an OffsiteError the head raises; the keys in gone are
    listed but their head finds nothing (deleted since the listing).
    """

    bucket = "tokotani-dr"
    prefix = ""
    keys = None

    def __init__(self, docs, heads=None, gone=()):
        objects, fetched = listing("", docs)
        super().__init__(objects, fetched)
        self.heads = heads or {}
        self.gone = set(gone)
        self.asked = []

    def head(self, key):
        self.asked.append(key)
        if key in self.gone:
            return None
        meta = self.heads.get(key, SHA)
        if isinstance(meta, s3.OffsiteError):
            raise meta
        return {"Metadata": {"sha256": meta}}


FOUR = [manifest(f"backup_2026-01-{day:02d}_02-00-00") for day in (10, 11, 12, 13)]


def pull_check(store, tmp_path, **opts):
    opts = {"backup_dir": str(tmp_path / "dest"), "bucket": "tokotani-dr", **opts}
    return s3.pull(opts, check_mode=True, store=store)


def test_check_mode_pull_falls_back_past_copies_whose_metadata_contradicts_the_manifest(tmp_path):
    store = PullStore(FOUR, heads={"backup_2026-01-13_02-00-00.sql.gz": "0" * 64})
    result = pull_check(store, tmp_path, fallback=2)
    assert (result["status"], result["name"]) == ("would_pull", "backup_2026-01-12_02-00-00")
    assert result["passed_over"] == [
        {
            "name": "backup_2026-01-13_02-00-00",
            "error": "checksum_mismatch",
            "msg": f"checksum mismatch: s3://tokotani-dr/backup_2026-01-13_02-00-00.sql.gz carries sha256 {'0' * 64} "
            f"in its metadata, the manifest says {SHA}: the offsite copy was replaced or damaged; nothing was "
            "downloaded",
        }
    ]
    assert result["warnings"] == [
        "the offsite backup backup_2026-01-13_02-00-00 did not verify on download "
        f"({result['passed_over'][0]['msg']}): nothing of it was kept; would pull the previous valid one, "
        "backup_2026-01-12_02-00-00"
    ]
    assert not (tmp_path / "dest").exists()
    # Without fallback (the default), or with a named backup, the error is the one it always was.
    for opts in ({}, {"fallback": 0}, {"backup": "backup_2026-01-13_02-00-00", "fallback": 2}):
        with pytest.raises(s3.OffsiteError) as err:
            pull_check(store, tmp_path, **opts)
        assert err.value.kind == "checksum_mismatch"
        assert err.value.msg == result["passed_over"][0]["msg"] and "passed_over" not in err.value.details


def test_a_pull_with_fallback_that_passes_nothing_over_says_so(tmp_path):
    result = pull_check(PullStore(FOUR), tmp_path, fallback=3)
    assert result["name"] == "backup_2026-01-13_02-00-00" and result["passed_over"] == [] and result["warnings"] == []


def test_every_candidate_failing_names_each_one_and_whether_candidates_ran_out(tmp_path):
    bad = {f"{doc['name']}.sql.gz": "0" * 64 for doc in FOUR}
    missing = s3.OffsiteError("object_missing", "s3://tokotani-dr/backup_2026-01-11_02-00-00.sql.gz does not exist")
    bad["backup_2026-01-11_02-00-00.sql.gz"] = missing
    with pytest.raises(s3.OffsiteError) as err:
        pull_check(PullStore(FOUR, heads=bad), tmp_path, fallback=2, database="shop")
    assert err.value.kind == "object_missing"  # the last one's
    assert err.value.msg.startswith("no offsite backup of shop verified on download (3 tried, fallback=2): ")
    assert err.value.msg.endswith("backup_2026-01-11_02-00-00: " + missing.msg + "; nothing was kept")
    assert [(p["name"], p["error"]) for p in err.value.details["passed_over"]] == [
        ("backup_2026-01-13_02-00-00", "checksum_mismatch"),
        ("backup_2026-01-12_02-00-00", "checksum_mismatch"),
        ("backup_2026-01-11_02-00-00", "object_missing"),
    ]
    for name in ("backup_2026-01-13_02-00-00: checksum mismatch", "backup_2026-01-12_02-00-00: checksum mismatch"):
        assert name in err.value.msg

    with pytest.raises(s3.OffsiteError) as err:
        pull_check(PullStore(FOUR, heads=bad), tmp_path, fallback=9)
    assert err.value.kind == "checksum_mismatch"
    assert err.value.msg.startswith(
        "no offsite backup of shop verified on download (4 tried, fallback=9: no older valid backup left to try): "
    )


def test_only_a_damaged_or_missing_copy_is_passed_over(tmp_path):
    denied = s3.OffsiteError("access_denied", "access denied to s3://tokotani-dr/backup_2026-01-12_02-00-00.sql.gz")
    store = PullStore(FOUR, heads={"backup_2026-01-13_02-00-00.sql.gz": denied})
    with pytest.raises(s3.OffsiteError) as err:
        pull_check(store, tmp_path, fallback=3)
    assert err.value.kind == "access_denied" and err.value.msg == denied.msg
    assert store.asked == ["backup_2026-01-13_02-00-00.sql.gz"]

    # A failure that is not the copy's, met while falling back, fails the pull and still says what was passed over.
    store = PullStore(
        FOUR,
        heads={"backup_2026-01-13_02-00-00.sql.gz": "0" * 64, "backup_2026-01-12_02-00-00.sql.gz": denied},
    )
    with pytest.raises(s3.OffsiteError) as err:
        pull_check(store, tmp_path, fallback=3)
    assert err.value.kind == "access_denied"
    assert err.value.msg.startswith(
        denied.msg + " (while falling back from the offsite backups that did not verify on download - "
        "backup_2026-01-13_02-00-00: checksum mismatch"
    )
    assert err.value.msg.endswith("; nothing of them was kept)")
    assert [p["name"] for p in err.value.details["passed_over"]] == ["backup_2026-01-13_02-00-00"]


def test_an_object_gone_since_the_listing_is_passed_over_and_fallback_must_not_be_negative(tmp_path):
    store = PullStore(FOUR, gone=["backup_2026-01-13_02-00-00.sql.gz"])
    result = pull_check(store, tmp_path, fallback=1)
    assert result["name"] == "backup_2026-01-12_02-00-00"
    assert [(p["name"], p["error"], p["msg"]) for p in result["passed_over"]] == [
        (
            "backup_2026-01-13_02-00-00",
            "object_missing",
            "s3://tokotani-dr/backup_2026-01-13_02-00-00.sql.gz does not exist",
        )
    ]
    with pytest.raises(s3.OffsiteError) as err:
        pull_check(store, tmp_path, fallback=-1)
    assert err.value.kind == "invalid" and err.value.msg == "fallback must be 0 or more (got -1)"


def test_written_after_marks_copies_by_the_latest_of_their_objects():
    old, replaced, late_data = (
        manifest("backup_2026-01-17_02-00-00"),
        manifest("backup_2026-01-18_02-00-00", fmt="directory"),
        manifest("backup_2026-01-19_02-00-00"),
    )
    objects, fetched = listing("p", [old, replaced, late_data])
    cutoff = NOW - datetime.timedelta(hours=1)
    early = (cutoff - datetime.timedelta(hours=5)).timestamp()
    for key in objects:
        objects[key]["last_modified"] = early
    # one file of the directory backup written after the cutoff (replaced by someone), and a data object with a
    # last_modified of the wrong type (a crafted listing): the other objects still decide
    objects["p/backup_2026-01-18_02-00-00.dir/toc.dat"]["last_modified"] = NOW.timestamp()
    objects["p/backup_2026-01-19_02-00-00.sql.gz"]["last_modified"] = "2030-01-01"
    entries, _incomplete = s3.build_entries(objects, "p", fetched)
    marked = s3.mark_written_after(entries, objects, "p", cutoff)
    assert [e["name"] for e in marked] == ["backup_2026-01-18_02-00-00"]
    by_name = {e["name"]: e for e in entries}
    assert not by_name["backup_2026-01-18_02-00-00"]["valid"]
    assert by_name["backup_2026-01-18_02-00-00"]["problems"][-1].startswith(s3.WRITTEN_AFTER)
    assert by_name["backup_2026-01-17_02-00-00"]["valid"] and by_name["backup_2026-01-19_02-00-00"]["valid"]
    chosen, skipped = s3.select_entry(entries, "latest")
    assert chosen["name"] == "backup_2026-01-19_02-00-00" and skipped == []
    chosen, skipped = s3.select_entry(entries, "latest", before=catalog_parse("2026-01-19T00:00:00Z"))
    assert chosen["name"] == "backup_2026-01-17_02-00-00"
    assert [e["name"] for e in skipped] == ["backup_2026-01-18_02-00-00"]


def catalog_parse(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
