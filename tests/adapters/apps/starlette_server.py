"""A Starlette app behind policyauth.starlette's backend, for a real uvicorn in a test.

Handlers answer with who called and record the path they served; `/health` (public in the
policy) lists those paths so a test can tell that a refused request reached no handler.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import policyauth.starlette
from policyauth.starlette import PolicyCredentials, StarletteUser

served: list[str] = []


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"hits": served, "user": request.user.display_name})


async def handler(request: Request) -> JSONResponse:
    served.append(request.url.path)
    user = request.user
    auth = request.auth
    return JSONResponse(
        {
            "user": user.display_name,
            "groups": list(user.groups) if isinstance(user, StarletteUser) else None,
            "scopes": auth.scopes,
            "rule_line": auth.decision.rule.line
            if isinstance(auth, PolicyCredentials) and auth.decision.rule
            else None,
        }
    )


app = Starlette(
    routes=[
        Route("/health", health),
        Route("/reports/{rest:path}", handler),
        Route("/admin/{rest:path}", handler, methods=["GET", "POST", "DELETE"]),
    ],
    middleware=[policyauth.starlette.middleware(policy=os.environ["POLICYAUTH_POLICY"])],
)
