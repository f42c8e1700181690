"""make bench, the rollback of plan 2.2: playbooks/rollback.yml on the sandbox, as an operator runs it.

On the sandbox that make sandbox-up leaves (inventories/sandbox, the app on v1.0.0 in pm2's fork mode):

  fork     deploy v1.0.1 (playbooks/deploy.yml), then time `ansible-playbook playbooks/rollback.yml -e confirm=true`
           back to v1.0.0, --rounds times: from the command's start to verified health (the healthy_at of the
           incident report it writes), each step of its timeline, the whole run (with the post-recovery checklist
           and the report), and the requests refused meanwhile;
  cluster  v1.0.0 and v1.0.1 deployed with PM2_NEXTJS_INSTANCES=2 (tokotani-nextjs in cluster mode, the current
           link as its cwd, sandbox/app/ecosystem.config.js), then the same rollback: pm2 reloads instead of
           recreating, and the refused requests should be none.

The requests: a loop inside the server container (loopback, GET /api/health every 20 ms, 5 s timeout), from just
before the rollback to its end; anything but 200 counts as failed. The plan's own rollback (npm run
phase10:rollback) is a manual step with an RTO of 15 min: that is the side-by-side figure. Leaves the sandbox on
v1.0.0 in fork mode again. Writes bench/results/rollback-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
RESULTS = ROOT / "bench" / "results"
INVENTORY = ROOT / "inventories" / "sandbox"
SERVER = "tokotani-server"
PLAN_RTO_SECONDS = 15 * 60
TARGET_RTO_SECONDS = 10.0
TARGET_FAILED_REQUESTS = 0
CLUSTER_ENV = '{"tokotani_app_env_extra": {"PM2_NEXTJS_INSTANCES": "2"}}'
STEPS = ("read", "switch", "processes", "health")

# The request loop, run by the server's python3: until STOP_FILE appears in the container (at most 10 min).
STOP_FILE = "/run/tokotani-bench-stop"
LOOP = r"""
import json, os, sys, time, urllib.request
stop, ok, failed, samples, end = sys.argv[1], 0, 0, [], time.monotonic() + 600
while not os.path.exists(stop) and time.monotonic() < end:
    try:
        with urllib.request.urlopen('http://127.0.0.1:3000/api/health', timeout=5) as answer:
            good = answer.status == 200
            why = answer.status
    except Exception as exc:
        good, why = False, repr(exc)[:120]
    if good:
        ok += 1
    else:
        failed += 1
        samples.append(why)
    time.sleep(0.02)
print(json.dumps({'ok': ok, 'failed': failed, 'samples': samples[:5]}))
"""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def playbook(name: str, *args: str) -> subprocess.CompletedProcess:
    argv = [str(VENV_BIN / "ansible-playbook"), "-i", str(INVENTORY), f"playbooks/{name}", *args]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-25:])
        raise SystemExit(f"ansible-playbook playbooks/{name} {' '.join(args)} failed (rc {result.returncode}):\n{tail}")
    return result


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([shutil.which("docker") or "docker", *args], capture_output=True, text=True, check=check)


class RequestLoop:
    """GET /api/health every 20 ms inside the server, from start() to stop()."""

    def __enter__(self):
        docker("exec", SERVER, "rm", "-f", STOP_FILE)
        self.proc = subprocess.Popen(
            [shutil.which("docker") or "docker", "exec", SERVER, "python3", "-c", LOOP, STOP_FILE],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)  # the loop is running before the rollback starts
        return self

    def __exit__(self, *exc):
        time.sleep(0.5)
        docker("exec", SERVER, "touch", STOP_FILE, check=False)
        out, err = self.proc.communicate(timeout=60)
        try:
            self.result = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            self.result = {"ok": 0, "failed": None, "samples": [err.strip()[-200:]]}
        return False


def rollback_round(reports: Path) -> dict:
    """One timed rollback.yml to the previous release, with the request loop around it."""
    with RequestLoop() as loop:
        started = time.time()
        playbook("rollback.yml", "-e", "confirm=true", "-e", f"report_dir={reports}")
        finished = time.time()
    report = json.loads((reports / "latest.json").read_text())
    scenario = report["scenarios"][0]
    steps = {s["step"]: s for s in scenario["recovery"]["steps"]}
    first = min(s["started_at"] for s in steps.values())
    return {
        "to_healthy_seconds": round(scenario["healthy_at"] - started, 2),
        "ansible_start_seconds": round(first - started, 2),
        "steps": {name: steps[name]["seconds"] for name in STEPS if name in steps},
        "wall_seconds": round(finished - started, 2),
        "after_healthy_seconds": round(finished - scenario["healthy_at"], 2),
        "requests": loop.result,
        "verdict": scenario["verdict"],
        "rpo_seconds": scenario["rpo"]["measured_seconds"],
        "to": scenario["disaster"]["description"],
    }


def run_mode(mode: str, rounds: int, reports: Path) -> list[dict]:
    extra = ["-e", CLUSTER_ENV] if mode == "cluster" else []
    out = []
    if mode == "cluster":
        log("cluster mode: v1.0.0 deployed again with PM2_NEXTJS_INSTANCES=2")
        playbook("deploy.yml", "-e", "version=v1.0.0", *extra)
    for n in range(1, rounds + 1):
        log(f"{mode} round {n}: deploy v1.0.1")
        playbook("deploy.yml", "-e", "version=v1.0.1", *extra)
        log(f"{mode} round {n}: ansible-playbook playbooks/rollback.yml -e confirm=true")
        out.append(rollback_round(reports))
        r = out[-1]
        log(
            f"{mode} round {n}: healthy {r['to_healthy_seconds']} s after the command started, "
            f"failed requests {r['requests']['failed']} of {r['requests']['ok'] + (r['requests']['failed'] or 0)}"
        )
    return out


def table(results: dict) -> list[str]:
    head = ["mode", "round", "to healthy", "ansible start", *STEPS, "whole run", "requests failed"]
    rows = []
    for mode, rounds in results["modes"].items():
        for n, r in enumerate(rounds, 1):
            req = r["requests"]
            rows.append(
                [
                    mode,
                    str(n),
                    f"{r['to_healthy_seconds']:.2f} s",
                    f"{r['ansible_start_seconds']:.2f} s",
                    *(f"{r['steps'].get(s, 0):.2f} s" for s in STEPS),
                    f"{r['wall_seconds']:.2f} s",
                    f"{req['failed']} of {req['ok'] + (req['failed'] or 0)}",
                ]
            )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("-" * len(lines[0]))
    lines.extend("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows)
    return lines


def summary(results: dict) -> list[str]:
    lines = []
    fork = [r["to_healthy_seconds"] for r in results["modes"].get("fork", [])]
    if fork:
        median = statistics.median(fork)
        lines.append(
            f"rollback RTO (command start to verified health), fork mode: median {median:.2f} s; the plan allows "
            f"{PLAN_RTO_SECONDS // 60} min ({PLAN_RTO_SECONDS / median:.0f}x faster); "
            f"target <= {TARGET_RTO_SECONDS:.0f} s: " + ("PASS" if median <= TARGET_RTO_SECONDS else "MISS")
        )
    for mode in ("fork", "cluster"):
        rounds = results["modes"].get(mode, [])
        if not rounds:
            continue
        failed = sum(r["requests"]["failed"] or 0 for r in rounds)
        total = sum(r["requests"]["ok"] + (r["requests"]["failed"] or 0) for r in rounds)
        target = f"; target {TARGET_FAILED_REQUESTS}: " + ("PASS" if failed <= TARGET_FAILED_REQUESTS else "MISS")
        lines.append(
            f"failed requests during the rollback, {mode} mode: {failed} of {total}"
            + (target if mode == "cluster" else " (fork mode recreates the process: expected)")
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed rollbacks per mode (default 3)")
    parser.add_argument(
        "--modes", default="fork,cluster", help="which rollbacks, comma-separated: fork, cluster (default both)"
    )
    opts = parser.parse_args()
    if docker("inspect", "-f", "{{.State.Running}}", SERVER, check=False).stdout.strip() != "true":
        print(f"the sandbox's {SERVER} is not running: make sandbox-up (make bench does)", file=sys.stderr)
        return 2
    started = datetime.datetime.now(datetime.UTC)
    results = {"started_at": started.isoformat(), "host": {"cpus": os.cpu_count()}, "modes": {}}
    reports = Path(tempfile.mkdtemp(prefix="tokotani-bench-incidents-"))
    try:
        log("the sandbox on v1.0.0 in fork mode (playbooks/deploy.yml)")
        playbook("deploy.yml", "-e", "version=v1.0.0")
        for mode in opts.modes.split(","):
            if mode not in ("fork", "cluster"):
                raise SystemExit(f"--modes: fork or cluster, not {mode!r}")
            results["modes"][mode] = run_mode(mode, opts.rounds, reports)
    finally:
        log("back to v1.0.0 in fork mode")
        playbook("deploy.yml", "-e", "version=v1.0.0")
        shutil.rmtree(reports, ignore_errors=True)
    print()
    print("\n".join(table(results)))
    print()
    print("\n".join(summary(results)))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"rollback-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
