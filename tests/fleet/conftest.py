"""Real servers for the fleet tests: one redis-server and one PostgreSQL per session.

Each runs on a free loopback port in its own temporary folder and is stopped by its pid. The
Debian packages come from `make test` (target `fleet-packages`); a missing server skips the
fleet tests on a developer machine but FAILS under CI=true, where a skip would hide that the
shared cache and the shared token store were never exercised.

PostgreSQL refuses to run as root, and CI runs as root: initdb and postgres run as the
`postgres` system user, in a folder under /tmp that user owns (pytest's own tmp folders are
0700 under root, so that user could not even reach them).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def _missing(what: str) -> None:
    """Fail under CI (a skip there would hide untested code), skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (CI=true: the fleet tests never skip)")
    pytest.skip(what)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop by pid: a fast shutdown, then a kill if it lingers."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass
class RedisServer:
    """A running redis-server: its URL, and start/stop for the outage tests."""

    port: int
    folder: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        server = shutil.which("redis-server")
        assert server is not None
        self.proc = subprocess.Popen(
            [
                server,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port, self.proc, "redis-server")

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        _missing("redis-server is not installed (make test installs it as root)")
    folder = Path(tempfile.mkdtemp(prefix="policyauth-redis-"))
    server = RedisServer(port=_free_port(), folder=folder)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _pg_bin() -> Path | None:
    """initdb is not on PATH in Debian: it lives in the versioned folder of the package."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@dataclass
class PostgresServer:
    """A running PostgreSQL owned by the `postgres` user, trusting loopback connections."""

    port: int
    folder: Path
    bin: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def as_postgres(self, *argv: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *argv]
        return list(argv)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.as_postgres(
                str(self.bin / "postgres"),
                "-D",
                str(self.folder / "data"),
                "-p",
                str(self.port),
                "-h",
                "127.0.0.1",
                "-k",
                str(self.folder),
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port, self.proc, "postgres")
        # Listening is not ready: it answers "the database system is starting up" a while.
        deadline = time.monotonic() + 20
        while subprocess.run(
            [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
        ).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError("postgres did not become ready within 20s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None


@contextlib.contextmanager
def _postgres(prefix: str, password: str | None = None) -> Iterator[PostgresServer]:
    """A new PostgreSQL cluster in a folder the `postgres` user owns: trusting local
    connections, or with scram-sha-256 and `password` for the postgres role."""
    pg_bin = _pg_bin()
    if pg_bin is None:
        _missing("postgresql is not installed (make test installs it as root)")
        raise AssertionError("unreachable")
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    auth = ["--auth=trust"]
    if password is not None:
        password_file = folder / "password"
        password_file.write_text(password + "\n", encoding="utf-8")
        auth = ["--auth=scram-sha-256", f"--pwfile={password_file}"]
    if os.geteuid() == 0:
        for path in folder, *folder.iterdir():
            shutil.chown(path, "postgres", "postgres")
    server = PostgresServer(port=_free_port(), folder=folder, bin=pg_bin)
    try:
        subprocess.run(
            server.as_postgres(
                str(pg_bin / "initdb"),
                "-D",
                str(folder / "data"),
                "-U",
                "postgres",
                *auth,
                "-E",
                "UTF8",
                "--no-sync",
            ),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with _postgres("policyauth-pg-") as server:
        yield server


PG_PASSWORD = "pg-pass-5ecret"  # the password of `own_postgres`; tests check it never leaks


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of the test's own, with password authentication (scram-sha-256): for the
    tests that stop the server (the session's one is shared) or need a refused password."""
    with _postgres("policyauth-pg-own-", PG_PASSWORD) as server:
        yield server
