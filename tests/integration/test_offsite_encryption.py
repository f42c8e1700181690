"""Client-side encryption of offsite copies against a real S3 API (moto server over HTTP on loopback).

The backups are made by tokotani.dr.postgresql_backup from a real PostgreSQL 15 (a directory backup
and the plan's .sql.gz); larger files reuse such a manifest with random data. The engine is called
as the module calls it, with ``backup_key`` in the options (the module's key options come with the
manifest-signing work). Every fault test asserts the operator's message, that nothing was renamed
into place (no data, no manifest) and that no ``.partial`` is left.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from backup_support import ROOT, copy_backup, run_module
from s3_support import (
    big_backup,
    manifest_of,
    offsite,
    restores,
    serve_moto,
    sha256_of,
    shop_backups,
    tree_state,
)

sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.tokotani.dr.plugins.module_utils import backup_keys, s3_offsite
from ansible_collections.tokotani.dr.plugins.module_utils import offsite_crypto as crypto

DB = "enc_src"
MIB = 1024 * 1024
KEY = "integration-backup-key-" + "s" * 20  # a test key; real ones come from the vault
OLD_KEY = "the-previous-backup-key-" + "p" * 20
STRANGER = "somebody-elses-backup-key-" + "x" * 20
KEY_ID = backup_keys.BackupKey(KEY).id
OLD_ID = backup_keys.BackupKey(OLD_KEY).id


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    yield from serve_moto(tmp_path_factory.mktemp("moto_enc"))


@pytest.fixture(scope="module")
def backups(pg_cluster, tmp_path_factory):
    """Two real backups of a tiny shop: the default directory format and the plan's .sql.gz."""
    yield from shop_backups(pg_cluster, tmp_path_factory.mktemp("enc_backups"), DB)


@pytest.fixture(scope="module")
def big(backups, tmp_path_factory):
    """A 12 MiB single-file backup: three 5 MiB parts, whose boundaries fall inside chunks."""
    local = tmp_path_factory.mktemp("enc_big")
    local.chmod(0o700)
    name = big_backup(backups["dir"], backups["plain"], local, 12 * MIB + 4321, started_at="2026-01-03T02:00:00Z")
    return local, name


def unsigned_ok(opts: dict) -> dict:
    """The shop backups here are made without a key (their manifests unsigned): accept them explicitly, so
    that what these tests see is the encryption, not the signature check (test_signed_backups has that)."""
    return {"allow_unsigned": True, **opts} if opts.get("backup_key") else opts


def run(mode: str, opts: dict, check_mode: bool = False) -> dict:
    result = s3_offsite.run(unsigned_ok(opts), mode, check_mode=check_mode)
    assert KEY not in json.dumps(result, default=str) and OLD_KEY not in json.dumps(result, default=str)
    return result


def refused(mode: str, opts: dict, kind: str, *words: str) -> s3_offsite.OffsiteError:
    with pytest.raises(s3_offsite.OffsiteError) as info:
        s3_offsite.run(unsigned_ok(opts), mode)
    err = info.value
    assert err.kind == kind, err.msg
    for word in words:
        assert word in err.msg, err.msg
    shown = json.dumps(err.to_dict(), default=str)
    assert KEY not in shown and OLD_KEY not in shown and STRANGER not in shown
    return err


def nothing_pulled(dest: Path) -> None:
    """Nothing renamed into place (no data, no manifest) and no .partial left: only the pull's lock file, if any."""
    if dest.exists():
        assert [p.name for p in dest.iterdir() if not p.name.startswith(".tokotani-backup.")] == []


def body_of(moto, bucket: str, key: str) -> bytes:
    return moto.client().get_object(Bucket=bucket, Key=key)["Body"].read()


def rewrite(moto, bucket: str, key: str, transform, metadata: bool = True) -> None:
    """Replace an object by transform(its bytes), keeping its metadata (an intruder with the bucket's keys)."""
    s3 = moto.client()
    obj = s3.get_object(Bucket=bucket, Key=key)
    body = obj["Body"].read()
    s3.put_object(Bucket=bucket, Key=key, Body=transform(body), Metadata=obj["Metadata"] if metadata else {})


def test_push_encrypts_every_data_object_and_pull_restores_them(pg_cluster, moto, backups, tmp_path):
    src = backups["dir"]
    untouched = tree_state(src)
    bucket = moto.bucket()
    conn = moto.args(bucket, prefix="enc", backup_key=KEY)

    pushed = run("push", {**conn, "backup_dir": str(src), "backup": "all"})
    assert sorted(pushed["pushed"]) == sorted([backups["plain"], backups["directory"]]), pushed
    assert all(b["encrypted"] and b["key_id"] == KEY_ID for b in pushed["backups"]), pushed["backups"]

    s3 = moto.client()
    plain = manifest_of(src, backups["plain"])
    directory = manifest_of(src, backups["directory"])
    objects = {f"enc/{plain['data']}": (src / plain["data"], plain["size"])}
    for rel, info in directory["files"].items():
        objects[f"enc/{directory['data']}/{rel}"] = (src / directory["data"] / rel, info["size"])
    for key, (local, size) in objects.items():
        body = body_of(moto, bucket, key)
        assert body.startswith(crypto.MAGIC + KEY_ID.encode()), key
        assert len(body) == crypto.encrypted_size(size), key
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head["Metadata"]["tokotani-encryption"] == "v1" and head["Metadata"]["tokotani-key-id"] == KEY_ID
        data = local.read_bytes()
        for start in range(0, max(1, len(data) - 32), max(1, len(data) // 16)):
            sample = data[start : start + 32]
            assert len(sample) < 16 or sample not in body, f"plaintext of {local} at {start} found in {key}"
    # A known plaintext marker: pg_dump's table of contents holds the DDL uncompressed.
    toc = (src / directory["data"] / "toc.dat").read_bytes()
    assert b"CREATE TABLE" in toc and b"products" in toc
    toc_object = body_of(moto, bucket, f"enc/{directory['data']}/toc.dat")
    assert b"CREATE TABLE" not in toc_object and b"products" not in toc_object
    # The manifest stays readable (and, with manifest signing, signed): byte for byte the local one.
    for doc in (plain, directory):
        manifest = body_of(moto, bucket, f"enc/{doc['name']}.manifest.json")
        assert manifest == (src / f"{doc['name']}.manifest.json").read_bytes()

    listed = run("list", conn)
    assert listed["valid_count"] == 2, listed
    assert {(b["name"], b["encrypted"], b["key_id"]) for b in listed["backups"]} == {
        (plain["name"], True, KEY_ID),
        (directory["name"], True, KEY_ID),
    }
    again = run("push", {**conn, "backup_dir": str(src), "backup": "all"})
    assert not again["changed"] and sorted(again["already_offsite"]) == sorted(pushed["pushed"]), again
    assert all(b["encrypted"] and b["key_id"] == KEY_ID for b in again["backups"]), again["backups"]

    dest = tmp_path / "pulled"
    for doc in (plain, directory):
        pulled = run("pull", {**conn, "backup_dir": str(dest), "backup": doc["name"]})
        assert pulled["status"] == "pulled" and pulled["verified"], pulled
        assert pulled["encrypted"] and pulled["key_id"] == KEY_ID, pulled
        local = src / doc["data"]
        if local.is_dir():
            assert tree_state(Path(pulled["path"])) == tree_state(local)
        else:
            assert sha256_of(Path(pulled["path"])) == sha256_of(local)
        assert (dest / f"{doc['name']}.manifest.json").read_bytes() == (
            src / f"{doc['name']}.manifest.json"
        ).read_bytes()
    assert not [p for p in dest.iterdir() if p.name.endswith(".partial")]
    info = run_module("backup_info", {"backup_dir": str(dest), "verify": True})
    assert sorted((b["name"], b["valid"], b["verified"]) for b in info["backups"]) == sorted(
        [(plain["name"], True, True), (directory["name"], True, True)]
    ), info

    restores(pg_cluster, str(dest / directory["data"]), DB, "enc_restored")
    assert tree_state(src) == untouched


def test_a_multipart_encrypted_backup_round_trips_with_a_rotated_key(moto, big, tmp_path):
    local, name = big
    doc = manifest_of(local, name)
    bucket = moto.bucket()
    parts = {"multipart_threshold": 5 * MIB, "multipart_chunksize": 5 * MIB, "concurrency": 3}
    conn = moto.args(bucket, prefix="big", **parts)
    pushed = run("push", {**conn, "backup_dir": str(local), "backup": name, "backup_key": OLD_KEY})
    assert pushed["encrypted"] and pushed["key_id"] == OLD_ID, pushed
    head = moto.client().head_object(Bucket=bucket, Key=f"big/{doc['data']}")
    assert head["ETag"].strip('"').endswith("-3"), head["ETag"]  # 3 parts; their boundaries fall inside chunks
    assert head["ContentLength"] == crypto.encrypted_size(doc["size"])

    dest = tmp_path / "back"
    rotated = {**conn, "backup_key": KEY, "backup_previous_keys": [OLD_KEY]}
    pulled = run("pull", {**rotated, "backup_dir": str(dest)})
    assert pulled["verified"] and pulled["encrypted"] and pulled["key_id"] == OLD_ID, pulled
    assert sha256_of(dest / doc["data"]) == doc["sha256"]
    assert (dest / doc["data"]).stat().st_mode & 0o777 == 0o600


def test_pull_without_the_key_says_what_to_give(moto, backups, tmp_path):
    src = backups["dir"]
    bucket = moto.bucket()
    conn = moto.args(bucket, prefix="nokey")
    run("push", {**conn, "backup_dir": str(src), "backup": "all", "backup_key": KEY})
    dest = tmp_path / "dest"
    for name in (backups["plain"], backups["directory"]):
        for opts in ({**conn, "backup_dir": str(dest), "backup": name},):
            refused(
                "pull",
                opts,
                "key_missing",
                f"encrypted client-side with backup key {KEY_ID}",
                "no backup key is given",
                "backup_key",
                "TOKOTANI_BACKUP_KEY",
                "Nothing was downloaded",
            )
            nothing_pulled(dest)
        # check mode says so too (it reads the headers, writes nothing)
        with pytest.raises(s3_offsite.OffsiteError) as info:
            s3_offsite.run({**conn, "backup_dir": str(dest), "backup": name}, "pull", check_mode=True)
        assert info.value.kind == "key_missing"
        nothing_pulled(dest)


def test_pull_with_the_wrong_key_names_the_key_that_is_needed(moto, backups, tmp_path):
    src = backups["dir"]
    bucket = moto.bucket()
    conn = moto.args(bucket, prefix="wrong")
    run("push", {**conn, "backup_dir": str(src), "backup": "all", "backup_key": KEY})
    dest = tmp_path / "dest"
    stranger_id = backup_keys.BackupKey(STRANGER).id
    for name in (backups["plain"], backups["directory"]):
        refused(
            "pull",
            {**conn, "backup_dir": str(dest), "backup": name, "backup_key": STRANGER},
            "key_missing",
            f"backup key {KEY_ID}, which is none of the keys given ({stranger_id})",
            "backup_previous_keys",
        )
        nothing_pulled(dest)


def test_a_header_claiming_an_unknown_key_id(moto, backups, tmp_path):
    src = backups["dir"]
    plain = manifest_of(src, backups["plain"])
    bucket = moto.bucket()
    conn = moto.args(bucket, prefix="forged", backup_key=KEY)
    run("push", {**conn, "backup_dir": str(src), "backup": plain["name"]})
    key = f"forged/{plain['data']}"
    magic = len(crypto.MAGIC)
    rewrite(moto, bucket, key, lambda b: b[:magic] + b"0123456789abcdef" + b[magic + crypto.KEY_ID_CHARS :])
    dest = tmp_path / "dest"
    refused(
        "pull",
        {**conn, "backup_dir": str(dest), "backup": plain["name"]},
        "key_missing",
        "backup key 0123456789abcdef, which is none of the keys given",
        "Nothing was downloaded",
    )
    nothing_pulled(dest)
    # Our own key id over another key's ciphertext: the first chunk does not authenticate.
    run("push", {**conn, "backup_dir": str(src), "backup": plain["name"], "force": True, "backup_key": STRANGER})
    rewrite(moto, bucket, key, lambda b: b[:magic] + KEY_ID.encode() + b[magic + crypto.KEY_ID_CHARS :])
    refused("pull", {**conn, "backup_dir": str(dest), "backup": plain["name"]}, "not_authentic", "chunk 1 of 1")
    nothing_pulled(dest)


def test_ciphertext_tampered_in_one_chunk(moto, big, backups, tmp_path):
    local, name = big
    doc = manifest_of(local, name)
    bucket = moto.bucket()
    conn = moto.args(bucket, prefix="flip", backup_key=KEY, multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    run("push", {**conn, "backup_dir": str(local), "backup": name})
    key = f"flip/{doc['data']}"
    offset = crypto.HEADER_SIZE + 7 * (crypto.CHUNK + crypto.TAG_SIZE) + 1000  # inside chunk 8 of 13
    rewrite(moto, bucket, key, lambda b: b[:offset] + bytes([b[offset] ^ 0x01]) + b[offset + 1 :])
    dest = tmp_path / "dest"
    refused(
        "pull",
        {**conn, "backup_dir": str(dest), "backup": name},
        "not_authentic",
        f"s3://{bucket}/{key} does not authenticate: chunk 8 of 13",
        "changed or damaged after it was pushed",
        "nothing was kept",
        "Pull an older backup",
    )
    nothing_pulled(dest)

    # One file of a directory backup.
    src = backups["dir"]
    directory = manifest_of(src, backups["directory"])
    run("push", {**conn, "backup_dir": str(src), "backup": directory["name"]})
    rel = max(directory["files"], key=lambda r: directory["files"][r]["size"])
    dkey = f"flip/{directory['data']}/{rel}"
    rewrite(moto, bucket, dkey, lambda b: b[:-1] + bytes([b[-1] ^ 0x80]))
    refused(
        "pull",
        {**conn, "backup_dir": str(dest), "backup": directory["name"]},
        "not_authentic",
        dkey,
        "does not authenticate: chunk",
    )
    nothing_pulled(dest)


def test_a_truncated_object(moto, big, backups, tmp_path):
    local, name = big
    doc = manifest_of(local, name)
    bucket = moto.bucket()
    conn = moto.args(bucket, prefix="cut", backup_key=KEY)
    run("push", {**conn, "backup_dir": str(local), "backup": name})
    key = f"cut/{doc['data']}"
    full = crypto.encrypted_size(doc["size"])
    dest = tmp_path / "dest"
    for cut in (1, crypto.CHUNK + crypto.TAG_SIZE):  # inside the last chunk; a whole chunk off
        rewrite(moto, bucket, key, lambda b, cut=cut: b[: full - cut])
        err = refused(
            "pull",
            {**conn, "backup_dir": str(dest), "backup": name},
            "checksum_mismatch",
            f"{key} has {full - cut} bytes, the manifest says {doc['size']} ({full} encrypted)",
        )
        assert err.details["problems"], err.details
        nothing_pulled(dest)
        listed = run("list", conn)
        assert [(b["name"], b["valid"]) for b in listed["backups"]] == [(name, False)], listed
        run("push", {**conn, "backup_dir": str(local), "backup": name, "force": True})


def test_chunks_swapped_within_an_object(moto, big, tmp_path):
    local, name = big
    doc = manifest_of(local, name)
    bucket = moto.bucket()
    conn = moto.args(bucket, prefix="swap", backup_key=KEY)
    run("push", {**conn, "backup_dir": str(local), "backup": name})
    key = f"swap/{doc['data']}"
    step = crypto.CHUNK + crypto.TAG_SIZE
    two, three = crypto.HEADER_SIZE + step, crypto.HEADER_SIZE + 2 * step

    def swap(body: bytes) -> bytes:
        return body[:two] + body[three : three + step] + body[two:three] + body[three + step :]

    rewrite(moto, bucket, key, swap)
    assert len(body_of(moto, bucket, key)) == crypto.encrypted_size(doc["size"])  # the listing cannot tell
    dest = tmp_path / "dest"
    refused("pull", {**conn, "backup_dir": str(dest), "backup": name}, "not_authentic", "chunk 2 of 13")
    nothing_pulled(dest)


def test_an_object_copied_over_another_objects_key(moto, backups, tmp_path):
    """Two backups of the same size: the older one's data put under the newer one's key fails the first chunk."""
    local = tmp_path / "two"
    local.mkdir(mode=0o700)
    first = big_backup(backups["dir"], backups["plain"], local, 2 * MIB + 5, started_at="2026-01-01T02:00:00Z")
    second = big_backup(backups["dir"], backups["plain"], local, 2 * MIB + 5, started_at="2026-01-02T02:00:00Z")
    bucket = moto.bucket()
    conn = moto.args(bucket, prefix="copy", backup_key=KEY)
    run("push", {**conn, "backup_dir": str(local), "backup": "all"})
    first_key = f"copy/{manifest_of(local, first)['data']}"
    second_key = f"copy/{manifest_of(local, second)['data']}"
    # Without the older copy's metadata (it names the other sha256, which the pull refuses up front).
    moto.client().put_object(Bucket=bucket, Key=second_key, Body=body_of(moto, bucket, first_key))
    dest = tmp_path / "dest"
    refused(
        "pull",
        {**conn, "backup_dir": str(dest), "backup": second},
        "not_authentic",
        "chunk 1 of 3",
        "copied from another object's key",
    )
    nothing_pulled(dest)


def test_plain_copies_stay_pullable_and_a_push_with_a_key_encrypts_them(moto, backups, tmp_path):
    src = backups["dir"]
    plain = manifest_of(src, backups["plain"])
    bucket = moto.bucket()
    conn = moto.args(bucket, prefix="old")
    key = f"old/{plain['data']}"
    run("push", {**conn, "backup_dir": str(src), "backup": plain["name"]})
    assert body_of(moto, bucket, key) == (src / plain["data"]).read_bytes()
    dest = tmp_path / "dest"
    pulled = run("pull", {**conn, "backup_dir": str(dest), "backup": plain["name"], "backup_key": KEY})
    assert pulled["verified"] and pulled["encrypted"] is False and pulled["key_id"] is None, pulled

    again = run("push", {**conn, "backup_dir": str(src), "backup": plain["name"], "backup_key": KEY})
    assert again["pushed"] == [plain["name"]] and again["encrypted"], again
    assert any("not encrypted client-side: pushed again, encrypted" in w for w in again["warnings"]), again
    assert body_of(moto, bucket, key).startswith(crypto.MAGIC)
    # An encrypted copy is kept as it is by a push without a key (never silently downgraded).
    kept = run("push", {**conn, "backup_dir": str(src), "backup": plain["name"]})
    assert kept["already_offsite"] == [plain["name"]] and kept["encrypted"] and kept["key_id"] == KEY_ID, kept


def test_client_encryption_false_pushes_plaintext_even_with_a_key(moto, backups):
    src = backups["dir"]
    plain = manifest_of(src, backups["plain"])
    bucket = moto.bucket()
    conn = moto.args(bucket, prefix="clear", backup_key=KEY, client_encryption=False)
    pushed = run("push", {**conn, "backup_dir": str(src), "backup": plain["name"]})
    assert pushed["encrypted"] is False and pushed["key_id"] is None, pushed
    assert body_of(moto, bucket, f"clear/{plain['data']}") == (src / plain["data"]).read_bytes()
    # The module takes the option (the key options arrive with manifest signing).
    module = offsite(
        {**moto.args(bucket, prefix="clear"), "mode": "push", "backup_dir": str(src), "client_encryption": True}
    )
    assert not module.get("failed"), module
    assert module["backups"][0]["encrypted"] is False


def test_without_python3_cryptography_an_encrypted_push_or_pull_says_what_to_install(
    moto, backups, tmp_path, monkeypatch
):
    src = backups["dir"]
    bucket = moto.bucket()
    conn = moto.args(bucket, prefix="lib", backup_key=KEY)
    run("push", {**conn, "backup_dir": str(src), "backup": backups["plain"]})
    before = moto.keys(bucket)
    monkeypatch.setattr(crypto, "HAS_CRYPTOGRAPHY", False)
    refused(
        "push",
        {**conn, "backup_dir": str(src), "backup": backups["directory"]},
        "invalid",
        "python3-cryptography is needed to encrypt offsite copies",
        "apt-get install python3-cryptography",
    )
    assert moto.keys(bucket) == before
    dest = tmp_path / "dest"
    refused("pull", {**conn, "backup_dir": str(dest)}, "invalid", "python3-cryptography is needed to decrypt")
    nothing_pulled(dest)


def test_pull_latest_with_fallback_passes_over_an_encrypted_copy_that_does_not_authenticate(moto, backups, tmp_path):
    """Through the module: the newest of three encrypted copies has one byte changed (same size, its metadata kept)."""
    local = tmp_path / "three"
    local.mkdir(mode=0o700)
    stems = [f"backup_2026-01-0{day}_02-00-00" for day in (4, 5, 6)]
    for stem in stems:
        copy_backup(backups["dir"], backups["plain"], local, stem, f"{stem[7:17]}T02:00:00Z")
    newest, second = (manifest_of(local, stem) for stem in (stems[2], stems[1]))
    bucket = moto.bucket()
    conn = moto.args(bucket, prefix="fallback", backup_key=KEY, allow_unsigned=True)
    pushed = offsite({**conn, "mode": "push", "backup_dir": str(local), "backup": "all"})
    assert sorted(pushed["pushed"]) == stems, pushed
    key = f"fallback/{newest['data']}"
    offset = crypto.HEADER_SIZE + 100
    rewrite(moto, bucket, key, lambda b: b[:offset] + bytes([b[offset] ^ 0x01]) + b[offset + 1 :])
    dest = tmp_path / "dest"

    pulled = offsite({**conn, "mode": "pull", "backup_dir": str(dest), "database": DB, "fallback": 2})
    assert not pulled.get("failed") and pulled["status"] == "pulled" and pulled["verified"], pulled
    assert (pulled["name"], pulled["encrypted"], pulled["key_id"]) == (second["name"], True, KEY_ID), pulled
    assert sha256_of(dest / second["data"]) == second["sha256"]
    [passed] = pulled["passed_over"]
    assert (passed["name"], passed["error"]) == (newest["name"], "not_authentic"), passed
    assert passed["msg"].startswith(f"s3://{bucket}/{key} does not authenticate: chunk 1 of 1"), passed["msg"]
    warning = (
        f"the offsite backup {newest['name']} did not verify on download ({passed['msg']}): nothing of it was kept; "
        f"pulled the previous valid one, {second['name']}"
    )
    assert warning in pulled["warnings"], pulled["warnings"]
    assert sorted(p.name for p in dest.iterdir() if not p.name.startswith(".tokotani-backup.")) == sorted(
        [second["data"], f"{second['name']}.manifest.json"]
    )

    # Without fallback: the same failure as ever, nothing kept.
    again = tmp_path / "again"
    result = offsite({**conn, "mode": "pull", "backup_dir": str(again)})
    assert result.get("failed") and result["error"] == "not_authentic", result
    assert result["msg"] == passed["msg"]
    nothing_pulled(again)
