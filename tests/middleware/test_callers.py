"""The caller objects the ASGI and WSGI middleware hand the application, in process.

A remembered decision answers request after request, so the middleware makes its PolicyUser
once per decision (`policyauth.middleware.user_of`) and hands every request the same one: it
must be read-only, must not change what the decision is as a value, and must not keep the
decision alive by a reference cycle (the identity cache's byte bound relies on decisions being
freed when the cache lets go of them). WSGI rebuilds only the headers a decision reads; the
method-override headers among them must still reach the engine.
"""

from __future__ import annotations

import asyncio
import gc
import io
import sys
import weakref
from collections.abc import Iterator, MutableMapping
from typing import Any

import httpx
import pytest

import policyauth
from policyauth.asgi import PolicyAuthMiddleware as AsgiMiddleware
from policyauth.decision import Decision
from policyauth.identity.remote import RemoteIdentitySource
from policyauth.middleware import PolicyAuth, PolicyUser, user_of
from policyauth.wsgi import PolicyAuthMiddleware as WsgiMiddleware
from policyauth.wsgi import request_headers

POLICY = """
provider corp {
  userinfo = "https://sso.example.com/userinfo"
  username = $.preferred_username
  groups   = $.groups[*]
}

route GET /public/** {
  public
}

route GET, POST /staff/** {
  auth corp
  allow if "staff" in groups
}
"""
USERINFO = {"preferred_username": "ann", "groups": ["staff"]}


def _userinfo(request: httpx.Request) -> httpx.Response:
    if request.headers.get("authorization") == "Bearer t-ann":
        return httpx.Response(200, json=USERINFO)
    return httpx.Response(401)


@pytest.fixture
def engine() -> policyauth.Engine:
    policy = policyauth.loads(POLICY, name="callers.policy")
    source = RemoteIdentitySource(policy, httpx.MockTransport(_userinfo))
    return policyauth.Engine(policy, identities=source)


def _asgi_calls(engine: policyauth.Engine, targets: list[str]) -> list[MutableMapping[str, Any]]:
    """Each target requested once through the ASGI middleware: the scopes the app saw."""
    seen: list[MutableMapping[str, Any]] = []

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope)

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError(f"the middleware answered {message}")

    async def run() -> None:
        middleware = AsgiMiddleware(app, engine=engine)
        for target in targets:
            scope = {
                "type": "http",
                "method": "GET",
                "path": target,
                "raw_path": target.encode(),
                "root_path": "",
                "query_string": b"",
                "headers": [(b"host", b"api"), (b"authorization", b"Bearer t-ann")],
            }
            await middleware(scope, None, send)  # type: ignore[arg-type]

    asyncio.run(run())
    return seen


def test_requests_one_decision_answers_share_one_read_only_user(engine: policyauth.Engine) -> None:
    first, second, third = _asgi_calls(engine, ["/staff/a", "/staff/a", "/public/a"])
    decision = first["policyauth.decision"]
    assert second["policyauth.decision"] is decision  # remembered: the same decision
    assert second["user"] is first["user"]
    assert type(first["user"]) is PolicyUser
    assert (first["user"].username, first["user"].groups) == ("ann", ("staff",))
    # `auth` holds the decision, so it is made per request (kept on the decision it would be
    # a cycle); it still carries the one decision.
    assert type(second["auth"]) is PolicyAuth
    assert second["auth"] is not first["auth"]
    assert second["auth"].decision is decision
    # A public route's decision has an anonymous user of its own.
    assert third["user"] is not first["user"]
    assert third["user"].is_authenticated is False
    with pytest.raises(AttributeError):
        first["user"].principal = None  # type: ignore[misc]
    with pytest.raises(AttributeError):
        first["user"].username = "mallory"  # type: ignore[misc]
    assert first["user"].username == "ann"


def test_the_memo_is_not_part_of_the_decision_value(engine: policyauth.Engine) -> None:
    made = engine.authorize_sync("GET", "/staff/a", [("authorization", "Bearer t-ann")])
    twin = Decision(
        made.status,
        made.reason,
        made.message,
        made.route,
        made.rule,
        made.principal,
        made.headers,
        made.steps,
        made.route_text,
        made.rule_label,
    )
    user = user_of(made)
    assert user_of(made) is user
    assert twin.memo is None
    assert made.memo is user
    assert twin == made
    assert "memo" not in repr(made)
    public = engine.authorize_sync("GET", "/public/a", [])
    hashed = hash(public)
    user_of(public)
    assert hash(public) == hashed


def test_a_decision_with_its_user_is_freed_without_the_cycle_collector(
    engine: policyauth.Engine,
) -> None:
    made = engine.authorize_sync("GET", "/public/a", [])
    decision = Decision(made.status, made.reason, made.message, principal=made.principal)
    user_of(decision)
    gone = weakref.ref(decision)
    gc.disable()
    try:
        del decision
        assert gone() is None
    finally:
        gc.enable()


def _environ(**extra: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/staff/a",
        "QUERY_STRING": "",
        "RAW_URI": "/staff/a",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "api",
        "HTTP_AUTHORIZATION": "Bearer t-ann",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        **extra,
    }


def _wsgi_call(middleware: WsgiMiddleware, environ: dict[str, Any]) -> tuple[str, bytes]:
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(status)

    body = b"".join(middleware(environ, start_response))
    return statuses[0], body


def _echo(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield environ["policyauth.user"].username.encode()


@pytest.mark.parametrize(
    "key", ["HTTP_X_HTTP_METHOD_OVERRIDE", "HTTP_X_METHOD_OVERRIDE", "HTTP_X_HTTP_METHOD"]
)
def test_wsgi_sends_an_override_header_to_the_engine_after_a_remembered_request(
    engine: policyauth.Engine, key: str
) -> None:
    middleware = WsgiMiddleware(_echo, engine=engine)
    assert _wsgi_call(middleware, _environ()) == ("200 OK", b"ann")
    assert _wsgi_call(middleware, _environ()) == ("200 OK", b"ann")  # remembered
    name = key[5:].lower().replace("_", "-")
    assert request_headers(_environ(**{key: "DELETE"})) == [
        ("authorization", "Bearer t-ann"),
        (name, "DELETE"),
    ]
    expected = engine.authorize_sync(
        "GET", "/staff/a", [("authorization", "Bearer t-ann"), (name, "DELETE")]
    )
    assert expected.status == 400, expected
    status, body = _wsgi_call(middleware, _environ(**{key: "DELETE"}))
    assert status == "400 Bad Request"
    assert body == b'{"error": "%s"}' % str(expected.reason).encode()


def test_wsgi_headers_without_an_override() -> None:
    assert request_headers(_environ()) == [("authorization", "Bearer t-ann")]
    without = _environ()
    del without["HTTP_AUTHORIZATION"]
    assert request_headers(without) == []
