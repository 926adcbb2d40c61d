"""A FastAPI app whose endpoints depend on policyauth.fastapi, for a real uvicorn in a test.

No middleware: `install` gives the app its engine and the dependencies decide. Handlers record
the path they served; `/health` (public in the policy) lists those paths.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request

import policyauth.fastapi
from policyauth import Principal

served: list[str] = []

app = FastAPI()
policyauth.fastapi.install(app, policy=os.environ["POLICYAUTH_POLICY"])

Caller = Annotated[Principal | None, Depends(policyauth.fastapi.principal)]


def _answer(request: Request, caller: Principal | None) -> dict[str, Any]:
    served.append(request.url.path)
    return {
        "user": caller.username if caller else None,
        "groups": list(caller.groups) if caller else None,
        "provider": caller.provider if caller else None,
    }


@app.get("/health")
async def health() -> dict[str, Any]:
    return {"hits": served}


@app.get("/reports/vip")
async def vip(
    request: Request,
    caller: Annotated[Principal, Depends(policyauth.fastapi.require(group="vip"))],
) -> dict[str, Any]:
    return _answer(request, caller)


@app.get("/reports/by-a")
async def by_a(
    request: Request,
    caller: Annotated[
        Principal, Depends(policyauth.fastapi.require(rule=lambda p: p.username.startswith("a")))
    ],
) -> dict[str, Any]:
    return _answer(request, caller)


@app.get("/reports/{rest:path}")
async def reports(request: Request, rest: str, caller: Caller) -> dict[str, Any]:
    return _answer(request, caller)


# One decorator per method: one route each, so each operation gets its own OpenAPI id.
@app.get("/admin/{rest:path}")
@app.post("/admin/{rest:path}")
@app.delete("/admin/{rest:path}")
async def admin(
    request: Request,
    rest: str,
    caller: Annotated[Principal, Depends(policyauth.fastapi.require(group="admins"))],
) -> dict[str, Any]:
    return _answer(request, caller)
