# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Row counts against a backup's manifest: the one implementation of that check.

Used by the restore (on the copy it restored, exact counts), by tokotani.dr.postgresql_check and
by the post-recovery checklist (tokotani.dr.recovery_checklist), which may name *growing tables*:
tables the running application writes to, which pass with at least the manifest's rows.

- ``count_tables`` asks the server (two queries: which tables exist, then one ``UNION ALL`` of
  ``count(*)``). Table names from the manifest reach the server only as quoted identifiers, inside
  literals for ``to_regclass``, never as SQL text of their own.
- ``compare_counts`` is the rule, a pure function: a missing table fails; a growing table passes
  when it has at least the manifest's rows; every other table must have exactly that many.

Pure standard library (the host-side runner uses the restore too).
"""

from __future__ import annotations

from ansible_collections.tokotani.dr.plugins.module_utils.pg_cli import quote_ident, quote_literal


def qualified(table):
    """``schema.name`` of a manifest table."""
    return "{}.{}".format(table["schema"], table["name"])


def label(table_name):
    """How the checklist names a table: ``name`` for the public schema, else ``schema.name``."""
    return table_name[len("public.") :] if table_name.startswith("public.") else table_name


def is_growing(schema, name, growing_tables):
    """Whether a table is one of growing_tables (each ``name`` - a table of the public schema - or ``schema.name``)."""
    full = f"{schema}.{name}"
    wanted = set(growing_tables or ())
    return full in wanted or label(full) in wanted


def count_tables(psql, dbname, tables, *, count_if_missing=True):
    """Each manifest table with its row count in dbname.

    Returns [{table, schema, name, expected, actual}] in the manifest's order; ``actual`` is None
    for a table that does not exist (and for every table when one is missing and not
    count_if_missing: the restore stops there). Raises PgError when the server cannot be asked.
    """
    found = [
        {"table": qualified(t), "schema": t["schema"], "name": t["name"], "expected": t["rows"], "actual": None}
        for t in tables
    ]
    if not found:
        return found
    present_sql = "\nUNION ALL\n".join(
        f"SELECT json_build_object('i', {i}, 'present', "
        f"to_regclass({quote_literal(quote_ident(t['schema']) + '.' + quote_ident(t['name']))}) IS NOT NULL)"
        for i, t in enumerate(found)
    )
    rows = psql.query_json(present_sql + ";", dbname, what="checking tables")
    present = sorted(r["i"] for r in rows if r["present"])
    if not present or (not count_if_missing and len(present) < len(found)):
        return found
    count_sql = "\nUNION ALL\n".join(
        f"SELECT json_build_object('i', {i}, 'rows', count(*)) "  # noqa: S608 - identifiers are quoted
        f"FROM {quote_ident(found[i]['schema'])}.{quote_ident(found[i]['name'])}"
        for i in present
    )
    for row in psql.query_json(count_sql + ";", dbname, what="counting rows"):
        found[row["i"]]["actual"] = row["rows"]
    return found


def compare_counts(counted, growing_tables=()):
    """counted (count_tables) with ``growing`` and ``ok`` per table: the rule, and nothing else.

    A missing table (actual None) fails; a growing table passes with actual >= expected; any other
    table passes only with actual == expected.
    """
    compared = []
    for table in counted:
        growing = is_growing(table["schema"], table["name"], growing_tables)
        actual, expected = table["actual"], table["expected"]
        if actual is None:
            ok = False
        elif growing:
            ok = actual >= expected
        else:
            ok = actual == expected
        compared.append({**table, "growing": growing, "ok": ok})
    return compared


def missing_tables(compared):
    """``schema.name`` of every table that is not there."""
    return [t["table"] for t in compared if t["actual"] is None]


def wrong_counts(compared):
    """One sentence per present table whose count breaks the rule (the restore's and postgresql_check's wording)."""
    return [
        "{} has {} rows, the manifest says {}{}".format(
            t["table"], t["actual"], "at least " if t["growing"] else "", t["expected"]
        )
        for t in compared
        if t["actual"] is not None and not t["ok"]
    ]


def public_counts(compared):
    """What modules return per table: table, expected, actual, growing, ok."""
    return [{k: t[k] for k in ("table", "expected", "actual", "growing", "ok")} for t in compared]


# A backup is suspicious when a table of at least SHRINK_MIN_ROWS rows in the previous backup lost more
# than SHRINK_THRESHOLD of them (or vanished): "half of a big table gone" is caught, a busy day's deletes
# are not.
SHRINK_THRESHOLD = 0.3
SHRINK_MIN_ROWS = 1000


def shrinkage(previous, current, *, threshold=SHRINK_THRESHOLD, min_rows=SHRINK_MIN_ROWS, per_table=None):
    """Tables that shrank sharply from previous to current (manifest ``tables`` lists): a pure decision.

    per_table maps a table (``name`` of the public schema, or ``schema.name``) to its own threshold (a
    fraction of its rows; 1 never flags it). Returns a list of {table, previous_rows, rows, lost} (lost a
    fraction, 1.0 for a table that is gone), largest loss first.
    """
    per_table = {(key if "." in key else f"public.{key}"): float(v) for key, v in (per_table or {}).items()}
    now = {qualified(t): int(t["rows"]) for t in current}
    found = []
    for table in previous:
        name = qualified(table)
        before = int(table["rows"])
        if before < min_rows:
            continue
        limit = per_table.get(name, threshold)
        rows = now.get(name)
        lost = 1.0 if rows is None else max(0.0, (before - rows) / before)
        if lost > limit:
            found.append({"table": name, "previous_rows": before, "rows": rows, "lost": round(lost, 4)})
    found.sort(key=lambda item: (-item["lost"], item["table"]))
    return found


def shrinkage_text(found, compared_with):
    """One sentence on what shrank, for the manifest and the messages."""
    parts = []
    for item in found[:5]:
        if item["rows"] is None:
            parts.append(f"{item['table']} is gone ({item['previous_rows']} rows before)")
        else:
            lost = round(item["lost"] * 100)
            parts.append(f"{item['table']} has {item['rows']} rows, {lost}% fewer than {item['previous_rows']}")
    more = f" and {len(found) - 5} more" if len(found) > 5 else ""
    return f"compared with {compared_with}: {'; '.join(parts)}{more}"
