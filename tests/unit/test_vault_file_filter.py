"""The filters tokotani.dr.vault_file_info and vault_file_drop: the one reading of secrets_init.yml's vault format."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible.errors import AnsibleFilterError  # noqa: E402
from ansible_collections.tokotani.dr.plugins.filter.vault_file import FilterModule  # noqa: E402

FILTERS = FilterModule().filters()
info, drop = FILTERS["vault_file_info"], FILTERS["vault_file_drop"]

BLOCK = "$ANSIBLE_VAULT;1.2;AES256;production\n          6162636465\n          3031323334"
TEXT = (
    "---\n# The secrets of the production inventory\n"
    f"vault_tokotani_db_password: !vault |\n          {BLOCK}\n"
    f"vault_tokotani_admin_token: !vault |\n          {BLOCK.replace('6162', '7172')}\n"
    "tokotani_site: shop1\n"
)


def test_info_of_a_file_of_encrypted_values():
    got = info(TEXT)
    assert got["whole"] is False
    assert got["keys"] == ["vault_tokotani_db_password", "vault_tokotani_admin_token", "tokotani_site"]
    assert got["vault_id"] == "production"
    assert got["first_value"] == "$ANSIBLE_VAULT;1.2;AES256;production\n6162636465\n3031323334"
    assert got["encrypted_values"] == 2


def test_info_of_a_whole_encrypted_file_and_of_plain_yaml():
    whole = info("$ANSIBLE_VAULT;1.1;AES256\n6162\n")
    assert whole["whole"] is True and whole["keys"] == [] and whole["vault_id"] is None
    plain = info("a: 1\nb: two\n")
    assert plain == {"whole": False, "keys": ["a", "b"], "first_value": "", "vault_id": None, "encrypted_values": 0}
    # a value without a vault id (ansible-vault 1.1 header)
    assert info("x: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  6162\n")["vault_id"] is None


def test_drop_removes_exactly_the_entries_named():
    kept = drop(TEXT, ["vault_tokotani_db_password"])
    assert "vault_tokotani_db_password" not in kept
    assert "6162636465" not in kept
    assert kept.startswith("---\n# The secrets of the production inventory\nvault_tokotani_admin_token: !vault |\n")
    assert kept.endswith("tokotani_site: shop1\n")
    assert drop(TEXT, []) == TEXT
    # a name that is a prefix of another is not the other
    assert "vault_tokotani_admin_token" in drop(TEXT, ["vault_tokotani_admin"])
    # the last entry, without a final newline
    assert drop("a: 1\nb: !vault |\n  xyz", ["b"]) == "a: 1\n"
    assert drop("a: 1\n\n\nb: 2\n\n\nc: 3\n", ["b"]) == "a: 1\n\nc: 3\n"


@pytest.mark.parametrize("names", ["vault_x", ["a|b"], ["(.*)"], [".*"], [1]])
def test_drop_refuses_names_that_are_not_key_names(names):
    with pytest.raises(AnsibleFilterError, match="names is a list of top-level key names"):
        drop(TEXT, names)


def test_text_must_be_a_string():
    with pytest.raises(AnsibleFilterError, match="is a string"):
        info(None)
    with pytest.raises(AnsibleFilterError, match="is a string"):
        drop(b"a: 1", ["a"])


# --------------------------------------------------------------------------- tokotani.dr.database_url (same family:
# the strings the roles write for the app's secrets)
from ansible_collections.tokotani.dr.plugins.filter.database_url import database_url  # noqa: E402


def test_database_url_encodes_every_part():
    assert database_url("tokotani", "p@ss/w:rd%", "127.0.0.1", "5432", "tokotani") == (
        "postgres://tokotani:p%40ss%2Fw%3Ard%25@127.0.0.1:5432/tokotani"
    )
    assert database_url("app", "x", "::1", 5433, "shop db") == "postgres://app:x@[::1]:5433/shop%20db"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", "x", "h", 1, "d"), "user is a non-empty string"),
        (("u", None, "h", 1, "d"), "password is a non-empty string"),
        (("u", "x", "h", "port", "d"), "port is a number"),
        (("u", "x", "h", 70000, "d"), "not between 1 and 65535"),
        (("u", "x", "evil.example/x?", 5432, "d"), "is not a host name or address"),
        (("u", "x", "h\nX: 1", 5432, "d"), "is not a host name or address"),
    ],
)
def test_database_url_refuses_bad_parts(args, message):
    with pytest.raises(AnsibleFilterError, match=message):
        database_url(*args)
