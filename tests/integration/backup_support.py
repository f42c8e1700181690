"""Shared helpers of the backup/restore integration tests (not fixtures, so that any test file can use them).

The modules run as ansible runs them on a host (run_module: the module file and its arguments, in its own
process) or through the ansible CLI where the CLI is what is tested (module_argv: -vvv output, signals to the
controller), against the session's pg_cluster, never by importing them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = VENV_BIN / "python"
SCHEMA = ROOT / "sandbox" / "app" / "prisma" / "migrations" / "20240115093000_init" / "migration.sql"
GENERATOR = ROOT / "sandbox" / "data" / "generate.py"

# Everything the round trip must keep, beyond the shop's own schema and data.
FIDELITY_SQL = r"""
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bk_owner') THEN CREATE ROLE bk_owner; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bk_reader') THEN CREATE ROLE bk_reader; END IF;
END $$;
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE EXTENSION IF NOT EXISTS citext;
CREATE EXTENSION IF NOT EXISTS hstore;
CREATE SCHEMA "toko_δ" AUTHORIZATION bk_owner;
COMMENT ON SCHEMA "toko_δ" IS 'skema uji: ünïcödé 🌾';
CREATE TABLE "toko_δ"."pelanggan_ü" (
    id bigserial PRIMARY KEY,
    "naïve name" citext NOT NULL,
    attrs hstore,
    secret bytea DEFAULT gen_random_bytes(8),
    note text
);
ALTER TABLE "toko_δ"."pelanggan_ü" OWNER TO bk_owner;
COMMENT ON COLUMN "toko_δ"."pelanggan_ü"."naïve name" IS 'nama pelanggan → «citext»';
INSERT INTO "toko_δ"."pelanggan_ü" ("naïve name", attrs, note) VALUES
  ('Sri Wahyuni', 'kota=>Yogyakarta, tier=>gold', 'Beras 🌾 5 kg, «premium»'),
  ('Nguyễn Thảo', 'kota=>"Hà Nội"', E'multi\nline\ttab \\ backslash'),
  ('Łukasz Dvořák', NULL, '\.'),
  ('日本語のテスト', 'a=>1', repeat('x', 10000));
CREATE SEQUENCE "toko_δ".invoice_no START 1000 INCREMENT 7;
SELECT setval('"toko_δ".invoice_no', 1049, true);
CREATE SEQUENCE "toko_δ".unused_seq;
CREATE TABLE "toko_δ".audit (id serial PRIMARY KEY, tbl text, at timestamptz DEFAULT now());
CREATE FUNCTION "toko_δ".log_insert() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN INSERT INTO "toko_δ".audit (tbl) VALUES (TG_TABLE_NAME); RETURN NEW; END $f$;
COMMENT ON FUNCTION "toko_δ".log_insert() IS 'audit trigger';
CREATE TRIGGER pelanggan_audit AFTER INSERT ON "toko_δ"."pelanggan_ü"
  FOR EACH ROW EXECUTE FUNCTION "toko_δ".log_insert();
INSERT INTO "toko_δ"."pelanggan_ü" ("naïve name") VALUES ('Trigger Test');
CREATE VIEW "toko_δ".pelanggan_view AS SELECT id, "naïve name" FROM "toko_δ"."pelanggan_ü" WHERE id > 1;
CREATE MATERIALIZED VIEW "toko_δ".product_counts AS
  SELECT category, count(*) AS n FROM public.products GROUP BY category;
CREATE MATERIALIZED VIEW "toko_δ".empty_mv AS SELECT 1 AS one WITH NO DATA;
GRANT USAGE ON SCHEMA "toko_δ" TO bk_reader;
GRANT SELECT ON "toko_δ".pelanggan_view TO bk_reader;
GRANT SELECT (id, "naïve name") ON "toko_δ"."pelanggan_ü" TO bk_reader;
REVOKE ALL ON FUNCTION "toko_δ".log_insert() FROM PUBLIC;
SELECT lo_from_bytea(0, convert_to('large object: Pupuk NPK 16-16-16 🌱', 'UTF8'));
SELECT lo_from_bytea(0, decode(repeat('00ff10', 50000), 'hex'));
DO $$ DECLARE o oid; BEGIN
  SELECT min(oid) INTO o FROM pg_largeobject_metadata;
  EXECUTE format('COMMENT ON LARGE OBJECT %s IS %L', o, 'gambar produk');
  EXECUTE format('ALTER LARGE OBJECT %s OWNER TO bk_owner', o);
  EXECUTE format('GRANT SELECT ON LARGE OBJECT %s TO bk_reader', o);
END $$;
CREATE TABLE public.unlogged_cache (k text PRIMARY KEY, v text);
ALTER TABLE public.unlogged_cache SET UNLOGGED;
INSERT INTO public.unlogged_cache VALUES ('a', 'b');
CREATE TABLE public.events (id int, at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE public.events_2025 PARTITION OF public.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE public.events_2026 PARTITION OF public.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO public.events SELECT g, date '2025-06-01' + g FROM generate_series(1, 400) g;
"""

# One applied Prisma migration: what the plan's default assertion "migrations applied" looks for.
MIGRATION_SQL = (
    "INSERT INTO _prisma_migrations (id, checksum, finished_at, migration_name, started_at, applied_steps_count) "
    "VALUES ('00000000-0000-0000-0000-000000000001', repeat('a', 64), now(), '0001_init', now(), 1);"
)

DATABASE_SETTINGS_SQL = """
ALTER DATABASE {db} SET search_path TO "$user", public, "toko_δ";
ALTER DATABASE {db} SET statement_timeout TO '5min';
ALTER ROLE bk_reader IN DATABASE {db} SET work_mem TO '8MB';
ALTER DATABASE {db} CONNECTION LIMIT 50;
COMMENT ON DATABASE {db} IS 'TokoTani → uji cadangan';
REVOKE CONNECT ON DATABASE {db} FROM PUBLIC;
GRANT CONNECT ON DATABASE {db} TO bk_reader;
"""


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def module_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.update(
        PATH=f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}",
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"),
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_DEPRECATION_WARNINGS="0",
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
    )
    env.pop("PGPASSWORD", None)
    if extra:
        env.update(extra)
    return env


def module_argv(module: str, args: dict, check: bool = False, verbosity: int = 0) -> list[str]:
    argv = [
        str(VENV_BIN / "ansible"),
        "localhost",
        "-i",
        "localhost,",
        "-c",
        "local",
        "-m",
        f"tokotani.dr.{module}",
        "-a",
        json.dumps(args),
        "-e",
        f"ansible_python_interpreter={PYTHON}",
    ]
    if check:
        argv.append("--check")
    if verbosity:
        argv.append("-" + "v" * verbosity)
    return argv


def parse_result(stdout: str) -> dict:
    """The one host result of an ad-hoc run printed by the json callback."""
    start = stdout.find("{")
    doc = json.loads(stdout[start:])
    return doc["plays"][0]["tasks"][0]["hosts"]["localhost"]


MODULES = ROOT / ".collections" / "ansible_collections" / "tokotani" / "dr" / "plugins" / "modules"


def run_module(module: str, args: dict, check: bool = False, timeout: float = 300, env: dict | None = None) -> dict:
    """Run tokotani.dr.<module> as ansible runs it on a host, and return its result (failed or not).

    The module file itself, with its arguments in a JSON file (ANSIBLE_MODULE_ARGS, check mode and the module's
    name as ansible passes them), in the venv's Python with the collection on its path: the same AnsibleModule,
    argument spec, no_log masking and engines, without starting the ansible CLI for every call (about 1.7 s of
    CPU each, most of the integration tier's time). What only the CLI does - -vvv output, a signal to the
    controller - goes through module_argv() (verbose_outputs, start_module). _rc is ansible's: 2 for a failure.
    """
    payload = dict(args, _ansible_check_mode=bool(check), _ansible_module_name=f"tokotani.dr.{module}")
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix=f"args-{module}-", delete=False) as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": payload}, handle)
    try:
        proc = subprocess.run(
            [str(PYTHON), str(MODULES / f"{module}.py"), handle.name],
            capture_output=True,
            text=True,
            env={**module_env(env), "PYTHONPATH": str(ROOT / ".collections")},
            timeout=timeout,
            check=False,
            cwd=ROOT,
        )
    finally:
        os.unlink(handle.name)
    try:
        result = json.loads(proc.stdout[proc.stdout.index("{") :])
    except ValueError as err:
        raise AssertionError(
            f"no JSON result from {module} (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        ) from err
    result.pop("invocation", None)
    # ansible-core 2.19 modules send warnings and deprecations as events; the controller shows their messages
    for kind in ("warnings", "deprecations"):
        if kind in result:
            result[kind] = [item["event"]["msg"] if isinstance(item, dict) else item for item in result[kind]]
    result["_rc"] = 2 if result.get("failed") or proc.returncode else 0
    return result


def start_module(module: str, args: dict) -> subprocess.Popen:
    """Start tokotani.dr.<module> in the background; finish with finish_module()."""
    return subprocess.Popen(
        module_argv(module, args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=module_env(),
        cwd=ROOT,
    )


def finish_module(proc: subprocess.Popen, timeout: float = 300) -> dict:
    out, err = proc.communicate(timeout=timeout)
    try:
        result = parse_result(out)
    except (ValueError, KeyError, IndexError) as exc:
        raise AssertionError(f"no JSON result from ansible (rc {proc.returncode}):\n{out}\n{err}") from exc
    result["_rc"] = proc.returncode
    return result


# The host-side runner (tokotani-dr <job> --config FILE) started from the checkout's collection link.
LAUNCHER = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); "
    "from ansible_collections.tokotani.dr.plugins.module_utils.jobs import runner; sys.exit(runner.main())"
)


def run_job(job: str, config: dict, config_path: Path, env: dict) -> subprocess.CompletedProcess:
    """Run ``tokotani-dr <job>`` with config (written to config_path) as systemd would: only env's variables."""
    config_path.write_text(json.dumps(config))
    return subprocess.run(
        [sys.executable, "-c", LAUNCHER, str(ROOT / ".collections"), job, "--config", str(config_path)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        timeout=300,
        check=False,
    )


def conn_args(cluster, **extra) -> dict:
    """Module connection options for the test cluster over 127.0.0.1 with the superuser's password."""
    args = {
        "login_host": cluster.host,
        "login_port": cluster.port,
        "login_user": cluster.superuser,
        "login_password": cluster.password,
    }
    args.update(extra)
    return args


def load_shop(cluster, db: str, fidelity: bool = True, seed: int = 7) -> None:
    """Create db with the app's schema, tiny generated shop data, and (optionally) the fidelity objects."""
    cluster.createdb(db)
    cluster.psql(SCHEMA.read_text(), db=db)
    data = subprocess.run(
        ["python3", str(GENERATOR), "--scale", "tiny", "--seed", str(seed)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    cluster.psql(data, db=db)
    if fidelity:
        cluster.psql(FIDELITY_SQL, db=db)
        cluster.psql(DATABASE_SETTINGS_SQL.format(db=quote_ident(db)), db=db)
    cluster.psql("ANALYZE;", db=db)


def drop_db(cluster, db: str) -> None:
    cluster.psql(f"DROP DATABASE IF EXISTS {quote_ident(db)} WITH (FORCE);")


def databases(cluster, prefix: str) -> list[str]:
    out = cluster.psql(
        f"SELECT datname FROM pg_database WHERE starts_with(datname, '{prefix}') ORDER BY 1;",  # noqa: S608
    )
    return [line for line in out.splitlines() if line]


def schema_dump(cluster, db: str) -> str:
    """pg_dump --schema-only, without the per-run \\restrict lines."""
    proc = subprocess.run(
        [str(cluster.bindir / "pg_dump"), "--schema-only", "-d", db],
        capture_output=True,
        text=True,
        env=cluster.env(db),
        check=True,
        timeout=120,
    )
    return "\n".join(line for line in proc.stdout.splitlines() if not re.match(r"^\\(un)?restrict\b", line))


def table_checksums(cluster, db: str) -> dict[str, str]:
    """md5 over every row of every user table (and materialized view), in a stable order."""
    tables = cluster.psql(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'm', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1;",
        db=db,
    ).split()
    sums = {}
    for table in tables:
        populated = cluster.psql(
            f"SELECT relkind <> 'm' OR relispopulated FROM pg_class WHERE oid = '{table}'::regclass;",  # noqa: S608
            db=db,
        ).strip()
        if populated != "t":
            sums[table] = "not populated"
            continue
        sums[table] = cluster.psql(
            "SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') "  # noqa: S608
            f"FROM {table} t;",
            db=db,
        ).strip()
    return sums


def object_state(cluster, db: str) -> dict:
    """Sequences, extensions, large objects (content, owner, ACL, comment)."""
    seqs = cluster.psql(
        "SELECT format('%I.%I', schemaname, sequencename) || '=' || coalesce(last_value::text, 'null') "
        "FROM pg_sequences ORDER BY 1;",
        db=db,
    ).split()
    exts = cluster.psql("SELECT extname || ' ' || extversion FROM pg_extension ORDER BY 1;", db=db).splitlines()
    los = cluster.psql(
        "SELECT md5(lo_get(m.oid)) || ' ' || pg_get_userbyid(m.lomowner) || ' ' || coalesce(m.lomacl::text, '') "
        "|| ' ' || coalesce(obj_description(m.oid, 'pg_largeobject'), '') FROM pg_largeobject_metadata m ORDER BY 1;",
        db=db,
    ).splitlines()
    return {"sequences": seqs, "extensions": exts, "large_objects": los}


def database_state(cluster, db: str) -> dict:
    """Owner, ACL, connection limit, comment and settings of database db."""
    row = cluster.psql(
        "SELECT json_build_object('owner', pg_get_userbyid(d.datdba), 'acl', d.datacl::text, "  # noqa: S608
        "'connlimit', d.datconnlimit, 'comment', shobj_description(d.oid, 'pg_database'), "
        "'settings', (SELECT json_agg(json_build_object('role', s.setrole::regrole::text, 'config', s.setconfig) "
        "ORDER BY s.setrole) FROM pg_db_role_setting s WHERE s.setdatabase = d.oid)) "
        f"FROM pg_database d WHERE d.datname = '{db}';"
    )
    state = json.loads(row)
    # datacl names the database's owner as grantor; compare grants only.
    state["acl"] = sorted(re.sub(r"/[^,}]*", "", state["acl"] or "").strip("{}").split(","))
    return state


def full_state(cluster, db: str) -> dict:
    return {
        "schema": schema_dump(cluster, db),
        "rows": table_checksums(cluster, db),
        "objects": object_state(cluster, db),
    }


def files_in(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def pids_with(word: str, program: str) -> list[int]:
    """Pids of processes running program whose command line contains word (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not cmdline or not cmdline[0]:
            continue
        if os.path.basename(cmdline[0].decode(errors="replace")) == program and any(
            word.encode() in part for part in cmdline
        ):
            found.append(int(entry.name))
    return found


def copy_backup(src_dir: Path, name: str, dest_dir: Path, new_stem: str, started_at: str) -> None:
    """Copy backup `name` as `new_stem` (data renamed, manifest rewritten with started_at): an aged backup."""
    manifest = json.loads((src_dir / f"{name}.manifest.json").read_text())
    ext = manifest["data"][len(name) :]
    data = src_dir / manifest["data"]
    target = dest_dir / f"{new_stem}{ext}"
    if data.is_dir():
        shutil.copytree(data, target)
    else:
        shutil.copy2(data, target)
    manifest.update(name=new_stem, data=target.name, started_at=started_at, finished_at=started_at)
    (dest_dir / f"{new_stem}.manifest.json").write_text(json.dumps(manifest))
