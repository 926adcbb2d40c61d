"""`validate = "introspection"` (RFC 7662), unit tests against an httpx.MockTransport: what is
sent, and how every kind of answer is judged (strictly, as userinfo answers are)."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from provider_server import bearer, new_token, observe_decision

import policyauth
from policyauth import Reason

ENDPOINT = "https://sso.example.com/oauth2/introspect"
POLICY = f"""
provider legacy {{
  validate      = "introspection"
  introspection = "{ENDPOINT}"
  client_id     = "reports api"
  client_secret = "s3cret:x"
  audience      = "reports-api"
  username      = $.username
  groups        = $.groups[*]
}}

route GET /reports {{
  auth legacy
  allow if "reporting" in groups
}}
"""


class Server:
    def __init__(self, *replies: httpx.Response) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        # A fresh copy each time: a Response's stream belongs to one (sync or async) client.
        return httpx.Response(reply.status_code, headers=reply.headers, content=reply.content)


def active(**fields: Any) -> httpx.Response:
    document = {
        "active": True,
        "username": "ada",
        "groups": ["reporting"],
        "aud": ["reports-api"],
        "exp": int(time.time()) + 600,
        **fields,
    }
    return httpx.Response(200, json={k: v for k, v in document.items() if v is not None})


def run(server: Server, token: str, mode: str, policy: str = POLICY) -> policyauth.Decision:
    engine = policyauth.Engine(policyauth.loads(policy, "i.policy"), httpx.MockTransport(server))
    if mode == "sync":
        return observe_decision(engine.authorize_sync("GET", "/reports", bearer(token)))
    return observe_decision(asyncio.run(engine.authorize("GET", "/reports", bearer(token))))


MODES = ["sync", "async"]


@pytest.mark.parametrize("mode", MODES)
def test_the_request_is_rfc_7662_with_basic_client_authentication(mode):
    server = Server(active())
    token = new_token()
    decision = run(server, token, mode)
    assert (decision.status, decision.reason) == (200, Reason.ALLOWED), decision.message
    assert decision.principal is not None
    assert decision.principal.username == "ada"
    (request,) = server.requests
    assert (request.method, str(request.url)) == ("POST", ENDPOINT)
    assert parse_qs(request.content.decode()) == {
        "token": [token],
        "token_type_hint": ["access_token"],
    }
    scheme, credentials = request.headers["authorization"].split(" ")
    assert scheme == "Basic"
    # RFC 6749 2.3.1: id and secret are form-encoded before they are joined.
    assert base64.b64decode(credentials).decode() == "reports%20api:s3cret%3Ax"


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (httpx.Response(200, json={"active": False}), "the token is not active"),
        (active(active="true"), "the token is not active"),
        (active(aud="other-api"), "the token was issued for another audience"),
        (active(aud=None), "the token was issued for another audience"),
        (active(exp=int(time.time()) - 5), "the token has expired"),
    ],
    ids=["inactive", "active-string", "audience", "no-aud", "expired"],
)
@pytest.mark.parametrize("mode", MODES)
def test_answers_that_refuse_the_token(reply, message, mode):
    decision = run(Server(reply), new_token(), mode)
    assert (decision.status, decision.reason) == (401, Reason.INVALID_TOKEN)
    assert decision.message == message


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (httpx.Response(401), "the introspection endpoint refused our client credentials (401)"),
        (httpx.Response(403), "the introspection endpoint refused our client credentials (403)"),
        (httpx.Response(500), "the introspection endpoint answered 500"),
        (
            httpx.Response(302, headers={"location": "https://evil.example"}),
            "the introspection endpoint answered 302",
        ),
        (httpx.Response(200, text="active"), "the provider's response is not valid JSON"),
        (
            httpx.Response(200, text='{"active": true, "active": false}'),
            "the provider's response is not valid JSON",
        ),
        (
            httpx.Response(200, json=[{"active": True}]),
            "the provider's response is not a JSON object",
        ),
        (active(exp="tomorrow"), "the introspection answer has an `exp` that is not a number"),
    ],
    ids=["401", "403", "500", "redirect", "text", "duplicate", "list", "exp-string"],
)
@pytest.mark.parametrize("mode", MODES)
def test_outages_are_503_and_never_cached(reply, message, mode):
    server = Server(reply, active())
    token = new_token()
    engine = policyauth.Engine(policyauth.loads(POLICY, "i.policy"), httpx.MockTransport(server))
    if mode == "sync":
        first = engine.authorize_sync("GET", "/reports", bearer(token))
    else:
        first = asyncio.run(engine.authorize("GET", "/reports", bearer(token)))
    observe_decision(first)
    assert (first.status, first.reason) == (503, Reason.PROVIDER_UNAVAILABLE)
    assert first.message == message
    second = observe_decision(engine.authorize_sync("GET", "/reports", bearer(token)))
    assert second.status == 200  # the outage was not remembered


def test_exp_bounds_the_cache():
    server = Server(active(exp=int(time.time()) + 2))
    token = new_token()
    engine = policyauth.Engine(policyauth.loads(POLICY, "i.policy"), httpx.MockTransport(server))
    assert engine.authorize_sync("GET", "/reports", bearer(token)).status == 200
    remote = engine._state.remote
    assert remote is not None
    expires, _, _ = remote._cache._entries[remote._cache.key(remote._tags["legacy"], token)]
    assert expires - time.monotonic() <= 2.1
    assert engine.authorize_sync("GET", "/reports", bearer(token)).status == 200
    assert len(server.requests) == 1


def test_the_endpoint_from_discovery():
    replies = {
        "/.well-known/openid-configuration": httpx.Response(
            200,
            json={"issuer": "https://sso.example.com", "introspection_endpoint": ENDPOINT},
        ),
        "/oauth2/introspect": active(),
    }
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        reply = replies[request.url.path]
        return httpx.Response(reply.status_code, headers=reply.headers, content=reply.content)

    policy = POLICY.replace(
        f'introspection = "{ENDPOINT}"', 'issuer        = "https://sso.example.com"'
    )
    engine = policyauth.Engine(policyauth.loads(policy, "i.policy"), httpx.MockTransport(handler))
    for _ in range(2):
        assert engine.authorize_sync("GET", "/reports", bearer(new_token())).status == 200
    assert seen == [
        "/.well-known/openid-configuration",
        "/oauth2/introspect",
        "/oauth2/introspect",
    ]


def test_without_audience_any_active_token_passes_and_lint_warns():
    policy = POLICY.replace('  audience      = "reports-api"\n', "")
    assert run(Server(active(aud="other-api")), new_token(), "sync").status == 401
    assert run(Server(active(aud="other-api")), new_token(), "sync", policy).status == 200
    warnings = policyauth.loads(policy, "i.policy").warnings
    assert [(w.code, w.line, w.message) for w in warnings] == [
        ("PA208", 2, "provider `legacy` accepts active tokens issued for any audience")
    ]


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        (
            'preset = "keycloak"\n  base_url = "https://kc.example"\n  realm = "corp"',
            "https://kc.example/realms/corp/protocol/openid-connect/token/introspect",
        ),
        (
            'preset = "okta"\n  domain = "acme.okta.com"\n  authorization_server = "default"',
            "https://acme.okta.com/oauth2/default/v1/introspect",
        ),
        ('preset = "oidc"\n  issuer = "https://sso.example.com"', None),
    ],
)
def test_presets_with_an_introspection_mode(preset, expected):
    text = f"""
provider p {{
  {preset}
  validate = "introspection"
  client_id = "c"
  client_secret = "s"
  audience = "a"
}}
"""
    spec = policyauth.loads(text, "p.policy").providers["p"].spec
    assert (spec.validate, spec.introspection, spec.client_id) == ("introspection", expected, "c")


def test_introspection_needs_client_credentials():
    text = (
        'provider p {\n  preset = "keycloak"\n  base_url = "https://kc.example"\n'
        '  realm = "corp"\n  validate = "introspection"\n}\n'
    )
    _, diagnostics = policyauth.analyze(text, "p.policy", env={})
    assert [(d.code, d.message) for d in diagnostics] == [
        ("PA135", "provider `p` uses introspection and needs `client_id`, `client_secret`")
    ]
