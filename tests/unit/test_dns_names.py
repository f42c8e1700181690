"""Unit tests of dns_names.py (the engine of the tokotani.dr.dns_* filters the role dns_switch uses): canonical A,
AAAA and CNAME values, host names, fully qualified names in a zone, and the decisions of a record change.

The AAAA form is also checked against dnspython's (what community.general.dig answers, as BIND writes it), and the
filter plugin's wiring through the FilterModule, errors included.
"""

from __future__ import annotations

import ipaddress
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.tokotani.dr.plugins.module_utils import dns_names  # noqa: E402
from ansible_collections.tokotani.dr.plugins.module_utils.dns_names import (  # noqa: E402
    canonical,
    change_needed,
    comparable,
    fqdn,
    in_zone,
    invalid,
    is_name,
    nsupdate_ttls,
)

# --------------------------------------------------------------------------- A


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("192.0.2.10", "192.0.2.10"),
        ("0.0.0.0", "0.0.0.0"),  # noqa: S104 - an address, not a binding
        ("255.255.255.255", "255.255.255.255"),
        ("192.000.002.010", "192.0.2.10"),  # leading zeros are decimal, never octal
        ("010.0.0.1", "10.0.0.1"),
        ("  198.51.100.20\t\n", "198.51.100.20"),
    ],
)
def test_an_ipv4_address_is_a_dotted_quad_without_leading_zeros_or_surrounding_space(value, expected):
    assert canonical(value, "A") == expected


@pytest.mark.parametrize(
    "value",
    [
        "300.1.2.3",
        "192.0.2.256",
        "1.2.3",
        "1.2.3.4.5",
        "0001.2.3.4",  # four digits
        "1.2.3.4.",
        ".1.2.3.4",
        "1..2.3",
        "192.0.2. 10",
        "192.0.2 .10",
        "192 .0.2.10",
        "1.2.3.-4",
        "+1.2.3.4",
        "0x7f.0.0.1",
        "1.2.3.4/32",
        "１.２.３.４",  # fullwidth digits are not ASCII digits  # noqa: RUF001
        "2001:db8::1",
        "",
        "   ",
        "localhost",
    ],
)
def test_anything_else_is_not_an_ipv4_address(value):
    assert canonical(value, "A") is None


def test_a_value_that_is_not_a_string_is_read_as_text():
    assert canonical(None, "A") is None
    assert canonical(12, "A") is None
    assert canonical(ipaddress.IPv4Address("192.0.2.1"), "A") == "192.0.2.1"


# --------------------------------------------------------------------------- AAAA (RFC 5952)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # 4.1: no leading zeros in a group
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("2001:db8:0000:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
        # 4.2.1: the longest run is compressed, as far as it goes
        ("2001:db8:0:0:0:0:2:1", "2001:db8::2:1"),
        ("2001:DB8:0:0::0:21", "2001:db8::21"),
        ("2001:db8::0:1", "2001:db8::1"),
        # 4.2.2: a single zero group is never compressed
        ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
        ("2001:db8::1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
        # 4.2.3: the longest run wins, the leftmost of equally long runs
        ("2001:0:0:1:0:0:0:1", "2001:0:0:1::1"),
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
        ("2001:db8:0:0:1:0:0:22", "2001:db8::1:0:0:22"),
        ("1:0:0:2:0:0:3:4", "1::2:0:0:3:4"),
        # 4.3: lower case
        ("2001:DB8::ABCD:EF01", "2001:db8::abcd:ef01"),
        # whole runs at either end, and the extremes
        ("0:0:0:1:2:3:4:5", "::1:2:3:4:5"),
        ("1:2:3:4:5:0:0:0", "1:2:3:4:5::"),
        ("0:0:0:0:0:0:0:0", "::"),
        ("::", "::"),
        ("::1", "::1"),
        ("0:0:0:0:0:0:0:1", "::1"),
        ("1::", "1::"),
        ("fe80:0:0:0:0:0:0:1", "fe80::1"),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("1:2:3:4:5:6::7", "1:2:3:4:5:6:0:7"),
        (" 2001:db8::10 ", "2001:db8::10"),
    ],
)
def test_an_ipv6_address_is_written_as_rfc_5952_writes_it(value, expected):
    assert canonical(value, "AAAA") == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # RFC 5952 section 5: dotted for the well-known prefixes, as BIND, glibc and dnspython write them
        ("::ffff:192.0.2.1", "::ffff:192.0.2.1"),
        ("::FFFF:C000:0201", "::ffff:192.0.2.1"),
        ("0:0:0:0:0:ffff:192.0.2.1", "::ffff:192.0.2.1"),
        ("::ffff:0:0", "::ffff:0.0.0.0"),
        ("::192.0.2.1", "::192.0.2.1"),
        ("::c000:201", "::192.0.2.1"),
        # other prefixes stay hexadecimal
        ("64:ff9b::192.0.2.1", "64:ff9b::c000:201"),
        ("2001:db8::192.0.2.1", "2001:db8::c000:201"),
        ("::ffff:0:192.0.2.1", "::ffff:0:c000:201"),
        ("::1:0:0:0", "::1:0:0:0"),
    ],
)
def test_an_embedded_ipv4_address_is_dotted_only_for_the_well_known_prefixes(value, expected):
    assert canonical(value, "AAAA") == expected


@pytest.mark.parametrize(
    "value",
    [
        "1::2::3",  # two ::
        ":::",
        ":1::",
        "1:2:3:4:5:6:7",  # seven groups
        "1:2:3:4:5:6:7:8:9",
        "1:2:3:4:5:6:7::8",  # :: standing for no group
        "1:2:3:4:5:6:7:8::",
        "1:2:3:4:5:6:7:",
        ":1:2:3:4:5:6:7",
        "12345::",  # five digits
        "g::1",
        "2001: db8::1",
        "2001:db8:: 1",
        "fe80::1%eth0",  # a zone index is not a record's value
        "2001:db8::/32",
        "::ffff:192.0.2.256",
        "::ffff:192.0.02.1",
        "::ffff:1.2.3",
        "::1.2.3.4:5",
        "1.2.3.4",
        "",
        "-",
        "２００１:db8::1",  # noqa: RUF001
    ],
)
def test_anything_else_is_not_an_ipv6_address(value):
    assert canonical(value, "AAAA") is None


def test_the_aaaa_form_is_what_dnspython_writes_so_answers_compare_as_text():
    ipv6 = pytest.importorskip("dns.ipv6")
    rnd = random.Random(5952)  # noqa: S311 - reproducible test addresses
    for _attempt in range(5000):
        groups = [rnd.choice([0, 0, 0, 1, 0xFFFF, rnd.getrandbits(16)]) for _position in range(8)]
        if rnd.random() < 0.1:
            groups[:5] = [0] * 5
            groups[5] = rnd.choice([0, 0xFFFF])
        address = ipaddress.IPv6Address(sum(group << (16 * (7 - i)) for i, group in enumerate(groups)))
        answer = ipv6.inet_ntoa(address.packed)
        assert canonical(address.exploded.upper(), "AAAA") == answer
        assert canonical(answer, "AAAA") == answer


# --------------------------------------------------------------------------- CNAME and host names


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("lb2.example.net", "lb2.example.net."),  # taken as fully qualified
        ("lb2.example.net.", "lb2.example.net."),
        ("LB2.Example.NET", "lb2.example.net."),
        ("  lb2.example.net \n", "lb2.example.net."),
        ("localhost", "localhost."),
        ("_acme-challenge.shop.example", "_acme-challenge.shop.example."),
        ("_x.y", "_x.y."),
        ("a_b.example", "a_b.example."),
        ("xn--bcher-kva.example", "xn--bcher-kva.example."),
        ("1.2.3.4", "1.2.3.4."),  # digits only is a name too
        ("a" * 63 + ".example", "a" * 63 + ".example."),
        (".".join(["a" * 63] * 3 + ["b" * 61]), ".".join(["a" * 63] * 3 + ["b" * 61]) + "."),  # 253 characters
    ],
)
def test_a_cname_target_is_an_absolute_lower_case_name(value, expected):
    assert canonical(value, "CNAME") == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        ".",
        "..",
        "a..b",
        "a.b..",
        ".a.b",
        "a" * 64 + ".example",  # a label longer than 63
        ".".join(["a" * 63] * 3 + ["b" * 62]),  # 254 characters without the dot
        "-a.example",
        "a-.example",
        "a_.example",  # ends with an underscore
        "a b.example",
        "a\tb.example",
        "a*.example",
        "*.example",  # a wildcard is not a target
        "a/b.example",
        "a@b.example",
        "bücher.example",
        "a,b.example",
        "a:b",
    ],
)
def test_anything_else_is_not_a_cname_target(value):
    assert canonical(value, "CNAME") is None


def test_a_host_name_may_be_given_with_or_without_the_final_dot_and_in_any_case():
    assert is_name("shop.example")
    assert is_name("shop.example.")
    assert is_name("Shop.Example.")
    assert not is_name("shop.example..")
    assert not is_name(" shop.example")  # whitespace is the caller's to strip
    assert not is_name("")
    assert not is_name(".")
    assert not is_name(None)
    assert not is_name(["shop.example"])


def test_a_wildcard_is_a_name_only_when_asked_for_and_only_as_the_first_label():
    assert not is_name("*.shop.example.")
    assert is_name("*.shop.example.", wildcard=True)
    assert is_name("*.", wildcard=True) is False
    assert not is_name("a.*.shop.example.", wildcard=True)
    assert not is_name("*a.shop.example.", wildcard=True)
    assert not is_name("**.shop.example.", wildcard=True)


# --------------------------------------------------------------------------- fully qualified names


@pytest.mark.parametrize(
    ("record", "zone", "expected"),
    [
        ("www", "shop.example", "www.shop.example."),  # relative
        ("shop-1a2b3c", "shop.test", "shop-1a2b3c.shop.test."),
        ("a.b", "shop.example", "a.b.shop.example."),
        ("@", "shop.example", "shop.example."),  # apex
        ("@.", "shop.example", "shop.example."),
        ("shop.example", "shop.example", "shop.example."),
        ("shop.example.", "shop.example.", "shop.example."),
        ("www.shop.example", "shop.example", "www.shop.example."),  # already fully qualified, without the dot
        ("www.shop.example.", "shop.example", "www.shop.example."),  # and with it
        ("www.other.example.", "shop.example", "www.other.example."),  # a dot: fully qualified, outside the zone
        ("www.other.example", "shop.example", "www.other.example.shop.example."),  # no dot: relative
        ("www.myshop.example", "shop.example", "www.myshop.example.shop.example."),  # not in the zone by suffix
        ("WWW", "Shop.Example.", "www.shop.example."),  # case
        ("WWW.SHOP.EXAMPLE.", "shop.example", "www.shop.example."),
        ("  www  ", " shop.example ", "www.shop.example."),
        ("www..", "shop.example", "www."),
        ("www", "shop.example..", "www.shop.example."),
        ("*", "shop.example", "*.shop.example."),
    ],
)
def test_the_fully_qualified_name_of_a_record_in_a_zone(record, zone, expected):
    assert fqdn(record, zone) == expected


def test_without_a_zone_the_name_is_taken_as_fully_qualified():
    assert fqdn("Shop.Example") == "shop.example."
    assert fqdn("shop.example...") == "shop.example."
    assert fqdn(" shop.example. ") == "shop.example."


def test_an_empty_record_or_zone_gives_a_name_the_checks_refuse():
    for record, zone in [("", "shop.example"), (".", "shop.example"), ("www", ""), ("", "")]:
        name = fqdn(record, zone)
        assert not (is_name(name, wildcard=True) and is_name(fqdn(zone)) and in_zone(name, fqdn(zone)))


def test_a_name_is_in_a_zone_when_it_is_its_apex_or_below_it():
    assert in_zone("shop.example.", "shop.example.")
    assert in_zone("www.shop.example.", "shop.example")
    assert in_zone("a.b.shop.example", "Shop.Example.")
    assert not in_zone("www.myshop.example.", "shop.example.")
    assert not in_zone("example.", "shop.example.")
    assert not in_zone("www.other.example.", "shop.example.")
    assert not in_zone("www.", ".")  # the root zone holds nothing here


# --------------------------------------------------------------------------- lists of values


def test_values_compare_canonical_unique_and_sorted_the_invalid_in_lower_case():
    assert comparable(["2001:DB8:0:0::0:21", "2001:db8:0:0:1:0:0:22", "2001:db8::21"], "AAAA") == [
        "2001:db8::1:0:0:22",
        "2001:db8::21",
    ]
    assert comparable([" 192.0.2.22", "192.0.2.021", "Not-An-Address "], "A") == [
        "192.0.2.21",
        "192.0.2.22",
        "not-an-address",
    ]
    assert comparable(["LB1.example.net."], "CNAME") == ["lb1.example.net."]


def test_a_string_is_one_value_and_none_is_no_value():
    assert comparable("192.0.2.1", "A") == ["192.0.2.1"]
    assert comparable(None, "A") == []
    assert comparable([], "A") == []
    assert comparable(("192.0.2.2", "192.0.2.1"), "A") == ["192.0.2.1", "192.0.2.2"]
    # what Jinja's map() gives: a generator
    assert comparable((answer["address"] for answer in [{"address": "192.0.2.9"}]), "A") == ["192.0.2.9"]


def test_the_invalid_values_are_named_as_given_and_in_order():
    assert invalid(["300.1.2.3", "198.51.100.20", " 10.0.0 "], "A") == ["300.1.2.3", " 10.0.0 "]
    assert invalid(["192.0.2.1"], "A") == []
    assert invalid(["lb.example.net", "a..b", "-x"], "CNAME") == ["a..b", "-x"]
    assert invalid(["2001:db8::1", "2001:db8::g"], "AAAA") == ["2001:db8::g"]


def test_a_type_other_than_a_aaaa_or_cname_is_an_error():
    for function in (canonical, comparable, invalid):
        with pytest.raises(ValueError, match="must be one of A, AAAA, CNAME"):
            function(["x"], "MX")
    with pytest.raises(ValueError, match="'a'"):
        canonical("192.0.2.1", "a")


# --------------------------------------------------------------------------- decisions of a change


def test_a_record_already_holding_the_values_and_ttl_needs_no_change():
    assert not change_needed(["192.0.2.10"], 300, ["192.0.2.10"], 300)
    assert not change_needed(["192.0.2.10"], "300", ["192.0.2.10"], "300")
    assert nsupdate_ttls(["192.0.2.10"], 300, ["192.0.2.10"], "300") == []


def test_other_values_or_a_new_ttl_alone_are_a_change():
    assert change_needed(["192.0.2.10"], 300, ["198.51.100.20"], 300)
    assert change_needed(["192.0.2.10"], 300, ["192.0.2.10"], 60)
    assert change_needed([], None, ["198.51.100.20"], 300)
    assert nsupdate_ttls([], None, ["198.51.100.20"], "300") == [300]
    assert nsupdate_ttls(["192.0.2.10"], 300, ["192.0.2.10"], 60) == [60]


def test_removing_a_record_counts_its_values_not_its_ttl():
    assert change_needed(["192.0.2.10"], 300, [], 300)
    assert not change_needed([], None, [], 300)
    assert nsupdate_ttls(["192.0.2.10"], 300, [], 300) == [300]


def test_a_record_reduced_to_some_of_its_values_with_the_same_ttl_is_written_twice_for_nsupdate():
    current = ["192.0.2.21", "192.0.2.22"]
    assert change_needed(current, 300, ["192.0.2.21"], 300)
    assert nsupdate_ttls(current, 300, ["192.0.2.21"], 300) == [301, 300]
    # another TTL, or values that are not a subset, take one update
    assert nsupdate_ttls(current, 300, ["192.0.2.21"], 60) == [60]
    assert nsupdate_ttls(current, 300, ["192.0.2.21", "192.0.2.23"], 300) == [300]
    assert nsupdate_ttls(["192.0.2.21"], 300, current, 300) == [300]


def test_the_ttls_must_be_numbers():
    with pytest.raises(ValueError, match="invalid literal"):
        change_needed([], None, ["192.0.2.1"], "soon")


# --------------------------------------------------------------------------- the filter plugin's wiring


@pytest.fixture
def filters():
    pytest.importorskip("ansible")
    from ansible_collections.tokotani.dr.plugins.filter.dns import FilterModule  # noqa: PLC0415

    return FilterModule().filters()


def test_every_filter_is_documented_beside_the_plugin(filters):
    documented = {path.stem for path in (ROOT / "plugins" / "filter").glob("dns_*.yml")}
    assert documented == set(filters)


def test_dns_canonical_takes_one_value_or_a_list(filters):
    assert filters["dns_canonical"]("192.0.2.010", "A") == "192.0.2.10"
    assert filters["dns_canonical"](["192.0.2.010", "300.1.2.3"], "A") == ["192.0.2.10", None]
    assert filters["dns_canonical"]([], "AAAA") == []


def test_the_filters_call_the_engine(filters):
    assert filters["dns_fqdn"]("www", "shop.example") == "www.shop.example."
    assert filters["dns_fqdn"]("shop.example") == "shop.example."
    assert filters["dns_is_name"]("*.shop.example.", wildcard=True)
    assert not filters["dns_is_name"]("*.shop.example.")
    assert filters["dns_in_zone"]("www.shop.example.", "shop.example")
    assert filters["dns_values"](["b.", "A."], "CNAME") == ["a.", "b."]
    assert filters["dns_invalid"](["a..b"], "CNAME") == ["a..b"]
    assert filters["dns_change_needed"]([], None, ["192.0.2.1"], 300)
    assert filters["dns_nsupdate_ttls"](["1", "2"], 300, ["1"], 300) == [301, 300]
    assert dns_names.RECORD_TYPES == ("A", "AAAA", "CNAME")


def test_a_wrong_argument_is_a_filter_error_naming_the_filter(filters):
    from ansible.errors import AnsibleFilterError  # noqa: PLC0415

    with pytest.raises(AnsibleFilterError, match=r"tokotani\.dr\.dns_values: the record type must be one of"):
        filters["dns_values"](["x"], "MX")
    with pytest.raises(AnsibleFilterError, match=r"tokotani\.dr\.dns_nsupdate_ttls"):
        filters["dns_nsupdate_ttls"]([], None, ["192.0.2.1"], None)
