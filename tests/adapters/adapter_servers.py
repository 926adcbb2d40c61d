"""What the adapter tests share: a deployment (policy and real API tokens) and real servers.

(A module with a unique name, put on sys.path by conftest.py, so test modules can import it.)

Every server-backed test runs its framework's app from tests/adapters/apps under a real server
(uvicorn for Starlette and FastAPI, waitress for Flask and Django) in a child process on a
loopback socket, and talks to it with httpx. The apps read the policy from `POLICYAUTH_POLICY`
and answer `/health` (public) with the paths their handlers served, so a test can prove that a
refused request never reached a handler. A server that does not start fails the tests that
need it, with its output; it is never skipped.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from policyauth.identity import tokens

HERE = Path(__file__).resolve().parent
POLICY = HERE / "adapters.policy"
READY_TIMEOUT = 30.0
HOST = "127.0.0.1"

# Targets the canonicalizer refuses (400) whatever the route; each would reach a handler of
# /reports/** or /admin/** if a server or framework resolved it first.
HOSTILE = [
    "/reports/%2e%2e/admin/users",
    "/reports/..%2Fadmin/users",
    "/reports/q3/%2e%2e/%2e%2e/admin/users",
    "/reports//q3",
    "/reports/q3;x=1",
]


@dataclass(frozen=True)
class Deployment:
    """A copy of adapters.policy with a token store holding one token per kind of caller."""

    policy: Path
    reporter: str  # ada: reporting
    contractor: str  # cole: contractors, admins, reporting
    admin: str  # root: admins
    revoked: str  # eve: reporting, revoked

    @staticmethod
    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    @staticmethod
    def basic(user: str, token: str) -> dict[str, str]:
        pair = base64.b64encode(f"{user}:{token}".encode()).decode("ascii")
        return {"Authorization": f"Basic {pair}"}


def deploy(folder: Path) -> Deployment:
    policy = folder / POLICY.name
    shutil.copyfile(POLICY, policy)
    store = folder / "adapters.tokens"
    reporter, _ = tokens.create(store, "ada", ["reporting"])
    contractor, _ = tokens.create(store, "cole", ["contractors", "admins", "reporting"])
    admin, _ = tokens.create(store, "root", ["admins"])
    revoked, _ = tokens.create(store, "eve", ["reporting"])
    tokens.revoke(store, revoked)
    return Deployment(policy, reporter, contractor, admin, revoked)


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@contextlib.contextmanager
def serving(
    server: str, target: str, policy: Path, log: Path, env: Mapping[str, str] | None = None
) -> Iterator[Server]:
    """`target` (`module:app` in tests/adapters/apps) under `server`, until the block ends;
    `env` adds to the child's environment."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((HOST, 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    environment = {
        **os.environ,
        **(env or {}),
        "POLICYAUTH_POLICY": str(policy),
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, str(HERE / "serve.py"), server, target, str(listener.fileno())]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=environment,
            pass_fds=[listener.fileno()],
        )
    listener.close()  # the child holds its own copy
    running = Server(f"http://{HOST}:{port}", process, log)
    try:
        _wait_ready(running, server, target)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_ready(server: Server, name: str, target: str) -> None:
    """Until `/health` answers 200; fails (never skips) if the server exits or takes too long."""
    deadline = time.monotonic() + READY_TIMEOUT
    problem = "no answer"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            problem = f"it exited with {server.process.returncode}"
            break
        try:
            response = httpx.get(f"{server.url}/health", timeout=2.0)
        except httpx.HTTPError as error:
            problem = f"{type(error).__name__}: {error}"
            time.sleep(0.1)
            continue
        if response.status_code == 200:
            return
        problem = f"/health answered {response.status_code}: {response.text[:200]}"
        break
    pytest.fail(
        f"{name} serving {target} did not start: {problem}\n{server.output()}", pytrace=False
    )


def hits(client: httpx.Client) -> list[str]:
    """The paths the app's handlers served so far (its public `/health` says)."""
    response = client.get("/health")
    assert response.status_code == 200, response.text
    served: list[str] = response.json()["hits"]
    return served
