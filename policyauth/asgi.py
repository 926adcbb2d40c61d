"""Pure ASGI middleware: every HTTP request and WebSocket handshake goes through the engine.

Pure ASGI (not Starlette's BaseHTTPMiddleware) so that streaming, background tasks and
WebSockets behave exactly as without it, and so that it costs one function call per request.

The decision is made on the raw request target (`raw_path` plus the query string), never on
the decoded `path`: the canonicalizer must see `%2F`, `%2e` and friends to reject them (uvicorn
decodes `%2F` into `/` in `path`). Under a mount (`root_path`), rules apply to the path relative
to the mount, as the application's own routes do: servers (uvicorn) put `root_path` into both
`path` and `raw_path`, and Starlette routes on `path` less `root_path`, so `root_path` is cut
from the raw path only when the raw path decodes to `path` and `path` starts with it; a raw
path that does not decode to `path` is refused with 400 (`policyauth.request.mounts`).

A policy that does not load raises `PolicyError` where the middleware is constructed, except
when Starlette (or FastAPI) constructs it: `app.add_middleware(PolicyAuthMiddleware, ...)` is
built on the application's first call, which is the lifespan call, and uvicorn's default
lifespan mode takes an exception there for "lifespan unsupported", starts anyway and answers
500 to everything. So there the middleware keeps the diagnostics, answers the lifespan startup
with `lifespan.startup.failed` and all of them (the server exits), and refuses every request
with 500 where the server runs no lifespan.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from types import FrameType
from typing import Any
from urllib.parse import quote

from policyauth.compiler import Policy
from policyauth.decision import Decision
from policyauth.diagnostics import PolicyError
from policyauth.engine import Engine
from policyauth.middleware import (
    PolicyAuth,
    build_engine,
    denial_body,
    denial_headers,
    log,
    log_decision,
    user_of,
)
from policyauth.request import Rejection
from policyauth.request.mounts import routed_target

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class PolicyAuthMiddleware:
    """`PolicyAuthMiddleware(app, engine=engine)` or `PolicyAuthMiddleware(app, policy="x.policy")`.

    Denials (400, 401, 403, 503) are answered here with the decision's headers and a JSON body
    `{"error": reason}`; allowed requests reach `app` with `scope["user"]` (a PolicyUser),
    `scope["auth"]` (a PolicyAuth) and `scope["policyauth.decision"]`.
    """

    engine: Engine
    # Why the policy did not load, when Starlette built this middleware (else it raised).
    failure: str | None

    def __init__(
        self,
        app: ASGIApp,
        engine: Engine | None = None,
        *,
        policy: str | os.PathLike[str] | Policy | None = None,
        reload: bool = False,  # watch the policy file and reload it on change
    ) -> None:
        self.app = app
        self.failure = None
        try:
            self.engine = build_engine(engine, policy, reload=reload)
        except PolicyError as error:
            if not _built_by_starlette():
                raise
            self.failure = f"policyauth: the policy did not load:\n{error.render()}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.failure is not None:
            await _unloaded(self.failure, scope, receive, send)
            return
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET") if kind == "http" else "GET"
        try:
            target, headers = request_target(scope), scope["headers"]
            decision = self.engine.remembered(method, target, headers) or (
                await self.engine.authorize(method, target, headers)
            )
        except Exception:
            log.exception("policyauth failed to decide %s %s", method, scope.get("path"))
            await _fail(scope, send)
            return
        if decision.status != 200:  # not `allowed`: a property is a call on every request
            log_decision(decision, method)
            await _deny(scope, receive, send, decision)
            return
        scope["user"] = decision.memo or user_of(decision)  # made once per decision
        scope["auth"] = PolicyAuth(decision)
        scope["policyauth.decision"] = decision
        await self.app(scope, receive, send)


def request_target(scope: Scope) -> str | Rejection:
    """The raw, application-relative request target: `raw_path` less `root_path`, plus query;
    a Rejection when `raw_path` does not decode to `path` (see the module).

    Servers give `raw_path` as bytes exactly as received; without it (some servers omit it) the
    decoded `path` is re-encoded, which is what the application will route on anyway.
    """
    decoded = scope["path"]  # required by ASGI (a KeyError is a failure: 500)
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else quote(decoded, safe="/:@!$&'()*+,;=~")
    root = scope.get("root_path")
    if path != decoded or root or "%" in path or not path.isascii():
        # Anything but the common case (no mount, nothing to decode, the raw path is `path`).
        routed = route_path(decoded, root or "")
        mount = decoded[: len(decoded) - len(routed)]
        found = routed_target(path, _utf8(routed), _utf8(mount), whole=False)
        if isinstance(found, Rejection):
            return found
        path = found
    query = scope.get("query_string", b"")
    return path + ("?" + query.decode("latin-1") if query else "")


def route_path(path: str, root: str) -> str:
    """The path Starlette routes on (`starlette._utils.get_route_path`): `path` less `root`
    when `path` is `root` or below it, else `path` itself."""
    if root and path.startswith(root):
        if path == root:
            return ""
        if path[len(root)] == "/":
            return path[len(root) :]
    return path


def _utf8(text: str) -> bytes:
    """ASGI paths are text decoded from UTF-8; a lone surrogate cannot match any raw path."""
    return text.encode("utf-8", "replace")


async def _deny(scope: Scope, receive: Receive, send: Send, decision: Decision) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in denial_headers(decision)]
    body = denial_body(decision)
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": decision.status, "headers": headers})
        # No body for HEAD (as Starlette's responses do): not every server drops it.
        await send({"type": "http.response.body", "body": b"" if _is_head(scope) else body})
        return
    # A refused WebSocket handshake: an HTTP response where the server supports it (the
    # "websocket.http.response" extension), else a close before accept (servers send 403).
    if "websocket.http.response" in scope.get("extensions", {}):
        await send(
            {"type": "websocket.http.response.start", "status": decision.status, "headers": headers}
        )
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})


async def _fail(scope: Scope, send: Send) -> None:
    """An unexpected error decides nothing: the request is refused (fail closed)."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1011})
        return
    body = b'{"error": "internal_error"}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 500, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if _is_head(scope) else body})


async def _unloaded(failure: str, scope: Scope, receive: Receive, send: Send) -> None:
    """Without a policy nothing starts and nothing is let in: the lifespan startup fails with
    every diagnostic (uvicorn logs the message and exits), and each request is refused."""
    if scope["type"] == "lifespan":
        event = await receive()
        if event["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.failed", "message": failure})
        return
    log.error("%s", failure)
    await _fail(scope, send)


def _built_by_starlette() -> bool:
    """Whether Starlette's (or FastAPI's) `build_middleware_stack` is constructing us.

    It calls `cls(app, *args, **kwargs)` for each `add_middleware`, on the application's first
    call, where an exception is lost (see the module's docstring). The caller's frame is the
    one thing that tells that construction from `PolicyAuthMiddleware(app, ...)` written by
    the user, which must raise. Frames of subclasses' `__init__` are skipped.
    """
    frame: FrameType | None = sys._getframe(2)  # this function, then our __init__
    while frame is not None and frame.f_code.co_name == "__init__":
        frame = frame.f_back
    return frame is not None and frame.f_code.co_name == "build_middleware_stack"


def _is_head(scope: Scope) -> bool:
    return scope.get("method") == "HEAD"
