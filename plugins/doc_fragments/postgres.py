# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connection options shared by the PostgreSQL modules of tokotani.dr."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  login_host:
    description:
      - Host name or IP address of the PostgreSQL server.
      - When neither O(login_host) nor O(login_unix_socket) is set, the client tools use their default
        (the C(PGHOST) environment variable, else the default unix socket).
    type: str
    aliases: [host]
  login_port:
    description:
      - TCP port of the server (also the number of the unix socket file).
    type: int
    default: 5432
    aliases: [port]
  login_user:
    description:
      - Role to connect as. Backups need read access to every table; restores need to create databases
        and to own, or be a member of the owners of, every object in the backup (a superuser, typically).
    type: str
    default: postgres
    aliases: [user]
  login_password:
    description:
      - Password of O(login_user). Passed to C(psql), C(pg_dump) and C(pg_restore) in the C(PGPASSWORD)
        environment variable, never on their command line, and never returned.
      - Falls back to the C(PGPASSWORD) environment variable of the target; without either, libpq may
        still read C(~/.pgpass) of the user the module runs as.
    type: str
  login_unix_socket:
    description:
      - Directory of the server's unix socket (for example V(/var/run/postgresql)); used when
        O(login_host) is not set.
    type: path
  maintenance_db:
    description:
      - Database to connect to for server-wide work (reading database properties, creating, renaming and
        dropping databases).
    type: str
    default: postgres
  ssl_mode:
    description:
      - libpq C(sslmode) of the connections.
    type: str
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
  ca_cert:
    description:
      - CA certificate file to verify the server's certificate with (libpq C(sslrootcert)).
    type: path
  connect_timeout:
    description:
      - Seconds to wait for a connection before failing (libpq C(connect_timeout)).
    type: int
    default: 10
  pg_bindir:
    description:
      - Directory holding C(psql), C(pg_dump) and C(pg_restore).
      - By default the Debian installation of the server's major version
        (C(/usr/lib/postgresql/<major>/bin)), then the newest installed one, then C(PATH).
    type: path
notes:
  - The target needs the PostgreSQL client tools (Debian/Ubuntu C(postgresql-client-<major>)) of at least
    the server's major version; psycopg2 is not needed.
"""
