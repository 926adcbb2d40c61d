"""Running `policyauth serve` (and other servers) for tests: real processes on loopback ports
the OS chooses, raw-socket requests, and a policy with a token store.

A server that cannot start fails the test that needs it; nothing here skips.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs

from policyauth.identity import tokens

HOST = "127.0.0.1"
READY_TIMEOUT = 30.0

POLICY = """\
settings {
  realm        = "api"
  decision_log = "decisions.jsonl"
}

tokens automation {
  store = "automation.tokens"
}

route GET /public/** {
  public
}

route GET, POST /admin/** {
  auth automation
  allow if "staff" in groups
}

route GET /reports/** {
  auth automation
  allow if "reports" in groups
}

# A provider nobody answers for: its routes are 503 provider_unavailable.
provider down {  # policyauth: ignore[PA201]
  userinfo = "http://127.0.0.1:9/userinfo"
  username = $.sub
}

route GET /down/** {
  auth down
  allow
}
"""


@attrs.frozen
class Policy:
    """A policy file in its own folder, and the tokens its store knows."""

    path: Path
    staff: str  # alice, groups staff and `a,b`
    outsider: str  # bob, no group


def write_policy(folder: Path, text: str = POLICY) -> Policy:
    path = folder / "serve.policy"
    path.write_text(text)
    store = folder / "automation.tokens"
    staff, _ = tokens.create(store, "alice", ["staff", "a,b"])
    outsider, _ = tokens.create(store, "bob", [])
    return Policy(path, staff, outsider)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@attrs.define
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_ready(process: subprocess.Popen[bytes], port: int, path: str = "/healthz") -> bool:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with contextlib.suppress(OSError):
            status, _, _ = request(port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")
            if status == 200:
                return True
        time.sleep(0.1)
    return False


@contextlib.contextmanager
def serving(
    policy: Path, log: Path, args: Sequence[str] = (), env: dict[str, str] | None = None
) -> Iterator[Server]:
    """`policyauth serve POLICY` on a free port; stopped (SIGTERM, then SIGKILL) at the end."""
    port = free_port()
    command = [sys.executable, "-m", "policyauth.cli.main", "serve", str(policy)]
    command += ["--host", HOST, "--port", str(port), "--log-level", "warning", *args]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=policy.parent,
        )
    server = Server(process, port, log)
    try:
        if not wait_ready(process, port):
            raise AssertionError(f"policyauth serve did not start:\n{server.output()}")
        yield server
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def request(
    port: int, raw: str | bytes, timeout: float = 10.0
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Send `raw` (one HTTP/1.1 request) and read one response: status, headers, body."""
    data = raw.encode("latin-1") if isinstance(raw, str) else raw
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        if not lines or len(lines[0].split(" ")) < 2:
            return 0, [], b""
        status = int(lines[0].split(" ")[1])
        headers = [
            (n.strip().lower(), v.strip()) for n, _, v in (x.partition(":") for x in lines[1:])
        ]
        length = next((int(v) for n, v in headers if n == "content-length"), None)
        while length is not None and len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return status, headers, body


def header(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for n, v in headers if n == name]


def get(
    port: int, path: str, headers: Sequence[tuple[str, str]] = (), method: str = "GET"
) -> tuple[int, list[tuple[str, str]], bytes]:
    lines = [f"{method} {path} HTTP/1.1", "Host: auth.test", "Connection: close"]
    lines += [f"{n}: {v}" for n, v in headers]
    return request(port, "\r\n".join(lines) + "\r\n\r\n")
