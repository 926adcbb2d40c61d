"""Real identity providers on loopback, started by the test suite itself.

Two Node.js servers, installed from tests/package.json and tests/package-lock.json:

- `oidc_provider`: oidc-provider (OpenID Certified) with its development login pages, opaque
  access tokens, revocation, introspection and client credentials (oidc/provider.mjs);
- `mock_server`: oauth2-mock-server 8.x whose userinfo answers the tests set (oidc/mock_server.mjs).

The packages are installed with `npm ci` when tests/node_modules is missing or older than the
lock file, so a clean clone needs nothing but Node.js and npm. Each server listens on a port the
system picks (no race between choosing a port and binding it) and reports its URL in a
`ready URL` line. A server that cannot be installed or started fails the tests that need it,
with its output; it is never skipped, so a broken setup cannot pass as green.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
SERVERS = Path(__file__).resolve().parent / "oidc"
LOCK = TESTS / "package-lock.json"
INSTALLED = TESTS / "node_modules" / ".package-lock.json"  # written by npm at the end of `npm ci`
READY_TIMEOUT = 30.0
NPM_TIMEOUT = 300.0

ACCESS_TTL = 600  # seconds: tokens of the main client outlive the whole run
SHORT_ACCESS_TTL = 2  # seconds: tokens of the short client expire within one test


def _executable(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"`{name}` is not on PATH: the integration tests run real OpenID Connect providers "
            "on Node.js (20.19 or later); install Node.js and npm",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def node_packages() -> Path:
    """tests/node_modules as the lock file describes it, installed by `npm ci` when stale."""
    _executable("node")
    if _installed():
        return TESTS / "node_modules"
    npm = _executable("npm")
    # Test runs that start together (xdist workers, a second checkout's run) install once: the
    # lock file itself is the mutex, so no lock file of our own is left behind.
    with LOCK.open("rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _installed():
            _npm_ci(npm)
    return TESTS / "node_modules"


def _installed() -> bool:
    return INSTALLED.exists() and INSTALLED.stat().st_mtime >= LOCK.stat().st_mtime


def _npm_ci(npm: str) -> None:
    command = [npm, "ci", "--prefix", str(TESTS), "--no-audit", "--no-fund"]
    try:
        result = subprocess.run(
            command,
            cwd=TESTS.parent,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`npm ci` did not finish in {NPM_TIMEOUT:.0f} s:\n{exc.output}", pytrace=False)
    if result.returncode != 0 or not INSTALLED.exists():
        pytest.fail(
            f"`{' '.join(command)}` failed (exit {result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}",
            pytrace=False,
        )


class NodeServer:
    """One server script run by node, stopped with SIGTERM; its output is kept for failures."""

    def __init__(self, name: str, script: Path, env: dict[str, str]) -> None:
        self.name = name
        self.url = ""
        self._lines: list[str] = []
        self._ready = threading.Event()
        self._process = subprocess.Popen(
            [_executable("node"), str(script), "0"],  # 0: any free port on 127.0.0.1
            cwd=script.parent,
            env={**os.environ, **env, "EXIT_WITH_STDIN": "1"},
            stdin=subprocess.PIPE,  # never written; closed when this process ends, however
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, name=f"{name} output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.append(line)
            if line.startswith("ready ") and not self._ready.is_set():
                self.url = line.split()[1]
                self._ready.set()
        self._ready.set()  # the process ended: stop waiting for a ready line

    def wait_ready(self) -> None:
        ready = self._ready.wait(READY_TIMEOUT) and bool(self.url)
        if not ready or self._process.poll() is not None:
            self.stop()
            state = (
                f"exited with {self._process.returncode}"
                if self._process.returncode is not None
                else f"printed no ready line in {READY_TIMEOUT:.0f} s"
            )
            pytest.fail(f"{self.name} did not start: it {state}\n{self.output()}", pytrace=False)

    def output(self) -> str:
        return "".join(self._lines)

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            if self._process.stdin is not None:
                self._process.stdin.close()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._reader.join(timeout=5)


@dataclass(frozen=True)
class OidcProvider:
    """The running oidc-provider: its issuer URL and the clients registered with it."""

    issuer: str
    client_id: str  # access tokens live ACCESS_TTL seconds
    short_client_id: str  # access tokens live SHORT_ACCESS_TTL seconds
    client_secret: str
    short_access_ttl: int
    server: NodeServer

    @property
    def redirect_uri(self) -> str:
        return f"{self.issuer}/cb"


@dataclass(frozen=True)
class MockServer:
    """The running oauth2-mock-server: its issuer URL (userinfo is `{url}/userinfo`)."""

    url: str
    server: NodeServer


def _started(name: str, script: str, env: dict[str, str]) -> NodeServer:
    server = NodeServer(name, SERVERS / script, env)
    server.wait_ready()
    return server


def _oidc_provider(host: str) -> Iterator[OidcProvider]:
    secret = secrets.token_urlsafe(24)
    server = _started(
        f"oidc-provider on {host}",
        "provider.mjs",
        {
            "HOST": host,
            "ACCESS_TTL": str(ACCESS_TTL),
            "SHORT_ACCESS_TTL": str(SHORT_ACCESS_TTL),
            "CLIENT_SECRET": secret,
        },
    )
    try:
        yield OidcProvider(
            issuer=server.url,
            client_id="policyauth",
            short_client_id="policyauth-short",
            client_secret=secret,
            short_access_ttl=SHORT_ACCESS_TTL,
            server=server,
        )
    finally:
        server.stop()


@pytest.fixture(scope="session")
def oidc_provider(node_packages: Path) -> Iterator[OidcProvider]:
    yield from _oidc_provider("127.0.0.1")


@pytest.fixture(scope="session")
def oidc_provider_127_0_0_2(node_packages: Path) -> Iterator[OidcProvider]:
    """A second provider on another loopback address (127.0.0.0/8 is all loopback)."""
    yield from _oidc_provider("127.0.0.2")


@pytest.fixture(scope="session")
def mock_server(node_packages: Path) -> Iterator[MockServer]:
    server = _started("oauth2-mock-server", "mock_server.mjs", {})
    try:
        yield MockServer(url=server.url, server=server)
    finally:
        server.stop()
