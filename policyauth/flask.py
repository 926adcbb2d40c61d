"""A Flask extension: every request is decided by the policy before any view runs.

    from flask import Flask, g
    from policyauth.flask import PolicyAuth

    app = Flask(__name__)
    PolicyAuth(app, policy="api.policy")        # or app.config["POLICYAUTH_POLICY"] = "api.policy"

    @app.get("/reports/<name>")
    def report(name):
        return {"name": name, "user": g.principal.username}

The check is a `before_request` function placed first, so it runs before the application's
own (and before a blueprint's; only Flask's URL value preprocessors, which reshape view
arguments, run earlier). It covers every request Flask handles, including static files and
URLs no view serves (the policy's `no_route` answers them 403 before Flask's 404). It
decides on the raw request target the server received (`RAW_URI` or `REQUEST_URI`, set by
Werkzeug's server, gunicorn and waitress), so encoded separators and dot segments reach the
canonicalizer instead of Werkzeug's decoded path.

A denial is answered at once with the decision's status, its `WWW-Authenticate` challenges and
`{"error": reason}`. An allowed request continues with `g.principal` (the Principal, None on a
`public` route), `g.policyauth_user` (a PolicyUser: `.is_authenticated`, `.username`,
`.groups`), `g.policyauth_decision`, and `REMOTE_USER` in the environ.

`policyauth.wsgi.PolicyAuthMiddleware` around `app.wsgi_app` makes the same decisions; the
extension exists so that the principal is in `g` and the configuration in `app.config`.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, Response, current_app, g, request

from policyauth.compiler import Policy
from policyauth.engine import Engine
from policyauth.middleware import (
    build_engine,
    denial_body,
    denial_headers,
    log,
    log_decision,
    user_of,
)
from policyauth.wsgi import request_headers, request_target

__all__ = ["PolicyAuth"]

CONFIG_POLICY = "POLICYAUTH_POLICY"
CONFIG_RELOAD = "POLICYAUTH_RELOAD"  # True: watch the policy file and reload it on change


class PolicyAuth:
    """`PolicyAuth(app, engine=...)`, `PolicyAuth(app, policy=...)`, or `PolicyAuth()` and
    later `init_app(app)`; with neither `engine` nor `policy`, the policy file named by
    `app.config["POLICYAUTH_POLICY"]` is loaded when the app is initialised.

    One extension object may serve several apps; each app keeps its own engine in
    `app.extensions["policyauth"]`.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        engine: Engine | None = None,
        policy: str | os.PathLike[str] | Policy | None = None,
        reload: bool = False,  # watch the policy file and reload it on change
    ) -> None:
        if engine is not None and policy is not None:
            raise TypeError("give at most one of `engine=` and `policy=`")
        self._engine = engine
        self._policy = policy
        self._reload = reload
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        engine = self._engine
        policy = self._policy
        if engine is None and policy is None:
            policy = app.config.get(CONFIG_POLICY)
            if policy is None:
                raise RuntimeError(
                    f"policyauth.flask.PolicyAuth needs `engine=`, `policy=` or "
                    f'app.config["{CONFIG_POLICY}"]'
                )
        reload = self._reload or bool(app.config.get(CONFIG_RELOAD, False))
        app.extensions["policyauth"] = build_engine(engine, policy, reload=reload)
        # First, so that no other before_request function runs for a request the policy refuses.
        functions = app.before_request_funcs.setdefault(None, [])
        if _authorize not in functions:
            functions.insert(0, _authorize)

    def engine(self, app: Flask) -> Engine:
        """The engine that decides `app`'s requests."""
        found: Engine = app.extensions["policyauth"]
        return found


def _authorize() -> Response | None:
    """The before_request function: None lets the request go on, a Response ends it."""
    engine: Engine = current_app.extensions["policyauth"]
    environ: dict[str, Any] = request.environ
    method = request.method
    try:
        decision = engine.authorize_sync(method, request_target(environ), request_headers(environ))
    except Exception:
        log.exception("policyauth failed to decide %s %s", method, environ.get("PATH_INFO"))
        return Response(b'{"error": "internal_error"}', status=500, content_type="application/json")
    if not decision.allowed:
        log_decision(decision, method)
        return Response(
            denial_body(decision), status=decision.status, headers=denial_headers(decision)
        )
    g.policyauth_decision = decision
    g.policyauth_user = user_of(decision)  # one read-only user per decision
    g.principal = decision.principal
    if decision.principal is not None:
        environ["REMOTE_USER"] = decision.principal.username
    return None
