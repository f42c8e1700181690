"""Unit tests of dotenv.py (the engine of the filter tokotani.dr.dotenv and the test secret_shaped): what is read
from an app's .env, which may have been written by someone else, and what is taken as a secret to write back."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible.errors import AnsibleFilterError  # noqa: E402
from ansible_collections.tokotani.dr.plugins.module_utils.dotenv import parse, secret_value  # noqa: E402

TOKEN = "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0"


def test_the_pairs_of_the_app_env_are_read():
    text = (
        "# managed by tokotani.dr.tokotani_app\n"
        "NODE_ENV=production\n"
        f"NEXTAUTH_SECRET={TOKEN}\n"
        "export ADMIN_TOKEN='quoted-token-value'\n"
        '  SPACED = "double quoted"  \n'
        "\n"
    )
    assert parse(text) == {
        "NODE_ENV": "production",
        "NEXTAUTH_SECRET": TOKEN,
        "ADMIN_TOKEN": "quoted-token-value",
        "SPACED": "double quoted",
    }


def test_only_the_keys_asked_for_and_the_last_one_wins():
    text = "A=1\nNEXTAUTH_SECRET=old\nNEXTAUTH_SECRET=new\n"
    assert parse(text, ["NEXTAUTH_SECRET", "ADMIN_TOKEN"]) == {"NEXTAUTH_SECRET": "new"}


def test_malformed_lines_are_ignored_not_guessed():
    text = "1BAD=x\nno equals sign\n=value\nKEY-WITH-DASH=x\n; other=1\nGOOD=yes\n"
    assert parse(text) == {"GOOD": "yes"}


def test_nothing_read_spans_a_line_and_no_escape_or_variable_is_interpreted():
    # an intruder's attempt to smuggle a second line or an expansion through a value
    text = 'NEXTAUTH_SECRET="abc\\nNODE_OPTIONS=--require /tmp/x"\nADMIN_TOKEN=$(id)${HOME}\r\n'
    values = parse(text)
    assert values["NEXTAUTH_SECRET"] == "abc\\nNODE_OPTIONS=--require /tmp/x"
    assert values["ADMIN_TOKEN"] == "$(id)${HOME}"
    assert "NODE_OPTIONS" not in values
    assert all("\n" not in value and "\r" not in value for value in values.values())


def test_a_lone_or_mismatched_quote_is_kept():
    assert parse("A='abc\nB=abc\"\nC='x\"\n") == {"A": "'abc", "B": 'abc"', "C": "'x\""}


def test_bytes_are_decoded_and_other_types_refused():
    assert parse(b"A=\xc3\xa9\n") == {"A": "\u00e9"}
    with pytest.raises(TypeError, match=r"must be a string, not dict"):
        parse({"A": "1"})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (TOKEN, True),
        ("x" * 16, True),
        ("x" * 1024, True),
        ("x" * 15, False),
        ("x" * 1025, False),
        ("", False),
        ("has space in the middle", False),
        ("tab\tinside-a-long-value", False),
        ("line\nbreak-in-a-long-value", False),
        ("non-ascii-\u00e9-long-value", False),
        (None, False),
        (12345678901234567890, False),
    ],
)
def test_only_a_value_shaped_as_a_secret_is_written_back(value, expected):
    assert secret_value(value) is expected


@pytest.fixture(name="filters")
def fixture_filters():
    from ansible_collections.tokotani.dr.plugins.filter.dotenv import FilterModule  # noqa: PLC0415

    return FilterModule().filters()


def test_the_plugins_are_documented_beside_them_and_call_the_engine(filters):
    from ansible_collections.tokotani.dr.plugins.test.secret_shaped import TestModule  # noqa: PLC0415

    tests = TestModule().tests()
    assert set(filters) == {"dotenv"} and (ROOT / "plugins" / "filter" / "dotenv.yml").is_file()
    assert set(tests) == {"secret_shaped"} and (ROOT / "plugins" / "test" / "secret_shaped.yml").is_file()
    assert filters["dotenv"]("A=1\nB=2\n", ["B"]) == {"B": "2"}
    assert tests["secret_shaped"](TOKEN) and not tests["secret_shaped"]("short")
    message = "tokotani.dr.dotenv: the .env's text must be a string, not list"
    with pytest.raises(AnsibleFilterError, match=re.escape(message)):
        filters["dotenv"](["A=1"])


def test_lines_are_split_as_the_app_splits_them():
    # U+2028 and a form feed are line breaks to Python's splitlines, not to the app: one value, as the app reads it
    values = parse("NEXTAUTH_SECRET=abc\u2028ADMIN_TOKEN=evil\x0cX=1\r\nB=2\r\n")
    assert values == {"NEXTAUTH_SECRET": "abc\u2028ADMIN_TOKEN=evil\x0cX=1", "B": "2"}
    assert not secret_value(values["NEXTAUTH_SECRET"])
