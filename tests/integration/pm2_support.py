"""Shared parts of the pm2 integration tests: a real pm2 from npm, a throwaway daemon, small node apps.

- pm2 is installed once from npm into a cache under /tmp keyed by its version (reused by later
  sessions, so the tier stays fast); never a global install.
- Every test module gets its own PM2_HOME in a temporary directory and kills that daemon at the
  end (`pm2 kill`), so the tests never touch ~/.pm2 of the user running them.
- The apps: a healthy HTTP server, a worker, one that crashes at start and one that exits after
  3 seconds, and an ecosystem file with two apps whose `env` holds secrets (random per session).
- The modules run through ansible-playbook (JSON stdout callback), never by importing them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import ROOT, free_port

PM2_VERSION = os.environ.get("TOKOTANI_TEST_PM2_VERSION", "7.0.4")
PM2_CACHE = Path(tempfile.gettempdir()) / "tokotani-pm2-cache" / PM2_VERSION
VENV_BIN = ROOT / ".venv" / "bin"

HEALTHY_JS = """
const http = require('http');
const port = Number(process.env.PORT || 0);
http.createServer((req, res) => {
  if (req.url === '/api/health') {  // as the shop's: 200 with the database ok
    res.writeHead(200, {'Content-Type': 'application/json'});
    res.end(JSON.stringify({status: 'ok', database: 'ok', version: 'pm2-test'}));
    return;
  }
  res.writeHead(200, {'Content-Type': 'text/plain'}); res.end('ok\\n');
})
  .listen(port, '127.0.0.1', () => console.log('listening on ' + port));
"""
WORKER_JS = """
console.log('worker up');
setInterval(() => {}, 1000);
"""
CRASH_JS = """
console.log('crasher starting');
console.error('FATAL: cannot reach the database (crash-at-start test app)');
process.exit(1);
"""
EXIT3_JS = """
console.log('flaky up');
setTimeout(() => { console.error('flaky: exiting after 3 s'); process.exit(3); }, 3000);
"""


def install_pm2() -> Path:
    """pm2 PM2_VERSION from npm, installed once into PM2_CACHE (a lock keeps parallel sessions apart)."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.fail(
            "Node.js and npm are required for the pm2 tests (Debian: apt-get install nodejs npm)", pytrace=False
        )
    PM2_CACHE.parent.mkdir(parents=True, exist_ok=True)
    executable = PM2_CACHE / "node_modules" / ".bin" / "pm2"
    package = PM2_CACHE / "node_modules" / "pm2" / "package.json"
    with open(PM2_CACHE.parent / f".{PM2_VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if executable.exists() and package.exists() and json.loads(package.read_text())["version"] == PM2_VERSION:
            return executable
        shutil.rmtree(PM2_CACHE, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{PM2_VERSION}-", dir=PM2_CACHE.parent))
        result = subprocess.run(
            ["npm", "install", "--prefix", str(staging), "--no-audit", "--no-fund", "--no-save", f"pm2@{PM2_VERSION}"],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            pytest.fail(
                f"`npm install pm2@{PM2_VERSION}` failed (rc {result.returncode}); is the npm registry reachable?\n"
                f"{result.stderr[-2000:]}",
                pytrace=False,
            )
        staging.rename(PM2_CACHE)
    return executable


@dataclass
class Pm2Home:
    """A throwaway pm2 daemon: its PM2_HOME and the pm2 executable."""

    home: Path
    executable: Path
    apps: Path
    secrets: dict[str, str] = field(default_factory=dict)
    port: int = 0

    def env(self) -> dict[str, str]:
        return dict(os.environ, PM2_HOME=str(self.home))

    def pm2(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(self.executable), *args],
            capture_output=True,
            text=True,
            env=self.env(),
            cwd=self.apps,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"pm2 {' '.join(args)} failed (rc {result.returncode}): {result.stderr}")
        return result

    def jlist(self) -> dict[str, dict]:
        """{name: {status, pid, restarts, cwd, script}} straight from `pm2 jlist` (not from the modules)."""
        if not (self.home / "pm2.pid").exists():
            return {}
        out = self.pm2("jlist").stdout
        procs = json.loads(out[out.index("[") :])
        return {
            p["name"]: {
                "status": p["pm2_env"]["status"],
                "pid": p["pid"],
                "restarts": p["pm2_env"]["restart_time"],
                "cwd": p["pm2_env"].get("pm_cwd"),
                "script": p["pm2_env"].get("pm_exec_path"),
            }
            for p in procs
        }

    def options(self, **extra) -> dict:
        """Module options that point at this daemon and this pm2."""
        return {"pm2_home": str(self.home), "executable": str(self.executable), **extra}

    def kill(self) -> None:
        pid_file = self.home / "pm2.pid"
        if not pid_file.exists():
            return
        pid = int(pid_file.read_text().strip() or 0)
        self.pm2("kill", check=False)
        # Only if that pid is still this daemon (pm2 kill failed), never a process that reused the pid.
        with contextlib.suppress(OSError):
            if pid and str(self.home).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)


def write_apps(base: Path, port: int, values: dict[str, str]) -> None:
    """The node apps, the two-app ecosystem with secrets, and small ecosystems for the other tests."""
    base.mkdir(parents=True, exist_ok=True)
    for name, code in (("healthy.js", HEALTHY_JS), ("worker.js", WORKER_JS)):
        (base / name).write_text(code)
    (base / "ecosystem.config.js").write_text(
        "module.exports = {\n"
        "  apps: [\n"
        "    {\n"
        "      name: 'web', script: 'healthy.js', cwd: __dirname, autorestart: true,\n"
        f"      args: ['--listen', '127.0.0.1', '--api-token', '{values['ARG_TOKEN']}'],\n"
        "      env: {\n"
        f"        PORT: '{port}',\n"
        f"        NEXTAUTH_SECRET: '{values['NEXTAUTH_SECRET']}',\n"
        f"        DATABASE_URL: 'postgres://shop:{values['DB_PASSWORD']}@127.0.0.1:5432/shop',\n"
        "      },\n"
        "    },\n"
        "    {\n"
        "      name: 'worker', script: 'worker.js', cwd: __dirname,\n"
        f"      env: {{ ADMIN_TOKEN: '{values['ADMIN_TOKEN']}' }},\n"
        "    },\n"
        "  ],\n"
        "};\n"
    )
    crash = base / "crash"
    crash.mkdir()
    (crash / "crash.js").write_text(CRASH_JS)
    (crash / "ecosystem.config.js").write_text(
        "module.exports = { apps: [{ name: 'crasher', script: 'crash.js' }] };\n"
    )
    flaky = base / "flaky"
    flaky.mkdir()
    (flaky / "exit3.js").write_text(EXIT3_JS)
    (flaky / "ecosystem.config.js").write_text("module.exports = { apps: [{ name: 'flaky', script: 'exit3.js' }] };\n")
    for release in ("release-1", "release-2"):
        rel = base / release
        rel.mkdir()
        (rel / "worker.js").write_text(WORKER_JS)
        (rel / "ecosystem.config.js").write_text(
            "module.exports = { apps: [{ name: 'shop', script: 'worker.js', cwd: __dirname }] };\n"
        )


@contextlib.contextmanager
def pm2_daemon(prefix: str):
    """A temporary PM2_HOME and apps directory; the daemon is killed and everything removed at the end."""
    executable = install_pm2()
    base = Path(tempfile.mkdtemp(prefix=f"tokotani-{prefix}-"))
    values = {key: secrets.token_hex(12) for key in ("NEXTAUTH_SECRET", "DB_PASSWORD", "ADMIN_TOKEN", "ARG_TOKEN")}
    port = free_port()
    write_apps(base / "apps", port, values)
    daemon = Pm2Home(home=base / "pm2home", executable=executable, apps=base / "apps", secrets=values, port=port)
    try:
        yield daemon
    finally:
        daemon.kill()
        shutil.rmtree(base, ignore_errors=True)


def ansible_env(extra: dict | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"),
        ANSIBLE_STDOUT_CALLBACK="json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_DEPRECATION_WARNINGS="0",
    )
    env.update(extra or {})
    return env


@dataclass
class PlaybookRun:
    results: list[dict]
    output: str
    rc: int


def run_tasks(tasks: list[dict], *flags: str, parse: bool = True, env: dict | None = None) -> PlaybookRun:
    """Run tasks on localhost (local connection, the venv's python) in one ansible-playbook run.

    Returns the host result of every task in order (with flags such as --check, --diff or -vvv), and
    the whole stdout+stderr. A failed task stops the play unless it has ignore_errors.
    """
    play = [
        {
            "name": "pm2 integration test",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars": {"ansible_python_interpreter": sys.executable},
            "tasks": tasks,
        }
    ]
    with tempfile.NamedTemporaryFile("w", suffix=".yml", prefix="pm2-test-", delete=False) as handle:
        json.dump(play, handle)
        playbook = handle.name
    try:
        proc = subprocess.run(
            [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", playbook, *flags],
            capture_output=True,
            text=True,
            env=ansible_env(env),
            timeout=300,
            check=False,
            cwd=ROOT,
        )
    finally:
        os.unlink(playbook)
    output = proc.stdout + proc.stderr
    results = []
    if parse:
        try:
            data = json.loads(proc.stdout[proc.stdout.index("{") :])
        except ValueError as err:
            raise AssertionError(f"no JSON from ansible-playbook (rc {proc.returncode}):\n{output[-4000:]}") from err
        for play_result in data["plays"]:
            for task in play_result["tasks"]:
                results.append(task["hosts"]["localhost"])
    return PlaybookRun(results=results, output=output, rc=proc.returncode)


def process_task(daemon: Pm2Home, title: str | None = None, ignore_errors: bool = False, **options) -> dict:
    """A tokotani.dr.pm2_process task for daemon."""
    task = {"tokotani.dr.pm2_process": daemon.options(**options)}
    if title:
        task["name"] = title
    if ignore_errors:
        task["ignore_errors"] = True
    return task


def jlist_task(daemon: Pm2Home) -> dict:
    """A task that runs `pm2 jlist` itself (to check effects between two module tasks of one playbook)."""
    return {
        "name": "pm2 jlist",
        "ansible.builtin.command": {"argv": [str(daemon.executable), "jlist"]},
        "environment": {"PM2_HOME": str(daemon.home)},
        "changed_when": False,
    }


def jlist_of(result: dict) -> dict[str, dict]:
    """{name: {status, pid, restarts, cwd, script}} from the result of jlist_task."""
    out = result["stdout"]
    return {
        p["name"]: {
            "status": p["pm2_env"]["status"],
            "pid": p["pid"],
            "restarts": p["pm2_env"]["restart_time"],
            "cwd": p["pm2_env"].get("pm_cwd"),
            "script": p["pm2_env"].get("pm_exec_path"),
        }
        for p in json.loads(out[out.index("[") :])
    }


def info_task(daemon: Pm2Home, **options) -> dict:
    return {"tokotani.dr.pm2_info": daemon.options(**options)}
