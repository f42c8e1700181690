# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where the modules that run pg_dump or pg_restore read the server's own reason of a failure."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  server_log:
    description:
      - The PostgreSQL server's log file on this host. When pg_dump, pg_restore or psql fails and its own output
        does not carry the server's reason (the server crashed, a server process was killed by the OOM killer, the
        server's disk is full, a damaged page), the failure message quotes the line of this log, written since the
        tool started, that says why.
      - Only read, at most 256 KiB, and only ever shown; the login password is masked in it.
      - By default the log is found when it can be read here; the logging collector's current file
        (C(pg_current_logfile()), when O(login_user) is a superuser), else the Debian cluster's log
        C(/var/log/postgresql/postgresql-<version>-<cluster>.log) named by the server's C(cluster_name). When none can
        be read, failures quote the tool's output only. A O(server_log) that cannot be read gives a warning.
    type: path
"""
