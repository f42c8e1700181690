"""The filter tokotani.dr.epoch: module_utils/backup_catalog.py's parse_timestamp (the one reading of a time the
modules' before= options use), as epoch seconds; documented in epoch.yml beside this file."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.tokotani.dr.plugins.module_utils import backup_catalog as catalog


def epoch(value):
    if value is None or isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise AnsibleFilterError(f"tokotani.dr.epoch: a time is a string or a number, not {type(value).__name__}")
    try:
        return catalog.parse_timestamp(value).timestamp()
    except catalog.CatalogError as error:
        raise AnsibleFilterError(f"tokotani.dr.epoch: {error}") from None


class FilterModule:
    """tokotani.dr.epoch - a time as the modules read it (ISO 8601, a backup name, epoch seconds), in epoch seconds."""

    def filters(self):
        return {"epoch": epoch}
