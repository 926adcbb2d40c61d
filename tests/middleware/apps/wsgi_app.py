"""The WSGI application of the server tests, run by a real waitress process.

Every request that reaches the handler is echoed back as JSON (body and `x-echo` header) and
logged as one line of PA_TEST_LOG: PATH_INFO, SCRIPT_NAME, REMOTE_USER and the principal the
middleware put in the environ. The engine comes from table_engine.engine_from_env().
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from table_engine import decision_lines, engine_from_env, record

from policyauth.wsgi import PolicyAuthMiddleware

ENGINE = engine_from_env()


def seen(environ: dict[str, Any]) -> dict[str, Any]:
    user = environ.get("policyauth.user")
    auth = environ.get("policyauth.auth")
    decision = environ.get("policyauth.decision")
    return {
        "method": environ["REQUEST_METHOD"],
        "path": environ.get("PATH_INFO", ""),
        "script_name": environ.get("SCRIPT_NAME", ""),
        "query": environ.get("QUERY_STRING", ""),
        "remote_user": environ.get("REMOTE_USER"),
        "authorization": environ.get("HTTP_AUTHORIZATION"),
        "has_user": user is not None,
        "authenticated": bool(user is not None and user.is_authenticated),
        "user": user.display_name if user is not None else None,
        "groups": list(user.groups) if user is not None else None,
        "provider": user.provider if user is not None else None,
        "scopes": list(auth.scopes) if auth is not None else None,
        "reason": str(decision.reason) if decision is not None else None,
        **(decision_lines(decision) if decision is not None else {}),
    }


def echo(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    environ["wsgi.input"].read()
    entry = seen(environ)
    record(entry)
    text = json.dumps(entry)
    body = text.encode()
    start_response(
        "200 OK",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("X-Echo", text),
        ],
    )
    return [] if environ["REQUEST_METHOD"] == "HEAD" else [body]  # waitress sends what it gets


app = PolicyAuthMiddleware(echo, engine=ENGINE)
