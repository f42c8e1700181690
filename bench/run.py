"""make bench: the backup and restore of tokotani.dr side by side with the plan's own pipeline.

Starts a throwaway PostgreSQL 15 cluster (initdb defaults, fsync on), generates the shop database
with sandbox/data/generate.py at --scale (large is about 1 GB on disk), then times, one after the
other on the same cluster:

  backup   pg_dump > /dev/null                 the limit: nothing is written
           pg_dump | gzip                      the plan's nightly backup (.sql.gz)
           community.postgresql.postgresql_db  state=dump target=.sql.gz (through ansible)
           tokotani.dr.postgresql_backup       the default format (through ansible)
  restore  createdb + gunzip | psql            the plan's restore of that .sql.gz
           community.postgresql.postgresql_db  state=restore (through ansible)
           tokotani.dr.postgresql_restore      mode replace over the shop database: checksum
                                               verification, checks, ANALYZE and swap included
           floor: pg_restore -j alone              from an uncompressed copy of our backup, nothing
                                               checked: the least any pg_restore-based restore
                                               can take, with the CPU-seconds it needs

and prints wall times, sizes, the ratios to the plan's pipeline and the targets of the issue,
plus the peak RSS of the module process (VmHWM of the AnsiballZ process, sampled from /proc).
Then (unless --no-offsite) bench/offsite.py pushes and pulls our backup of that database to a
moto server (over HTTPS, then over plain HTTP), plain and with client-side encryption, beside
`aws s3 cp`, and prints MB/s, peak RSS and what encryption costs against its targets (under 15 %
of push throughput, under 150 MB).
Writes everything to bench/results/bench-<UTC time>.json.

Run as root (initdb runs as the postgres system user through runuser).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gzip
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from offsite import print_table as print_offsite_table  # bench/ is not a package
from offsite import run_offsite_bench

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
PG_BINDIR = Path(os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin"))
GENERATOR = ROOT / "sandbox" / "data" / "generate.py"
SCHEMA = ROOT / "sandbox" / "app" / "prisma" / "migrations" / "20240115093000_init" / "migration.sql"
RESULTS = ROOT / "bench" / "results"
DB = "shop"

# Targets of the issue (backup/restore speed and size against the plan's pipeline, memory).
TARGET_BACKUP_SPEEDUP = 3.5
TARGET_BACKUP_VS_LIMIT = 1.5
TARGET_RESTORE_SPEEDUP = 1.7
TARGET_RSS_MB = 200


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- the cluster


class Cluster:
    """A throwaway cluster in a temporary directory, run by the postgres system user, trusted unix socket."""

    def __init__(self, base: Path, port: int):
        self.base = base
        self.port = port
        self.datadir = base / "data"
        self.socket_dir = base / "sock"
        self.logfile = base / "postgresql.log"

    def _as_postgres(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            for path in (self.base, self.socket_dir):
                shutil.chown(path, "postgres", "postgres")
        subprocess.run(
            self._as_postgres(
                [
                    str(PG_BINDIR / "initdb"),
                    "-D",
                    str(self.datadir),
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--auth-local=trust",
                    "--auth-host=reject",
                ]
            ),
            check=True,
            capture_output=True,
        )
        with (self.datadir / "postgresql.auto.conf").open("a") as conf:
            conf.write(f"port = {self.port}\nlisten_addresses = ''\nunix_socket_directories = '{self.socket_dir}'\n")
        subprocess.run(
            self._as_postgres(
                [str(PG_BINDIR / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile), "-w", "start"]
            ),
            check=True,
            capture_output=True,
        )

    def stop(self) -> None:
        subprocess.run(
            self._as_postgres([str(PG_BINDIR / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop"]),
            check=False,
            capture_output=True,
        )

    def env(self, db: str = "postgres") -> dict[str, str]:
        return dict(os.environ, PGHOST=str(self.socket_dir), PGPORT=str(self.port), PGUSER="postgres", PGDATABASE=db)

    def psql(self, sql: str, db: str = "postgres") -> str:
        result = subprocess.run(
            [str(PG_BINDIR / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", db],
            input=sql,
            capture_output=True,
            text=True,
            env=self.env(db),
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout.strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- timing


def pipeline(stages: list[list[str]], env: dict, stdin=None, stdout=None) -> float:
    """Run argv stages connected by pipes (no shell); every stage must exit 0. Returns the wall time."""
    start = time.monotonic()
    procs = []
    prev = stdin
    for index, argv in enumerate(stages):
        last = index == len(stages) - 1
        proc = subprocess.Popen(
            argv, stdin=prev, stdout=stdout if last else subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        if prev is not None and prev is not stdin:
            prev.close()
        prev = proc.stdout
        procs.append(proc)
    errors = [proc.stderr.read() for proc in procs]
    for proc, err in zip(procs, errors, strict=True):
        if proc.wait() != 0:
            raise RuntimeError(f"{proc.args[0]} failed (rc {proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    return time.monotonic() - start


class PeakRss:
    """Sample the VmHWM (peak RSS) of every process whose command line contains needle."""

    def __init__(self, needle: str):
        self.needle = needle.encode()
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    if self.needle not in (entry / "cmdline").read_bytes():
                        continue
                    for line in (entry / "status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            self.peak_kb = max(self.peak_kb, int(line.split()[1]))
                except OSError:
                    continue
            self._stop.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class BusyCpu:
    """CPU-seconds the whole machine spent busy (all cores, /proc/stat) while the block ran."""

    def __init__(self):
        self.seconds = 0.0

    @staticmethod
    def _busy() -> int:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return sum(fields) - fields[3] - fields[4]  # everything but idle and iowait

    def __enter__(self):
        self._start = self._busy()
        return self

    def __exit__(self, *exc):
        self.seconds = (self._busy() - self._start) / os.sysconf("SC_CLK_TCK")


def ansible(module: str, args: dict) -> tuple[float, dict, float]:
    """Run one module through ansible (no pipelining, so the module process can be watched).

    Returns (wall seconds, result, peak RSS in MB of the AnsiballZ module process).
    """
    env = dict(
        os.environ,
        PATH=f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"),
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
        ANSIBLE_PIPELINING="0",
        ANSIBLE_LOCALHOST_WARNING="0",
    )
    argv = [
        str(VENV_BIN / "ansible"),
        "localhost",
        "-i",
        "localhost,",
        "-c",
        "local",
        "-m",
        module,
        "-a",
        json.dumps(args),
        "-e",
        f"ansible_python_interpreter={VENV_BIN / 'python'}",
    ]
    short = module.rsplit(".", 1)[-1]
    start = time.monotonic()
    with PeakRss(f"AnsiballZ_{short}.py") as rss:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    wall = time.monotonic() - start
    try:
        doc = json.loads(proc.stdout[proc.stdout.find("{") :])
        result = doc["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError) as err:
        raise RuntimeError(
            f"{module}: no result (rc {proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}"
        ) from err
    if result.get("failed"):
        raise RuntimeError(f"{module} failed: {result.get('msg')}")
    return wall, result, rss.peak_kb / 1024


# --------------------------------------------------------------------------- the runs


def load_shop(cluster: Cluster, scale: str, seed: int) -> dict:
    cluster.psql(f"CREATE DATABASE {DB};")
    cluster.psql(SCHEMA.read_text(), db=DB)
    log(f"generating the shop data (scale {scale})")
    start = time.monotonic()
    gen = subprocess.Popen(
        [sys.executable, str(GENERATOR), "--scale", scale, "--seed", str(seed)], stdout=subprocess.PIPE
    )
    load = subprocess.run(
        [str(PG_BINDIR / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-o", "/dev/null", "-d", DB],
        stdin=gen.stdout,
        env=cluster.env(DB),
        check=False,
        capture_output=True,
    )
    gen.stdout.close()
    if gen.wait() != 0 or load.returncode != 0:
        raise RuntimeError(f"loading the shop data failed: {load.stderr.decode()[-2000:]}")
    cluster.psql("VACUUM ANALYZE;", db=DB)
    size = int(cluster.psql(f"SELECT pg_database_size('{DB}');"))
    log(f"shop database: {size / 1e6:.0f} MB on disk, loaded in {time.monotonic() - start:.0f} s")
    return {"database_size": size, "load_seconds": round(time.monotonic() - start, 1)}


def checkpoint(cluster: Cluster) -> None:
    cluster.psql("CHECKPOINT;")


def run_backups(cluster: Cluster, work: Path, jobs: int) -> dict:
    env = cluster.env(DB)
    out = {}
    checkpoint(cluster)
    log("pg_dump > /dev/null")
    with open(os.devnull, "wb") as null:
        out["pg_dump_devnull"] = {"seconds": pipeline([[str(PG_BINDIR / "pg_dump"), "-d", DB]], env, stdout=null)}
    checkpoint(cluster)
    log("pg_dump | gzip (the plan)")
    plan_file = work / "plan.sql.gz"
    with plan_file.open("wb") as handle:
        seconds = pipeline([[str(PG_BINDIR / "pg_dump"), "-d", DB], ["gzip", "-c"]], env, stdout=handle)
    out["plan_pg_dump_gzip"] = {"seconds": seconds, "size": plan_file.stat().st_size}
    checkpoint(cluster)
    log("community.postgresql.postgresql_db state=dump")
    comm_file = work / "community.sql.gz"
    wall, _result, _rss = ansible(
        "community.postgresql.postgresql_db",
        {
            "name": DB,
            "state": "dump",
            "target": str(comm_file),
            "login_unix_socket": str(cluster.socket_dir),
            "login_port": cluster.port,
            "login_user": "postgres",
        },
    )
    out["community_dump"] = {"seconds": wall, "size": comm_file.stat().st_size}
    comm_file.unlink()
    checkpoint(cluster)
    log("tokotani.dr.postgresql_backup")
    wall, result, rss = ansible(
        "tokotani.dr.postgresql_backup",
        {
            "database": DB,
            "backup_dir": str(work / "backups"),
            "login_unix_socket": str(cluster.socket_dir),
            "login_port": cluster.port,
            "jobs": jobs,
        },
    )
    out["ours_backup"] = {
        "seconds": result["duration"],
        "ansible_wall_seconds": wall,
        "size": result["size"],
        "peak_rss_mb": round(rss, 1),
        "path": result["path"],
        "format": f"{result['format']}/{result['compression']}",
    }
    return out


def stage_uncompressed(backup: Path, stage: Path) -> None:
    """An uncompressed copy of a directory backup (zstd -d of every .zst), for the floor run."""
    stage.mkdir()
    for item in backup.iterdir():
        if item.name.endswith(".zst"):
            subprocess.run(["zstd", "-q", "-d", str(item), "-o", str(stage / item.name[:-4])], check=True)
        else:
            shutil.copyfile(item, stage / item.name)
    if os.geteuid() == 0:
        for item in [stage, *stage.iterdir()]:
            shutil.chown(item, "postgres")


def run_restores(cluster: Cluster, work: Path, backup_path: str, jobs: int) -> dict:
    out = {}
    checkpoint(cluster)
    log("createdb + gunzip | psql (the plan)")
    start = time.monotonic()
    with BusyCpu() as cpu:
        cluster.psql("CREATE DATABASE shop_plan;")
        pipeline(
            [
                ["gzip", "-d", "-c", str(work / "plan.sql.gz")],
                [str(PG_BINDIR / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-o", "/dev/null", "-d", "shop_plan"],
            ],
            cluster.env("shop_plan"),
        )
    out["plan_gunzip_psql"] = {"seconds": time.monotonic() - start, "busy_cpu_seconds": round(cpu.seconds, 2)}
    cluster.psql("DROP DATABASE shop_plan;")
    checkpoint(cluster)
    log("community.postgresql.postgresql_db state=restore")
    cluster.psql("CREATE DATABASE shop_community;")  # state=restore does not create it
    wall, _result, _rss = ansible(
        "community.postgresql.postgresql_db",
        {
            "name": "shop_community",
            "state": "restore",
            "target": str(work / "plan.sql.gz"),
            "login_unix_socket": str(cluster.socket_dir),
            "login_port": cluster.port,
            "login_user": "postgres",
        },
    )
    out["community_restore"] = {"seconds": wall}
    cluster.psql("DROP DATABASE shop_community;")
    checkpoint(cluster)
    log("tokotani.dr.postgresql_restore (replace: verify, restore, check, ANALYZE, swap)")
    with BusyCpu() as cpu:
        wall, result, rss = ansible(
            "tokotani.dr.postgresql_restore",
            {
                "database": DB,
                "backup": backup_path,
                "confirm": True,
                "jobs": jobs,
                "login_unix_socket": str(cluster.socket_dir),
                "login_port": cluster.port,
            },
        )
    out["ours_restore"] = {
        "seconds": result["duration"],
        "ansible_wall_seconds": wall,
        "busy_cpu_seconds_with_ansible": round(cpu.seconds, 2),
        "peak_rss_mb": round(rss, 1),
        "timings": result["timings"],
        "rows_checked": result["rows"],
    }
    cluster.psql(f'DROP DATABASE "{result["previous_database"]}";')
    # The floor of any pg_restore-based restore: pg_restore -j alone from an uncompressed copy,
    # no checksum, no decompression, no checks, no ANALYZE, no swap.
    stage = work / "floor-stage"
    stage_uncompressed(Path(backup_path), stage)
    checkpoint(cluster)
    log(f"floor: pg_restore -j {jobs} alone, from an uncompressed copy, nothing checked")
    cluster.psql("CREATE DATABASE shop_floor;")
    with BusyCpu() as cpu:
        seconds = pipeline(
            [[str(PG_BINDIR / "pg_restore"), "--exit-on-error", "-j", str(jobs), "-d", "shop_floor", str(stage)]],
            cluster.env("shop_floor"),
        )
    out["floor_pg_restore"] = {"seconds": seconds, "busy_cpu_seconds": round(cpu.seconds, 2)}
    cluster.psql("DROP DATABASE shop_floor;")
    shutil.rmtree(stage)
    return out


# --------------------------------------------------------------------------- report


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def floor_line(res: dict) -> str:
    """What the floor run says about the best ratio any pg_restore-based restore can reach here."""
    r = res["restore"]
    plan, floor = r["plan_gunzip_psql"], r["floor_pg_restore"]
    cpus = res["host"]["cpus"]
    best = floor["busy_cpu_seconds"] / cpus
    res["ratios"]["restore_ceiling_vs_plan"] = round(plan["seconds"] / best, 2)
    return (
        f"pg_restore alone needs {floor['busy_cpu_seconds']:.1f} CPU-seconds ({floor['seconds']:.2f} s wall); "
        f"on {cpus} cores no pg_restore-based restore beats {best:.2f} s, at most "
        f"{plan['seconds'] / best:.2f}x the plan (which used {plan['busy_cpu_seconds']:.1f} CPU-seconds "
        f"in {plan['seconds']:.2f} s)"
    )


def report(res: dict) -> list[str]:
    b, r = res["backup"], res["restore"]
    plan_b = b["plan_pg_dump_gzip"]
    limit = b["pg_dump_devnull"]["seconds"]
    plan_r = r["plan_gunzip_psql"]["seconds"]
    ours_b = b["ours_backup"]
    ours_r = r["ours_restore"]
    rows = [
        ("backup", "pg_dump > /dev/null (limit)", limit, None),
        ("backup", "pg_dump | gzip (the plan)", plan_b["seconds"], plan_b["size"]),
        (
            "backup",
            "community.postgresql.postgresql_db dump",
            b["community_dump"]["seconds"],
            b["community_dump"]["size"],
        ),
        ("backup", f"tokotani.dr.postgresql_backup ({ours_b['format']})", ours_b["seconds"], ours_b["size"]),
        ("restore", "createdb + gunzip | psql (the plan)", plan_r, None),
        ("restore", "community.postgresql.postgresql_db restore", r["community_restore"]["seconds"], None),
        ("restore", "tokotani.dr.postgresql_restore (replace)", ours_r["seconds"], None),
        ("restore", "floor: pg_restore -j alone, nothing checked", r["floor_pg_restore"]["seconds"], None),
    ]
    lines = [f"{'':8}{'run':52}{'seconds':>9}{'MB':>9}{'vs plan':>10}"]
    for kind, name, seconds, size in rows:
        base = plan_b["seconds"] if kind == "backup" else plan_r
        ratio = f"{base / seconds:.2f}x"
        lines.append(f"{kind:8}{name:52}{seconds:9.2f}{(size / 1e6 if size else 0):9.1f}{ratio:>10}")
    speed_b = plan_b["seconds"] / ours_b["seconds"]
    vs_limit = ours_b["seconds"] / limit
    size_ratio = ours_b["size"] / plan_b["size"]
    speed_r = plan_r / ours_r["seconds"]
    rss = max(ours_b["peak_rss_mb"], ours_r["peak_rss_mb"])
    res["ratios"] = {
        "backup_speedup_vs_plan": round(speed_b, 2),
        "backup_vs_pg_dump_devnull": round(vs_limit, 2),
        "backup_size_vs_plan": round(size_ratio, 3),
        "restore_speedup_vs_plan": round(speed_r, 2),
        "module_peak_rss_mb": rss,
    }
    res["targets"] = {
        "backup_speedup": speed_b >= TARGET_BACKUP_SPEEDUP and size_ratio <= 1.0,
        "backup_vs_limit": vs_limit <= TARGET_BACKUP_VS_LIMIT,
        "restore_speedup": speed_r >= TARGET_RESTORE_SPEEDUP,
        "memory": rss < TARGET_RSS_MB,
    }
    lines += [
        "",
        f"backup : {speed_b:.2f}x faster than pg_dump | gzip (target >= {TARGET_BACKUP_SPEEDUP}x), "
        f"size {size_ratio:.3f} of it (target <= 1): {verdict(res['targets']['backup_speedup'])}",
        f"backup : {vs_limit:.2f}x the time of pg_dump > /dev/null (target <= {TARGET_BACKUP_VS_LIMIT}x): "
        f"{verdict(res['targets']['backup_vs_limit'])}",
        f"restore: {speed_r:.2f}x faster than gunzip | psql, checks and swap included (target >= "
        f"{TARGET_RESTORE_SPEEDUP}x): {verdict(res['targets']['restore_speedup'])}",
        f"restore: {floor_line(res)}",
        f"memory : module process peak RSS {rss:.0f} MB (target < {TARGET_RSS_MB} MB): "
        f"{verdict(res['targets']['memory'])}",
        f"(module durations; with ansible's own start-up: backup {ours_b['ansible_wall_seconds']:.2f} s, "
        f"restore {ours_r['ansible_wall_seconds']:.2f} s; restore phases {ours_r['timings']})",
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--scale", default="large", choices=["tiny", "small", "medium", "large"])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--jobs", type=int, default=2, help="parallel jobs of our backup and restore (default 2)")
    parser.add_argument("--workdir", help="where the cluster and the backups go (default: a new temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the cluster directory afterwards")
    parser.add_argument("--no-offsite", action="store_true", help="skip the offsite push/pull beside aws s3 cp")
    opts = parser.parse_args()
    for tool in ("initdb", "pg_ctl", "pg_dump", "psql"):
        if not (PG_BINDIR / tool).exists():
            print(f"{PG_BINDIR / tool} is missing: install postgresql-15 (make bench does)", file=sys.stderr)
            return 2
    base = Path(opts.workdir or tempfile.mkdtemp(prefix="tokotani-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    work = base / "work"
    work.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(base / "pg", free_port())
    started = datetime.datetime.now(datetime.UTC)
    res = {
        "started_at": started.isoformat(),
        "scale": opts.scale,
        "seed": opts.seed,
        "jobs": opts.jobs,
        "host": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_before": os.getloadavg()},
    }
    log(f"cluster in {cluster.base}")
    cluster.start()
    try:
        res["server_version"] = cluster.psql("SHOW server_version;")
        res["data"] = load_shop(cluster, opts.scale, opts.seed)
        res["backup"] = run_backups(cluster, work, opts.jobs)
        res["restore"] = run_restores(cluster, work, res["backup"]["ours_backup"]["path"], opts.jobs)
        if not opts.no_offsite:
            log("offsite: push and pull of our backup, plain and encrypted, beside aws s3 cp (moto on loopback)")
            # best of 3: a 128 MB transfer takes about a second, where one run is mostly process start-up
            # over HTTPS (what a real endpoint speaks: each part read once) and over plain HTTP (botocore
            # reads each part three times there: CRC32 header, SigV4 payload hash, send)
            for transport, key in (("https", "offsite"), ("http", "offsite_http")):
                (work / key).mkdir()
                res[key] = run_offsite_bench(
                    Path(res["backup"]["ours_backup"]["path"]), workdir=work / key, runs=3, transport=transport
                )
        res["data"]["sql_bytes"] = sum(len(chunk) for chunk in iter(_gunzip_chunks(work / "plan.sql.gz")))
    finally:
        cluster.stop()
        if not opts.keep:
            shutil.rmtree(base, ignore_errors=True)
    res["host"]["loadavg_after"] = os.getloadavg()
    lines = report(res)
    print()
    print(
        f"shop database {res['data']['database_size'] / 1e6:.0f} MB on disk, "
        f"{res['data']['sql_bytes'] / 1e6:.0f} MB of SQL, scale {opts.scale}, {os.cpu_count()} CPUs, "
        f"load {res['host']['loadavg_before'][0]:.2f} before / {res['host']['loadavg_after'][0]:.2f} after"
    )
    print("\n".join(lines))
    for key in ("offsite", "offsite_http"):
        if key in res:
            print_offsite_table(res[key])
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"bench-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(res, indent=2, default=str) + "\n")
    print(f"\nresults: {out}")
    return 0


def _gunzip_chunks(path: Path):
    with gzip.open(path, "rb") as handle:
        while True:
            chunk = handle.read(1 << 20)
            if not chunk:
                return
            yield chunk


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
