"""FastAPI: the policy in front of every path, and dependencies for the caller it let in.

    from typing import Annotated

    from fastapi import Depends, FastAPI
    from policyauth import Principal
    import policyauth.fastapi

    app = FastAPI()
    policyauth.fastapi.install(app, policy="api.policy")

    @app.get("/reports/{name}")
    async def report(name: str, user: Annotated[Principal, Depends(policyauth.fastapi.require())]):
        ...

    admins = policyauth.fastapi.require(group="admins")

    @app.delete("/reports/{name}")
    async def drop(name: str, user: Annotated[Principal, Depends(admins)]): ...

`install(app, ...)` puts `policyauth.asgi.PolicyAuthMiddleware` in front of the app, so
everything is decided before FastAPI sees it, as the policy says and nothing else: an endpoint
without a dependency, `/docs` and `/openapi.json`, a path no endpoint serves (`403 no_route`),
a hostile path (`400`), a WebSocket handshake, a request whose body FastAPI could not parse.
A policy that wants the docs open says `route GET /docs { public }` and
`route GET /openapi.json { public }`. The dependencies then read the middleware's decision from
`scope["policyauth.decision"]`: typed access to the principal, with no second decision and no
second provider call. Middleware added after `install` sits in front of it: add
`CORSMiddleware` after `install`, so that it answers preflights and its headers reach denials.

`install(app, ..., guard_all=False)` is the explicit opt-out, for an app where the policy
guards some endpoints only: no middleware, and only endpoints that depend on `principal`,
`decision` or `require` are decided, by the engine `install` puts on
`app.state.policyauth_engine`; everything else (the docs, a path no endpoint serves) is
FastAPI's own business. FastAPI reads and parses a request's body before any dependency runs,
which would tell an anonymous caller about the schema (`422`), so `install` makes the app's
routes `PolicyAuthRoute`s, which decide before the body is read. Declare routes after `install`;
an `APIRouter` needs `route_class=PolicyAuthRoute` of its own.

Both `principal` and `require` declare the HTTP Bearer and HTTP Basic security schemes, so
`/openapi.json` lists them under `components.securitySchemes` and in each protected operation's
`security` (as alternatives). The schemes only document: reading the `Authorization` header
is the engine's job, so they never refuse a request themselves (FastAPI's would answer a
malformed Basic header 401, where the policy says 400). Basic is how API tokens of a `tokens`
block may be sent; when the installed policy has no tokens block, `install` removes the Basic
scheme from the OpenAPI document. That is decided per policy, not per route.

Denials are `PolicyDenied`, an HTTPException with the decision's status and headers. With
`install`, they are answered exactly as the middleware answers (`{"error": reason}`, one
`WWW-Authenticate` header per challenge); without it (an app wrapped in the middleware by hand,
or an engine set on the state), FastAPI's handler answers `{"detail": reason}` and several
challenges share one comma-separated header (RFC 9110 allows both forms).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Coroutine, Iterable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPBasic, HTTPBearer
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from policyauth.asgi import PolicyAuthMiddleware, request_target
from policyauth.compiler import Policy
from policyauth.decision import Decision, Principal, Reason
from policyauth.engine import Engine
from policyauth.middleware import PolicyAuth, build_engine, log_decision, user_of
from policyauth.starlette import denial_response

__all__ = [
    "BASIC_SCHEME",
    "BEARER_SCHEME",
    "DECISION_KEY",
    "STATE_ATTRIBUTE",
    "PolicyAuthRoute",
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
    scope["user"] = user_of(made)  # one read-only user per decision
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


# The dependencies that make a decision (`require` depends on `principal`).
_DECIDING: frozenset[Callable[..., Any]] = frozenset({decision, principal})


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
    guard_all: bool = True,
    reload: bool = False,
) -> Engine:
    """Put the policy in front of every path of `app` (the ASGI middleware), answer denials as
    the middleware does, and keep the OpenAPI document true to the policy. Returns the engine.

    Call it once, before the app serves, instead of wrapping the app in the middleware by hand
    (that would decide each request twice). `guard_all=False` is the opt-out: no middleware,
    only the endpoints that depend on policyauth are decided, and those must be declared after
    `install` (see the module's docstring). A policy that does not load raises PolicyError here.
    `reload=True` (with a policy file) puts a changed file in force without a restart.
    """
    chosen = build_engine(engine, policy, reload=reload)
    if guard_all:
        app.add_middleware(PolicyAuthMiddleware, engine=chosen)
    else:
        _authenticate_first(app)
    setattr(app.state, STATE_ATTRIBUTE, chosen)
    app.add_exception_handler(PolicyDenied, _answer_denial)
    if not chosen.policy.tokens:
        _without_basic(app)
    return chosen


class PolicyAuthRoute(APIRoute):
    """An APIRoute that decides the request before FastAPI reads its body, when the endpoint
    depends on policyauth: an anonymous caller gets 401, never a 422 that describes the schema.

    Routes whose endpoints do not depend on policyauth are left exactly as FastAPI makes them.
    Under the middleware the decision is already in the scope and is used as it is.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if not _uses_policyauth(self.dependant):
            return handler

        async def decided_first(request: Request) -> Response:
            await decision(request)  # raises PolicyDenied; leaves the decision in the scope
            return await handler(request)

        return decided_first


def _uses_policyauth(dependant: Dependant) -> bool:
    """Whether `dependant` asks for the decision, itself or through any of its dependencies."""
    return any(sub.call in _DECIDING or _uses_policyauth(sub) for sub in dependant.dependencies)


def _authenticate_first(app: FastAPI) -> None:
    """Make `app`'s routes PolicyAuthRoutes, or refuse where that cannot hold for every route."""
    router = app.router
    if router.route_class is not APIRoute and not issubclass(router.route_class, PolicyAuthRoute):
        raise TypeError(
            f"the app's route_class {router.route_class.__qualname__} must derive from "
            "policyauth.fastapi.PolicyAuthRoute, which authenticates before the body is read"
        )
    early = [
        route.path
        for route in router.routes
        if isinstance(route, APIRoute)
        and not isinstance(route, PolicyAuthRoute)
        and _uses_policyauth(route.dependant)
    ]
    if early:
        raise TypeError(
            "call policyauth.fastapi.install before declaring the routes that depend on it, "
            f"so that they authenticate before the body is read: {', '.join(early)}"
        )
    if router.route_class is APIRoute:
        router.route_class = PolicyAuthRoute


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
