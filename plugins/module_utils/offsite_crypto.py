# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Client-side encryption of offsite copies: the object format, and streams that keep memory flat.

An encrypted object (format v1) is a header and the plaintext in fixed chunks, each sealed with
AES-256-GCM::

    header   b"TKDRENC1" | key id (16 ASCII hex chars, BackupKey.id) | salt (32 random bytes)
    chunk i  AES-256-GCM(object key, nonce_i, plaintext[i * 1 MiB : (i + 1) * 1 MiB], aad=header)
             = ciphertext (as long as the plaintext) | 16-byte tag

- object key = HKDF-SHA256(ikm = backup_key.subkey(b"offsite encryption"), salt = salt,
  info = b"tokotani.dr offsite v1\\0" + the object's name under the prefix: the data name of a
  single-file backup, ``<data>/<relative path>`` for a file of a directory backup). A fresh salt per
  upload gives every object its own key, so a nonce never repeats under one key; the name in the
  derivation makes an object copied over another object's key fail to decrypt.
- nonce_i = i (11 bytes, big-endian) | 1 for the last chunk, else 0: a chunk moved to another place,
  and an object cut after a whole chunk, fail authentication.
- aad = the header: a changed key id or salt fails too (and the key id names the key to use).
- An empty file is one empty last chunk (the tag alone).

The size of an encrypted object is then a function of the plaintext's size alone,
``encrypted_size(n) = 56 + n + 16 * max(1, ceil(n / 1 MiB))``: a listing tells an encrypted copy
from a plain one by the object's size against the manifest's, without reading anything. What
decides is still the header and the chunks' authentication, never an object's metadata.

``cryptography`` is imported guarded: this module imports without it, and ``require`` says what
to install when encryption is needed. The chunks go through its AES cipher in GCM mode with
``update_into`` and reused buffers (the same bytes as its ``AESGCM`` class): on Debian 12's
python3-cryptography 38.0.4, ``AESGCM`` copies each chunk several times and runs at about
0.6 GB/s, ``update_into`` at 3-4 GB/s; with cryptography 50 both run at about 7 GB/s.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import traceback

from ansible_collections.tokotani.dr.plugins.module_utils.errors import DrError

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
except ImportError:
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None

FORMAT = "v1"
MAGIC = b"TKDRENC1"
MAGIC_FAMILY = b"TKDRENC"
KEY_ID_CHARS = 16
SALT_BYTES = 32
HEADER_SIZE = len(MAGIC) + KEY_ID_CHARS + SALT_BYTES
CHUNK = 1024 * 1024
TAG_SIZE = 16
INDEX_BYTES = 11
PURPOSE = b"offsite encryption"
INFO = b"tokotani.dr offsite v1\0"
SPARE_BUFFERS = 2
METADATA = {"tokotani-encryption": FORMAT}
_KEY_ID_RE = re.compile(rb"^[0-9a-f]{16}$")


class EncryptionError(DrError):
    """An object that cannot be encrypted or decrypted, with a kind a playbook can test.

    kind: key_missing (no key given, or none of the keys given is the object's), not_authentic
    (header, chunk or length that does not authenticate), checksum_mismatch (the local file is
    not what its manifest says), invalid (python3-cryptography missing).
    """

    def __init__(self, kind, msg, **details):
        super().__init__(msg, **details)
        self.kind = kind


def require(action="encrypt"):
    """Raise the operator's message when python3-cryptography is missing; action: encrypt or decrypt."""
    if not HAS_CRYPTOGRAPHY:
        raise EncryptionError(
            "invalid",
            f"python3-cryptography is needed to {action} offsite copies: install it on the host that runs the "
            "transfer (Debian: apt-get install python3-cryptography; pip: cryptography)",
        )


# --------------------------------------------------------------------------- sizes


def chunk_count(size, chunk=CHUNK):
    """Chunks of a plaintext of size bytes (an empty one is one empty chunk)."""
    return max(1, -(-int(size) // chunk))


def encrypted_size(size, chunk=CHUNK):
    """Bytes of the encrypted object of a plaintext of size bytes."""
    return HEADER_SIZE + int(size) + TAG_SIZE * chunk_count(size, chunk)


def object_form(object_size, size):
    """``plain`` or ``encrypted`` when an object of object_size bytes can hold a plaintext of size bytes, else None."""
    if not isinstance(object_size, int) or not isinstance(size, int) or isinstance(size, bool):
        return None
    if object_size == size:
        return "plain"
    if object_size == encrypted_size(size):
        return "encrypted"
    return None


# --------------------------------------------------------------------------- header and keys


def make_header(key_id, salt=None):
    """The header of a new object encrypted with the key of id key_id (a fresh random salt by default)."""
    raw_id = key_id.encode("ascii")
    if not _KEY_ID_RE.match(raw_id):
        raise ValueError("a key id is 16 lowercase hex characters")
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    if len(salt) != SALT_BYTES:
        raise ValueError(f"the salt is {SALT_BYTES} bytes")
    return MAGIC + raw_id + salt


def parse_header(raw, where):
    """(key id, salt) of an object's first bytes; raises not_authentic for anything else."""
    raw = bytes(raw[:HEADER_SIZE])
    if len(raw) < HEADER_SIZE or not raw.startswith(MAGIC_FAMILY):
        raise EncryptionError(
            "not_authentic",
            f"{where} does not start with tokotani.dr's encryption header although its size is that of an "
            "encrypted copy: it was replaced or damaged. Pull an older backup (backup or before)",
            where=where,
        )
    if not raw.startswith(MAGIC):
        version = raw[len(MAGIC_FAMILY) : len(MAGIC)].decode("ascii", "replace")
        raise EncryptionError(
            "not_authentic",
            f"{where} is encrypted in format {version!r}, which this version of tokotani.dr does not know "
            f"(it reads {MAGIC.decode()}): pull with a newer tokotani.dr",
            where=where,
        )
    key_id = raw[len(MAGIC) : len(MAGIC) + KEY_ID_CHARS]
    if not _KEY_ID_RE.match(key_id):
        raise EncryptionError(
            "not_authentic",
            f"the encryption header of {where} is damaged (its key id is not 16 hex characters): it was replaced "
            "or damaged. Pull an older backup (backup or before)",
            where=where,
        )
    return key_id.decode("ascii"), raw[len(MAGIC) + KEY_ID_CHARS :]


def key_for(ring, key_id, where):
    """The BackupKey of ring with id key_id; key_missing names what to give otherwise."""
    key = ring.find(key_id) if ring is not None else None
    if key is not None:
        return key
    if ring is None:
        raise EncryptionError(
            "key_missing",
            f"{where} is encrypted client-side with backup key {key_id}, and no backup key is given: give that "
            "key as backup_key (or in the environment variable TOKOTANI_BACKUP_KEY) to pull it. "
            "Nothing was downloaded",
            where=where,
            key_id=key_id,
        )
    given = ", ".join(k.id for k in ring.keys)
    raise EncryptionError(
        "key_missing",
        f"{where} is encrypted client-side with backup key {key_id}, which is none of the keys given ({given}): "
        "give that key as backup_key or in backup_previous_keys. Nothing was downloaded",
        where=where,
        key_id=key_id,
        key_ids_given=[k.id for k in ring.keys],
    )


def derive_key(key, salt, name):
    """The AES-256 key of one object: HKDF-SHA256 of the backup key's offsite subkey, the salt and the name."""
    require()
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=bytes(salt), info=INFO + name.encode("utf-8"))
    return hkdf.derive(key.subkey(PURPOSE))


def nonce(index, last):
    return index.to_bytes(INDEX_BYTES, "big") + (b"\x01" if last else b"\x00")


class ObjectCipher:
    """The encryption of one object: its header, name and plaintext size; seals and opens its chunks."""

    def __init__(self, key, header, name, size, *, chunk=CHUNK):
        self.header = bytes(header)
        self.key_id, salt = parse_header(self.header, name)
        if key.id != self.key_id:
            raise ValueError("the header names another key")
        self.name = name
        self.size = int(size)
        self.chunk = chunk
        self.chunks = chunk_count(self.size, chunk)
        self.object_size = encrypted_size(self.size, chunk)
        self._algorithm = algorithms.AES(derive_key(key, salt, name))

    @classmethod
    def new(cls, key, name, size, *, chunk=CHUNK):
        """A cipher for a new upload of name (size bytes of plaintext) with key, under a fresh salt."""
        require("encrypt")
        return cls(key, make_header(key.id), name, size, chunk=chunk)

    @classmethod
    def open(cls, ring, header, name, size, *, where, chunk=CHUNK):
        """The cipher of an object read back (its first bytes in header), with the key of ring it names."""
        key_id, _salt = parse_header(header, where)
        key = key_for(ring, key_id, where)
        require("decrypt")
        return cls(key, header, name, size, chunk=chunk)

    def plain_length(self, index):
        return max(0, min(self.chunk, self.size - index * self.chunk))

    def cipher_offset(self, index):
        return HEADER_SIZE + index * (self.chunk + TAG_SIZE)

    def locate(self, position):
        """(chunk index, offset in that chunk's ciphertext, that chunk's ciphertext length) of an object position."""
        index = min((position - HEADER_SIZE) // (self.chunk + TAG_SIZE), self.chunks - 1)
        return index, position - self.cipher_offset(index), self.plain_length(index) + TAG_SIZE

    def buffer(self):
        """A buffer that seal_into and unseal_into can fill with any chunk of this object (update_into wants
        15 bytes spare): a small file of a directory backup gets a small one."""
        return bytearray(self.plain_length(0) + TAG_SIZE + 15)

    def seal_into(self, index, plaintext, out):
        """Chunk index (plaintext, bytes-like) sealed into out: a memoryview of its ciphertext and tag."""
        encryptor = Cipher(self._algorithm, modes.GCM(nonce(index, index == self.chunks - 1))).encryptor()
        encryptor.authenticate_additional_data(self.header)
        length = encryptor.update_into(plaintext, out)
        tail = encryptor.finalize()  # GCM holds nothing back: b""
        out[length : length + len(tail) + TAG_SIZE] = tail + encryptor.tag
        length += len(tail)
        return memoryview(out)[: length + TAG_SIZE]

    def seal(self, index, plaintext):
        """Chunk index sealed, as bytes (a fresh buffer)."""
        return bytes(self.seal_into(index, plaintext, self.buffer()))

    def unseal_into(self, index, sealed, out, where):
        """Chunk index opened into out: a memoryview of its plaintext, only once it authenticated."""
        sealed = memoryview(sealed)
        try:
            if len(sealed) < TAG_SIZE:
                raise InvalidTag
            mode = modes.GCM(nonce(index, index == self.chunks - 1), bytes(sealed[-TAG_SIZE:]))
            decryptor = Cipher(self._algorithm, mode).decryptor()
            decryptor.authenticate_additional_data(self.header)
            length = decryptor.update_into(sealed[:-TAG_SIZE], out)
            decryptor.finalize()  # checks the tag: out is not used before this returned
            return memoryview(out)[:length]
        except InvalidTag:
            start = self.cipher_offset(index)
            raise EncryptionError(
                "not_authentic",
                f"{where} does not authenticate: chunk {index + 1} of {self.chunks} (bytes {start}-"
                f"{start + len(sealed) - 1}) fails AES-GCM authentication under backup key {self.key_id}. The "
                "offsite copy was changed or damaged after it was pushed (or copied from another object's key, "
                "or its chunks were reordered); nothing was kept. Pull an older backup (backup or before)",
                where=where,
                chunk=index,
            ) from None


# --------------------------------------------------------------------------- whole buffers (tests, small objects)


def encrypt_bytes(cipher, plaintext):
    """The whole encrypted object of plaintext (len(plaintext) == cipher.size)."""
    if len(plaintext) != cipher.size:
        raise ValueError("the plaintext is not the cipher's size")
    parts = [cipher.header]
    for index in range(cipher.chunks):
        start = index * cipher.chunk
        parts.append(cipher.seal(index, plaintext[start : start + cipher.plain_length(index)]))
    return b"".join(parts)


def decrypt_bytes(cipher, data, where):
    """The plaintext of a whole encrypted object; raises like DecryptingWriter."""
    out = bytearray()
    writer = DecryptingWriter(cipher, None, where, sink=lambda offset, plain: out.extend(plain))
    writer.write(data)
    writer.finish()
    return bytes(out)


# --------------------------------------------------------------------------- streams


class _ObjectPosition:
    """The position of a stream over one encrypted object (seekable anywhere in it, as s3transfer wants)."""

    cipher = None
    _position = 0

    def seekable(self):
        return True

    def tell(self):
        return self._position

    def seek(self, where, whence=0):
        base = {0: 0, 1: self._position, 2: self.cipher.object_size}[whence]
        self._position = max(0, base + where)
        return self._position


class EncryptingReader(_ObjectPosition):
    """The ciphertext of a plaintext file, as a seekable read-only file object.

    Hand it to s3transfer (through an OSUtils whose open() returns it): each part of a multipart
    upload opens its own reader, seeks to its first byte and reads as the HTTP client sends; only
    the last two chunks are held (in two reused buffers, so that a read across a chunk boundary
    copies once), whatever the size of the file. A seek anywhere re-seals the chunk there (the same
    bytes: the key, nonce and plaintext are the same).
    """

    def __init__(self, cipher, path):
        self.cipher = cipher
        self.path = path
        self._position = 0
        self._plain = bytearray(cipher.plain_length(0))
        self._slots = [[None, cipher.buffer(), None], [None, cipher.buffer(), None]]  # index, buffer, sealed
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        size = os.fstat(self._fd).st_size
        if size != cipher.size:
            os.close(self._fd)
            self._fd = None
            raise EncryptionError(
                "checksum_mismatch",
                f"{path} has {size} bytes, its manifest says {cipher.size}: it changed after the backup was "
                "written; it was not pushed. Take a new backup",
                path=path,
            )
        self.closed = False

    def readable(self):
        return True

    def writable(self):
        return False

    def read(self, amount=None):
        total = self.cipher.object_size
        if amount is None or amount < 0:
            amount = total
        amount = min(amount, max(0, total - self._position))
        pieces = []
        while amount > 0:
            position = self._position
            if position < HEADER_SIZE:
                piece = memoryview(self.cipher.header)[position : position + amount]
            else:
                index, offset, _length = self.cipher.locate(position)
                if len(pieces) >= 2:  # its buffer is about to be reused: copy it out now
                    pieces[-2] = bytes(pieces[-2])
                piece = self._sealed(index)[offset : offset + amount]
            pieces.append(piece)
            self._position += len(piece)
            amount -= len(piece)
        return b"".join(pieces)  # one copy, straight out of the reused buffers

    def _sealed(self, index):
        slot = self._slots[index % 2]
        if slot[0] != index:
            length = self.cipher.plain_length(index)
            plain = memoryview(self._plain)[:length]
            if length and os.preadv(self._fd, [plain], index * self.cipher.chunk) != length:
                raise EncryptionError(
                    "checksum_mismatch",
                    f"{self.path} became shorter while it was pushed: it was not pushed. Take a new backup",
                    path=self.path,
                )
            slot[0] = None
            slot[2] = self.cipher.seal_into(index, plain, slot[1])
            slot[0] = index
        return slot[2]

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._slots = [[None, None, None], [None, None, None]]
        self._plain = None
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _cover(spans, start, end):
    """spans (sorted, disjoint [start, end) pairs) with [start, end) added and merged."""
    merged = []
    for low, high in sorted([*spans, (start, end)]):
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


class DecryptingWriter(_ObjectPosition):
    """A seekable writable file object that takes an encrypted object's bytes in any order, and writes
    the plaintext of each chunk into path once that chunk has arrived whole and authenticated.

    This is what s3transfer's download to a seekable file object does: ``seek(offset); write(data)``
    from its IO thread, parts in any order, a retried part rewriting its range from its start (a
    chunk already opened is not written twice). At most the chunks being filled are held (1 MiB
    each, about one per part in flight). The first bytes must be the header the pull read first.
    ``finish()`` fails unless every chunk, the last included, arrived and authenticated; the file is
    created (0600, O_EXCL) with the first chunk opened, inside the pull's ``.partial``, and closed
    with the last one, its buffers let go (a directory backup has a writer per file, all finished
    together at the end). The pull fsyncs the whole ``.partial`` before its renames.
    """

    def __init__(self, cipher, path, where, mode=0o600, sink=None):
        self.cipher = cipher
        self.path = path
        self.where = where
        self.mode = mode
        self._sink = sink
        self._fd = None
        self._created = False
        self._position = 0
        self._lock = threading.Lock()
        self._reset_state()

    def _reset_state(self):
        self._header_spans = []
        self._pending = {}
        self._spare = []
        self._plain = None  # made with the first chunk: a directory backup has a writer per file, most idle
        self._opened = bytearray(self.cipher.chunks)
        self._left = self.cipher.chunks

    def readable(self):
        return False

    def writable(self):
        return True

    def write(self, data):
        view = memoryview(data).cast("B")
        with self._lock:
            start = self._position
            end = start + len(view)
            if end > self.cipher.object_size:
                raise EncryptionError(
                    "not_authentic",
                    f"{self.where} is longer than the encrypted copy of {self.cipher.size} bytes its manifest "
                    f"describes ({self.cipher.object_size} bytes): it was replaced or damaged; nothing was kept",
                    where=self.where,
                )
            position = start
            while position < end:
                if position < HEADER_SIZE:
                    take = min(end, HEADER_SIZE) - position
                    self._header_part(position, view[position - start : position - start + take])
                else:
                    index, offset, length = self.cipher.locate(position)
                    take = min(end - position, length - offset)
                    self._chunk_part(index, offset, length, view[position - start : position - start + take])
                position += take
            self._position = end
        return len(view)

    def _header_part(self, position, piece):
        if bytes(piece) != self.cipher.header[position : position + len(piece)]:
            raise EncryptionError(
                "not_authentic",
                f"the encryption header of {self.where} changed while it was pulled (the object was replaced): "
                "nothing was kept. Pull again",
                where=self.where,
            )
        self._header_spans = _cover(self._header_spans, position, position + len(piece))

    def _chunk_part(self, index, offset, length, piece):
        if self._opened[index]:
            return  # a retried part rewrites what was opened already
        if len(piece) == length:
            sealed = piece  # the whole chunk in one write: nothing to assemble
        else:
            buffer, spans = self._pending.get(index) or (self._buffer(length), [])
            buffer[offset : offset + len(piece)] = piece
            spans = _cover(spans, offset, offset + len(piece))
            if spans != [(0, length)]:
                self._pending[index] = (buffer, spans)
                return
            self._pending.pop(index, None)
            sealed = buffer
        if self._plain is None:
            self._plain = self.cipher.buffer()
        plain = self.cipher.unseal_into(index, sealed, self._plain, self.where)
        if sealed is not piece and len(self._spare) < SPARE_BUFFERS:
            self._spare.append(sealed)
        self._emit(index * self.cipher.chunk, plain)
        self._opened[index] = 1
        self._left -= 1
        if not self._left:
            self.close()  # every chunk is in

    def _buffer(self, length):
        """A buffer for one chunk: a spare one when it has the right length (no new pages to fault in)."""
        if self._spare and len(self._spare[-1]) == length:
            return self._spare.pop()
        return bytearray(length)

    def _emit(self, offset, plain):
        if self._sink is not None:
            self._sink(offset, bytes(plain))
            return
        if self._fd is None:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            self._fd = os.open(self.path, flags, self.mode)
            self._created = True
        view = plain
        while view:
            written = os.pwrite(self._fd, view, offset)
            view = view[written:]
            offset += written

    def finish(self):
        """Fail unless the whole object arrived and authenticated (the plaintext is then written and closed)."""
        with self._lock:
            if self._left or self._header_spans != [(0, HEADER_SIZE)]:
                missing = next((i for i in range(self.cipher.chunks) if not self._opened[i]), None)
                what = f"chunk {missing + 1} of {self.cipher.chunks}" if missing is not None else "its header"
                raise EncryptionError(
                    "not_authentic",
                    f"{self.where} ended before {what} arrived: the object is truncated (or was replaced while it was "
                    "pulled); nothing was kept. Pull an older backup (backup or before)",
                    where=self.where,
                )
            self.close()

    def reset(self):
        """Start over (the whole object is downloaded again): what was written is removed."""
        with self._lock:
            self.close()
            if self._created:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
                self._created = False
            self._reset_state()
            self._position = 0

    def close(self):
        """Close the plaintext file and let go of every buffer (finish() calls it; so does the pull on failure)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._pending = {}
        self._spare = []
        self._plain = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
