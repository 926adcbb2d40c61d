"""A Starlette app behind policyauth.asgi.PolicyAuthMiddleware, for uvicorn with `root_path`.

`backend` is the same app guarded by policyauth.starlette's AuthenticationMiddleware backend
instead, which takes its path the same way. `prefixed` and `backend_prefixed` put a
`forwarded_prefix` middleware in front: it takes `root_path` from the client's
`X-Forwarded-Prefix` and, as uvicorn does with its own `root_path`, puts it in front of `path`,
but not of `raw_path`. Views record what they served (`/health`, public, lists it).
"""

from __future__ import annotations

import os
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import policyauth.starlette
from policyauth.asgi import PolicyAuthMiddleware

served: list[str] = []


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"hits": served})


def _view(name: str) -> Any:
    async def view(request: Request) -> JSONResponse:
        route_path = request.scope["path"][len(request.scope.get("root_path", "")) :]
        served.append(f"{name} {route_path}")
        decision = request.scope["policyauth.decision"]
        return JSONResponse(
            {
                "view": name,
                "route_path": route_path,
                "user": request.user.username,
                "judged": decision.route_text,
            }
        )

    return view


ROUTES = [
    Route("/health", health),
    Route("/reports/{owner}/{rest:path}", _view("reports")),
    Route("/admin/{rest:path}", _view("admin")),
    Route("/{rest:path}", _view("anything")),
]
POLICY = os.environ["POLICYAUTH_POLICY"]
app = PolicyAuthMiddleware(Starlette(routes=ROUTES), policy=POLICY)
backend = Starlette(routes=ROUTES, middleware=[policyauth.starlette.middleware(policy=POLICY)])


def forwarded_prefix(application: Any) -> Any:
    async def middleware(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"x-forwarded-prefix":
                    prefix = value.decode("latin-1")
                    scope = {**scope, "root_path": prefix, "path": prefix + scope["path"]}
        await application(scope, receive, send)

    return middleware


prefixed = forwarded_prefix(app)
backend_prefixed = forwarded_prefix(backend)
