"""A FastAPI app whose endpoints depend on policyauth.fastapi, for a real uvicorn in a test.

`install` puts the policy in front of every path; with POLICYAUTH_GUARD_ALL=0 it is the
opt-out (`guard_all=False`): no middleware, the dependencies decide. Handlers record the path
they served; `/health` (public in the policy) lists those paths. `/admin/plain` has no
dependency; `/admin/items` takes a JSON body.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel

import policyauth.fastapi
from policyauth import Principal

served: list[str] = []

app = FastAPI()
policyauth.fastapi.install(
    app,
    policy=os.environ["POLICYAUTH_POLICY"],
    guard_all=os.environ.get("POLICYAUTH_GUARD_ALL", "1") == "1",
)

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


@app.get("/admin/plain")
async def plain(request: Request) -> dict[str, Any]:
    """No dependency: what protects it is the policy in front, or nothing."""
    served.append(request.url.path)
    return {"plain": True}


class Item(BaseModel):
    name: str
    count: int


@app.post("/admin/items")
async def create_item(
    request: Request,
    item: Item,
    caller: Annotated[Principal, Depends(policyauth.fastapi.require(group="admins"))],
) -> dict[str, Any]:
    return {**_answer(request, caller), "item": item.name}


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
