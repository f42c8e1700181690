# Copyright: (c) 2026, TokoTani DevOps Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The manifest's schema, and a checker of the JSON Schema subset it uses.

A manifest is read back from a backup directory or a bucket that an intruder may have written
to, so every field is type-checked before anything uses it. ``MANIFEST_SCHEMA`` is the schema
published as ``docs/manifest.schema.json`` (a unit test keeps the two equal and checks that
``jsonschema`` and ``schema_problems`` agree on crafted manifests). ``schema_problems`` is pure
standard library, so a host-side timer without ``jsonschema`` checks the same rules.

What a schema cannot say (the data name follows from the name, format and compression; the time
in the name and ``started_at`` agree; nothing comes from the future) is checked in
``backup_catalog.manifest_problems``.
"""

from __future__ import annotations

import re

# One path component of a file inside a backup: no separator, no NUL or control character, no
# backslash, not '.' or '..'. A relative path is one or more of these joined by '/'.
# Every pattern ends in "(?!\n)$": "$" alone also matches before a final newline.
END = r"(?!\n)$"
COMPONENT_PATTERN = r"(?!\.\.?(?:/|(?!\n)$))[^/\\\x00-\x1f]{1,255}"
NAME_PATTERN = rf"^{COMPONENT_PATTERN}{END}"
RELPATH_PATTERN = rf"^(?:{COMPONENT_PATTERN}/)*{COMPONENT_PATTERN}{END}"
SHA256_PATTERN = rf"^[0-9a-f]{{64}}{END}"
STEM_PATTERN = rf"^backup_\d{{4}}-\d{{2}}-\d{{2}}_\d{{2}}-\d{{2}}-\d{{2}}(?:_[1-9]\d{{0,5}})?{END}"
# A PostgreSQL name as it comes back from the catalog: 1 to 63 characters, no control character.
PG_NAME_PATTERN = rf"^[^\x00-\x1f]{{1,63}}{END}"
# 'name=value' of pg_db_role_setting: a parameter name as PostgreSQL spells one (a custom one has a dot).
SETTING_PATTERN = r"^[A-Za-z_][A-Za-z0-9_$]*(?:\.[A-Za-z_][A-Za-z0-9_$]*)*=[^\x00]*$"
TIMESTAMP_PATTERN = rf"^\d{{4}}-\d{{2}}-\d{{2}}T\d{{2}}:\d{{2}}:\d{{2}}(?:\.\d{{1,9}})?(?:Z|[+-]\d{{2}}:\d{{2}}){END}"
# Database privileges (aclexplode's privilege_type for a database).
DATABASE_PRIVILEGES = ["CONNECT", "CREATE", "TEMPORARY"]
MAX_COUNT = 2**63 - 1

_TEXT = {"type": "string", "maxLength": 4096}
_OPTIONAL_TEXT = {"type": ["string", "null"], "maxLength": 4096}
_COUNT = {"type": "integer", "minimum": 0, "maximum": MAX_COUNT}

MANIFEST_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://tokotani.dr/manifest.schema.json",
    "title": "tokotani.dr backup manifest",
    "type": "object",
    "required": [
        "manifest_version",
        "name",
        "data",
        "database",
        "format",
        "compression",
        "size",
        "sha256",
        "started_at",
        "finished_at",
        "tables",
    ],
    "properties": {
        "manifest_version": {"type": "integer", "minimum": 1, "maximum": 1000},
        "tool": _TEXT,
        "tool_version": _TEXT,
        "name": {"type": "string", "pattern": STEM_PATTERN},
        "data": {"type": "string", "pattern": NAME_PATTERN},
        "database": {"type": "string", "pattern": PG_NAME_PATTERN},
        "label": _OPTIONAL_TEXT,
        "format": {"enum": ["plain", "custom", "directory"]},
        "compression": {"enum": ["gzip", "zstd", "none"]},
        "compression_level": {"type": ["integer", "string"], "maxLength": 16, "maximum": 100},
        "jobs": {"type": "integer", "minimum": 1, "maximum": 1024},
        "size": _COUNT,
        "sha256": {"type": "string", "pattern": SHA256_PATTERN},
        "started_at": {"type": "string", "pattern": TIMESTAMP_PATTERN},
        "finished_at": {"type": "string", "pattern": TIMESTAMP_PATTERN},
        "dump_seconds": {"type": "number", "minimum": 0},
        "duration": {"type": "number", "minimum": 0},
        "host": _TEXT,
        "server": {
            "type": "object",
            "properties": {
                "host": _TEXT,
                "port": {"type": "integer", "minimum": 0, "maximum": 65535},
                "version": _TEXT,
                "version_num": _COUNT,
            },
        },
        "pg_dump": {
            "type": "object",
            "properties": {
                "path": _TEXT,
                "version": {"type": "string", "pattern": rf"^\d{{1,3}}(?:\.\d{{1,4}}){{0,2}}{END}"},
            },
        },
        "database_size": _COUNT,
        "database_properties": {"$ref": "#/$defs/database_properties"},
        "snapshot": _OPTIONAL_TEXT,
        "row_counts": _TEXT,
        "tables": {
            "type": "array",
            "maxItems": 100000,
            "items": {
                "type": "object",
                "required": ["schema", "name", "rows"],
                "properties": {
                    "schema": {"type": "string", "pattern": PG_NAME_PATTERN},
                    "name": {"type": "string", "pattern": PG_NAME_PATTERN},
                    "rows": _COUNT,
                },
            },
        },
        "files": {
            "type": "object",
            "maxProperties": 1000000,
            "propertyNames": {"pattern": RELPATH_PATTERN},
            "additionalProperties": {
                "type": "object",
                "required": ["size", "sha256"],
                "properties": {"size": _COUNT, "sha256": {"type": "string", "pattern": SHA256_PATTERN}},
            },
        },
        "zstd_choices": {"type": "object", "additionalProperties": {"type": ["integer", "string"], "maxLength": 64}},
        "suspicious": {
            "type": ["object", "null"],
            "required": ["compared_with", "reason", "tables"],
            "additionalProperties": False,
            "properties": {
                # null for a backup taken while a recovery of its database was in progress (recovery_run)
                "compared_with": {"type": ["string", "null"], "pattern": STEM_PATTERN},
                "recovery_run": {"type": "string", "pattern": rf"^[0-9a-f]{{16}}{END}"},
                "reason": _TEXT,
                "tables": {
                    "type": "array",
                    "maxItems": 100,
                    "items": {
                        "type": "object",
                        "required": ["table", "previous_rows", "rows", "lost"],
                        "additionalProperties": False,
                        "properties": {
                            "table": {"type": "string", "maxLength": 130},
                            "previous_rows": _COUNT,
                            "rows": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_COUNT},
                            "lost": {"type": "number", "minimum": 0, "maximum": 1},
                        },
                    },
                },
            },
        },
        "signature": {
            "type": "object",
            "required": ["algorithm", "key_id", "value"],
            "additionalProperties": False,
            "properties": {
                "algorithm": {"enum": ["HMAC-SHA256"]},
                "key_id": {"type": "string", "pattern": rf"^[0-9a-f]{{16}}{END}"},
                "value": {"type": "string", "pattern": rf"^[0-9a-f]{{64}}{END}"},
            },
        },
    },
    "$defs": {
        "database_properties": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "pattern": PG_NAME_PATTERN},
                "owner": {"type": ["string", "null"], "pattern": PG_NAME_PATTERN},
                "encoding": {"type": ["string", "null"], "pattern": rf"^[A-Za-z0-9_]{{1,32}}{END}"},
                "collate": {"type": ["string", "null"], "pattern": rf"^[A-Za-z0-9_.@-]{{0,128}}{END}"},
                "ctype": {"type": ["string", "null"], "pattern": rf"^[A-Za-z0-9_.@-]{{0,128}}{END}"},
                "locale_provider": {"type": ["string", "null"], "enum": ["c", "i", "d", None]},
                "icu_locale": {"type": ["string", "null"], "pattern": rf"^[A-Za-z0-9_.@=;-]{{0,128}}{END}"},
                "is_template": {"type": ["boolean", "null"]},
                "allow_connections": {"type": ["boolean", "null"]},
                "connection_limit": {"type": ["integer", "null"], "minimum": -1, "maximum": 2**31 - 1},
                "comment": {"type": ["string", "null"], "pattern": r"^[^\x00]*$", "maxLength": 65536},
                "acl_is_default": {"type": "boolean"},
                "acl": {
                    "type": "array",
                    "maxItems": 10000,
                    "items": {
                        "type": "object",
                        "required": ["grantee", "privilege"],
                        "properties": {
                            "grantee": {"type": "string", "pattern": PG_NAME_PATTERN},
                            "privilege": {"enum": DATABASE_PRIVILEGES},
                            "grantable": {"type": "boolean"},
                        },
                    },
                },
                "settings": {
                    "type": "array",
                    "maxItems": 10000,
                    "items": {
                        "type": "object",
                        "properties": {
                            "role": {"type": ["string", "null"], "pattern": PG_NAME_PATTERN},
                            "config": {
                                "type": ["array", "null"],
                                "maxItems": 1000,
                                "items": {"type": "string", "pattern": SETTING_PATTERN, "maxLength": 65536},
                            },
                        },
                    },
                },
                "size": _COUNT,
            },
        }
    },
}

_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def _is_type(value, name):
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[name])


def _same(value, other):
    """JSON equality: true is not 1."""
    return value == other and isinstance(value, bool) == isinstance(other, bool)


def _describe(path, what="the manifest"):
    if not path:
        return what
    text = str(path[0])
    for part in path[1:]:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return f"{what}'s {text}"


def _json_type(value):
    for name in ("boolean", "integer", "number", "string", "array", "object", "null"):
        if _is_type(value, name):
            return name
    return type(value).__name__


class _Checker:
    """One walk of a document against the schema; collects at most ``limit`` problems."""

    def __init__(self, root, limit, what="the manifest"):
        self.root = root
        self.limit = limit
        self.what = what
        self.problems = []

    def add(self, text):
        self.problems.append(text)

    def check(self, value, node, path):
        if len(self.problems) >= self.limit:
            return
        if "$ref" in node:
            node = self.root["$defs"][node["$ref"].rsplit("/", 1)[-1]]
        where = _describe(path, self.what)
        if "enum" in node and not any(_same(value, v) for v in node["enum"]):
            shown = ", ".join("null" if v is None else str(v) for v in node["enum"])
            self.add(f"{where} is {_short(value)}, not one of {shown}")
            return
        types = node.get("type")
        if types is not None:
            types = [types] if isinstance(types, str) else types
            if not any(_is_type(value, t) for t in types):
                self.add(f"{where} is {_a(_json_type(value))}, not {' or '.join(_a(t) for t in types)}")
                return
        if isinstance(value, str):
            self.check_string(value, node, where)
        elif _is_type(value, "number"):
            self.check_number(value, node, where)
        elif isinstance(value, list):
            self.check_array(value, node, path, where)
        elif isinstance(value, dict):
            self.check_object(value, node, path, where)

    def check_string(self, value, node, where):
        if "maxLength" in node and len(value) > node["maxLength"]:
            self.add(f"{where} is longer than {node['maxLength']} characters")
        elif "pattern" in node and not re.search(node["pattern"], value):
            self.add(f"{where} {_short(value)} is not of the allowed form")

    def check_number(self, value, node, where):
        if "minimum" in node and value < node["minimum"]:
            self.add(f"{where} is {value}, below {node['minimum']}")
        elif "maximum" in node and value > node["maximum"]:
            self.add(f"{where} is {value}, above {node['maximum']}")

    def check_array(self, value, node, path, where):
        if "maxItems" in node and len(value) > node["maxItems"]:
            self.add(f"{where} has more than {node['maxItems']} items")
            return
        for index, item in enumerate(value if "items" in node else []):
            self.check(item, node["items"], [*path, index])

    def check_object(self, value, node, path, where):
        for key in node.get("required", []):
            if key not in value:
                self.add(f"{where} has no {key}")
        if "maxProperties" in node and len(value) > node["maxProperties"]:
            self.add(f"{where} has more than {node['maxProperties']} entries")
            return
        names = node.get("propertyNames")
        props = node.get("properties", {})
        extra = node.get("additionalProperties", True)
        for key in sorted(value):
            if len(self.problems) >= self.limit:
                return
            if names is not None and not re.search(names["pattern"], key):
                self.add(f"{where} names {_short(key)}, which is not {names.get('title', 'a plain relative path')}")
            elif key in props:
                self.check(value[key], props[key], [*path, key])
            elif extra is False:
                self.add(f"{where} has an unknown field {_short(key)}")
            elif isinstance(extra, dict):
                self.check(value[key], extra, [*path, key])


def schema_problems(doc, schema=None, limit=20, what="the manifest"):
    """What in doc breaks the schema (default: MANIFEST_SCHEMA), as sentences; empty when it conforms.

    Implements the keywords the schema uses: type, enum, required, properties, additionalProperties,
    propertyNames, maxProperties, items, maxItems, pattern, maxLength, minimum, maximum, $ref (to
    $defs). ``limit`` caps the list: a crafted manifest can hold a million wrong entries. ``what`` names
    the document in the sentences (another schema: the recovery record of recovery_run).
    """
    if not isinstance(doc, dict):
        return [f"{what} is not a JSON object"]
    checker = _Checker(schema or MANIFEST_SCHEMA, limit, what)
    checker.check(doc, checker.root, [])
    return checker.problems[:limit]


def _a(name):
    return ("an " if name[0] in "aeiou" else "a ") + name if name != "null" else "null"


def _short(value, width=60):
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def is_relpath(name):
    """True when name is a plain relative path of one or more safe components (see RELPATH_PATTERN)."""
    return isinstance(name, str) and re.search(RELPATH_PATTERN, name) is not None
