# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backup keys: who may vouch for a backup, and the root of its offsite encryption.

A backup key is a secret string of at least MIN_KEY_CHARS characters (``openssl rand -base64 32``)
that lives in the vault or an AWX credential, never in the bucket nor beside the backups.

- **Signing.** The backup engine signs each manifest it writes with HMAC-SHA256 over the
  manifest's canonical JSON (every field but ``signature``, keys sorted, no whitespace, ASCII).
  The signature names the key by its id (a hash of the key, never the key), so several keys may
  verify: the current ``backup_key`` signs, ``backup_previous_keys`` still verify what older keys
  signed (rotation).
- **Checking.** With a key configured, a manifest that is not signed is refused unless
  ``allow_unsigned`` says otherwise; a signature made with a key that is not given, or that does
  not match the content, is refused always. Without any key nothing is checked (and entries say
  so): the manifest's sha256 then only proves the data matches the manifest, not who wrote it.
- **Subkeys.** Every use derives its own key with HMAC-SHA256(key, purpose), so the signing key
  and the offsite encryption keys (offsite_crypto) are never the same bytes.

Pure standard library: the host-side runner signs and checks without Ansible.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from ansible_collections.tokotani.dr.plugins.module_utils.errors import DrError

MIN_KEY_CHARS = 32
ALGORITHM = "HMAC-SHA256"
KEY_ID_CHARS = 16
ENV_KEY = "TOKOTANI_BACKUP_KEY"
ENV_PREVIOUS_KEYS = "TOKOTANI_BACKUP_PREVIOUS_KEYS"
_ID_CONTEXT = b"tokotani.dr backup key id v1\0"
_SUBKEY_CONTEXT = b"tokotani.dr subkey v1\0"
SIGNING_PURPOSE = b"manifest signature"


class BackupKeyError(DrError):
    """A backup key that cannot be used: too short, given twice, previous keys without a current one."""


class BackupKey:
    """One key: its public id and its secret, which never appears in repr, str or results."""

    __slots__ = ("_secret", "id", "origin")

    def __init__(self, secret, origin="backup_key"):
        if not isinstance(secret, str):
            raise BackupKeyError(f"{origin} must be a string")
        secret = secret.strip()
        if len(secret) < MIN_KEY_CHARS:
            raise BackupKeyError(
                f"{origin} is {len(secret)} characters long; a backup key needs at least {MIN_KEY_CHARS} "
                "(make one with `openssl rand -base64 32` and keep it in the vault)"
            )
        self._secret = secret.encode("utf-8")
        self.id = hashlib.sha256(_ID_CONTEXT + self._secret).hexdigest()[:KEY_ID_CHARS]
        self.origin = origin

    def subkey(self, purpose):
        """32 bytes for one purpose (bytes), derived from the key; never the key itself."""
        return hmac.new(self._secret, _SUBKEY_CONTEXT + purpose, hashlib.sha256).digest()

    def __repr__(self):
        return f"BackupKey(id={self.id}, origin={self.origin})"

    __str__ = __repr__


def canonical(doc):
    """The bytes a manifest's signature covers: every field but ``signature``, canonical JSON."""
    body = {k: v for k, v in doc.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def _mac(key, doc):
    return hmac.new(key.subkey(SIGNING_PURPOSE), canonical(doc), hashlib.sha256).hexdigest()


class KeyRing:
    """The keys given to one run: ``current`` signs and encrypts, every key verifies and decrypts."""

    def __init__(self, keys, allow_unsigned=False):
        self.keys = list(keys)
        self.allow_unsigned = bool(allow_unsigned)
        seen = {}
        for key in self.keys:
            if key.id in seen:
                raise BackupKeyError(f"{key.origin} is the same key as {seen[key.id]}: give each key once")
            seen[key.id] = key.origin

    @property
    def current(self):
        return self.keys[0] if self.keys else None

    def find(self, key_id):
        for key in self.keys:
            if key.id == key_id:
                return key
        return None

    def sign(self, doc):
        """doc with a ``signature`` by the current key (doc itself is not changed)."""
        signed = {k: v for k, v in doc.items() if k != "signature"}
        signed["signature"] = {"algorithm": ALGORITHM, "key_id": self.current.id, "value": _mac(self.current, doc)}
        return signed

    def verdict(self, doc):
        """What doc's signature is, whatever allow_unsigned says: ``signed`` (by a key given), ``unsigned``
        (none), ``unknown_format``, ``unknown_key`` (no key given has its key id) or ``forged`` (a key given,
        and the MAC does not match the content). Documents other than manifests (the deploy record) are
        checked with this and word their own refusals; ``check`` words those of manifests.
        """
        signature = doc.get("signature")
        if signature is None:
            return "unsigned"
        if not isinstance(signature, dict) or signature.get("algorithm") != ALGORITHM:
            return "unknown_format"
        key = self.find(signature.get("key_id"))
        if key is None:
            return "unknown_key"
        if not hmac.compare_digest(str(signature.get("value")), _mac(key, doc)):
            return "forged"
        return "signed"

    def key_ids(self):
        """'backup_key <id>, <id>...': the ids of the keys given, for messages (never the keys)."""
        return f"backup_key {self.current.id}" + "".join(f", {k.id}" for k in self.keys[1:])

    def check(self, doc, what):
        """(status, problems) of a parsed, schema-checked manifest; what names the backup for messages.

        status: ``signed`` (by a key given), ``unsigned`` (accepted with allow_unsigned), ``None``
        when the check refused it (problems say why).
        """
        verdict = self.verdict(doc)
        if verdict == "signed":
            return "signed", []
        if verdict == "unsigned":
            if self.allow_unsigned:
                return "unsigned", []
            return None, [
                f"the manifest of {what} is not signed, and a backup key is configured: it was made without "
                "a key (or by someone else). If you know where it comes from, accept it with allow_unsigned=true"
            ]
        if verdict == "unknown_format":
            return None, [f"the manifest of {what} carries a signature this tool does not know: refused"]
        if verdict == "unknown_key":
            return None, [
                f"the manifest of {what} is signed with key {doc['signature'].get('key_id')}, which is none of the "
                f"keys given ({self.key_ids()}): give the key that signed it in backup_previous_keys"
            ]
        return None, [
            f"the signature of the manifest of {what} does not match its content: the manifest was changed "
            "after it was signed (forged or damaged). Do not use this backup: take another one"
        ]


def keyring(params):
    """The KeyRing of a module's or job's parameters, or None when no backup_key is given."""
    current = params.get("backup_key")
    previous = params.get("backup_previous_keys") or []
    if isinstance(previous, str):
        previous = [p for p in previous.replace("\n", ",").split(",") if p.strip()]
    if not current:
        if previous:
            raise BackupKeyError("backup_previous_keys is given without backup_key: give the current key too")
        return None
    keys = [BackupKey(current, "backup_key")]
    keys.extend(BackupKey(p, f"backup_previous_keys[{i}]") for i, p in enumerate(previous))
    return KeyRing(keys, allow_unsigned=params.get("allow_unsigned", False))


def check_entry(entry, ring, what=None):
    """Record on a catalog entry (local or offsite) whether its manifest is signed by a key of ring.

    entry["signed"] becomes True (by a key given), False (no signature) or None (a signature, not
    checked: no key given). A refused signature makes the entry invalid with the reason.
    """
    doc = entry.get("manifest")
    if doc is None:
        return entry
    entry["signed_by"] = None
    if ring is None:
        entry["signed"] = None if "signature" in doc else False
        return entry
    status, problems = ring.check(doc, what or f"backup {entry['name']}")
    entry["signed"] = status == "signed"
    if status == "signed":
        entry["signed_by"] = doc["signature"]["key_id"]
    if problems:
        entry["problems"].extend(problems)
        entry["valid"] = False
    return entry


def signature_line(entry, ring):
    """One line for a result's ``verified`` list: what the signature check of an accepted entry found."""
    name = entry["name"]
    if entry.get("signed"):
        return f"the manifest of {name} is signed by backup key {entry['signed_by']}"
    if ring is not None:
        return f"the manifest of {name} is not signed: accepted because allow_unsigned is true"
    if entry.get("signed") is None:
        return f"the manifest of {name} is signed, but no backup_key was given to check it"
    return f"the manifest of {name} is not signed (no backup_key given)"
