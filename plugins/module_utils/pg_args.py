# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""argument_spec of the connection options (see the tokotani.dr.postgres doc fragment)."""

from __future__ import annotations

from ansible.module_utils.basic import env_fallback

SSL_MODES = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


def postgres_argument_spec():
    """The connection options every PostgreSQL module of the collection takes."""
    return {
        "login_host": {"type": "str", "aliases": ["host"]},
        "login_port": {"type": "int", "default": 5432, "aliases": ["port"]},
        "login_user": {"type": "str", "default": "postgres", "aliases": ["user"]},
        "login_password": {"type": "str", "no_log": True, "fallback": (env_fallback, ["PGPASSWORD"])},
        "login_unix_socket": {"type": "path"},
        "maintenance_db": {"type": "str", "default": "postgres"},
        "ssl_mode": {"type": "str", "choices": SSL_MODES},
        "ca_cert": {"type": "path"},
        "connect_timeout": {"type": "int", "default": 10},
        "pg_bindir": {"type": "path"},
    }
