"""Real servers for the middleware tests: uvicorn and waitress processes on loopback.

Each server is a subprocess of the test run, on a free port of 127.0.0.1, running one of the
applications in apps/ with the engine of one case file (see apps/table_engine.py). A server
that is not accepting connections within READY_SECONDS fails the test (never a skip), with the
server's own output in the message; every server is terminated when its fixture ends.

Requests go out with httpx, with the request target given exactly (httpcore's `target`
extension, so no client normalization of `..`, `//` or escapes), or, for what httpx cannot
send at all (a lower-case method, bytes outside visible ASCII in the target), over a raw socket.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

HERE = Path(__file__).resolve().parent
APPS = HERE / "apps"
ROOT = HERE.parents[1]
SERVER_CASES = APPS / "server.json"
READY_SECONDS = 20.0
STOP_SECONDS = 10.0
HOST = "127.0.0.1"
RAISING_TOKEN = "t-boom"

# Response headers that are not the decision's: the server's, the body's, the echo's.
NOT_DECISION_HEADERS = frozenset(
    {
        "date",
        "server",
        "content-type",
        "content-length",
        "cache-control",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "x-echo",
    }
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@dataclass
class Reply:
    """What the client saw: status, headers (lower-case names, in order) and body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def values(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]

    def header(self, name: str) -> str | None:
        found = self.values(name)
        assert len(found) <= 1, f"{name} sent {len(found)} times: {found}"
        return found[0] if found else None

    def json(self) -> Any:
        return json.loads(self.body)

    def echo(self) -> dict[str, Any]:
        """What the handler saw, from the `x-echo` header (HEAD responses have no body)."""
        text = self.header("x-echo")
        assert text is not None, (
            f"no echo: the handler did not answer ({self.status} {self.body!r})"
        )
        return json.loads(text)  # type: ignore[no-any-return]

    def decision_headers(self) -> dict[str, list[str]]:
        """The headers that came from the decision, by name, each name's values in order.

        Compared by name because waitress sorts response headers by name (a stable sort, so the
        order of one name's values, such as several challenges, is kept)."""
        grouped: dict[str, list[str]] = {}
        for name, value in self.headers:
            if name not in NOT_DECISION_HEADERS:
                grouped.setdefault(name, []).append(value)
        return grouped


RETRY_AFTER = {"retry-after": ["5"]}  # every 503 says when to come back


def expected_headers(pairs: Sequence[Sequence[str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name.lower(), []).append(value)
    return grouped


@dataclass
class Server:
    """One server process and what its handlers logged."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    output_path: Path
    _client: httpx.Client | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}"

    def log(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        lines = self.log_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def handled(self) -> list[dict[str, Any]]:
        """Every request a handler saw, in order (lifespan events left out)."""
        return [entry for entry in self.log() if "event" not in entry]

    def output(self) -> str:
        return self.output_path.read_text(encoding="utf-8", errors="replace")

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(base_url=self.base_url, timeout=10.0)
        return self._client

    def request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]] = (),
    ) -> Reply:
        """Send exactly this request line and these headers (duplicates and order kept)."""
        if method != method.upper() or not _visible_ascii(target):
            return self.raw_request(method, target, headers)
        request = self.client.build_request(
            method,
            "/",
            headers=[(name.encode(), value.encode()) for name, value in headers],
            extensions={"target": target.encode("ascii")},
        )
        response = self.client.send(request)
        return Reply(
            response.status_code,
            [(name.lower(), value) for name, value in response.headers.multi_items()],
            response.content,
        )

    def raw_request(
        self, method: str, target: str, headers: Sequence[tuple[str, str]] = ()
    ) -> Reply:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {HOST}:{self.port}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
        with socket.create_connection((HOST, self.port), timeout=10.0) as connection:
            connection.sendall(data)
            received = b""
            while chunk := connection.recv(65536):
                received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ")[1])
        parsed = []
        for line in header_lines:
            name, _, value = line.partition(":")
            parsed.append((name.strip().lower(), value.strip()))
        return Reply(status, parsed, body)

    def stop(self) -> int:
        """Terminate gracefully (SIGTERM, so lifespan shutdown runs), kill if it hangs."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_SECONDS)
        return int(self.process.returncode)


def _visible_ascii(text: str) -> bool:
    return all("\x21" <= char <= "\x7e" for char in text)


def start_server(
    kind: str,
    app: str,
    workdir: Path,
    *,
    cases: Path = SERVER_CASES,
    args: Sequence[str] = (),
    raising_token: str | None = None,
) -> Server:
    """Start `uvicorn` or `waitress` on `app` ("module:attribute" in apps/) and wait for it."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "handled.jsonl"
    output_path = workdir / "server-output.txt"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(APPS), env.get("PYTHONPATH")]))
    env["PA_TEST_CASES"] = str(cases)
    env["PA_TEST_LOG"] = str(log_path)
    env.pop("PA_TEST_RAISING_TOKEN", None)
    if raising_token:
        env["PA_TEST_RAISING_TOKEN"] = raising_token
    if kind == "uvicorn":
        command = [sys.executable, "-m", "uvicorn", app, "--host", HOST, "--port", str(port)]
        command += ["--lifespan", "on", "--no-access-log", *args]
        if "--http" not in args:
            # The expectations here are h11's (it hands odd targets on as they came);
            # tests/middleware/test_asgi_httptools.py runs the fast stack.
            command += ["--http", "h11"]
    elif kind == "waitress":
        command = [sys.executable, "-m", "waitress", f"--host={HOST}", f"--port={port}"]
        command += [*args, app]
    else:
        raise ValueError(kind)
    with open(output_path, "wb") as output:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    server = Server(f"{kind} {app} {' '.join(args)}".strip(), process, port, log_path, output_path)
    _wait_ready(server)
    return server


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(
                f"{server.name} exited with {server.process.returncode}:\n{server.output()}"
            )
        try:
            with socket.create_connection((HOST, server.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    server.stop()
    pytest.fail(f"{server.name} not ready after {READY_SECONDS:.0f} s:\n{server.output()}")


@contextmanager
def running(kind: str, app: str, workdir: Path, **options: Any) -> Iterator[Server]:
    server = start_server(kind, app, workdir, **options)
    try:
        yield server
    finally:
        server.stop()


class ServerPool:
    """Servers started on first use and kept for the session (the decision-table replay)."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._servers: dict[tuple[str, str, Path], Server] = {}
        self._failed: dict[tuple[str, str, Path], str] = {}

    def get(self, kind: str, app: str, cases: Path) -> Server:
        """The server for this app and case file; a server that would not start fails every
        test that needs it at once, with the first attempt's message, instead of being retried
        for each of hundreds of cases."""
        key = (kind, app, cases)
        if key in self._failed:
            pytest.fail(self._failed[key])
        if key not in self._servers:
            workdir = self._workdir / f"{kind}-{cases.stem}"
            try:
                self._servers[key] = start_server(kind, app, workdir, cases=cases)
            except pytest.fail.Exception as failure:
                self._failed[key] = str(failure)
                raise
        return self._servers[key]

    def close(self) -> None:
        for server in self._servers.values():
            server.stop()
        self._servers.clear()


# Requests to the server tests' policy (apps/server.policy) that the middleware must refuse,
# with what the client must see: (id, method, target, headers, status, reason, decision headers).
BEARER = 'Bearer realm="middleware"'
BASIC = 'Basic realm="middleware"'


def bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


DENIALS: list[tuple[str, str, str, list[tuple[str, str]], int, str, dict[str, list[str]]]] = [
    ("malformed path", "GET", "//admin/x", bearer("t-ann"), 400, "malformed_request", {}),
    (
        "method override header",
        "GET",
        "/public/x",
        [("X-HTTP-Method-Override", "DELETE")],
        400,
        "malformed_request",
        {},
    ),
    (
        "two authorization headers",
        "GET",
        "/admin/x",
        bearer("t-ann") + bearer("t-ann"),
        400,
        "invalid_request",
        {"www-authenticate": [BEARER + ', error="invalid_request"']},
    ),
    (
        "no credentials",
        "GET",
        "/admin/x",
        [],
        401,
        "no_credentials",
        {"www-authenticate": [BEARER]},
    ),
    (
        "no credentials, two schemes",
        "GET",
        "/me",
        [],
        401,
        "no_credentials",
        {"www-authenticate": [BEARER, BASIC]},
    ),
    (
        "unknown token",
        "GET",
        "/admin/x",
        bearer("t-nope"),
        401,
        "invalid_token",
        {"www-authenticate": [BEARER + ', error="invalid_token"']},
    ),
    ("no route", "GET", "/nothing", bearer("t-ann"), 403, "no_route", {}),
    ("no rule allows", "GET", "/admin/x", bearer("t-bob"), 403, "not_allowed", {}),
    ("a deny rule", "POST", "/admin/x", bearer("t-sam"), 403, "denied", {}),
    (
        "provider down",
        "GET",
        "/admin/x",
        bearer("t-down"),
        503,
        "provider_unavailable",
        RETRY_AFTER,
    ),
    (
        "identity source raises",
        "GET",
        "/admin/x",
        bearer(RAISING_TOKEN),
        503,
        "provider_unavailable",
        RETRY_AFTER,
    ),
]

# Targets the canonicalizer must reject (400 malformed_request) before any handler runs. A
# valid admin token goes with each, so that nothing but the path can refuse the request.
HOSTILE_TARGETS = [
    "/admin%0a/x",  # P27: decoded control character (Starlette would serve /admin)
    "/admin%00/x",  # P26: NUL
    "//admin/x",  # P03: empty segment (Werkzeug and waitress serve /admin/x)
    "/public/../admin/x",  # P08: traversal out of a public prefix
    "/public/%2e%2e/admin/x",  # P09: encoded dot segment
    "/public/%2E%2E/admin/x",
    "/public%2f..%2fadmin/x",  # P13: encoded slash (uvicorn decodes it in `path`)
    "/public/./x",
    "/public/..;/admin/x",  # P24
    "/admin;x=1/x",  # P23
    "/public/x#/../admin/x",  # P30: raw `#`
    "/public/x%23/../../admin/x",  # P31: encoded `#`
    "/public/x%3F/../../admin/x",  # encoded `?`
    "/public/%5c../admin/x",  # encoded backslash
    "/public/%zz",  # malformed escape
    "/public/%ff",  # invalid UTF-8
    "http://evil.example/admin/x",  # P39: absolute form
    "*",
]


# What a denial may never show the caller: the decision's message, rule or policy text.
INTERNAL_WORDS = ("line", "rule", "policy", "suspended", "admins", "exploded", "source", "token ")


def assert_denial(
    reply: Reply, status: int, reason: str, decision_headers: dict[str, list[str]] | None = None
) -> None:
    """The middleware's own answer: the status, `{"error": reason}` and nothing internal."""
    shown = f"{reply.status} {reply.headers} {reply.body!r}"
    assert reply.status == status, shown
    assert reply.body == json.dumps({"error": reason}).encode(), shown
    assert not any(word in reply.body.decode() for word in INTERNAL_WORDS), shown
    assert reply.header("content-type") == "application/json", shown
    assert reply.header("content-length") == str(len(reply.body)), shown
    assert reply.header("cache-control") == "no-store", shown
    assert reply.header("x-echo") is None, shown
    if decision_headers is not None:
        assert reply.decision_headers() == decision_headers, shown


@contextmanager
def no_handler_runs(server: Server) -> Iterator[None]:
    """Asserts that no handler of `server` saw a request during the block."""
    before = len(server.handled())
    yield
    assert server.handled()[before:] == [], "the handler ran"


def one_handled(server: Server, before: int) -> dict[str, Any]:
    """The one request the handler saw since `before` requests."""
    seen = server.handled()[before:]
    assert len(seen) == 1, seen
    return seen[0]
