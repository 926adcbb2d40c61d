"""WSGI middleware: the same decisions as the ASGI middleware, for synchronous servers.

The request target is taken raw where the server provides it (`RAW_URI` from gunicorn,
`REQUEST_URI` from waitress and others), so that encoded separators and dot segments reach the
canonicalizer; otherwise it is rebuilt from `PATH_INFO`, which is what the application routes
on. Rules apply to `PATH_INFO`, the path below `SCRIPT_NAME` that the application's own routes
see: the raw path is judged less `SCRIPT_NAME` only when it decodes to `SCRIPT_NAME + PATH_INFO`
(a server's mount, waitress's `url_prefix`), whole when it decodes to `PATH_INFO` (werkzeug's
`ProxyFix(x_prefix=1)` sets `SCRIPT_NAME` from the client's `X-Forwarded-Prefix` and leaves
`PATH_INFO` whole), and otherwise refused with 400 (`policyauth.request.mounts`).

WSGI has no list of headers: servers fold repeated headers into one value joined by commas, so
two `Authorization` headers arrive as one value with a comma, which the credential parser
rejects (security case A12/A13) instead of picking one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

from policyauth.compiler import Policy
from policyauth.engine import Engine
from policyauth.middleware import (
    PolicyAuth,
    build_engine,
    denial_body,
    denial_headers,
    log,
    log_decision,
    user_of,
)
from policyauth.request import DECIDING_HEADERS, Rejection
from policyauth.request.mounts import routed_target

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

_STATUS_LINES = {
    400: "400 Bad Request",
    401: "401 Unauthorized",
    403: "403 Forbidden",
    500: "500 Internal Server Error",
    503: "503 Service Unavailable",
}
_SAFE = "/:@!$&'()*+,;=~"
_DECIDING = tuple(("HTTP_" + name.upper().replace("-", "_"), name) for name in DECIDING_HEADERS)
_AUTHORIZATION = _DECIDING[0][0]  # DECIDING_HEADERS puts `authorization` first
_OVERRIDES = frozenset(key for key, _ in _DECIDING[1:])


class PolicyAuthMiddleware:
    """`PolicyAuthMiddleware(app, engine=engine)` or `PolicyAuthMiddleware(app, policy=...)`.

    Allowed requests reach `app` with `environ["policyauth.user"]` (a PolicyUser),
    `environ["policyauth.auth"]` (a PolicyAuth, with the decision) and `REMOTE_USER`.
    """

    def __init__(
        self,
        app: WSGIApp,
        engine: Engine | None = None,
        *,
        policy: str | os.PathLike[str] | Policy | None = None,
        reload: bool = False,  # watch the policy file and reload it on change
    ) -> None:
        self.app = app
        self.engine = build_engine(engine, policy, reload=reload)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            target, headers = request_target(environ), request_headers(environ)
            engine = self.engine
            decision = engine.remembered(method, target, headers) or engine.authorize_sync(
                method, target, headers
            )
        except Exception:
            log.exception("policyauth failed to decide %s %s", method, environ.get("PATH_INFO"))
            body = b'{"error": "internal_error"}'
            start_response(
                _STATUS_LINES[500],
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            return [] if method == "HEAD" else [body]
        if decision.status != 200:  # not `allowed`: a property is a call on every request
            log_decision(decision, method)
            status = _STATUS_LINES.get(decision.status, f"{decision.status} Denied")
            start_response(status, denial_headers(decision))
            # A response to HEAD has no body, and WSGI servers (waitress) send what they are
            # given: a body here would be read by the client as the next response.
            return [] if method == "HEAD" else [denial_body(decision)]
        environ["policyauth.user"] = decision.memo or user_of(decision)  # once per decision
        environ["policyauth.auth"] = PolicyAuth(decision)
        environ["policyauth.decision"] = decision
        if decision.principal is not None:
            environ["REMOTE_USER"] = decision.principal.username
        return self.app(environ, start_response)


def request_target(environ: Environ) -> str | Rejection:
    """The raw request target of `PATH_INFO`, the path the application routes on; a Rejection
    when the raw path is neither `PATH_INFO` nor `SCRIPT_NAME + PATH_INFO` (see the module)."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or ""
    if type(raw) is not str:  # PEP 3333 says text; a server that breaks it is not trusted more
        raw = str(raw)
    if raw:
        path, _, query = raw.partition("?")
        if "%" in path or path != environ.get("PATH_INFO"):
            # Anything but the common case (nothing to decode, the raw path is PATH_INFO).
            found = routed_target(
                path,
                _environ_bytes(environ, "PATH_INFO"),
                _environ_bytes(environ, "SCRIPT_NAME"),
            )
            if isinstance(found, Rejection):
                return found
            path = found
    else:
        # PATH_INFO is decoded (as latin-1 text of the raw bytes): encode it back.
        decoded = str(environ.get("PATH_INFO", "") or "/")
        path = quote(decoded.encode("latin-1", "replace"), safe=_SAFE)
        query = str(environ.get("QUERY_STRING", ""))
    return path + ("?" + query if query else "")


def _environ_bytes(environ: Environ, key: str) -> bytes:
    """An environ path as the bytes the server decoded (PEP 3333: latin-1 text of the bytes)."""
    return str(environ.get(key, "")).encode("latin-1", "replace")


def request_headers(environ: Environ) -> list[tuple[str, str]]:
    """The headers a decision reads (`DECIDING_HEADERS`), back from the environ (`HTTP_X_Y` is
    header `x-y`): rebuilding every header from the environ, a Python loop over all its keys,
    was the dearest step of a remembered decision."""
    if environ.keys().isdisjoint(_OVERRIDES):  # the usual request: no override (C, no loop)
        value = environ.get(_AUTHORIZATION)
        return [] if value is None else [("authorization", value)]
    return [(name, environ[key]) for key, name in _DECIDING if key in environ]
