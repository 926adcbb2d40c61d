"""FastAPI dependencies: the caller the policy let in, and one endpoint's extra demand.

    from fastapi import Depends, FastAPI
    from policyauth import Principal
    import policyauth.fastapi

    app = FastAPI()
    policyauth.fastapi.install(app, policy="api.policy")

    @app.get("/reports/{name}")
    async def report(name: str, user: Principal = Depends(policyauth.fastapi.require())): ...

    admins = policyauth.fastapi.require(group="admins")

    @app.delete("/reports/{name}")
    async def drop(name: str, user: Principal = Depends(admins)): ...

Two ways to run, and what each protects:

- With `policyauth.asgi.PolicyAuthMiddleware` around the app (recommended): every request,
  including `/docs`, unknown paths and WebSockets, is decided before FastAPI sees it, and the
  dependencies read that decision from `scope["policyauth.decision"]`.
- Without it, the dependencies decide: `install(app, ...)` puts an engine on
  `app.state.policyauth_engine`, and `principal` asks it about the raw request target when the
  scope holds no decision. Only endpoints that depend on `principal` or `require` are protected
  then; everything else (the docs, a path no endpoint serves) is FastAPI's own business. And
  FastAPI reads and parses a request's body before any dependency runs, then runs dependencies
  in the order they are declared: put policyauth's first.

Both `principal` and `require` declare the HTTP Bearer and HTTP Basic security schemes, so
`/openapi.json` lists them under `components.securitySchemes` and in each protected operation's
`security` (as alternatives). The schemes only document: reading the `Authorization` header
is the engine's job, so they never refuse a request themselves (FastAPI's would answer a
malformed Basic header 401, where the policy says 400). Basic is how API tokens of a `tokens`
block may be sent; when the installed policy has no tokens block, `install` removes the Basic
scheme from the OpenAPI document. That is decided per policy, not per route.

Denials are `PolicyDenied`, an HTTPException with the decision's status and headers. With
`install`, they are answered exactly as the middleware answers (`{"error": reason}`, one
`WWW-Authenticate` header per challenge); without it, FastAPI's handler answers
`{"detail": reason}` and several challenges share one comma-separated header (RFC 9110 allows
both forms).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.security import HTTPBasic, HTTPBearer
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from policyauth.asgi import request_target
from policyauth.compiler import Policy
from policyauth.decision import Decision, Principal, Reason
from policyauth.engine import Engine
from policyauth.middleware import PolicyAuth, PolicyUser, build_engine, log_decision
from policyauth.starlette import denial_response

__all__ = [
    "BASIC_SCHEME",
    "BEARER_SCHEME",
    "DECISION_KEY",
    "STATE_ATTRIBUTE",
    "PolicyDenied",
    "decision",
    "install",
    "principal",
    "require",
]

log = logging.getLogger("policyauth.fastapi")

STATE_ATTRIBUTE = "policyauth_engine"  # app.state.policyauth_engine
DECISION_KEY = "policyauth.decision"  # where the ASGI middleware leaves its decision
BEARER_SCHEME = "PolicyAuthBearer"
BASIC_SCHEME = "PolicyAuthBasic"


class _BearerScheme(HTTPBearer):
    """The Bearer scheme, for the OpenAPI document only: the engine reads the credential."""

    async def __call__(self, request: HTTPConnection) -> None:
        return None


class _BasicScheme(HTTPBasic):
    """The Basic scheme, for the OpenAPI document only: the engine reads the credential."""

    async def __call__(self, request: HTTPConnection) -> None:
        return None


bearer_scheme = _BearerScheme(
    scheme_name=BEARER_SCHEME,
    description="An OAuth 2.0 access token from an identity provider the policy names, or an "
    "API token (`pa_...`) issued by `policyauth token create`.",
    auto_error=False,
)
basic_scheme = _BasicScheme(
    scheme_name=BASIC_SCHEME,
    description="An API token (`pa_...`) as the password, with the user it was issued to.",
    auto_error=False,
)


class PolicyDenied(HTTPException):
    """A denial raised from a dependency; `install` registers the handler that answers it."""

    def __init__(self, decision: Decision) -> None:
        headers: dict[str, str] = {"Cache-Control": "no-store"}
        for name, value in decision.headers:
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        super().__init__(decision.status, detail=str(decision.reason), headers=headers)
        self.decision = decision


async def decision(conn: HTTPConnection) -> Decision:
    """The allowed decision for this request: the middleware's, or the installed engine's.

    Raises PolicyDenied when the engine denies, and RuntimeError (a 500: fail closed) when
    there is neither a middleware decision nor an installed engine.
    """
    scope = conn.scope
    found = scope.get(DECISION_KEY)
    if isinstance(found, Decision):
        return found
    engine = getattr(conn.app.state, STATE_ATTRIBUTE, None)
    if not isinstance(engine, Engine):
        raise RuntimeError(
            "policyauth.fastapi needs a decision: wrap the app in "
            "policyauth.asgi.PolicyAuthMiddleware, or call policyauth.fastapi.install(app, ...)"
        )
    method = scope.get("method", "GET") if scope["type"] == "http" else "GET"
    made = await engine.authorize(method, request_target(scope), scope["headers"])
    if not made.allowed:
        log_decision(made, method)
        raise PolicyDenied(made)
    scope[DECISION_KEY] = made
    scope["user"] = PolicyUser(made.principal)
    scope["auth"] = PolicyAuth(made)
    return made


async def principal(
    conn: HTTPConnection,
    _bearer: Annotated[None, Depends(bearer_scheme)],
    _basic: Annotated[None, Depends(basic_scheme)],
) -> Principal | None:
    """`Depends(principal)`: who the policy let in, or None on a `public` route.

    It never makes a request pass or fail by itself beyond the policy's decision; `require`
    is the dependency that adds a demand.
    """
    return (await decision(conn)).principal


def require(
    group: str | Iterable[str] | None = None,
    rule: Callable[[Principal], bool] | None = None,
) -> Callable[..., Any]:
    """`Depends(require(group="admins"))`: the policy's caller, if it also meets this demand.

    `group`: the caller must be in it (or, given several, in one of them). `rule`: a predicate
    on the principal that must return True; one that raises refuses. With neither, any
    authenticated caller will do. Everything else answers 403 `not_allowed`, including a
    request to a `public` route, where no credential was examined: a demand on a caller
    belongs behind an `auth` route. Prefer rules in the policy, where they are reviewed,
    linted and explained with the rest; this is for the check that reads better next to the
    handler.
    """
    wanted = (group,) if isinstance(group, str) else tuple(group or ())

    async def required(
        conn: HTTPConnection, caller: Annotated[Principal | None, Depends(principal)]
    ) -> Principal:
        made = await decision(conn)  # already in the scope: `principal` ran first
        refusal = _refusal(caller, wanted, rule)
        if refusal is None:
            assert caller is not None
            return caller
        denied = Decision(
            403,
            Reason.NOT_ALLOWED,
            refusal,
            route=made.route,
            principal=caller,
            route_text=made.route_text,
        )
        log_decision(denied, conn.scope.get("method", "GET"))
        raise PolicyDenied(denied)

    return required


def _refusal(
    caller: Principal | None,
    wanted: tuple[str, ...],
    rule: Callable[[Principal], bool] | None,
) -> str | None:
    """Why `caller` does not meet the endpoint's demand, or None when it does."""
    if caller is None:
        return "the endpoint requires an authenticated caller; the route is public"
    if wanted and not set(wanted) & set(caller.groups):
        return f"the endpoint requires one of the groups {', '.join(wanted)}"
    if rule is not None:
        try:
            held = rule(caller) is True
        except Exception:
            log.exception("the endpoint's rule failed for `%s`", caller.username)
            return "the endpoint's rule failed"
        if not held:
            return "the endpoint's rule does not hold"
    return None


def install(
    app: FastAPI,
    engine: Engine | None = None,
    *,
    policy: str | os.PathLike[str] | Policy | None = None,
) -> Engine:
    """Give `app` an engine for the dependencies, answer denials as the middleware does, and
    keep the OpenAPI document true to the policy. Returns the engine.

    Call it once, before the app serves (exception handlers are fixed at startup). With the
    ASGI middleware in front, pass it the same engine: the dependencies use the middleware's
    decision, and `install` still shapes denials and the OpenAPI document.
    """
    chosen = build_engine(engine, policy)
    setattr(app.state, STATE_ATTRIBUTE, chosen)
    app.add_exception_handler(PolicyDenied, _answer_denial)
    if not chosen.policy.tokens:
        _without_basic(app)
    return chosen


async def _answer_denial(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PolicyDenied)
    return denial_response(exc.decision)


def _without_basic(app: FastAPI) -> None:
    """Drop the Basic scheme from `app`'s OpenAPI document: no API token can be sent at all."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        schemes = schema.get("components", {}).get("securitySchemes", {})
        schemes.pop(BASIC_SCHEME, None)
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                if not isinstance(operation, dict) or "security" not in operation:
                    continue
                kept = [s for s in operation["security"] if BASIC_SCHEME not in s]
                if kept:
                    operation["security"] = kept
                else:
                    del operation["security"]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
