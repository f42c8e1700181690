"""tokotani.dr.backup_offsite against a real S3 API (moto server over HTTP on loopback), through ansible.

The backups pushed are made by tokotani.dr.postgresql_backup from a real PostgreSQL 15, so the
manifests are the real ones; larger files reuse such a manifest with random data of the wanted size.
Every fault test asserts the operator-facing message AND that nothing was lost or left behind.
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import pytest
from backup_support import (
    copy_backup,
    run_module,
)
from helpers import free_port
from s3_support import (
    StoppingProxy,
    big_backup,
    manifest_of,
    moto_servers,
    offsite,
    offsite_many,
    restores,
    serve_moto,
    sha256_of,
    shop_backups,
    tree_state,
    verbose_outputs,
)

DB = "off_src"
MIB = 1024 * 1024
NOW = datetime.datetime.now(datetime.UTC)
LATER = (NOW + datetime.timedelta(hours=1)).isoformat()


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    """The session's moto server (each test uses its own buckets)."""
    yield from serve_moto(tmp_path_factory.mktemp("moto"))


@pytest.fixture
def moto_factory(tmp_path):
    """Dedicated moto servers, for tests that kill them or turn authentication on."""
    yield from moto_servers(tmp_path)


@pytest.fixture(scope="module")
def backups(pg_cluster, tmp_path_factory):
    """Two real backups of a tiny shop: the default directory format and the plan's .sql.gz."""
    yield from shop_backups(pg_cluster, tmp_path_factory.mktemp("off_backups"), DB)


def backup_files(directory: Path) -> list[str]:
    """Names in directory that look like backups or their leftovers (lock files left out)."""
    if not directory.exists():
        return []
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("backup_"))


def failed_with(result: dict, kind: str, *words: str) -> None:
    assert result.get("failed"), result
    assert result.get("error") == kind, result
    for word in words:
        assert word in result["msg"], result["msg"]


def test_push_list_pull_restore_round_trip(pg_cluster, moto, backups, tmp_path):
    src = backups["dir"]
    untouched = tree_state(src)
    bucket = moto.bucket()
    conn = moto.args(bucket, prefix="/prod/shop/")
    s3 = moto.client()

    pushed = offsite({**conn, "mode": "push", "backup_dir": str(src), "backup": "all"})
    assert pushed["changed"] and not pushed.get("failed"), pushed
    assert sorted(pushed["pushed"]) == sorted([backups["plain"], backups["directory"]])
    assert pushed["prefix"] == "prod/shop"
    keys = moto.keys(bucket)
    plain = manifest_of(src, backups["plain"])
    directory = manifest_of(src, backups["directory"])
    # The layout, and the manifest's sha256 travelling in every data object's metadata.
    assert f"prod/shop/{plain['name']}.manifest.json" in keys
    head = s3.head_object(Bucket=bucket, Key=f"prod/shop/{plain['data']}", ChecksumMode="ENABLED")
    assert head["Metadata"]["sha256"] == plain["sha256"]
    assert head["ChecksumCRC32"]  # the S3 additional checksum the endpoint checked
    for rel, info in directory["files"].items():
        head = s3.head_object(Bucket=bucket, Key=f"prod/shop/{directory['data']}/{rel}")
        assert head["Metadata"]["sha256"] == info["sha256"]
    manifest_object = s3.get_object(Bucket=bucket, Key=f"prod/shop/{directory['name']}.manifest.json")
    assert manifest_object["Body"].read() == (src / f"{directory['name']}.manifest.json").read_bytes()

    again, listed = offsite_many(
        [
            {**conn, "mode": "push", "backup_dir": str(src), "backup": "all"},
            {**conn, "mode": "list", "before": LATER},
        ]
    )
    assert not again["changed"] and not again.get("failed"), again
    assert sorted(again["already_offsite"]) == sorted(pushed["pushed"])
    assert not listed["changed"] and listed["count"] == 2 and listed["valid_count"] == 2, listed
    newest = max(pushed["pushed"])
    assert listed["newest"]["name"] == newest and listed["newest_before"]["name"] == newest
    assert {b["database"] for b in listed["backups"]} == {DB}
    assert listed["incomplete"] == []
    assert moto.keys(bucket) == keys  # list never changes anything

    dest = tmp_path / "restore"
    pulled = offsite({**conn, "mode": "pull", "backup_dir": str(dest), "database": DB})
    assert pulled["changed"] and pulled["status"] == "pulled" and pulled["verified"], pulled
    assert pulled["name"] == newest
    source_data = src / manifest_of(src, newest)["data"]
    if source_data.is_dir():
        assert tree_state(Path(pulled["path"])) == tree_state(source_data)
    else:
        assert sha256_of(Path(pulled["path"])) == sha256_of(source_data)
    assert (dest / f"{newest}.manifest.json").read_bytes() == (src / f"{newest}.manifest.json").read_bytes()
    assert dest.stat().st_mode & 0o777 == 0o700
    assert Path(pulled["manifest_path"]).stat().st_mode & 0o777 == 0o600
    info = run_module("backup_info", {"backup_dir": str(dest), "verify": True})
    assert [(b["name"], b["valid"], b["verified"]) for b in info["backups"]] == [(newest, True, True)], info

    twice = offsite({**conn, "mode": "pull", "backup_dir": str(dest), "backup": "latest"})
    assert not twice["changed"] and twice["status"] == "already_local", twice

    by_name = offsite({**conn, "mode": "pull", "backup_dir": str(dest), "backup": plain["data"]})
    assert by_name["changed"] and by_name["name"] == plain["name"], by_name
    assert sha256_of(dest / plain["data"]) == plain["sha256"]

    # Restore latest offsite backup = pull, then postgresql_restore of the pulled path.
    restores(pg_cluster, pulled["path"], DB, "off_restored")
    assert tree_state(src) == untouched


def test_check_mode_writes_nothing_in_every_mode(moto, backups, tmp_path):
    src = backups["dir"]
    bucket = moto.bucket()
    conn = moto.args(bucket, prefix="check")

    would = offsite({**conn, "mode": "push", "backup_dir": str(src)}, check=True)
    assert would["changed"] and would["backups"][0]["status"] == "would_push", would
    assert moto.keys(bucket) == {}

    assert offsite({**conn, "mode": "push", "backup_dir": str(src), "backup": "all"})["changed"]
    keys = moto.keys(bucket)

    dest = tmp_path / "never"
    would_pull, would_prune, listed = offsite_many(
        [
            {**conn, "mode": "pull", "backup_dir": str(dest)},
            {**conn, "mode": "prune", "keep_days": 0, "keep_min": 0},
            {**conn, "mode": "list"},
        ],
        check=True,
    )
    assert would_pull["changed"] and would_pull["status"] == "would_pull", would_pull
    assert not dest.exists()
    assert would_prune["changed"] and len(would_prune["pruned"]) == 2, would_prune
    assert not listed["changed"] and listed["count"] == 2, listed
    assert moto.keys(bucket) == keys


def test_prune_keeps_the_newest_keep_min_and_never_an_invalid_copy(moto, backups, tmp_path):
    aged = tmp_path / "aged"
    aged.mkdir(mode=0o700)
    stems = {}
    for days in (50, 40, 30, 20, 2, 1):
        when = NOW - datetime.timedelta(days=days, hours=1)
        stem = when.strftime("backup_%Y-%m-%d_%H-%M-%S")
        copy_backup(backups["dir"], backups["plain"], aged, stem, when.strftime("%Y-%m-%dT%H:%M:%SZ"))
        stems[days] = stem
    bucket = moto.bucket()
    conn = moto.args(bucket, prefix="retention")
    assert offsite({**conn, "mode": "push", "backup_dir": str(aged), "backup": "all"})["changed"]
    # The oldest copy loses its data offsite: invalid, so never pruned.
    data = manifest_of(aged, stems[50])["data"]
    moto.client().delete_object(Bucket=bucket, Key=f"retention/{data}")

    pruned = offsite({**conn, "mode": "prune", "keep_days": 14, "keep_min": 3, "database": DB})
    assert pruned["changed"] and not pruned.get("failed"), pruned
    assert sorted(p["name"] for p in pruned["pruned"]) == sorted([stems[40], stems[30]])
    kept = {k["name"]: k["reason"] for k in pruned["kept"]}
    assert set(kept) == {stems[50], stems[20], stems[2], stems[1]}
    assert "keep_min" in kept[stems[20]] and "never pruned" in kept[stems[50]]
    left = moto.keys(bucket)
    assert not [k for k in left if stems[40] in k or stems[30] in k]

    listed = offsite({**conn, "mode": "list"})
    assert [b["name"] for b in listed["backups"]] == [stems[1], stems[2], stems[20], stems[50]]
    assert [b["valid"] for b in listed["backups"]] == [True, True, True, False]
    assert "missing" in listed["backups"][-1]["problems"][0]
    assert not offsite({**conn, "mode": "prune", "keep_days": 14, "keep_min": 3})["changed"]


def test_tampered_objects_fail_the_pull_and_leave_nothing(moto, backups, tmp_path):
    src = backups["dir"]
    bucket = moto.bucket()
    conn = moto.args(bucket, prefix="tamper")
    assert offsite({**conn, "mode": "push", "backup_dir": str(src), "backup": "all"})["changed"]
    s3 = moto.client()
    plain = manifest_of(src, backups["plain"])
    key = f"tamper/{plain['data']}"
    original = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01
    dest = tmp_path / "dest"

    # Overwritten with one byte flipped, keeping the metadata: caught by the sha256 after download.
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(flipped), Metadata={"sha256": plain["sha256"]})
    result = offsite({**conn, "mode": "pull", "backup_dir": str(dest), "backup": plain["name"]})
    failed_with(result, "checksum_mismatch", "checksum mismatch", plain["sha256"], "nothing was kept")
    assert backup_files(dest) == []

    # Overwritten plainly (no metadata): the same.
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(flipped))
    result = offsite({**conn, "mode": "pull", "backup_dir": str(dest), "backup": plain["name"]})
    failed_with(result, "checksum_mismatch", "checksum mismatch")
    assert backup_files(dest) == []

    # Metadata that contradicts the manifest: refused before downloading anything.
    s3.put_object(Bucket=bucket, Key=key, Body=original, Metadata={"sha256": "0" * 64})
    result = offsite({**conn, "mode": "pull", "backup_dir": str(dest), "backup": plain["name"]})
    failed_with(result, "checksum_mismatch", "nothing was downloaded")
    assert backup_files(dest) == []

    # One file of a directory backup, same size, different bytes.
    directory = manifest_of(src, backups["directory"])
    rel = max(directory["files"], key=lambda r: directory["files"][r]["size"])
    dkey = f"tamper/{directory['data']}/{rel}"
    body = bytearray(s3.get_object(Bucket=bucket, Key=dkey)["Body"].read())
    body[0] ^= 0xFF
    s3.put_object(Bucket=bucket, Key=dkey, Body=bytes(body), Metadata={"sha256": directory["files"][rel]["sha256"]})
    result = offsite({**conn, "mode": "pull", "backup_dir": str(dest), "backup": directory["name"]})
    failed_with(result, "checksum_mismatch", "checksum mismatch", rel)
    assert backup_files(dest) == []

    # A local backup that no longer matches its manifest is not pushed, and nothing of it stays offsite.
    rotten = tmp_path / "rotten"
    rotten.mkdir(mode=0o700)
    copy_backup(src, plain["name"], rotten, "backup_2026-01-01_00-00-00", "2026-01-01T00:00:00Z")
    data = rotten / plain["data"].replace(plain["name"], "backup_2026-01-01_00-00-00")
    body = bytearray(data.read_bytes())
    body[-30] ^= 0x01
    data.write_bytes(bytes(body))
    before = moto.keys(bucket)
    result = offsite({**conn, "mode": "push", "backup_dir": str(rotten)})
    failed_with(result, "checksum_mismatch", "does not match its manifest", "not pushed")
    assert moto.keys(bucket) == before


def test_multipart_backup_round_trips(moto, backups, tmp_path):
    local = tmp_path / "big"
    local.mkdir(mode=0o700)
    name = big_backup(backups["dir"], backups["plain"], local, 23 * MIB + 12345)
    bucket = moto.bucket()
    conn = moto.args(bucket, prefix="big", multipart_threshold="5MB", multipart_chunksize="5MB", concurrency=3)
    pushed = offsite({**conn, "mode": "push", "backup_dir": str(local), "backup": name})
    assert pushed["changed"] and not pushed.get("failed"), pushed
    manifest = manifest_of(local, name)
    head = moto.client().head_object(Bucket=bucket, Key=f"big/{manifest['data']}")
    assert head["ETag"].strip('"').endswith("-5"), head["ETag"]  # 5 parts of 5 MiB
    assert head["ContentLength"] == manifest["size"]
    dest = tmp_path / "back"
    pulled = offsite({**conn, "mode": "pull", "backup_dir": str(dest)})
    assert pulled["verified"] and pulled["name"] == name, pulled
    assert sha256_of(dest / manifest["data"]) == manifest["sha256"] == sha256_of(local / manifest["data"])


def test_endpoint_stopped_midway(moto_factory, backups, tmp_path):
    local = tmp_path / "local"
    local.mkdir(mode=0o700)
    name = big_backup(backups["dir"], backups["plain"], local, 40 * MIB)
    copy_backup(backups["dir"], backups["plain"], local, "backup_2026-01-01_00-00-00", "2026-01-01T00:00:00Z")
    untouched = tree_state(local)
    transfer = {"multipart_threshold": "5MB", "multipart_chunksize": "5MB", "concurrency": 2, "retries": 0}

    # Push: the endpoint goes away after about 12 MiB went up.
    server = moto_factory()
    bucket = server.bucket()
    proxy = StoppingProxy(server.port, stop_after=12 * MIB, direction="up", on_stop=server.kill)
    try:
        result = offsite(
            {**server.args(bucket, endpoint_url=proxy.url, **transfer), "mode": "push", "backup_dir": str(local)}
        )
    finally:
        proxy.close()
    assert proxy.stopped.is_set()
    failed_with(result, "endpoint_unreachable", proxy.url)
    assert tree_state(local) == untouched
    assert not [n for n in backup_files(local) if n.endswith(".partial")]

    # Pull: the endpoint goes away after about 10 MiB came down.
    server = moto_factory()
    bucket = server.bucket()
    assert offsite({**server.args(bucket, **transfer), "mode": "push", "backup_dir": str(local), "backup": name})[
        "changed"
    ]
    proxy = StoppingProxy(server.port, stop_after=10 * MIB, direction="down", on_stop=server.kill)
    dest = tmp_path / "dest"
    try:
        result = offsite(
            {**server.args(bucket, endpoint_url=proxy.url, **transfer), "mode": "pull", "backup_dir": str(dest)}
        )
    finally:
        proxy.close()
    assert proxy.stopped.is_set()
    failed_with(result, "endpoint_unreachable")
    assert backup_files(dest) == []
    assert tree_state(local) == untouched


def test_errors_name_the_problem(moto, moto_factory, backups, tmp_path):
    src = str(backups["dir"])
    bucket = moto.bucket()
    cases = [
        (
            moto.args("tt-no-such-bucket", **{"mode": "list"}),
            ("bucket_missing", "tt-no-such-bucket", "does not exist"),
        ),
        (
            moto.args(bucket, endpoint_url=f"http://127.0.0.1:{free_port()}", retries=0, mode="list"),
            ("endpoint_unreachable", "unreachable"),
        ),
        (
            moto.args(bucket, mode="pull", backup_dir=str(tmp_path / "d1"), backup="backup_2020-01-01_00-00-00"),
            ("object_missing", "backup_2020-01-01_00-00-00"),
        ),
        (
            moto.args(bucket, mode="pull", backup_dir=str(tmp_path / "d2")),
            ("no_backup", "no valid offsite backup"),
        ),
    ]
    secured = moto_factory()
    secured_bucket = secured.bucket()
    iam = secured.iam()
    iam.create_user(UserName="reader")
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    secured.set_auth(True)
    denied = {"mode": "push", "backup_dir": src}
    cases += [
        (
            secured.args(secured_bucket, access_key=key["AccessKeyId"], secret_key=key["SecretAccessKey"], **denied),
            ("access_denied", "AccessDenied"),
        ),
        (
            secured.args(secured_bucket, access_key="AKIAUNKNOWN000000000", **denied),
            ("access_denied", "InvalidAccessKeyId"),
        ),
        (
            secured.args(secured_bucket, access_key=key["AccessKeyId"], secret_key="not-the-secret", **denied),
            ("access_denied", "SignatureDoesNotMatch"),
        ),
    ]
    results = offsite_many([args for args, _expected in cases])
    for (_args, (kind, *words)), result in zip(cases, results, strict=True):
        failed_with(result, kind, *words)
    assert not list(Path(tmp_path).glob("d*/backup_*"))


def test_encryption_and_storage_class(moto, backups):
    bucket = moto.bucket()
    conn = moto.args(bucket, prefix="sse")
    src = str(backups["dir"])
    kms, aes, refused = offsite_many(
        [
            {
                **conn,
                "mode": "push",
                "backup_dir": src,
                "backup": backups["plain"],
                "encryption": "aws:kms",
                "kms_key_id": "alias/tokotani-backups",
                "storage_class": "STANDARD_IA",
                "checksum_algorithm": "SHA256",
            },
            {**conn, "mode": "push", "backup_dir": src, "backup": backups["directory"], "encryption": "AES256"},
            {**conn, "mode": "push", "backup_dir": src, "kms_key_id": "alias/x"},
        ]
    )
    assert kms["changed"], kms
    head = moto.client().head_object(Bucket=bucket, Key=kms["key"], ChecksumMode="ENABLED")
    assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"] == "alias/tokotani-backups"
    assert head["StorageClass"] == "STANDARD_IA" and head.get("ChecksumSHA256")
    assert aes["changed"], aes
    data_keys = [k for k in moto.keys(bucket) if k.startswith(aes["key"])]
    assert data_keys and all(
        moto.client().head_object(Bucket=bucket, Key=k)["ServerSideEncryption"] == "AES256" for k in data_keys
    )
    assert refused.get("failed") and "encryption" in refused["msg"], refused
    listed = offsite({**conn, "mode": "list"})
    assert {b["name"]: b["storage_class"] for b in listed["backups"]}[backups["plain"]] == "STANDARD_IA"


def test_secrets_never_in_output_even_with_vvv(moto, backups, tmp_path):
    bucket = moto.bucket()
    token = "tok-" + moto.secret_key[::-1]
    runs = [
        # secret as an option
        (moto.args(bucket, mode="push", backup_dir=str(backups["dir"]), session_token=token), {}),
        # secret and token from the environment (amazon.aws's fallbacks), failing on a missing bucket
        (
            {"bucket": "tt-missing", "endpoint_url": moto.url, "mode": "list", "region": "us-east-1"},
            {
                "AWS_ACCESS_KEY_ID": moto.access_key,
                "AWS_SECRET_ACCESS_KEY": moto.secret_key,
                "AWS_SESSION_TOKEN": token,
            },
        ),
    ]
    outputs = verbose_outputs("backup_offsite", runs)
    for output in outputs:
        assert "secret_key" in output  # the option is shown, its value masked
        assert moto.secret_key not in output
        assert token not in output


# --------------------------------------------------------------------------- pull latest with fallback


def three_offsite(moto, backups, tmp_path, prefix: str, **extra) -> tuple[dict, list[dict]]:
    """Three copies of the plain backup, an hour apart (distinct names), pushed under prefix: (conn, manifests
    newest first)."""
    local = tmp_path / "three"
    local.mkdir(mode=0o700)
    stems = []
    for hours in (3, 2, 1):
        when = NOW - datetime.timedelta(hours=hours)
        stem = when.strftime("backup_%Y-%m-%d_%H-%M-%S")
        copy_backup(backups["dir"], backups["plain"], local, stem, when.strftime("%Y-%m-%dT%H:%M:%SZ"))
        stems.append(stem)
    conn = moto.args(moto.bucket(), prefix=prefix, **extra)
    pushed = offsite({**conn, "mode": "push", "backup_dir": str(local), "backup": "all"})
    assert sorted(pushed["pushed"]) == sorted(stems), pushed
    return conn, [manifest_of(local, stem) for stem in reversed(stems)]


def damage(moto, conn: dict, doc: dict, keep_metadata: bool = False) -> str:
    """Overwrite a backup's data object with as many different bytes (the listing cannot tell); returns its key."""
    key = f"{conn['prefix']}/{doc['data']}"
    s3 = moto.client()
    obj = s3.get_object(Bucket=conn["bucket"], Key=key)
    body = bytearray(obj["Body"].read())
    body[len(body) // 2] ^= 0x01
    s3.put_object(Bucket=conn["bucket"], Key=key, Body=bytes(body), Metadata=obj["Metadata"] if keep_metadata else {})
    return key


def test_pull_latest_with_fallback_passes_over_a_damaged_newest_copy(moto, backups, tmp_path):
    conn, (newest, second, _oldest) = three_offsite(moto, backups, tmp_path, "fallback")
    key = damage(moto, conn, newest)
    dest = tmp_path / "dest"

    pulled = offsite({**conn, "mode": "pull", "backup_dir": str(dest), "database": DB, "fallback": 2})
    assert not pulled.get("failed") and pulled["status"] == "pulled" and pulled["verified"], pulled
    assert pulled["name"] == second["name"]
    assert sha256_of(Path(pulled["path"])) == second["sha256"]
    [passed] = pulled["passed_over"]
    assert (passed["name"], passed["error"]) == (newest["name"], "checksum_mismatch"), passed
    assert passed["msg"].startswith(f"checksum mismatch after pulling s3://{conn['bucket']}/{key}: sha256 ")
    assert f"the manifest says {newest['sha256']}; nothing was kept" in passed["msg"]
    warning = (
        f"the offsite backup {newest['name']} did not verify on download ({passed['msg']}): nothing of it was kept; "
        f"pulled the previous valid one, {second['name']}"
    )
    assert warning in pulled["warnings"], pulled["warnings"]
    # Nothing of the damaged copy: no .partial, no manifest; only the one pulled.
    assert backup_files(dest) == sorted([second["data"], f"{second['name']}.manifest.json"])

    # Pulled again: the previous one is already local, the damaged newest still passed over.
    again = offsite({**conn, "mode": "pull", "backup_dir": str(dest), "database": DB, "fallback": 2})
    assert not again["changed"] and again["status"] == "already_local", again
    assert [p["name"] for p in again["passed_over"]] == [newest["name"]]
    assert f"the previous valid one, {second['name']}, is already in backup_dir" in again["warnings"][0]

    # Check mode checks only what a download is not needed for: this damage (no metadata) it cannot see.
    would = offsite({**conn, "mode": "pull", "backup_dir": str(tmp_path / "never"), "fallback": 2}, check=True)
    assert would["status"] == "would_pull" and would["name"] == newest["name"] and would["passed_over"] == [], would
    assert not (tmp_path / "never").exists()


def test_without_fallback_or_with_a_named_backup_a_damaged_copy_fails_the_pull(moto, backups, tmp_path):
    conn, (newest, _second, _oldest) = three_offsite(moto, backups, tmp_path, "nofallback")
    damage(moto, conn, newest)
    dest = tmp_path / "dest"
    for extra in ({}, {"fallback": 0}, {"backup": newest["name"], "fallback": 2}):
        result = offsite({**conn, "mode": "pull", "backup_dir": str(dest), **extra})
        failed_with(result, "checksum_mismatch", "checksum mismatch after pulling", newest["data"], "nothing was kept")
        assert not result["msg"].startswith("no offsite backup"), result["msg"]
        assert "passed_over" not in result, result
        assert backup_files(dest) == []


def test_check_mode_falls_back_past_metadata_that_contradicts_the_manifest(moto, backups, tmp_path):
    conn, (newest, second, _oldest) = three_offsite(moto, backups, tmp_path, "checkfallback")
    key = f"{conn['prefix']}/{newest['data']}"
    s3 = moto.client()
    body = s3.get_object(Bucket=conn["bucket"], Key=key)["Body"].read()
    s3.put_object(Bucket=conn["bucket"], Key=key, Body=body, Metadata={"sha256": "0" * 64})
    dest = tmp_path / "dest"
    would = offsite({**conn, "mode": "pull", "backup_dir": str(dest), "fallback": 1}, check=True)
    assert would["status"] == "would_pull" and would["name"] == second["name"], would
    assert [(p["name"], p["error"]) for p in would["passed_over"]] == [(newest["name"], "checksum_mismatch")]
    assert "nothing was downloaded" in would["passed_over"][0]["msg"]
    assert any(w.endswith(f"would pull the previous valid one, {second['name']}") for w in would["warnings"]), would
    assert not dest.exists()


def test_every_candidate_damaged_fails_naming_each_backup_tried(moto, backups, tmp_path):
    conn, docs = three_offsite(moto, backups, tmp_path, "alldamaged")
    for doc in docs:
        damage(moto, conn, doc)
    dest = tmp_path / "dest"
    result = offsite({**conn, "mode": "pull", "backup_dir": str(dest), "database": DB, "fallback": 5})
    failed_with(result, "checksum_mismatch")
    assert result["msg"].startswith(
        f"no offsite backup of {DB} verified on download (3 tried, fallback=5: no older valid backup left to try): "
        f"{docs[0]['name']}: checksum mismatch after pulling "
    ), result["msg"]
    assert result["msg"].endswith("; nothing was kept"), result["msg"]
    for doc in docs:
        assert (
            f"{doc['name']}: checksum mismatch after pulling s3://{conn['bucket']}/alldamaged/{doc['data']}"
            in (result["msg"])
        )
    assert [(p["name"], p["error"]) for p in result["passed_over"]] == [
        (doc["name"], "checksum_mismatch") for doc in docs
    ]
    assert backup_files(dest) == []

    # fallback=1: two tried, and the message says fallback is what stopped it.
    result = offsite({**conn, "mode": "pull", "backup_dir": str(dest), "fallback": 1})
    failed_with(result, "checksum_mismatch", f"no offsite backup of {DB} verified on download (2 tried, fallback=1): ")
    assert docs[2]["name"] not in result["msg"]
    assert backup_files(dest) == []


def test_a_negative_fallback_is_refused(moto, tmp_path):
    result = offsite(
        {**moto.args("tt-never-asked"), "mode": "pull", "backup_dir": str(tmp_path / "dest"), "fallback": -1}
    )
    assert result.get("failed"), result
    assert result["msg"] == (
        "fallback must be 0 or more (got -1): how many older offsite backups a pull of latest may try when the "
        "newest does not verify"
    )
    assert not (tmp_path / "dest").exists()


def test_written_before_passes_over_copies_that_reached_the_bucket_later(moto, backups, tmp_path):
    """After a breach: a backup whose manifest says it ended before the breach but that was written to the bucket
    after it (LastModified, the bucket's clock) may be the intruder's, and is not pulled."""
    src = backups["dir"]
    older, newer = sorted([backups["plain"], backups["directory"]])
    bucket = moto.bucket()
    conn = moto.args(bucket, prefix="shop")
    first = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=2)
    assert offsite({**conn, "mode": "push", "backup_dir": str(src), "backup": older})["pushed"] == [older]
    time.sleep(1.5)
    breach = datetime.datetime.now(datetime.UTC)
    time.sleep(1.5)
    assert offsite({**conn, "mode": "push", "backup_dir": str(src), "backup": newer})["pushed"] == [newer]
    keys = moto.keys(bucket)

    dest = tmp_path / "pulled"
    pulled = offsite(
        {**conn, "mode": "pull", "backup_dir": str(dest), "before": LATER, "written_before": breach.isoformat()}
    )
    assert pulled["changed"] and pulled["name"] == older, pulled
    assert any(newer in w and "written to the bucket at" in w and "is not used" in w for w in pulled["warnings"])
    pulled_files = backup_files(dest)
    assert f"{older}.manifest.json" in pulled_files, pulled_files
    assert not [name for name in pulled_files if name.startswith(newer)], pulled_files

    refused = offsite(
        {**conn, "mode": "pull", "backup_dir": str(tmp_path / "none"), "written_before": first.isoformat()}
    )
    failed_with(refused, "no_backup", "no valid offsite backup", "was written to the bucket at")
    assert backup_files(tmp_path / "none") == []
    assert moto.keys(bucket) == keys  # nothing offsite changed
