"""The filter tokotani.dr.database_url: the app's DATABASE_URL from its parts, every part percent-encoded. The one
place it is built, for tokotani_app's .env and the breach response's password rotation; documented in
database_url.yml beside this file."""

from __future__ import annotations

from urllib.parse import quote

from ansible.errors import AnsibleFilterError


def database_url(user, password, host, port, database):
    parts = {"user": user, "password": password, "host": host, "database": database}
    for name, value in parts.items():
        if not isinstance(value, str) or not value:
            raise AnsibleFilterError(f"tokotani.dr.database_url: {name} is a non-empty string")
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise AnsibleFilterError(f"tokotani.dr.database_url: port is a number (got {port!r})") from None
    if not 0 < port < 65536:
        raise AnsibleFilterError(f"tokotani.dr.database_url: port {port} is not between 1 and 65535")
    if any(c in host for c in "/@?#[] \t\r\n") and not (host.startswith("[") and host.endswith("]")):
        raise AnsibleFilterError(f"tokotani.dr.database_url: {host!r} is not a host name or address")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    return f"postgres://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/{quote(database, safe='')}"


class FilterModule:
    """tokotani.dr.database_url - the app's DATABASE_URL from user, password, host, port and database."""

    def filters(self):
        return {"database_url": database_url}
