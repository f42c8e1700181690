# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Engine of tokotani.dr.postgresql_revoke: take database roles away from an intruder, by their exact names.

The names come from the breached cluster (pg_roles): the intruder chose them. A name such as ``"postgres"`` (the
quotes part of it), ``a"b``, ``x.y`` or one with a line break is a real, distinct role; tools that take a name as an
identifier to quote (and treat one already in quotes as quoted) would act on another role, the bootstrap superuser
or the app's own. Here a name is only ever a psql variable read as a literal (``:'role'``), compared with
``rolname`` by the server, and the statements are built by the server with ``format('%I', rolname)`` from the row
it found: no name read from the cluster is ever written into SQL.

Never touched: built-in roles (OID below 16384: the bootstrap superuser, ``pg_*``), the role this runs as, and the
names in ``keep``. A role that still owns objects or holds privileges (pg_shdepend, every database) loses its
login and attributes and is not dropped; the result says where its objects are.
"""

from __future__ import annotations

from ansible_collections.tokotani.dr.plugins.module_utils.pg_cli import Connection, PgError, Psql

FIRST_USER_OID = 16384

# One role, found by its exact name; everything about it the decision needs.
FIND_SQL = """
SELECT json_build_object(
  'oid', r.oid::bigint,
  'rolname', r.rolname,
  'builtin', r.oid < 16384,
  'is_current_user', r.rolname = current_user,
  'can_login', r.rolcanlogin,
  'superuser', r.rolsuper,
  'attributes', json_build_object('createrole', r.rolcreaterole, 'createdb', r.rolcreatedb,
                                  'replication', r.rolreplication, 'bypassrls', r.rolbypassrls),
  'connections', (SELECT count(*) FROM pg_stat_activity a WHERE a.usename = r.rolname),
  'depends_in', (SELECT coalesce(json_agg(DISTINCT coalesce(d.datname, '(shared)')), '[]'::json)
                 FROM pg_shdepend s LEFT JOIN pg_database d ON d.oid = s.dbid
                 WHERE s.refclassid = 'pg_authid'::regclass AND s.refobjid = r.oid AND s.deptype IN ('o', 'a', 'r')),
  'member_of', (SELECT coalesce(json_agg(g.rolname ORDER BY g.rolname), '[]'::json)
                FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid))
FROM pg_roles r WHERE r.rolname = :'role';
"""

# (16384 is FIRST_USER_OID; the statements are constants, the name only ever the psql variable :'role')
DISABLE_SQL = """
SELECT format('ALTER ROLE %I NOLOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS', rolname)
FROM pg_roles WHERE rolname = :'role' AND oid >= 16384 \\gexec
"""
TERMINATE_SQL = """
SELECT json_build_object('ended', count(pg_terminate_backend(pid)))
FROM pg_stat_activity WHERE usename = :'role' AND pid <> pg_backend_pid();
"""
DROP_SQL = """
SELECT format('DROP ROLE %I', rolname) FROM pg_roles WHERE rolname = :'role' AND oid >= 16384 \\gexec
"""


def check_names(names, keep):
    """Names must be non-empty strings; duplicates are folded. Returns (names, keep)."""
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise PgError("roles must be a list of role names (non-empty strings)")
    if any("\x00" in n for n in names):
        raise PgError("a role name cannot contain a NUL byte")
    seen, ordered = set(), []
    for name in names:
        if name not in seen:
            seen.add(name)
            ordered.append(name)
    return ordered, set(keep or [])


def _find(psql, maintenance_db, name):
    rows = psql.query_json(FIND_SQL, maintenance_db, variables={"role": name}, what="reading the role")
    return rows[0] if rows else None


def _refusal(found, name, keep):
    if found["builtin"]:
        return "built in (the bootstrap superuser or a predefined pg_ role)"
    if found["is_current_user"]:
        return "the role this runs as"
    if name in keep:
        return "listed in keep"
    return None


def revoke(params, check_mode=False, psql=None):
    """Disable, disconnect and (when it owns nothing) drop each role of params['roles']; a result per role."""
    names, keep = check_names(params.get("roles"), params.get("keep"))
    conn = Connection.from_params(params)
    psql = psql or Psql(conn)
    db = conn.maintenance_db
    results = []
    changed = False
    for name in names:
        found = _find(psql, db, name)
        entry = {"name": name, "found": found is not None, "disabled": False, "dropped": False, "connections_ended": 0}
        results.append(entry)
        if found is None:
            continue
        entry.update(
            oid=found["oid"],
            was_superuser=bool(found["superuser"]),
            could_login=bool(found["can_login"]),
            member_of=list(found["member_of"] or []),
            depends_in=list(found["depends_in"] or []),
        )
        refused = _refusal(found, name, keep)
        if refused:
            entry["untouched_because"] = refused
            continue
        attrs = found["attributes"] or {}
        needs_disable = bool(found["can_login"] or found["superuser"] or any(attrs.values()))
        droppable = params.get("drop", True) and not entry["depends_in"]
        if not droppable and params.get("drop", True):
            entry["kept_because"] = "it owns objects or holds privileges in: " + ", ".join(entry["depends_in"])
        if check_mode:
            entry.update(disabled=needs_disable, dropped=droppable, connections_ended=int(found["connections"] or 0))
            changed = changed or needs_disable or droppable or bool(found["connections"])
            continue
        if needs_disable:
            psql.run_sql(DISABLE_SQL, db, variables={"role": name}, what=f"disabling the role {name!r}")
            entry["disabled"] = True
            changed = True
        if params.get("terminate", True):
            rows = psql.query_json(TERMINATE_SQL, db, variables={"role": name}, what="ending the role's connections")
            entry["connections_ended"] = int(rows[0]["ended"]) if rows else 0
            changed = changed or entry["connections_ended"] > 0
        if droppable:
            try:
                psql.run_sql(DROP_SQL, db, variables={"role": name}, what=f"dropping the role {name!r}")
            except PgError as err:  # disabled already: it stays, and the result says why
                entry["kept_because"] = f"DROP ROLE failed: {err.msg}"
            entry["dropped"] = _find(psql, db, name) is None
            changed = changed or entry["dropped"]
    return {
        "changed": changed,
        "roles": results,
        "dropped": [e["name"] for e in results if e["dropped"]],
        "disabled": [e["name"] for e in results if e["found"] and not e["dropped"] and not e.get("untouched_because")],
        "untouched": [e["name"] for e in results if e.get("untouched_because")],
        "not_found": [e["name"] for e in results if not e["found"]],
    }
