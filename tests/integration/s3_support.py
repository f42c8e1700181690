"""A real S3 API for the offsite tests: moto server on a random loopback port, and a proxy that stops mid-way.

Test modules declare their fixtures with the generator bodies here (serve_moto, moto_servers), so that
tests/integration/conftest.py, shared by every suite, stays as it is. boto3 talks to the servers through
``endpoint_url``; nothing is mocked in-process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
from backup_support import VENV_BIN, conn_args, drop_db, load_shop, module_argv, module_env, run_module
from botocore.config import Config
from helpers import LOOPBACK, free_port, http_request, stop_process, wait_for_http

MOTO = VENV_BIN / "moto_server"
REGION = "us-east-1"
START_ATTEMPTS = 3


@dataclass
class MotoServer:
    """One moto server process; credentials are whatever the test picks (moto accepts any by default)."""

    port: int
    process: subprocess.Popen
    log: Path
    access_key: str = "tokotani-test"
    secret_key: str = field(default_factory=lambda: "s3cr3t-" + secrets.token_hex(16), repr=False)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def client(self, access_key: str | None = None, secret_key: str | None = None):
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=Config(retries={"mode": "standard", "total_max_attempts": 2}),
        )

    def iam(self):
        return boto3.client(
            "iam",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def bucket(self, name: str | None = None) -> str:
        """Create a fresh bucket and return its name."""
        name = name or "tt-" + secrets.token_hex(6)
        self.client().create_bucket(Bucket=name)
        return name

    def set_auth(self, enforced: bool) -> None:
        """Turn moto's IAM authentication on (every request is checked) or off."""
        response = http_request(
            f"{self.url}/moto-api/reset-auth",
            method="POST",
            body=b"0" if enforced else b"inf",
            headers={"Content-Type": "text/plain"},
        )
        if response.status != 200:
            raise AssertionError(f"moto reset-auth failed: HTTP {response.status} {response.body[:200]!r}")

    def args(self, bucket: str, **extra) -> dict:
        """Module connection options for this server."""
        args = {
            "bucket": bucket,
            "endpoint_url": self.url,
            "region": REGION,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "retries": 1,
        }
        args.update(extra)
        return args

    def keys(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """key -> ETag of every object under prefix."""
        found = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents") or []:
                found[obj["Key"]] = obj["ETag"]
        return found

    def stop(self) -> None:
        stop_process(self.process, timeout=5)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def start_moto(workdir: Path) -> MotoServer:
    """Start moto_server on a random free loopback port and wait until it answers."""
    if not MOTO.exists():
        pytest.fail(f"{MOTO} is missing: `make venv` installs moto[server] from requirements.txt", pytrace=False)
    last = None
    for attempt in range(START_ATTEMPTS):
        port = free_port()
        log = workdir / f"moto-{port}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(MOTO), "-H", LOOPBACK, "-p", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = MotoServer(port=port, process=process, log=log)
        try:
            wait_for_http(f"{server.url}/", timeout=30, process=process)
        except AssertionError as err:
            last = err
            server.kill()
            if attempt == START_ATTEMPTS - 1:
                raise AssertionError(f"moto_server did not start: {err}\n{log.read_text(errors='replace')}") from err
            continue
        return server
    raise AssertionError(f"moto_server did not start: {last}")


def serve_moto(workdir: Path) -> Iterator[MotoServer]:
    """Body of a fixture: one moto server for the fixture's scope."""
    server = start_moto(workdir)
    yield server
    server.stop()


def moto_servers(workdir: Path) -> Iterator:
    """Body of a fixture: a function starting dedicated servers, all killed at the end."""
    servers = []

    def start() -> MotoServer:
        server = start_moto(workdir)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()


class StoppingProxy:
    """A TCP proxy in front of an endpoint that "stops the endpoint" after a number of bytes.

    Once ``stop_after`` bytes went through in the watched direction (``up``: client to server,
    ``down``: server to client), on_stop() runs (the test kills the moto server there), every
    proxied connection is cut and new connections are refused: from the client's side, the
    endpoint went away in the middle of a transfer.
    """

    def __init__(self, upstream_port: int, stop_after: int, direction: str = "up", on_stop=None):
        self.upstream_port = upstream_port
        self.stop_after = stop_after
        self.direction = direction
        self.on_stop = on_stop
        self.moved = 0
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((LOOPBACK, 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _addr = self.listener.accept()
            except OSError:
                return
            if self.stopped.is_set():
                client.close()
                return
            try:
                upstream = socket.create_connection((LOOPBACK, self.upstream_port), timeout=10)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets.extend((client, upstream))
            threading.Thread(target=self._pipe, args=(client, upstream, "up"), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, "down"), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        try:
            while not self.stopped.is_set():
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
                if direction == self.direction:
                    with self.lock:
                        self.moved += len(data)
                        trip = self.moved >= self.stop_after and not self.stopped.is_set()
                    if trip:
                        self.stop()
                        return
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        if self.stopped.is_set():
            return
        self.stopped.set()
        if self.on_stop:
            self.on_stop()
        with contextlib.suppress(OSError):
            self.listener.close()
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()

    def close(self) -> None:
        self.stop()


def shop_backups(cluster, directory: Path, db: str) -> Iterator[dict]:
    """Body of a fixture: two real backups of a tiny shop database db, the default directory format and
    the plan's .sql.gz, in directory; yields {dir, plain, directory} (names) and drops db at the end."""
    load_shop(cluster, db, fidelity=False)
    made = {}
    for fmt, extra in (("plain", {"compression": "gzip"}), ("directory", {})):
        result = run_module(
            "postgresql_backup", conn_args(cluster, database=db, backup_dir=str(directory), format=fmt, **extra)
        )
        assert not result.get("failed"), result
        made[fmt] = result["name"]
    yield {"dir": directory, "plain": made["plain"], "directory": made["directory"]}
    drop_db(cluster, db)


def restores(cluster, backup: str, source_db: str, target_db: str) -> None:
    """A pulled backup restores (postgresql_restore mode into) with the source's products; target_db is dropped."""
    restored = run_module(
        "postgresql_restore", conn_args(cluster, database=target_db, backup=backup, mode="into", confirm=True)
    )
    try:
        assert not restored.get("failed"), restored
        count = cluster.psql("SELECT count(*) FROM public.products;", db=target_db).strip()
        assert count == cluster.psql("SELECT count(*) FROM public.products;", db=source_db).strip()
    finally:
        drop_db(cluster, target_db)


def manifest_of(directory: Path, name: str) -> dict:
    return json.loads((directory / f"{name}.manifest.json").read_text())


def offsite(args: dict, check: bool = False, env: dict | None = None) -> dict:
    """Run tokotani.dr.backup_offsite through ansible; returns the host result."""
    return run_module("backup_offsite", args, check=check, env=env)


def offsite_many(runs: list[dict], check: bool = False) -> list[dict]:
    """Run independent backup_offsite calls at once (each is its own ansible process)."""
    results: list[dict | None] = [None] * len(runs)

    def one(index: int) -> None:
        results[index] = offsite(runs[index], check=check)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(runs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def verbose_outputs(module: str, runs: list[tuple[dict, dict]]) -> list[str]:
    """stdout and stderr of tokotani.dr.<module> at -vvv with the default callback, one per (args, env), run at once:
    what an operator's terminal or an AWX job log shows, for the tests that no secret is in it."""
    outputs: list[str] = []

    def run(args: dict, env: dict) -> None:
        proc = subprocess.run(
            module_argv(module, args, verbosity=3),
            capture_output=True,
            text=True,
            env=module_env({"ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default", **env}),
            timeout=120,
            check=False,
        )
        outputs.append(proc.stdout + proc.stderr)

    threads = [threading.Thread(target=run, args=pair) for pair in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outputs) == len(runs)
    return outputs


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tree_state(directory: Path) -> dict[str, str]:
    """relative path -> sha256 (or 'dir') of everything under directory (lock files left out)."""
    state = {}
    for path in sorted(directory.rglob("*")):
        rel = str(path.relative_to(directory))
        if path.name.startswith(".tokotani-backup."):
            continue
        state[rel] = "dir" if path.is_dir() else sha256_of(path)
    return state


def big_backup(template_dir: Path, template_name: str, dest: Path, size: int, started_at: str | None = None) -> str:
    """A single-file backup of size random bytes beside a copy of a real plain backup's manifest.

    The manifest is postgresql_backup's own (database, versions, tables ...), with the data, its
    size and sha256 (and, when given, the start time and name) replaced. Returns the new backup's name.
    """
    manifest = json.loads((template_dir / f"{template_name}.manifest.json").read_text())
    name = manifest["name"]
    if started_at:
        stamp = started_at.replace("T", "_").replace(":", "-").rstrip("Z")[:19]
        name = f"backup_{stamp}"
    ext = manifest["data"][len(manifest["name"]) :]
    data = dest / f"{name}{ext}"
    digest = hashlib.sha256()
    with data.open("wb") as handle:
        left = size
        while left > 0:
            chunk = os.urandom(min(left, 1 << 20))
            digest.update(chunk)
            handle.write(chunk)
            left -= len(chunk)
    data.chmod(0o600)
    manifest.update(name=name, data=data.name, size=size, sha256=digest.hexdigest())
    if started_at:
        manifest.update(started_at=started_at, finished_at=started_at)
    target = dest / f"{name}.manifest.json"
    target.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    target.chmod(0o600)
    return name


def wait_for(predicate, timeout: float = 30, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
