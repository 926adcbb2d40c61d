"""A Flask app with policyauth.flask.PolicyAuth, for a real waitress in a test.

Views record the path they served; `/health` (public in the policy) lists those paths.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, g, request

from policyauth.flask import PolicyAuth

served: list[str] = []  # paths the views served
seen_before: list[str] = []  # paths the app's own before_request function saw

app = Flask(__name__)
app.config["POLICYAUTH_POLICY"] = os.environ["POLICYAUTH_POLICY"]
PolicyAuth(app)


@app.before_request
def too_late() -> None:
    """Registered after the extension: runs only for requests the policy let through."""
    seen_before.append(request.path)


@app.get("/health")
def health() -> dict[str, Any]:
    return {"hits": served, "before": seen_before}


@app.route("/reports/<path:rest>")
@app.route("/admin/<path:rest>", methods=["GET", "POST", "DELETE"])
def handler(rest: str) -> dict[str, Any]:
    served.append(request.path)
    user = g.policyauth_user
    return {
        "user": user.username,
        "groups": list(user.groups),
        "principal": g.principal.username,
        "remote_user": request.remote_user,
    }
