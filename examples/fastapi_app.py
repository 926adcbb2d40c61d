"""A build-artifact service on FastAPI, guarded by policies/github-ci.policy.

`policyauth.fastapi.install` puts the policy in front of every path: `/healthz` is open
because the policy says `public`, and everything the policy does not name is `403 no_route`,
the interactive docs at /docs and /openapi.json included (a policy that wants them open adds
`route GET /docs { public }` and `route GET /openapi.json { public }`; they show the Bearer and
Basic schemes on every protected operation). Each endpoint asks for the caller with
`Depends(policyauth.fastapi.principal)` or `Depends(policyauth.fastapi.require())`, which read
the decision already made in front.

    .venv/bin/python examples/fastapi_app.py             # http://127.0.0.1:8000
    TOKEN=$(.venv/bin/policyauth token create --store policies/ci.tokens --user job-1 \\
        --groups widgets)
    curl -i -X PUT -H "Authorization: Bearer $TOKEN" --data 'v1' \\
        http://127.0.0.1:8000/api/artifacts/widgets/w.tgz          # 201: job-1 may publish
    curl -i http://127.0.0.1:8000/api/artifacts/widgets/w.tgz      # 401: no credentials
    curl -i -X PUT -H "Authorization: Bearer $TOKEN" --data 'v1' \\
        http://127.0.0.1:8000/api/artifacts/gadgets/g.tgz          # 403: not job-1's project

Set POLICYAUTH_POLICY to use another copy of the policy (its token store sits next to it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request, Response

import policyauth.fastapi
from policyauth import Principal

POLICY = Path(__file__).resolve().parent.parent / "policies" / "github-ci.policy"

Caller = Annotated[Principal | None, Depends(policyauth.fastapi.principal)]
Uploader = Annotated[Principal, Depends(policyauth.fastapi.require())]


def create_app(policy: str | os.PathLike[str] | None = None) -> FastAPI:
    """The service, with its own in-memory artifact store, guarded by `policy`."""
    app = FastAPI(title="artifacts", summary="guarded by policies/github-ci.policy")
    policyauth.fastapi.install(app, policy=policy or _policy())
    artifacts: dict[tuple[str, str], bytes] = {}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/artifacts/{project}/{name:path}")
    async def download(project: str, name: str, caller: Caller) -> Response:
        if (project, name) not in artifacts:
            raise HTTPException(404, "no such artifact")
        served_to = caller.username if caller else "-"
        return Response(
            artifacts[project, name],
            media_type="application/octet-stream",
            headers={"X-Served-To": served_to},
        )

    @app.put("/api/artifacts/{project}/{name:path}", status_code=201)
    async def upload(
        project: str, name: str, request: Request, uploader: Uploader
    ) -> dict[str, str]:
        artifacts[project, name] = await request.body()
        return {"stored": f"{project}/{name}", "by": uploader.username}

    @app.delete("/api/artifacts/{project}/{name:path}", status_code=204)
    async def remove(project: str, name: str, caller: Caller) -> None:
        if artifacts.pop((project, name), None) is None:
            raise HTTPException(404, "no such artifact")

    return app


def _policy() -> str | os.PathLike[str]:
    return os.environ.get("POLICYAUTH_POLICY") or POLICY


app = create_app()

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
