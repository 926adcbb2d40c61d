"""A FastAPI app behind Starlette's CORSMiddleware and policyauth's ASGI middleware, in the
order docs/python.md prescribes (CORS outside), for a real uvicorn in a test; and `wrong`, the
same app with the two swapped, to show what that order breaks.

The policy (POLICYAUTH_POLICY) makes `/docs` and `/openapi.json` public; `/health` lists the
paths the handlers served, so a test can prove a preflight never reached one.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from starlette.middleware.cors import CORSMiddleware

import policyauth
import policyauth.fastapi
from policyauth.asgi import PolicyAuthMiddleware

ORIGIN = "https://app.example.com"
CORS = {
    "allow_origins": [ORIGIN],
    "allow_methods": ["GET"],
    "allow_headers": ["Authorization"],
    "expose_headers": ["WWW-Authenticate"],  # so the browser's code can read the challenge
}

served: list[str] = []
engine = policyauth.Engine(policyauth.load(os.environ["POLICYAUTH_POLICY"]))


def api() -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"hits": served}

    @app.get("/reports/{rest:path}")
    async def reports(
        request: Request,
        rest: str,
        caller: Annotated[policyauth.Principal | None, Depends(policyauth.fastapi.principal)],
    ) -> dict[str, Any]:
        served.append(request.url.path)
        return {"report": rest, "user": caller.username if caller else None}

    return app


# add_middleware: the last one added is the outermost, so CORS sees every request first.
app = api()
app.add_middleware(PolicyAuthMiddleware, engine=engine)
app.add_middleware(CORSMiddleware, **CORS)

wrong = PolicyAuthMiddleware(CORSMiddleware(api(), **CORS), engine=engine)
