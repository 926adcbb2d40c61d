"""The ASGI application of the uvicorn fleet test: `GET /x` behind the policyauth middleware.

The engine is built in each worker from the policy file in FLEET_POLICY (a Redis cache); the
handler answers with the worker's pid, so the test sees that several workers answered.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from policyauth.asgi import PolicyAuthMiddleware


async def whoami(request: Request) -> Response:
    return JSONResponse({"pid": os.getpid(), "user": request.user.display_name})


app = PolicyAuthMiddleware(
    Starlette(routes=[Route("/x", whoami)]), policy=os.environ["FLEET_POLICY"]
)
