"""Hostile request targets against a real uvicorn and Starlette, over a raw socket.

The server runs raw_app.py, whose routes mirror raw.policy (public `/public/**`, protected
`/admin/**`) and which has no policyauth in front of it. For every target the test asks the
engine for its decision on the same raw target and the server which handler it ran. The one
thing that must never happen: the engine lets a request through by the public route and the
server answers it with the admin handler. That is the bypass class of the security reference's
P cases (P03 to P40), checked against what a real server does rather than what we think it does.

Requests are written byte for byte on a plain socket so no client library normalizes them.
The server is started by the test itself on a free loopback port and is always stopped; if it
cannot start, the tests fail, they are never skipped.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import policyauth
from policyauth import Decision, Reason

HERE = Path(__file__).resolve().parent
POLICY = policyauth.load(HERE / "raw.policy")
ENGINE = policyauth.Engine(POLICY, identities=policyauth.StaticIdentitySource(POLICY, {}))
PUBLIC_LINE = POLICY.routes[0].span.line
ADMIN_LINE = POLICY.routes[1].span.line
READY_TIMEOUT = 20.0
HOST = "127.0.0.1"


@contextlib.contextmanager
def _uvicorn(port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "raw_app:app",
        "--app-dir",
        str(HERE),
        "--host",
        HOST,
        "--port",
        str(port),
        "--http",
        "h11",
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _wait_ready(process: subprocess.Popen[bytes], port: int, deadline: float) -> bool:
    """True once the port accepts connections; False if the server exited first."""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection((HOST, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    """A running uvicorn on a free port; its port. Fails (never skips) if it cannot start."""
    deadline = time.monotonic() + READY_TIMEOUT
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "uvicorn.log"
        for _attempt in range(3):  # the port may be taken between choosing and binding it
            port = _free_port()
            with _uvicorn(port, log) as process:
                if _wait_ready(process, port, deadline):
                    yield port
                    return
                exited = process.poll() is not None
            if not exited or time.monotonic() >= deadline:
                break
        output = log.read_text(encoding="utf-8", errors="replace")
        pytest.fail(
            f"uvicorn did not accept connections within {READY_TIMEOUT:.0f} s:\n{output}",
            pytrace=False,
        )


def send(port: int, method: str, target: str, extra_headers: bytes = b"") -> tuple[int, str]:
    """Send one raw request; the status and the handler that answered (`""` for none)."""
    request = (
        method.encode("ascii")
        + b" "
        + target.encode("latin-1")
        + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        + extra_headers
        + b"\r\n"
    )
    with socket.create_connection((HOST, port), timeout=5) as connection:
        connection.sendall(request)
        response = b""
        while chunk := connection.recv(65536):
            response += chunk
    head = response.partition(b"\r\n\r\n")[0].decode("latin-1")
    status_line, *header_lines = head.split("\r\n")
    status = int(status_line.split(" ")[1])
    handler = ""
    for line in header_lines:
        name, _, value = line.partition(":")
        if name.strip().lower() == "x-handler":
            handler = value.strip()
    return status, handler


def allowed_by_public_route(decision: Decision) -> bool:
    return decision.allowed and decision.route is not None and decision.route.line == PUBLIC_LINE


# --- targets --------------------------------------------------------------------------------------

HOSTILE = [
    "/public/../admin",
    "/public/%2e%2e/admin",
    "/public/%2E%2E/admin",
    "/public/.%2e/admin",
    "/public/%2e./admin",
    "/public/./../admin",
    "/public/x/../../admin",
    "/public/%2e%2e%2fadmin",
    "/public/..%2fadmin",
    "/public/..%2Fadmin",
    "/public%2fadmin",
    "/public%2Fadmin",
    "/public%2f..%2fadmin",
    "/public%2f%2e%2e%2fadmin",
    "/public/..%5cadmin",
    "/public%5c..%5cadmin",
    "/public\\..\\admin",
    "/public/..;/admin",
    "/public;/../admin",
    "/public/%252e%252e/admin",
    "/public/%c0%ae%c0%ae/admin",
    "/public/x#/../admin",
    "/public/x%23/../admin",
    "/public%3f/../admin",
    "/public/x?/../../admin",
    "/public?/admin",
    "/public/%2e%2e/%61dmin",
    "/admin%0a",
    "/admin%0d",
    "/admin%0d%0a",
    "/admin%09",
    "/admin%00",
    "/admin%20",
    "/admin%c2%85",
    "/admin%e2%80%a8",
    "/admin%23",
    "/admin%3f",
    "/admin%2f",
    "/admin;x",
    "/admin/.",
    "/admin/..",
    "/admin/%2e",
    "//admin",
    "///admin",
    "//public/../admin",
    "/%61dmin",
    "/a%64min",
    "/%2561dmin",
    "/ADMIN",
    "/Admin",
    "/admin?/public",
    "/admin?x=/public/x",
    "http://127.0.0.1/admin",
    "http://127.0.0.1/public/../admin",
    "//127.0.0.1/admin",
    "*",
]
# Traversals built from parts: every separator with every spelling of `..` and `.`.
SEPARATORS = ["/", "%2f", "%2F", "%5c", "%5C", "\\", ";/", "/;/", "%3b/", "//"]
DOTS = ["..", "%2e%2e", "%2E%2E", ".%2e", "%2e.", "%252e%252e", "..;", ".", "%2e", "...", ". ."]
BUILT = [f"/public{a}{dots}{b}admin" for dots in DOTS for a in SEPARATORS[:4] for b in SEPARATORS]
TARGETS = list(dict.fromkeys(HOSTILE + BUILT))


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("target", TARGETS)
def test_public_decisions_never_reach_the_admin_handler(
    server: int, method: str, target: str
) -> None:
    decision = ENGINE.authorize_sync(method, target, [])
    status, handler = send(server, method, target)
    if allowed_by_public_route(decision):
        assert handler != "admin", (
            f"{method} {target!r}: the engine allows it by the public route "
            f"({decision.message}) but uvicorn/Starlette served the admin handler ({status})"
        )
    if handler == "admin":
        # What the server treats as /admin, the engine must refuse or send to the admin route.
        assert not decision.allowed
        assert decision.reason in (
            Reason.MALFORMED_REQUEST,
            Reason.NO_CREDENTIALS,
        ), f"{method} {target!r}: {decision.status} {decision.reason.value}"
        if decision.reason is Reason.NO_CREDENTIALS:
            assert decision.route is not None
            assert decision.route.line == ADMIN_LINE


# --- controls -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "handler", "reason", "route_line"),
    [
        ("/public/x", "public", Reason.ALLOWED, PUBLIC_LINE),
        ("/public", "public", Reason.ALLOWED, PUBLIC_LINE),
        ("/public/a/b?c=d", "public", Reason.ALLOWED, PUBLIC_LINE),
        ("/admin", "admin", Reason.NO_CREDENTIALS, ADMIN_LINE),
        ("/admin/users/1", "admin", Reason.NO_CREDENTIALS, ADMIN_LINE),
        ("/%61dmin", "admin", Reason.NO_CREDENTIALS, ADMIN_LINE),  # P18: decoded by both
    ],
)
def test_positive_controls(
    server: int, target: str, handler: str, reason: Reason, route_line: int
) -> None:
    status, served_by = send(server, "GET", target)
    assert (status, served_by) == (200, handler)
    decision = ENGINE.authorize_sync("GET", target, [])
    assert decision.reason is reason
    assert decision.route is not None
    assert decision.route.line == route_line


def test_head_is_served_by_the_get_handler_and_decided_as_get(server: int) -> None:
    """M01: the server runs the GET handler for HEAD, so the engine applies the GET route."""
    assert send(server, "HEAD", "/admin") == (200, "admin")
    decision = ENGINE.authorize_sync("HEAD", "/admin", [])
    assert (decision.status, decision.reason) == (401, Reason.NO_CREDENTIALS)


def test_upstream_behaviour_the_security_reference_records(server: int) -> None:
    """Observations marked [local] in the security reference, for uvicorn (h11) + Starlette.

    If one of these fails, the upstream changed: update the reference, and check that the
    canonicalizer's reasons for rejecting these targets still hold.
    """
    # P27: a decoded line feed reaches the /admin handler.
    assert send(server, "GET", "/admin%0a")[1] == "admin"
    # P13: uvicorn decodes %2F, so an encoded slash is a real separator for the router.
    assert send(server, "GET", "/public%2fadmin")[1] == "public"
    # P09: encoded dot segments are passed to the app unresolved, not normalized away.
    assert send(server, "GET", "/public/%2e%2e/admin")[1] == "public"
    # F03: underscore header names are passed through to the app.
    status, handler = send(server, "GET", "/public/x", b"X_Forwarded_Uri: /admin\r\n")
    assert (status, handler) == (200, "public")
    # The engine refuses every one of them.
    for target in ("/admin%0a", "/public%2fadmin", "/public/%2e%2e/admin"):
        decision = ENGINE.authorize_sync("GET", target, [])
        assert (decision.status, decision.reason) == (400, Reason.MALFORMED_REQUEST)
    decision = ENGINE.authorize_sync("GET", "/public/x", [("X_Forwarded_Uri", "/admin")])
    assert (decision.status, decision.reason) == (400, Reason.MALFORMED_REQUEST)
