"""tokotani.dr.postgresql_revoke on a real PostgreSQL 15, through ansible, with the names an intruder would choose.

Every test compares the whole of pg_roles before and after: the roles named are revoked, exactly those, and no other
role - the bootstrap superuser, the app's - loses anything.
"""

from __future__ import annotations

import secrets

import psycopg2
import pytest
from backup_support import conn_args, run_module
from psycopg2 import sql


def roles(cluster) -> dict[str, tuple]:
    with cluster.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT rolname, rolcanlogin, rolsuper, rolcreaterole FROM pg_roles ORDER BY oid")
        return {row[0]: row[1:] for row in cur.fetchall()}


def create_role(cluster, name: str, options: str = "LOGIN", password: str | None = None) -> None:
    with cluster.connect() as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE ROLE {} " + options).format(sql.Identifier(name)))
        if password:
            cur.execute(sql.SQL("ALTER ROLE {} PASSWORD %s").format(sql.Identifier(name)), [password])
    conn.close()


def drop_roles(cluster, names) -> None:
    with cluster.connect() as conn, conn.cursor() as cur:
        for name in names:
            cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
    conn.close()


def revoke(cluster, names, check: bool = False, **extra) -> dict:
    return run_module("postgresql_revoke", conn_args(cluster, roles=names, **extra), check=check)


@pytest.fixture
def tag():
    return secrets.token_hex(3)


def test_crafted_names_revoke_exactly_those_roles(pg_cluster, tag):
    victim = f"rv_app_{tag}"
    create_role(pg_cluster, victim, "LOGIN CREATEDB")
    intruders = [
        f'"{victim}"',  # in quotes: a tool that takes it as quoted acts on the app's role
        f'"{pg_cluster.superuser}"',  # ... or on the bootstrap superuser
        f'a"b_{tag}',
        f"x.y_{tag}",
        f"line\nbreak_{tag}",
        f"x'; DROP ROLE {victim}; --{tag}",
        f"evil_{tag}",
    ]
    for name in intruders:
        create_role(pg_cluster, name, "LOGIN SUPERUSER CREATEROLE")
    before = roles(pg_cluster)
    try:
        result = revoke(pg_cluster, intruders)
        assert result["_rc"] == 0, result
        assert result["changed"] is True
        assert sorted(result["dropped"]) == sorted(intruders)
        assert result["untouched"] == [] and result["not_found"] == [] and result["disabled"] == []
        assert all(e["was_superuser"] and e["could_login"] and e["disabled"] for e in result["roles"])
        after = roles(pg_cluster)
        assert after == {k: v for k, v in before.items() if k not in intruders}
        assert after[victim] == (True, False, False)
        assert after[pg_cluster.superuser][0:2] == (True, True)
    finally:
        drop_roles(pg_cluster, [*intruders, victim])


def test_a_role_that_owns_objects_is_disabled_not_dropped(pg_cluster, tag):
    owner = f"rv_owner_{tag}"
    db = f"rv_db_{tag}"
    create_role(pg_cluster, owner, "LOGIN SUPERUSER")
    pg_cluster.createdb(db)
    pg_cluster.psql(f'CREATE TABLE planted (id int); ALTER TABLE planted OWNER TO "{owner}";', db=db)
    try:
        result = revoke(pg_cluster, [owner])
        assert result["_rc"] == 0, result
        (entry,) = result["roles"]
        assert entry["disabled"] is True and entry["dropped"] is False
        assert db in entry["depends_in"]
        assert db in entry["kept_because"]
        assert result["disabled"] == [owner]
        assert roles(pg_cluster)[owner] == (False, False, False)
        # again: nothing left to change
        again = revoke(pg_cluster, [owner])
        assert again["_rc"] == 0 and again["changed"] is False, again
    finally:
        pg_cluster.psql(f"DROP DATABASE {db}")
        drop_roles(pg_cluster, [owner])


def test_builtin_current_and_kept_roles_are_never_touched(pg_cluster, tag):
    kept = f"rv_kept_{tag}"
    create_role(pg_cluster, kept, "LOGIN")
    before = roles(pg_cluster)
    try:
        result = revoke(pg_cluster, [pg_cluster.superuser, "pg_read_all_data", kept, f"rv_ghost_{tag}"], keep=[kept])
        assert result["_rc"] == 0, result
        assert result["changed"] is False
        assert result["untouched"] == [pg_cluster.superuser, "pg_read_all_data", kept]
        assert result["not_found"] == [f"rv_ghost_{tag}"]
        why = {e["name"]: e.get("untouched_because") for e in result["roles"]}
        assert "built in" in why[pg_cluster.superuser] or "runs as" in why[pg_cluster.superuser]
        assert "built in" in why["pg_read_all_data"]
        assert why[kept] == "listed in keep"
        assert roles(pg_cluster) == before
    finally:
        drop_roles(pg_cluster, [kept])


def test_the_intruders_connection_is_ended(pg_cluster, tag):
    name = f"rv_conn_{tag}"
    password = "intruder-" + secrets.token_hex(8)
    create_role(pg_cluster, name, "LOGIN", password=password)
    conn = psycopg2.connect(host=pg_cluster.host, port=pg_cluster.port, user=name, password=password, dbname="postgres")
    try:
        result = revoke(pg_cluster, [name])
        assert result["_rc"] == 0, result
        assert result["roles"][0]["connections_ended"] == 1
        assert result["dropped"] == [name]
        with pytest.raises(psycopg2.Error), conn.cursor() as cur:
            cur.execute("SELECT 1")
        with pytest.raises(psycopg2.OperationalError):
            psycopg2.connect(
                host=pg_cluster.host, port=pg_cluster.port, user=name, password=password, dbname="postgres"
            )
    finally:
        conn.close()
        drop_roles(pg_cluster, [name])


def test_check_mode_changes_nothing(pg_cluster, tag):
    name = f"rv_check_{tag}"
    create_role(pg_cluster, name, "LOGIN SUPERUSER")
    before = roles(pg_cluster)
    try:
        result = revoke(pg_cluster, [name], check=True)
        assert result["_rc"] == 0 and result["changed"] is True, result
        assert result["roles"][0]["disabled"] is True and result["roles"][0]["dropped"] is True
        assert roles(pg_cluster) == before
    finally:
        drop_roles(pg_cluster, [name])


def test_bad_input_is_refused(pg_cluster):
    result = revoke(pg_cluster, [""])
    assert result["_rc"] != 0
    assert "roles must be a list of role names" in result["msg"]
