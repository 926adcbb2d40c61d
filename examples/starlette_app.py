"""A build-artifact service on Starlette, guarded by policies/github-ci.policy.

The policy is enforced by Starlette's AuthenticationMiddleware with policyauth's backend
(`policyauth.starlette.middleware`); handlers read the caller from `request.user`. CI jobs use
API tokens of the policy's `ci` store, policies/ci.tokens; people use GitHub or GitLab tokens.

    .venv/bin/python examples/starlette_app.py           # http://127.0.0.1:8000
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
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import policyauth.starlette

POLICY = Path(__file__).resolve().parent.parent / "policies" / "github-ci.policy"


def create_app(policy: str | os.PathLike[str] | None = None) -> Starlette:
    """The service, with its own in-memory artifact store, guarded by `policy`."""
    artifacts: dict[tuple[str, str], bytes] = {}

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def artifact(request: Request) -> Response:
        key = (request.path_params["project"], request.path_params["name"])
        user: Any = request.user
        if request.method == "PUT":
            artifacts[key] = await request.body()
            return JSONResponse({"stored": "/".join(key), "by": user.username}, status_code=201)
        if request.method == "DELETE":
            found = artifacts.pop(key, None) is not None
            return Response(status_code=204 if found else 404)
        if key not in artifacts:
            return JSONResponse({"error": "no such artifact"}, status_code=404)
        headers = {"X-Served-To": user.username}
        return Response(artifacts[key], media_type="application/octet-stream", headers=headers)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route(
                "/api/artifacts/{project}/{name:path}",
                artifact,
                methods=["GET", "PUT", "DELETE"],
            ),
        ],
        middleware=[policyauth.starlette.middleware(policy=policy or _policy())],
    )


def _policy() -> str | os.PathLike[str]:
    return os.environ.get("POLICYAUTH_POLICY") or POLICY


app = create_app()

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
