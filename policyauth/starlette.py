"""Starlette's authentication idiom, with policyauth as the backend.

    from starlette.applications import Starlette
    import policyauth.starlette

    app = Starlette(routes=..., middleware=[policyauth.starlette.middleware(policy="api.policy")])

`middleware(...)` is Starlette's `AuthenticationMiddleware` with a `PolicyAuthBackend` and this
module's `on_error`. Handlers then see `request.user` (a `StarletteUser`: Starlette's BaseUser
with the principal's `username`, `groups`, `provider` and `claims`) and `request.auth` (a
`PolicyCredentials`: the caller's groups as `scopes`, so `@requires("reporting")` works, and
the whole `decision`).

Which one to use. `policyauth.asgi.PolicyAuthMiddleware` is the default choice, for Starlette
too: it gives the same `request.user` and `request.auth`, it alone refuses a WebSocket
handshake with the decision's status (where the server supports it; else with close code 1008,
policy violation), and it answers a failure of the engine itself with a logged
`500 internal_error`. This backend exists for applications built around Starlette's
`AuthenticationMiddleware` (its ordering among other middleware, code that expects
`isinstance(request.user, BaseUser)`). Its limits come from that middleware, not from policyauth:

- a denial travels as an `AuthenticationError` to `on_error`. Pass this module's `on_error`
  (as `middleware()` does): Starlette's default answers every denial `400` with the plain
  text of the exception, without `WWW-Authenticate`, so a 401 or 403 would be lost;
- a refused WebSocket handshake is closed with code 1000 (normal closure), whatever the
  status; servers turn a close before accept into `403`;
- an exception from the engine is not caught here: Starlette's error middleware answers 500.
"""

from __future__ import annotations

import os

from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
)
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse, Response

from policyauth.asgi import request_target
from policyauth.compiler import Policy
from policyauth.decision import Decision
from policyauth.engine import Engine
from policyauth.middleware import (
    PolicyUser,
    build_engine,
    denial_body,
    denial_headers,
    log_decision,
)

__all__ = [
    "PolicyAuthBackend",
    "PolicyCredentials",
    "PolicyDenied",
    "StarletteUser",
    "denial_response",
    "middleware",
    "on_error",
]


class StarletteUser(PolicyUser, BaseUser):
    """`request.user`: the principal (or anonymous, on a public route) as a Starlette BaseUser."""


class PolicyCredentials(AuthCredentials):
    """`request.auth`: the caller's groups as Starlette scopes, plus the whole decision."""

    def __init__(self, decision: Decision) -> None:
        principal = decision.principal
        super().__init__(list(principal.groups) if principal else [])
        self.decision = decision


class PolicyDenied(AuthenticationError):
    """A denial on its way from the backend to `on_error`; carries the decision.

    The message is the public reason code only, so that Starlette's default `on_error`, if it
    is used by mistake, leaks nothing of the policy.
    """

    def __init__(self, decision: Decision) -> None:
        super().__init__(str(decision.reason))
        self.decision = decision


class PolicyAuthBackend(AuthenticationBackend):
    """Decides each request with the engine, on the raw request target (like the ASGI middleware).

    Allowed: `(PolicyCredentials, StarletteUser)`, and `scope["policyauth.decision"]` for code
    that reads the decision from the scope (`policyauth.fastapi.principal` does). Denied: raises
    `PolicyDenied`, which `on_error` turns into the decision's status, headers and JSON body.
    """

    def __init__(
        self,
        engine: Engine | None = None,
        *,
        policy: str | os.PathLike[str] | Policy | None = None,
        reload: bool = False,  # watch the policy file and reload it on change
    ) -> None:
        self.engine = build_engine(engine, policy, reload=reload)

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        scope = conn.scope
        method = scope.get("method", "GET") if scope["type"] == "http" else "GET"
        decision = await self.engine.authorize(method, request_target(scope), scope["headers"])
        if not decision.allowed:
            log_decision(decision, method)
            raise PolicyDenied(decision)
        scope["policyauth.decision"] = decision
        return PolicyCredentials(decision), StarletteUser(decision.principal)


def on_error(conn: HTTPConnection, exc: AuthenticationError) -> Response:
    """The response for a denial: the decision's status, its `WWW-Authenticate` challenges
    (one header each) and `{"error": reason}`, exactly as the ASGI middleware answers.

    Any other AuthenticationError (raised by code that is not policyauth's) gets Starlette's
    default answer, a 400 with its text.
    """
    if not isinstance(exc, PolicyDenied):
        return PlainTextResponse(str(exc), status_code=400)
    return denial_response(exc.decision)


def denial_response(decision: Decision) -> Response:
    """A Starlette Response for a denied decision; headers set raw to keep repeated names."""
    response = Response(denial_body(decision), status_code=decision.status)
    response.raw_headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in denial_headers(decision)
    ]
    return response


def middleware(
    engine: Engine | None = None,
    *,
    policy: str | os.PathLike[str] | Policy | None = None,
    reload: bool = False,
) -> Middleware:
    """`AuthenticationMiddleware` wired to a `PolicyAuthBackend` and this module's `on_error`,
    for `Starlette(middleware=[...])`; give exactly one of `engine` and `policy`
    (`reload=True` goes with a policy file)."""
    return Middleware(
        AuthenticationMiddleware,
        backend=PolicyAuthBackend(engine, policy=policy, reload=reload),
        on_error=on_error,
    )
