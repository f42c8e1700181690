"""The filters tokotani.dr.vault_file_info and tokotani.dr.vault_file_drop: what a vault file of encrypted values
(playbooks/secrets_init.yml's format: one ``name: !vault |`` block per secret) holds, and the file without some of its
entries. The one reading of that format, for secrets_init.yml (add_missing) and breach_response (the rotated values
recorded); documented in vault_file_info.yml and vault_file_drop.yml beside this file. Nothing is decrypted here."""

from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEYS = re.compile(r"(?m)^([A-Za-z_][A-Za-z0-9_]*)[ \t]*:")
_FIRST_VALUE = re.compile(r"(?m)^[A-Za-z_][A-Za-z0-9_]*:[ \t]*!vault[ \t]*[|][^\n]*\n((?:[ \t]+\S[^\n]*\n?)+)")
_VAULT_ID = re.compile(r"^\$ANSIBLE_VAULT;1\.2;AES256;(\S+)")
_WHOLE = re.compile(r"^\s*\$ANSIBLE_VAULT;")


def _text(value, name):
    if not isinstance(value, str):
        raise AnsibleFilterError(f"tokotani.dr.{name}: the file's text is a string, not {type(value).__name__}")
    return value


def vault_file_info(text):
    """{whole, keys, first_value, vault_id, encrypted_values} of a vault file's text."""
    text = _text(text, "vault_file_info")
    match = _FIRST_VALUE.search(text)
    first = re.sub(r"(?m)^[ \t]+", "", match.group(1)) if match else ""
    vault_id = _VAULT_ID.match(first)
    return {
        "whole": bool(_WHOLE.match(text)),
        "keys": _KEYS.findall(text),
        "first_value": first.strip(),
        "vault_id": vault_id.group(1) if vault_id else None,
        "encrypted_values": len(re.findall(r"(?m)^[A-Za-z_][A-Za-z0-9_]*:[ \t]*!vault", text)),
    }


def vault_file_drop(text, names):
    """The text without the top-level entries named (each name with its indented value lines), blank runs collapsed."""
    text = _text(text, "vault_file_drop")
    if isinstance(names, str) or not all(isinstance(n, str) and NAME.fullmatch(n) for n in names):
        raise AnsibleFilterError("tokotani.dr.vault_file_drop: names is a list of top-level key names")
    if not names:
        return text
    pattern = re.compile(
        r"(?m)^(?:" + "|".join(re.escape(n) for n in names) + r")[ \t]*:[^\n]*\n?(?:[ \t]+[^\n]*(?:\n|$))*"
    )
    return re.sub(r"\n{3,}", "\n\n", pattern.sub("", text))


class FilterModule:
    """tokotani.dr.vault_file_info, tokotani.dr.vault_file_drop - a vault file of encrypted values, read and edited."""

    def filters(self):
        return {"vault_file_info": vault_file_info, "vault_file_drop": vault_file_drop}
