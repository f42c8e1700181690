"""Helpers for the integration tests that are not fixtures: the cluster handle, ports, HTTP polling, processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"


def quote_ident(name: str) -> str:
    """A PostgreSQL identifier, double-quoted."""
    return '"' + name.replace('"', '""') + '"'


@dataclass
class PgCluster:
    """A running throwaway cluster; every helper talks to it over 127.0.0.1 with the superuser's password."""

    host: str
    port: int
    socket_dir: Path
    superuser: str
    password: str = field(repr=False)
    bindir: Path
    datadir: Path
    logfile: Path

    def dsn(self, db: str = "postgres", user: str | None = None, password: str | None = None) -> str:
        """A libpq URI for db (the superuser's, unless user/password are given)."""
        user = user or self.superuser
        password = self.password if password is None else password
        return f"postgresql://{user}:{password}@{self.host}:{self.port}/{db}"

    def env(self, db: str = "postgres") -> dict[str, str]:
        """os.environ plus PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE for the cluster's client tools."""
        return dict(
            os.environ,
            PGHOST=self.host,
            PGPORT=str(self.port),
            PGUSER=self.superuser,
            PGPASSWORD=self.password,
            PGDATABASE=db,
        )

    def psql(self, sql: str, db: str = "postgres") -> str:
        """Run sql with the cluster's psql (unaligned, tuples only); returns stdout, raises on any error."""
        argv = [str(self.bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", db]
        result = subprocess.run(
            argv, input=sql, capture_output=True, text=True, env=self.env(db), timeout=600, check=False
        )
        if result.returncode != 0:
            raise AssertionError(f"psql on {db} failed (rc {result.returncode}): {result.stderr.strip()}\nSQL: {sql}")
        return result.stdout

    def createdb(self, name: str, owner: str | None = None) -> None:
        owner_clause = f" OWNER {quote_ident(owner)}" if owner else ""
        self.psql(f"CREATE DATABASE {quote_ident(name)}{owner_clause};")

    def connect(self, db: str = "postgres"):
        """A psycopg2 connection to db as the superuser."""
        return psycopg2.connect(host=self.host, port=self.port, user=self.superuser, password=self.password, dbname=db)


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on host right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self):
        return json.loads(self.body)


def http_request(
    url: str,
    method: str = "GET",
    body: bytes | dict | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> HttpResponse:
    """One HTTP request to a loopback URL; any status (4xx/5xx included) is returned, not raised."""
    if not url.startswith(f"http://{LOOPBACK}:"):
        raise ValueError(f"integration tests only talk to {LOOPBACK}, not {url}")
    headers = dict(headers or {})
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url, data=body, method=method, headers=headers)  # noqa: S310 (loopback http)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return HttpResponse(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as err:
        return HttpResponse(err.code, dict(err.headers), err.read())


def wait_for_http(url: str, status: int = 200, timeout: float = 30, process: subprocess.Popen | None = None):
    """Poll url until it answers with status; fail with the last answer (and the process's exit) on timeout."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{process.args} exited with {process.returncode} while waiting for {url}")
        try:
            response = http_request(url, timeout=2)
        except OSError as err:
            last = repr(err)
        else:
            if response.status == status:
                return response
            last = f"HTTP {response.status}: {response.body[:300]!r}"
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer HTTP {status} within {timeout} s; last: {last}")


def wait_until(predicate, timeout: float = 30, interval: float = 0.2, message: str = "condition"):
    """Call predicate until it returns something truthy, and return that; fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message}: not true within {timeout} s (last value {result!r})")
        time.sleep(interval)


def stop_process(process: subprocess.Popen, timeout: float = 10) -> int:
    """SIGTERM, then SIGKILL after timeout; returns the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    return process.returncode


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file, for assertion messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"({path} does not exist)"
