# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The DNS filters of tokotani.dr: each wires one function of module_utils/dns_names.py, where the logic and its
unit tests are. Every filter is documented in its own YAML file beside this one (dns_canonical.yml, ...)."""

from __future__ import annotations

import functools

from ansible.errors import AnsibleFilterError
from ansible_collections.tokotani.dr.plugins.module_utils import dns_names


def dns_canonical(value, rtype):
    """One value: its canonical form, or None when it is not valid; a list: the list of those, in order."""
    if isinstance(value, str):
        return dns_names.canonical(value, rtype)
    return [dns_names.canonical(item, rtype) for item in dns_names.as_list(value)]


def dns_fqdn(record, zone=None):
    return dns_names.fqdn(record, zone)


def dns_is_name(name, wildcard=False):
    return dns_names.is_name(name, wildcard=bool(wildcard))


def _reported(name, function):
    """function as the filter tokotani.dr.<name>: a wrong argument (record type, TTL) is a filter error naming it."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except (TypeError, ValueError) as error:
            raise AnsibleFilterError(f"tokotani.dr.{name}: {error}") from None

    return wrapper


class FilterModule:
    """tokotani.dr.dns_* - DNS names and record values in canonical form, and the decisions of a record change."""

    def filters(self):
        filters = {
            "dns_canonical": dns_canonical,
            "dns_values": dns_names.comparable,
            "dns_invalid": dns_names.invalid,
            "dns_fqdn": dns_fqdn,
            "dns_is_name": dns_is_name,
            "dns_in_zone": dns_names.in_zone,
            "dns_change_needed": dns_names.change_needed,
            "dns_nsupdate_ttls": dns_names.nsupdate_ttls,
        }
        return {name: _reported(name, function) for name, function in filters.items()}
