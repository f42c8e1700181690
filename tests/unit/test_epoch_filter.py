"""The filter tokotani.dr.epoch: a time read as the modules' before= options read it (backup_catalog.parse_timestamp),
so that the breach response checks breach_at the way the restore will take it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible.errors import AnsibleFilterError  # noqa: E402
from ansible_collections.tokotani.dr.plugins.filter.epoch import FilterModule  # noqa: E402

epoch = FilterModule().filters()["epoch"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-12-07T02:10:00Z", 1796609400.0),
        ("2026-12-07T09:10:00+07:00", 1796609400.0),
        ("2026-12-07T02:10:00", 1796609400.0),
        ("2026-12-07 02:10:00", 1796609400.0),
        ("backup_2026-12-07_02-10-00", 1796609400.0),
        ("1796609400", 1796609400.0),
        ("1796609400.5", 1796609400.5),
        (1796609400, 1796609400.0),
    ],
)
def test_every_form_the_modules_accept_reads_as_the_same_epoch(value, expected):
    assert epoch(value) == expected


@pytest.mark.parametrize("value", ["yesterday", "2026-13-40T00:00:00Z", "", "1796609400; DROP TABLE users"])
def test_a_time_that_cannot_be_read_names_the_accepted_forms(value):
    with pytest.raises(AnsibleFilterError, match="use ISO 8601 such as 2026-01-05T02:00:00Z"):
        epoch(value)


@pytest.mark.parametrize("value", [None, True, ["2026-12-07T02:10:00Z"], {"at": 1}])
def test_a_value_that_is_not_a_string_or_number_is_refused(value):
    with pytest.raises(AnsibleFilterError, match="a time is a string or a number"):
        epoch(value)


def test_the_filter_is_documented_beside_it():
    assert (ROOT / "plugins" / "filter" / "epoch.yml").is_file()
