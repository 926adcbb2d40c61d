"""The middleware's `reload=True` (production.md section 2): the ASGI and WSGI middleware built
from a policy file watch it and put a changed policy in force, without a restart.

Policy A makes `GET /r` public (200); policy B has no route for it (403 no_route). The
middleware is called in-process with a plain ASGI scope or WSGI environ; the watcher stats
the file every second, so a change is in force within a few seconds.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

import policyauth
from policyauth.asgi import PolicyAuthMiddleware as AsgiMiddleware
from policyauth.wsgi import PolicyAuthMiddleware as WsgiMiddleware

PUBLIC = "route GET /r {\n  public\n}\n"
ELSEWHERE = "route GET /elsewhere {\n  public\n}\n"


def write(path: Path, text: str) -> None:
    path.write_text(text)
    later = time.time_ns() + 2_000_000_000
    os.utime(path, ns=(later, later))


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def asgi_status(middleware: AsgiMiddleware) -> int:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/r",
        "raw_path": b"/r",
        "query_string": b"",
        "root_path": "",
        "headers": [],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await middleware(scope, receive, send)
    return int(sent[0]["status"])


def wsgi_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("content-type", "text/plain")])
    return [b"ok"]


def wsgi_status(middleware: WsgiMiddleware) -> int:
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/r",
        "QUERY_STRING": "",
        "SERVER_NAME": "test",
        "SERVER_PORT": "80",
        "wsgi.input": io.BytesIO(),
        "wsgi.url_scheme": "http",
    }
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(status)

    list(middleware(environ, start_response))
    return int(statuses[0].split()[0])


async def test_the_asgi_middleware_reloads_its_policy_file(tmp_path: Path) -> None:
    file = tmp_path / "p.policy"
    write(file, PUBLIC)
    middleware = AsgiMiddleware(app, policy=file, reload=True)
    try:
        assert await asgi_status(middleware) == 200
        write(file, ELSEWHERE)
        deadline = time.monotonic() + 10
        while await asgi_status(middleware) == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert await asgi_status(middleware) == 403
    finally:
        await middleware.engine.aclose()


def test_the_wsgi_middleware_reloads_its_policy_file(tmp_path: Path) -> None:
    file = tmp_path / "p.policy"
    write(file, PUBLIC)
    middleware = WsgiMiddleware(wsgi_app, policy=str(file), reload=True)
    try:
        assert wsgi_status(middleware) == 200
        write(file, ELSEWHERE)
        deadline = time.monotonic() + 10
        while wsgi_status(middleware) == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert wsgi_status(middleware) == 403
    finally:
        middleware.engine.close()


def test_without_reload_the_middleware_keeps_its_policy(tmp_path: Path) -> None:
    file = tmp_path / "p.policy"
    write(file, PUBLIC)
    middleware = WsgiMiddleware(wsgi_app, policy=str(file))
    try:
        write(file, ELSEWHERE)
        time.sleep(2.5)  # two watcher intervals, had there been a watcher
        assert wsgi_status(middleware) == 200
    finally:
        middleware.engine.close()


def test_reload_with_a_given_engine_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "p.policy"
    write(file, PUBLIC)
    with (
        policyauth.Engine(policyauth.load(file)) as engine,
        pytest.raises(TypeError, match="`reload=True` goes with `policy=`"),
    ):
        WsgiMiddleware(wsgi_app, engine=engine, reload=True)
    with pytest.raises(ValueError, match="reload=True needs a policy loaded from a file"):
        WsgiMiddleware(wsgi_app, policy=policyauth.loads(PUBLIC), reload=True)
