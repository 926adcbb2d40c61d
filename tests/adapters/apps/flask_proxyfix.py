"""A Flask app behind werkzeug's ProxyFix(x_prefix=1), guarded by policyauth.flask.

ProxyFix sets SCRIPT_NAME from the client's `X-Forwarded-Prefix` and leaves PATH_INFO whole,
which is what a deployment gets when its proxy does not strip or overwrite that header. Every
view records what it served (`/health`, public, lists it) and echoes the path it routed on.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, g, request
from werkzeug.middleware.proxy_fix import ProxyFix

from policyauth.flask import PolicyAuth

served: list[str] = []

app = Flask(__name__)
app.config["POLICYAUTH_POLICY"] = os.environ["POLICYAUTH_POLICY"]
PolicyAuth(app)
app.wsgi_app = ProxyFix(app.wsgi_app, x_prefix=1)


def _echo(view: str) -> dict[str, Any]:
    served.append(f"{view} {request.path}")
    return {
        "view": view,
        "path": request.path,
        "script_root": request.script_root,
        "user": g.principal.username,
        "judged": g.policyauth_decision.route_text,
    }


@app.get("/health")
def health() -> dict[str, Any]:
    return {"hits": served}


@app.get("/reports/<owner>/<path:rest>")
def reports(owner: str, rest: str) -> dict[str, Any]:
    return {**_echo("reports"), "owner": owner}


@app.get("/<path:rest>")
def anything(rest: str) -> dict[str, Any]:
    return _echo("anything")
