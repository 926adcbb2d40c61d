"""The ASGI application of the server tests, run by a real uvicorn process.

Every HTTP request and WebSocket that reaches a handler is echoed back as JSON: what the
application sees (its path, the mount, `request.user`, `request.auth`, the decision's lines),
in the body and in an `x-echo` header (so HEAD responses carry it too), and logged as one line
of PA_TEST_LOG. The engine comes from table_engine.engine_from_env().

- `app`: a Starlette application with the middleware declared as Starlette middleware, the
  way an application would add it; catch-all HTTP and WebSocket routes; a lifespan.
- `mounted_app`: the same handlers below `Mount("/mount", PolicyAuthMiddleware(...))`, the
  middleware wrapping the mounted application directly; `/outside` is not protected.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from table_engine import decision_lines, engine_from_env, record

from policyauth.asgi import PolicyAuthMiddleware

ENGINE = engine_from_env()


def seen(connection: HTTPConnection) -> dict[str, Any]:
    """What the application sees of the request and of the caller."""
    user = connection.user
    auth = connection.auth
    decision = connection.scope.get("policyauth.decision")
    return {
        "type": connection.scope["type"],
        "method": connection.scope.get("method"),
        "path": connection.url.path,
        "route_path": "/" + str(connection.path_params.get("rest", "")),
        "root_path": connection.scope.get("root_path", ""),
        "query": connection.scope.get("query_string", b"").decode("latin-1"),
        "authorization": connection.headers.getlist("authorization"),
        "authenticated": user.is_authenticated,
        "user": user.display_name,
        "groups": list(user.groups),
        "provider": user.provider,
        "scopes": list(auth.scopes),
        "reason": str(decision.reason) if decision is not None else None,
        **(decision_lines(decision) if decision is not None else {}),
        "started": bool(getattr(connection.app.state, "started", False)),
    }


class Echo:
    """A plain ASGI endpoint, so that the route takes every method (HEAD, PURGE, PROPFIND...)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        await request.body()
        entry = seen(request)
        record(entry)
        text = json.dumps(entry)  # ASCII: fits in a header
        response: Response = JSONResponse(entry, headers={"x-echo": text})
        await response(scope, receive, send)


async def websocket_echo(websocket: WebSocket) -> None:
    entry = seen(websocket)
    record(entry)
    await websocket.accept()
    await websocket.send_json(entry)
    message = await websocket.receive_text()
    await websocket.send_text("echo:" + message)
    await websocket.close()


async def outside(request: Request) -> Response:
    return JSONResponse({"outside": True, "has_user": "user" in request.scope})


@asynccontextmanager
async def lifespan(application: Starlette) -> AsyncIterator[None]:
    record({"event": "startup"})
    application.state.started = True
    yield
    record({"event": "shutdown"})


ROUTES = [
    Route("/{rest:path}", Echo()),
    WebSocketRoute("/{rest:path}", websocket_echo),
]

app = Starlette(
    routes=ROUTES,
    middleware=[Middleware(PolicyAuthMiddleware, engine=ENGINE)],
    lifespan=lifespan,
)

_inner = Starlette(routes=ROUTES)
_inner.state.started = True  # the outer application runs the lifespan
mounted_app = Starlette(
    routes=[
        Route("/outside", outside),
        Mount("/mount", app=PolicyAuthMiddleware(_inner, engine=ENGINE)),
    ],
    lifespan=lifespan,
)
