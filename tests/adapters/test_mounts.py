"""Mounts under real servers: the policy judges the path the application routes on.

A mount (WSGI `SCRIPT_NAME`, ASGI `root_path`, Django's script prefix) is cut from the raw
path only when the raw path decodes to the mount followed by the routed path; a raw path that
is the routed path is judged whole; anything else is refused with 400 (issue 9, items 3 and 4).
Each app runs under a real server in a child process; requests are written byte for byte on a
plain socket, so no client library normalizes them, and the apps' `/health` lists what their
views served, so a test can prove that a refused request reached no view.
"""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from adapter_servers import HERE, HOST, Server, serving

from policyauth.identity import tokens

POLICY = HERE / "mounts.policy"
REPORTS = "GET /reports/{owner}/**"
ADMIN = "GET /admin/**"
ANYTHING = "GET /**"


@dataclass(frozen=True)
class Callers:
    policy: Path
    bob: str  # no groups
    ci: str  # no groups
    root: str  # admins


@pytest.fixture(scope="module")
def callers(tmp_path_factory: pytest.TempPathFactory) -> Callers:
    folder = tmp_path_factory.mktemp("mounts")
    policy = folder / POLICY.name
    shutil.copyfile(POLICY, policy)
    store = folder / "mounts.tokens"
    bob, _ = tokens.create(store, "bob", [])
    ci, _ = tokens.create(store, "ci", [])
    root, _ = tokens.create(store, "root", ["admins"])
    return Callers(policy, bob, ci, root)


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def refused(self, status: int, reason: str) -> bool:
        assert (self.status, self.json()) == (status, {"error": reason}), self
        return True


def send(server: Server, target: str, token: str | None = None, prefix: str | None = None) -> Reply:
    """One GET of exactly `target`, with a bearer token and an `X-Forwarded-Prefix` if given."""
    lines = [f"GET {target} HTTP/1.1", f"Host: {HOST}", "Connection: close"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    if prefix is not None:
        lines.append(f"X-Forwarded-Prefix: {prefix}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    port = int(server.url.rpartition(":")[2])
    with socket.create_connection((HOST, port), timeout=10) as connection:
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunked(body)
    return Reply(int(status_line.split(" ")[1]), headers, body)


def _dechunked(body: bytes) -> bytes:
    whole = b""
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return whole
        whole += body[:size]
        body = body[size + 2 :]


def served(server: Server) -> list[str]:
    reply = send(server, "/health")
    assert reply.status == 200, reply
    hits: list[str] = reply.json()["hits"]
    return hits


def _serve(
    callers: Callers, folder: Path, server: str, target: str, root_path: str = ""
) -> Iterator[Server]:
    env = {"SERVE_ROOT_PATH": root_path} if root_path else None
    with serving(server, target, callers.policy, folder / "server.log", env) as running:
        yield running


@pytest.fixture(scope="module")
def flask_proxyfix(callers: Callers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("flask-proxyfix")
    yield from _serve(callers, folder, "waitress", "flask_proxyfix:app")


@pytest.fixture(scope="module")
def django_asgi(callers: Callers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("django-asgi")
    yield from _serve(callers, folder, "uvicorn", "django_prefix:asgi_application")


@pytest.fixture(scope="module")
def django_wsgi(callers: Callers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("django-wsgi")
    yield from _serve(callers, folder, "waitress", "django_prefix:application")


@pytest.fixture(scope="module", params=["prefixed", "backend_prefixed"])
def starlette_prefixed(
    callers: Callers, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Server]:
    """The ASGI middleware, then policyauth.starlette's backend, behind a prefix middleware."""
    folder = tmp_path_factory.mktemp("starlette-prefixed")
    yield from _serve(callers, folder, "uvicorn", f"starlette_prefix:{request.param}")


@pytest.fixture(scope="module")
def starlette_root_slash(
    callers: Callers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("starlette-root-slash")
    yield from _serve(callers, folder, "uvicorn", "starlette_prefix:app", root_path="/api/")


# --- WSGI: werkzeug's ProxyFix(x_prefix=1) -------------------------------------------------


def test_a_forwarded_prefix_is_not_cut_from_a_path_the_app_serves_whole(
    flask_proxyfix: Server, callers: Callers
) -> None:
    """The issue's attack: SCRIPT_NAME comes from the client's X-Forwarded-Prefix while
    PATH_INFO stays whole, so Flask serves `/reports/bob/...`, bob's reports. Judged as
    `/reports/ci/q1` (the raw path less the prefix), ci was let into bob's reports."""
    server = flask_proxyfix
    attack = "/reports/bob/reports/ci/q1"
    before = served(server)
    assert send(server, attack, callers.ci, prefix="/reports/bob").refused(403, "not_allowed")
    assert served(server) == before
    reply = send(server, attack, callers.bob, prefix="/reports/bob")
    assert reply.status == 200, reply
    assert reply.json() == {
        "view": "reports",
        "owner": "bob",
        "path": attack,
        "script_root": "/reports/bob",
        "user": "bob",
        "judged": REPORTS,
    }
    # The same with the prefix naming the part the client wants judged away.
    assert send(server, "/reports/bob/q1", callers.ci, prefix="/reports").refused(
        403, "not_allowed"
    )
    # A proxy that strips its prefix and says so: PATH_INFO is the raw path, judged whole.
    reply = send(server, "/reports/ci/q1", callers.ci, prefix="/app")
    assert (reply.status, reply.json()["path"], reply.json()["script_root"]) == (
        200,
        "/reports/ci/q1",
        "/app",
    )
    before = served(server)
    assert send(server, "/reports/ci/%2e%2e/bob/q1", callers.ci, "/reports").refused(
        400, "malformed_request"
    )
    assert served(server) == before


# --- Django: FORCE_SCRIPT_NAME ---------------------------------------------------------------


def test_a_non_admin_does_not_reach_the_django_admin_view_through_the_script_prefix(
    django_asgi: Server, django_wsgi: Server, callers: Callers
) -> None:
    """Under ASGI, Django cuts FORCE_SCRIPT_NAME from `path`: `/api/admin/x` runs the admin
    view, so it is judged as `/admin/x`, not by the catch-all route."""
    server = django_asgi
    before = served(server)
    assert send(server, "/api/admin/x", callers.bob).refused(403, "not_allowed")
    assert send(server, "/api/%61dmin/x", callers.bob).refused(403, "not_allowed")
    for hostile in ("/api/admin/%2e%2e/x", "/api/%2e%2e/admin/x", "/api%2Fadmin/x"):
        assert send(server, hostile, callers.root).refused(400, "malformed_request")
    # Django cuts `/api` from `/apiadmin/x` too, and routes `admin/x`: no prefix it can prove.
    assert send(server, "/apiadmin/x", callers.root).refused(400, "malformed_request")
    assert served(server) == before
    reply = send(server, "/api/admin/x", callers.root)
    assert (reply.status, reply.json()) == (
        200,
        {"view": "admin", "path_info": "/admin/x", "user": "root", "judged": ADMIN},
    )
    # A path without the prefix is routed (and judged) whole.
    assert send(server, "/admin/x", callers.bob).refused(403, "not_allowed")
    reply = send(server, "/elsewhere", callers.bob)
    assert (reply.status, reply.json()["judged"]) == (200, ANYTHING)
    # Under WSGI, Django routes on PATH_INFO whole (FORCE_SCRIPT_NAME is only for reversing
    # URLs), so `/api/admin/x` is the catch-all view, and judged so.
    reply = send(django_wsgi, "/api/admin/x", callers.bob)
    assert (reply.status, reply.json()) == (
        200,
        {"view": "anything", "path_info": "/api/admin/x", "user": "bob", "judged": ANYTHING},
    )


# --- ASGI: root_path --------------------------------------------------------------------------


def test_a_root_path_that_is_not_in_the_raw_path_is_refused(
    starlette_prefixed: Server, callers: Callers
) -> None:
    """A prefix middleware puts the client's X-Forwarded-Prefix in `root_path` and in front of
    `path` (as uvicorn does with its own root_path) but not of `raw_path`: Starlette routes on
    `path` less `root_path`, the raw path whole, so cutting `root_path` from the raw path
    judged `/reports/bob/q1` as `/q1`, by the catch-all route."""
    server = starlette_prefixed
    before = served(server)
    assert send(server, "/reports/bob/q1", callers.ci, prefix="/reports/bob").refused(
        400, "malformed_request"
    )
    assert served(server) == before
    assert send(server, "/reports/bob/q1", callers.ci).refused(403, "not_allowed")
    reply = send(server, "/reports/bob/q1", callers.bob)
    assert (reply.status, reply.json()["judged"], reply.json()["route_path"]) == (
        200,
        REPORTS,
        "/reports/bob/q1",
    )


def test_root_path_is_cut_as_starlette_cuts_it(
    starlette_root_slash: Server, callers: Callers
) -> None:
    """uvicorn `--root-path /api/` makes `path` `/api//admin/x` for `/admin/x`, and Starlette
    routes on `/admin/x`: that is what is judged (it was refused as an empty segment)."""
    server = starlette_root_slash
    before = served(server)
    assert send(server, "/admin/x", callers.bob).refused(403, "not_allowed")
    assert send(server, "/admin/%2e%2e/reports/bob/q1", callers.root).refused(
        400, "malformed_request"
    )
    assert served(server) == before
    reply = send(server, "/admin/x", callers.root)
    assert (reply.status, reply.json()["view"], reply.json()["judged"]) == (200, "admin", ADMIN)
