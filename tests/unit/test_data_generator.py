"""sandbox/data/generate.py: deterministic, correctly escaped COPY streams sized by the scale factor."""

from __future__ import annotations

import ast
import importlib.util
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "sandbox" / "data" / "generate.py"

_spec = importlib.util.spec_from_file_location("tokotani_generate", GENERATOR)
generate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generate)

COPY_RE = re.compile(r"^COPY (\w+) \((.+)\) FROM stdin;$")
COPY_UNESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


def render(scale_factor: float = 0.2, seed: int = 7, truncate: bool = False) -> bytes:
    out = io.BytesIO()
    generate.write_stream(out, scale_factor, seed, truncate)
    return out.getvalue()


def copy_unescape(field: str) -> str | None:
    """Decode one field of COPY's text format (the subset the generator writes)."""
    if field == "\\N":
        return None
    out = []
    i = 0
    while i < len(field):
        c = field[i]
        if c == "\\":
            out.append(COPY_UNESCAPES[field[i + 1]])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_copy(script: bytes) -> dict[str, list[list[str | None]]]:
    """Rows of every COPY block, decoded; fails if a row has the wrong number of fields."""
    rows: dict[str, list[list[str | None]]] = {}
    table = None
    width = 0
    for line in script.decode("utf-8").split("\n"):
        if table is None:
            match = COPY_RE.match(line)
            if match:
                table = match.group(1)
                width = len(match.group(2).split(", "))
                rows.setdefault(table, [])
            continue
        if line == "\\.":
            table = None
            continue
        fields = line.split("\t")
        assert len(fields) == width, f"{table}: {len(fields)} fields instead of {width} in {line!r}"
        rows[table].append([copy_unescape(f) for f in fields])
    assert table is None, f"COPY block for {table} is not terminated"
    return rows


def test_same_seed_same_bytes_and_another_seed_differs():
    first = render(seed=7)
    assert first == render(seed=7)
    assert first != render(seed=8)


def test_copy_escape_of_special_characters():
    assert generate.copy_escape("a\tb\nc\\d\re") == "a\\tb\\nc\\\\d\\re"
    assert generate.copy_escape("C:\\new\\table") == "C:\\\\new\\\\table"
    assert generate.copy_escape("Nguyễn Désirée m² \u201cok\u201d") == "Nguyễn Désirée m² \u201cok\u201d"
    for raw in ("plain", "tab\there", "back\\slash\\n", "crlf\r\nline", "\\N", "ü\t\\\n"):
        assert copy_unescape(generate.copy_escape(raw)) == raw


def test_every_row_parses_and_special_characters_survive():
    rows = parse_copy(render(scale_factor=1))
    assert set(rows) == {"users", "products", "orders", "order_items", "sessions"}
    descriptions = [r[4] for r in rows["products"]]
    assert any("\t" in d for d in descriptions)
    assert any("\\" in d for d in descriptions)
    assert any("\r\n" in d for d in descriptions)
    assert any("\n\n" in d for d in descriptions)
    addresses = [r[3] for r in rows["users"]]
    assert all(a.count("\n") == 2 for a in addresses)
    names = [r[2] for r in rows["users"]]
    assert any(not n.isascii() for n in names)
    assert any(r[4] is None for r in rows["users"]), "some users have no phone number (NULL)"
    assert all(re.fullmatch(r"[0-9a-f]{64}", r[1]) for r in rows["sessions"])


def test_rows_are_consistent():
    rows = parse_copy(render(scale_factor=1))
    emails = [r[1] for r in rows["users"]]
    assert len(set(emails)) == len(emails)
    assert all(e.isascii() and "@" in e for e in emails)
    n_users, n_products = len(rows["users"]), len(rows["products"])
    prices = {int(r[0]): r[5] for r in rows["products"]}
    totals: dict[str, int] = {}
    for _item_id, order_id, product_id, quantity, unit_price in rows["order_items"]:
        assert unit_price == prices[int(product_id)]
        assert 1 <= int(product_id) <= n_products
        totals[order_id] = totals.get(order_id, 0) + int(quantity) * int(float(unit_price))
    for order_id, user_id, status, total, _created in rows["orders"]:
        assert 1 <= int(user_id) <= n_users
        assert status in {"pending", "paid", "shipped", "delivered", "cancelled"}
        assert int(float(total)) == totals[order_id], f"order {order_id}: total is not the sum of its items"
    assert all(1 <= int(r[2]) <= n_users for r in rows["sessions"])


@pytest.mark.parametrize("factor", [0.5, 2, 10])
def test_row_counts_proportional_to_scale_factor(factor):
    base = generate.row_counts(1)
    scaled = generate.row_counts(factor)
    for table, count in base.items():
        assert scaled[table] == round(count * factor)
    rows = parse_copy(render(scale_factor=factor))
    assert {t: len(rows[t]) for t in base} == scaled
    items_per_order = len(rows["order_items"]) / len(rows["orders"])
    assert generate.ITEMS_PER_ORDER[0] <= items_per_order <= generate.ITEMS_PER_ORDER[1]


def test_named_scales_grow_by_their_sizes():
    assert generate.SCALES == {"tiny": 1.0, "small": 20.0, "medium": 200.0, "large": 1000.0}
    assert generate.row_counts(generate.SCALES["large"])["orders"] == 1000 * generate.row_counts(1)["orders"]


def test_setval_for_every_sequence_after_the_data():
    script = render().decode()
    for table in ("users", "products", "orders", "order_items"):
        setval = (
            f"setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608 (a string to look for)
            f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
        )
        assert setval in script
        assert script.index(setval) > script.rindex("\\.\n")
    assert script.index("SELECT setval") < script.index("COMMIT;")


def test_truncate_comes_first_inside_the_transaction():
    plain = render().decode()
    truncated = render(truncate=True).decode()
    assert "TRUNCATE" not in plain
    statement = "TRUNCATE users, products, orders, order_items, sessions RESTART IDENTITY CASCADE;"
    assert plain.index("BEGIN;") < truncated.index(statement) < truncated.index("COPY ")


def test_orders_precede_their_items():
    script = render(scale_factor=1).decode()
    assert script.index("COPY orders ") < script.index("COPY order_items ")
    assert script.index("COPY users ") < script.index("COPY orders ") and script.index("COPY products ") < script.index(
        "COPY order_items "
    )


def test_cli_scale_options():
    args = generate.parse_args(["--scale", "medium"])
    assert args.scale_factor == 200
    args = generate.parse_args(["--scale-factor", "0.25", "--seed", "3", "--truncate"])
    assert (args.scale_factor, args.seed, args.truncate) == (0.25, 3, True)
    with pytest.raises(SystemExit):
        generate.parse_args(["--scale", "tiny", "--scale-factor", "2"])
    with pytest.raises(SystemExit):
        generate.parse_args(["--scale-factor", "0"])


def test_cli_writes_the_same_stream():
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--scale-factor", "0.2", "--seed", "7"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert result.stdout == render(scale_factor=0.2, seed=7)


def test_standard_library_only():
    tree = ast.parse(GENERATOR.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported - set(sys.stdlib_module_names)
