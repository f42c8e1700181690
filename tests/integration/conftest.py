"""Session fixtures for the integration tests: a real PostgreSQL 15 cluster and the app's npm install.

The cluster lives in a temporary directory owned by the ``postgres`` system user (initdb
refuses to run as root), listens only on 127.0.0.1 on a random free port with scram-sha-256
password authentication, trusts its unix socket (inside the temporary directory), and is
stopped and removed at the end of the session.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import LOOPBACK, ROOT, PgCluster, free_port

APP_SRC = ROOT / "sandbox" / "app"
PG_BINDIR = Path("/usr/lib/postgresql/15/bin")
PG_OS_USER = "postgres"
SUPERUSER = "postgres"
START_ATTEMPTS = 3


def _missing_tooling_message() -> str | None:
    missing = [tool for tool in ("initdb", "pg_ctl", "postgres", "psql") if not (PG_BINDIR / tool).is_file()]
    if missing:
        return (
            f"PostgreSQL 15 server binaries not found in {PG_BINDIR} (missing: {', '.join(missing)}). "
            "`make integration` installs them (Debian: apt-get install postgresql-15)."
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_OS_USER)
        except KeyError:
            return (
                f"the '{PG_OS_USER}' system user does not exist; initdb cannot run as root. "
                "`make integration` installs postgresql-15, which creates it."
            )
        if shutil.which("runuser") is None:
            return "runuser (util-linux) is missing: it is needed to run initdb as the postgres user"
    return None


def _as_postgres(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", PG_OS_USER, "--", *argv]
    return argv


def _run(argv: list[str], cwd: Path, what: str) -> None:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed (rc {result.returncode}): {result.stderr.strip() or result.stdout.strip()}")


def _initdb(base: Path, password: str) -> Path:
    datadir = base / "data"
    pwfile = base / "pwfile"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    if os.geteuid() == 0:
        shutil.chown(pwfile, PG_OS_USER, PG_OS_USER)
    try:
        _run(
            _as_postgres(
                [
                    str(PG_BINDIR / "initdb"),
                    "--pgdata",
                    str(datadir),
                    "--username",
                    SUPERUSER,
                    "--pwfile",
                    str(pwfile),
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-sync",
                ]
            ),
            base,
            "initdb",
        )
    finally:
        pwfile.unlink()
    (datadir / "pg_hba.conf").write_text(
        "# tests/integration/conftest.py: trusted unix socket, scram-sha-256 on 127.0.0.1 only\n"
        "local   all           all                 trust\n"
        "host    all           all   127.0.0.1/32  scram-sha-256\n"
        "local   replication   all                 trust\n"
        "host    replication   all   127.0.0.1/32  scram-sha-256\n"
    )
    return datadir


def _configure(datadir: Path, port: int, socket_dir: Path) -> None:
    with (datadir / "postgresql.auto.conf").open("a") as conf:
        conf.write(
            f"listen_addresses = '{LOOPBACK}'\n"
            f"port = {port}\n"
            f"unix_socket_directories = '{socket_dir}'\n"
            "password_encryption = 'scram-sha-256'\n"
            "fsync = off\n"  # a test cluster never survives a crash anyway
            "synchronous_commit = off\n"
        )


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    problem = _missing_tooling_message()
    if problem:
        pytest.fail(problem, pytrace=False)

    base = Path(tempfile.mkdtemp(prefix="tokotani-pg-"))
    base.chmod(0o700)
    if os.geteuid() == 0:
        shutil.chown(base, PG_OS_USER, PG_OS_USER)
    socket_dir = base / "sock"
    socket_dir.mkdir(mode=0o700)
    if os.geteuid() == 0:
        shutil.chown(socket_dir, PG_OS_USER, PG_OS_USER)
    logfile = base / "postgresql.log"
    password = secrets.token_urlsafe(24)
    pg_ctl = str(PG_BINDIR / "pg_ctl")
    datadir = base / "data"
    started = False
    try:
        datadir = _initdb(base, password)
        # The port is free when picked but could be taken before the server binds it: retry.
        for attempt in range(1, START_ATTEMPTS + 1):
            port = free_port()
            _configure(datadir, port, socket_dir)
            try:
                _run(
                    _as_postgres([pg_ctl, "-D", str(datadir), "-l", str(logfile), "-w", "-t", "60", "start"]),
                    base,
                    "pg_ctl start",
                )
            except RuntimeError as err:
                if attempt == START_ATTEMPTS:
                    raise RuntimeError(f"{err}\nserver log:\n{logfile.read_text(errors='replace')[-3000:]}") from None
                continue
            started = True
            break
        yield PgCluster(
            host=LOOPBACK,
            port=port,
            socket_dir=socket_dir,
            superuser=SUPERUSER,
            password=password,
            bindir=PG_BINDIR,
            datadir=datadir,
            logfile=logfile,
        )
    finally:
        if started:
            subprocess.run(
                _as_postgres([pg_ctl, "-D", str(datadir), "-m", "fast", "-w", "stop"]),
                cwd=base,
                capture_output=True,
                timeout=120,
                check=False,
            )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def shop_app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of sandbox/app with its dependencies installed by `npm ci` (the repository gets no node_modules)."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.fail(
            "Node.js and npm are required; `make integration` installs them (Debian: nodejs npm)", pytrace=False
        )
    app = tmp_path_factory.mktemp("shop") / "app"
    shutil.copytree(APP_SRC, app, ignore=shutil.ignore_patterns("node_modules", ".next", ".env"))
    result = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"], cwd=app, capture_output=True, text=True, timeout=600, check=False
    )
    if result.returncode != 0:
        pytest.fail(
            f"`npm ci` for the stand-in app failed in {app} (rc {result.returncode}); is the npm registry reachable?\n"
            f"{result.stderr[-3000:]}",
            pytrace=False,
        )
    return app
