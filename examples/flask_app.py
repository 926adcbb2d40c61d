"""A build-artifact service on Flask, guarded by policies/github-ci.policy.

`PolicyAuth(app)` decides every request before any view runs and leaves the caller in
`g.principal`. The policy file is named in `app.config["POLICYAUTH_POLICY"]`.

    .venv/bin/python examples/flask_app.py               # http://127.0.0.1:8000
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

from flask import Flask, Response, g, request
from flask.typing import ResponseReturnValue

from policyauth.flask import PolicyAuth

POLICY = Path(__file__).resolve().parent.parent / "policies" / "github-ci.policy"


def create_app(policy: str | os.PathLike[str] | None = None) -> Flask:
    """The service, with its own in-memory artifact store, guarded by `policy`."""
    app = Flask(__name__)
    app.config["POLICYAUTH_POLICY"] = policy or os.environ.get("POLICYAUTH_POLICY") or POLICY
    PolicyAuth(app)
    artifacts: dict[tuple[str, str], bytes] = {}

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.route("/api/artifacts/<project>/<path:name>", methods=["GET", "PUT", "DELETE"])
    def artifact(project: str, name: str) -> ResponseReturnValue:
        key = (project, name)
        if request.method == "PUT":
            artifacts[key] = request.get_data()
            return {"stored": f"{project}/{name}", "by": g.principal.username}, 201
        if request.method == "DELETE":
            return ("", 204) if artifacts.pop(key, None) is not None else ("", 404)
        if key not in artifacts:
            return {"error": "no such artifact"}, 404
        response = Response(artifacts[key], mimetype="application/octet-stream")
        response.headers["X-Served-To"] = g.principal.username
        return response

    return app


app = create_app()

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=8000)
