"""Unit tests of the offsite encryption format and streams (offsite_crypto): sizes, round trips, tampering."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.tokotani.dr.plugins.module_utils import backup_keys  # noqa: E402
from ansible_collections.tokotani.dr.plugins.module_utils import offsite_crypto as crypto  # noqa: E402

C = crypto.CHUNK
H = crypto.HEADER_SIZE
T = crypto.TAG_SIZE
SECRET = "unit-test-backup-key-" + "k" * 24
OTHER_SECRET = "another-backup-key-entirely-" + "o" * 16
NAME = "backup_2026-01-05_02-00-00.sql.gz"
WHERE = "s3://bucket/prod/" + NAME
SIZES = [0, 1, C - 1, C, C + 1, 3 * C + 5]


@pytest.fixture(scope="module")
def key():
    return backup_keys.BackupKey(SECRET)


@pytest.fixture(scope="module")
def ring(key):
    return backup_keys.KeyRing([key])


def seeded(seed: int) -> random.Random:
    """Reproducible test data and orders (not keys: those come from os.urandom in the engine)."""
    return random.Random(seed)  # noqa: S311


def plaintext(size: int, seed: int = 7) -> bytes:
    return seeded(seed).randbytes(size)


def sealed(key, size: int, name: str = NAME) -> tuple[crypto.ObjectCipher, bytes, bytes]:
    cipher = crypto.ObjectCipher.new(key, name, size)
    plain = plaintext(size)
    return cipher, plain, crypto.encrypt_bytes(cipher, plain)


def opened(ring, data: bytes, size: int, name: str = NAME) -> bytes:
    """What a pull does: the cipher from the object's own header, then every chunk authenticated."""
    cipher = crypto.ObjectCipher.open(ring, data[:H], name, size, where=WHERE)
    return crypto.decrypt_bytes(cipher, data, WHERE)


def fails(kind: str, *words: str):
    class Check:
        def __enter__(self):
            self.raises = pytest.raises(crypto.EncryptionError)
            self.info = self.raises.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self.raises.__exit__(*exc)
            err = self.info.value
            assert err.kind == kind, err.msg
            for word in words:
                assert word in err.msg, err.msg
            assert SECRET not in err.msg and OTHER_SECRET not in err.msg
            return handled

    return Check()


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("size", SIZES)
def test_the_encrypted_size_is_a_function_of_the_plaintext_size(key, size):
    cipher, _plain, data = sealed(key, size)
    assert len(data) == crypto.encrypted_size(size) == cipher.object_size
    assert crypto.encrypted_size(size) == H + size + T * max(1, -(-size // C))
    assert crypto.object_form(len(data), size) == "encrypted"
    assert crypto.object_form(size, size) == "plain"


def test_sizes_that_are_neither_plain_nor_encrypted():
    assert crypto.chunk_count(0) == 1
    assert crypto.encrypted_size(0) == H + T == 72
    assert crypto.object_form(71, 0) is None
    assert crypto.object_form(crypto.encrypted_size(C) - 1, C) is None
    assert crypto.object_form(None, 5) is None
    assert crypto.object_form(5, None) is None


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("size", SIZES)
def test_round_trip(key, ring, size):
    _cipher, plain, data = sealed(key, size)
    assert data.startswith(crypto.MAGIC + key.id.encode())
    assert opened(ring, data, size) == plain


@pytest.mark.parametrize("size", SIZES)
def test_the_reader_streams_the_same_ciphertext_in_any_piece_size_and_after_any_seek(key, tmp_path, size):
    cipher, plain, data = sealed(key, size)
    path = tmp_path / "plain"
    path.write_bytes(plain)
    with crypto.EncryptingReader(cipher, str(path)) as reader:
        assert reader.seek(0, 2) == len(data)  # what s3transfer does to learn the size
        reader.seek(0)
        pieces = []
        while piece := reader.read(8192):
            pieces.append(piece)
        assert b"".join(pieces) == data
        rng = seeded(size)
        for _attempt in range(20):  # each part of a multipart upload seeks to its first byte; a retry seeks back
            start = rng.randrange(0, len(data) + 1)
            reader.seek(start)
            amount = rng.choice([1, 100, C + 17, 5 * C])
            assert reader.read(amount) == data[start : start + amount]
            assert reader.tell() == min(len(data), start + amount)
        reader.seek(len(data))
        assert reader.read() == b""


def test_every_upload_gets_its_own_salt_and_so_its_own_key(key):
    one, _p, first = sealed(key, C + 1)
    two, _p, second = sealed(key, C + 1)
    assert one.header != two.header
    assert first[H:] != second[H:]


def writes_in_parts(data: bytes, part: int, piece: int, rng: random.Random, retry: bool = True):
    """(offset, bytes) as s3transfer's IO thread writes them: parts in any order, each in pieces,
    one part retried from its start after a few pieces."""
    parts = [(start, data[start : start + part]) for start in range(0, len(data), part)]
    rng.shuffle(parts)
    writes = []
    for number, (start, body) in enumerate(parts):
        pieces = [(start + off, body[off : off + piece]) for off in range(0, len(body), piece)]
        if retry and number == 0 and len(pieces) > 1:
            writes.extend(pieces[: len(pieces) // 2])  # the connection dropped: the part starts over
        writes.extend(pieces)
    return writes


@pytest.mark.parametrize("size", SIZES)
def test_the_writer_takes_parts_in_any_order_with_retries(key, ring, tmp_path, size):
    _cipher, plain, data = sealed(key, size)
    target = tmp_path / "out"
    writer = crypto.DecryptingWriter(
        crypto.ObjectCipher.open(ring, data[:H], NAME, size, where=WHERE), str(target), WHERE
    )
    assert writer.seekable() and writer.writable()
    for offset, body in writes_in_parts(data, 5 * C // 2 + 3, 256 * 1024, seeded(size)):
        writer.seek(offset)
        writer.write(body)
    writer.finish()
    assert target.read_bytes() == plain
    assert oct(target.stat().st_mode & 0o777) == "0o600"


def test_the_writer_starts_over_on_reset(key, ring, tmp_path):
    _cipher, plain, data = sealed(key, 2 * C + 9)
    target = tmp_path / "out"
    writer = crypto.DecryptingWriter(
        crypto.ObjectCipher.open(ring, data[:H], NAME, len(plain), where=WHERE), str(target), WHERE
    )
    writer.write(data[: H + C + T + 5])
    writer.reset()
    writer.write(data)
    writer.finish()
    assert target.read_bytes() == plain


def test_a_previous_key_still_decrypts_after_rotation(key):
    _cipher, plain, data = sealed(key, C + 3)
    rotated = backup_keys.KeyRing([backup_keys.BackupKey(OTHER_SECRET), key])
    assert opened(rotated, data, len(plain)) == plain


# --------------------------------------------------------------------------- tampering


def flip(data: bytes, position: int) -> bytes:
    return data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]


@pytest.mark.parametrize("chunk", [0, 1, 3])
def test_a_byte_flipped_in_one_chunk_fails_that_chunk(key, ring, chunk):
    size = 3 * C + 5
    _cipher, _plain, data = sealed(key, size)
    start = H + chunk * (C + T)
    with fails("not_authentic", f"chunk {chunk + 1} of 4", "fails AES-GCM authentication", "nothing was kept"):
        opened(ring, flip(data, start + 17), size)


def test_a_flipped_tag_fails(key, ring):
    _cipher, _plain, data = sealed(key, 10)
    with fails("not_authentic", "chunk 1 of 1"):
        opened(ring, flip(data, len(data) - 1), 10)


def test_a_changed_salt_fails_the_first_chunk(key, ring):
    _cipher, _plain, data = sealed(key, 10)
    with fails("not_authentic", "chunk 1 of 1"):
        opened(ring, flip(data, H - 1), 10)


def test_chunks_swapped_fail(key, ring):
    size = 3 * C  # chunks 1 and 2 have the same length
    _cipher, _plain, data = sealed(key, size)
    one = data[H + C + T : H + 2 * (C + T)]
    two = data[H + 2 * (C + T) : H + 3 * (C + T)]
    swapped = data[: H + C + T] + two + one
    assert len(swapped) == len(data)
    with fails("not_authentic", "chunk 2 of 3"):
        opened(ring, swapped, size)


def test_the_last_chunk_moved_forward_fails(key, ring):
    """An object cut after whole chunks, under a size that claims it ends there: the last-chunk flag fails."""
    _cipher, _plain, data = sealed(key, 3 * C)
    cut = data[: H + 2 * (C + T)]
    with fails("not_authentic", "chunk 2 of 2"):
        opened(ring, cut, 2 * C)


@pytest.mark.parametrize("cut", [1, T, C + T, C + T + 100])
def test_a_truncated_object_fails_at_finish(key, ring, cut):
    size = 2 * C + 5
    _cipher, _plain, data = sealed(key, size)
    with fails("not_authentic", "ended before chunk", "truncated", "nothing was kept"):
        opened(ring, data[:-cut], size)


def test_trailing_bytes_fail(key, ring):
    _cipher, _plain, data = sealed(key, 10)
    with fails("not_authentic", "is longer than the encrypted copy"):
        opened(ring, data + b"x", 10)


def test_an_object_copied_under_another_name_fails(key, ring):
    size = C + 1
    _cipher, _plain, data = sealed(key, size, name="backup_2026-01-04_02-00-00.sql.gz")
    with fails("not_authentic", "chunk 1 of 2", "another object's key"):
        opened(ring, data, size, name=NAME)


def test_a_file_copied_over_another_file_of_a_directory_backup_fails(key, ring):
    _cipher, _plain, data = sealed(key, 500, name="backup_2026-01-05_02-00-00.dir/3001.dat.zst")
    with fails("not_authentic", "chunk 1 of 1"):
        opened(ring, data, 500, name="backup_2026-01-05_02-00-00.dir/3002.dat.zst")


def test_a_header_naming_an_unknown_key_says_which_key_to_give(key, ring):
    _cipher, _plain, data = sealed(key, 10)
    forged = crypto.MAGIC + b"0123456789abcdef" + data[H - crypto.SALT_BYTES :]
    with fails(
        "key_missing", "backup key 0123456789abcdef", f"none of the keys given ({key.id})", "backup_previous_keys"
    ):
        opened(ring, forged, 10)


def test_a_header_naming_a_known_key_but_sealed_with_another_fails(key, ring):
    other = backup_keys.BackupKey(OTHER_SECRET)
    _cipher, _plain, data = sealed(other, 10)
    forged = crypto.MAGIC + key.id.encode() + data[len(crypto.MAGIC) + crypto.KEY_ID_CHARS :]
    with fails("not_authentic", "chunk 1 of 1"):
        opened(ring, forged, 10)


def test_the_wrong_key_names_the_key_that_is_needed(key):
    _cipher, _plain, data = sealed(key, 10)
    wrong = backup_keys.KeyRing([backup_keys.BackupKey(OTHER_SECRET)])
    with fails("key_missing", f"backup key {key.id}", "none of the keys given", "backup_previous_keys"):
        opened(wrong, data, 10)


def test_no_key_at_all_says_what_to_give(key):
    _cipher, _plain, data = sealed(key, 10)
    with fails("key_missing", f"backup key {key.id}", "no backup key is given", "backup_key", "TOKOTANI_BACKUP_KEY"):
        opened(None, data, 10)


@pytest.mark.parametrize(
    ("head", "words"),
    [
        (b"\x1f\x8b\x08\x00" + b"\0" * 60, ("does not start with tokotani.dr's encryption header",)),
        (b"TKDRENC9" + b"0" * 48, ("format '9'", "newer tokotani.dr")),
        (b"TKDRENC1" + b"0123456789ABCDEF" + b"\0" * 32, ("key id is not 16 hex characters",)),
        (b"TKDRENC1", ("does not start with",)),
    ],
)
def test_headers_that_are_not_ours(ring, head, words):
    with fails("not_authentic", *words):
        crypto.ObjectCipher.open(ring, head, NAME, 10, where=WHERE)


def test_a_header_changed_between_the_first_read_and_the_download_fails(key, ring, tmp_path):
    _cipher, _plain, data = sealed(key, 10)
    cipher = crypto.ObjectCipher.open(ring, data[:H], NAME, 10, where=WHERE)
    writer = crypto.DecryptingWriter(cipher, str(tmp_path / "out"), WHERE)
    with fails("not_authentic", "header", "changed while it was pulled"):
        writer.write(flip(data, 30))
    writer.close()
    assert not (tmp_path / "out").exists()


def test_nothing_is_written_before_a_chunk_authenticates(key, ring, tmp_path):
    _cipher, _plain, data = sealed(key, 2 * C)
    target = tmp_path / "out"
    writer = crypto.DecryptingWriter(
        crypto.ObjectCipher.open(ring, data[:H], NAME, 2 * C, where=WHERE), str(target), WHERE
    )
    with fails("not_authentic", "chunk 1 of 2"):
        writer.write(flip(data, H + 3))
    writer.close()
    assert not target.exists()


def test_the_reader_refuses_a_file_that_is_not_the_manifests_size(key, tmp_path):
    cipher = crypto.ObjectCipher.new(key, NAME, 10)
    path = tmp_path / "plain"
    path.write_bytes(b"123456789")
    with fails("checksum_mismatch", "has 9 bytes, its manifest says 10", "not pushed"):
        crypto.EncryptingReader(cipher, str(path))


def test_the_reader_refuses_a_file_that_shrinks_while_pushed(key, tmp_path):
    path = tmp_path / "plain"
    path.write_bytes(plaintext(2 * C))
    cipher = crypto.ObjectCipher.new(key, NAME, 2 * C)
    with crypto.EncryptingReader(cipher, str(path)) as reader:
        os.truncate(path, C)
        with fails("checksum_mismatch", "became shorter"):
            reader.read()


# --------------------------------------------------------------------------- secrets and the library


def test_no_key_material_in_reprs_headers_or_errors(key, ring):
    cipher, _plain, data = sealed(key, 10)
    assert SECRET.encode() not in data
    assert key.subkey(crypto.PURPOSE) not in data
    assert SECRET not in repr(key) and SECRET not in str(cipher.__dict__)


def test_without_cryptography_the_message_says_what_to_install(key, monkeypatch):
    monkeypatch.setattr(crypto, "HAS_CRYPTOGRAPHY", False)
    with fails("invalid", "python3-cryptography is needed to encrypt offsite copies", "apt-get install"):
        crypto.ObjectCipher.new(key, NAME, 10)
    with fails("invalid", "python3-cryptography is needed to decrypt offsite copies"):
        crypto.ObjectCipher.open(backup_keys.KeyRing([key]), crypto.make_header(key.id), NAME, 10, where=WHERE)


def test_the_chunks_are_standard_aes_256_gcm(key):
    """update_into over the AES cipher gives exactly what AESGCM gives: ciphertext, then the 16-byte tag."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415

    cipher, plain, data = sealed(key, 2 * C + 3)
    _key_id, salt = crypto.parse_header(data[:H], WHERE)
    aead = AESGCM(crypto.derive_key(key, salt, NAME))
    for index in range(cipher.chunks):
        start = index * C
        expected = aead.encrypt(crypto.nonce(index, index == 2), plain[start : start + C], cipher.header)
        assert data[cipher.cipher_offset(index) : cipher.cipher_offset(index) + len(expected)] == expected
