# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""DNS names and record values of tokotani.dr: pure functions, standard library only.

What the role dns_switch decides with them (through the filters in ``plugins/filter/dns.py``):

- the zone and the record's fully qualified name, lower case with the final dot (``fqdn``), and whether
  names are valid (``is_name``) and inside the zone (``in_zone``);
- the canonical form of a record's values (``canonical``), so that what a DNS service answers compares as
  text with what was asked for: A as a dotted quad, AAAA as RFC 5952 writes it, CNAME as an absolute name;
  ``comparable`` is a record's values in that form (the ones that are not valid in lower case), without
  duplicates, sorted, and ``invalid`` the values that are not valid for the type;
- whether the record has to change (``change_needed``), and the TTLs of the nsupdate updates that change it
  (``nsupdate_ttls``).

Nothing here does I/O; every function takes and returns plain strings, lists and ints.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

RECORD_TYPES = ("A", "AAAA", "CNAME")

# One label of a host name: letters, digits, hyphens and underscores (_dmarc, _acme-challenge), at most 63,
# neither starting with a hyphen nor ending with a hyphen or an underscore.
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?")
# A name of at most 255 octets on the wire: 253 characters without the final dot.
MAX_NAME_LENGTH = 253
_IPV4_OCTETS = re.compile(r"[0-9]{1,3}(?:[.][0-9]{1,3}){3}")
_IPV4_MAPPED = 0xFFFF  # ::ffff:0:0/96, bits 32-47


def _text(value: object) -> str:
    """A value as the user gave it, without the whitespace around it, in lower case."""
    return str(value).strip().lower()


def canonical_a(value: object) -> str | None:
    """An IPv4 address as a dotted quad (192.0.2.10), or None when value is not one.

    Four decimal octets of one to three digits, each at most 255; leading zeros are read as decimal, as the
    role always has (192.000.002.010 is 192.0.2.10), never as octal. Whitespace around the value is ignored.
    """
    text = _text(value)
    if not _IPV4_OCTETS.fullmatch(text):
        return None
    octets = [int(part) for part in text.split(".")]
    if any(octet > 255 for octet in octets):
        return None
    return str(ipaddress.IPv4Address(".".join(map(str, octets))))


def canonical_aaaa(value: object) -> str | None:
    """An IPv6 address as RFC 5952 writes it, or None when value is not one.

    Lower case, no leading zeros in a group, the longest run of two or more zero groups compressed to ``::``
    (the leftmost of equally long runs), a single zero group never. An IPv4 address in the last 32 bits is
    written in dotted form for the well-known prefixes (RFC 5952 section 5): IPv4-mapped (``::ffff:192.0.2.1``)
    and IPv4-compatible (``::192.0.2.1``, but ``::1`` stays ``::1``) - exactly as BIND, glibc's inet_ntop and
    dnspython write them, so that what the server answers compares as text. Input may be in any valid form,
    upper case or with an embedded IPv4 address; a zone index (``fe80::1%eth0``) or a prefix length is not a
    record's value and is refused.
    """
    text = _text(value)
    if not text or "%" in text or "/" in text:
        return None
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        return None
    number = int(address)
    low = str(ipaddress.IPv4Address(number & 0xFFFFFFFF))
    if number >> 32 == _IPV4_MAPPED:
        return f"::ffff:{low}"
    if number >> 32 == 0 and number >> 16 != 0:
        return f"::{low}"
    # ipaddress compresses as RFC 5952 does (longest run of two or more, leftmost on ties) outside those prefixes.
    return address.compressed


def is_name(name: object, wildcard: bool = False) -> bool:
    """Whether name is a valid host name, with or without the final dot (case does not matter).

    Labels of letters, digits, hyphens and underscores, each 1 to 63 characters, not starting with a hyphen,
    not ending with a hyphen or an underscore; at most 253 characters without the final dot. With wildcard, the
    first label may be ``*`` (a wildcard record). No whitespace is ignored.
    """
    if not isinstance(name, str):
        return False
    text = name.lower()
    text = text[:-1] if text.endswith(".") else text
    if not text or len(text) > MAX_NAME_LENGTH:
        return False
    labels = text.split(".")
    if wildcard and labels[0] == "*" and len(labels) > 1:
        labels = labels[1:]
    return all(_LABEL.fullmatch(label) for label in labels)


def canonical_name(value: object) -> str | None:
    """A host name as an absolute name, lower case with the final dot, or None when value is not one.

    A name without the final dot is taken as fully qualified (as Route 53 takes a CNAME's value):
    ``LB2.Example.NET`` is ``lb2.example.net.``.
    """
    text = _text(value)
    name = text if text.endswith(".") else text + "."
    return name if is_name(name) else None


_CANONICAL = {"A": canonical_a, "AAAA": canonical_aaaa, "CNAME": canonical_name}


def _check_type(rtype: object) -> str:
    if rtype not in _CANONICAL:
        raise ValueError(f"the record type must be one of {', '.join(RECORD_TYPES)} (got {rtype!r})")
    return str(rtype)


def canonical(value: object, rtype: str) -> str | None:
    """One value of a record of type rtype (A, AAAA or CNAME) in canonical form; None when it is not valid."""
    return _CANONICAL[_check_type(rtype)](value)


def as_list(values: object) -> list:
    """The values of a record as a list: a string is one value, None none, a list or tuple its items."""
    if values is None:
        return []
    if isinstance(values, str):
        return [values]
    if isinstance(values, (list, tuple, set, frozenset)):
        return list(values)
    if isinstance(values, Iterable) and not isinstance(values, (dict, bytes)):
        return list(values)
    return [values]


def invalid(values: object, rtype: str) -> list:
    """The values (as given, in their order) that are not valid for a record of type rtype."""
    _check_type(rtype)
    return [value for value in as_list(values) if canonical(value, rtype) is None]


def comparable(values: object, rtype: str) -> list[str]:
    """A record's values in the form they compare in: canonical where valid, else in lower case; unique, sorted.

    What was asked for (all valid, once the role's checks passed) is then its canonical values; what a DNS
    service answers compares with it as text, whatever form the service writes it in.
    """
    _check_type(rtype)
    found = set()
    for value in as_list(values):
        form = canonical(value, rtype)
        found.add(form if form is not None else _text(value))
    return sorted(found)


def absolute(name: object) -> str:
    """A name as an absolute name: without the whitespace around it, lower case, one final dot."""
    return _text(name).rstrip(".") + "."


def in_zone(name: object, zone: object) -> bool:
    """Whether name is the zone's apex or a name below it (both compared as absolute names)."""
    name, zone = absolute(name), absolute(zone)
    if zone == ".":
        return False
    return name == zone or name.endswith("." + zone)


def fqdn(record: object, zone: object = None) -> str:
    """The record's fully qualified name, lower case with the final dot.

    ``@`` or the zone's own name is the apex; a name ending in a dot, or already ending in the zone (with or
    without the dot), is taken as fully qualified; any other name is relative to the zone. Without a zone, the
    record is taken as fully qualified (the zone's own name, for example).
    """
    if zone is None:
        return absolute(record)
    origin = absolute(zone)
    raw = str(record).strip()
    name = raw.lower().rstrip(".")
    if name in ("@", origin[:-1]):
        return origin
    if raw.endswith(".") or in_zone(name, origin):
        return name + "."
    return f"{name}.{origin}"


def _ttl(ttl: object) -> int | None:
    return None if ttl is None or ttl == "" else int(ttl)


def change_needed(current: object, current_ttl: object, wanted: object, wanted_ttl: object) -> bool:
    """Whether a record holding current (TTL current_ttl) has to change to hold wanted (TTL wanted_ttl).

    Values compare as sets, in the form comparable() gives; the TTL counts only when a record is wanted (a
    record to remove has no TTL to reach). current_ttl is None when there is no record.
    """
    have, want = set(as_list(current)), set(as_list(wanted))
    ttl_now, ttl = _ttl(current_ttl), int(wanted_ttl)
    return have != want or (len(want) > 0 and ttl_now != ttl)


def nsupdate_ttls(current: object, current_ttl: object, wanted: object, wanted_ttl: object) -> list[int]:
    """The TTLs of the updates community.general.nsupdate sends to change the record, in order ([]: no change).

    That module takes a record that holds the wanted values and more as already right unless its TTL differs:
    such a record (a strict superset with the same TTL) is first written with the TTL one higher, then with its
    own, two atomic updates. Otherwise one update, with the wanted TTL (none is needed to remove a record, but
    the module takes one).
    """
    if not change_needed(current, current_ttl, wanted, wanted_ttl):
        return []
    have, want, ttl = set(as_list(current)), set(as_list(wanted)), int(wanted_ttl)
    if want and _ttl(current_ttl) == ttl and want < have:
        return [ttl + 1, ttl]
    return [ttl]
