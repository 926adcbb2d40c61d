"""policyauth against oauth2-mock-server, whose userinfo answers each test sets.

Tokens come from the mock's token endpoint (client credentials); the userinfo document for each
token is given with the token request (a `userinfo` form field that the server's hooks record)
or changed later through its admin endpoint. The Engine calls the real userinfo endpoint over
HTTP, so claim paths, rules and the cache run against real responses: claim names with colons
and URLs (Cognito, Auth0), missing claims, numeric user names, provider failures and tokens
whose `exp` ends before the cache TTL.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import policyauth
from policyauth import Decision, Engine

COGNITO = {
    "sub": "5f1c0e4a-0c1b-4a53-9d0e-000000000001",
    "username": "carol",
    "cognito:groups": ["admins", "dev"],
    "https://example.com/roles": ["editor", "viewer"],
    "email": "carol@example.com",
}


RULES = """\
route GET /admin/** {
  auth mock
  allow if "admins" in groups
}

route GET /editor/** {
  auth mock
  allow if "editor" in roles
}

route GET /team/** {
  auth mock
  allow if team == "blue"
}

route DELETE /team/** {
  auth mock
  deny if team != "blue"
  allow
}

route GET /numbers/** {
  auth mock
  allow if username == "12345"
}
"""


def policy_text(mock: Any, *, discovery: bool = False, settings: str = "") -> str:
    """The mock policy: userinfo by its URL, or (`discovery`) found from the issuer."""
    endpoint = (
        ['preset   = "oidc"', f'issuer   = "{mock.url}"']
        if discovery
        else [f'userinfo = "{mock.url}/userinfo"']
    )
    claims = [
        "username = $.username",
        "groups   = $['cognito:groups'][*]",
        'roles    = $["https://example.com/roles"][*]',
        "team     = $.team",
    ]
    return "\n".join(
        [
            "settings {",
            '  realm = "mock"',
            *(f"  {line}" for line in settings.splitlines()),
            "}",
            "",
            "provider mock {",
            *(f"  {line}" for line in endpoint + claims),
            "}",
            "",
            RULES,
        ]
    )


def line_of(text: str, fragment: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if fragment in line)


def mint(mock: Any, userinfo: dict[str, Any], *, expires_in: int | None = None) -> str:
    """A token from the mock's token endpoint, whose userinfo answer will be `userinfo`."""
    form = {"grant_type": "client_credentials", "userinfo": json.dumps(userinfo)}
    if expires_in is not None:
        form["expires_in"] = str(expires_in)
    response = httpx.post(f"{mock.url}/token", data=form, trust_env=False)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def jwt_payload(token: str) -> dict[str, Any]:
    """The claims of a JWT the mock issued (read, not verified: the test trusts its own server)."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def set_userinfo(mock: Any, token: str, *, status: int | None = None, claims: Any = None) -> None:
    change: dict[str, Any] = {"token": token}
    if status is not None:
        change["status"] = status
    if claims is not None:
        change["claims"] = claims
    response = httpx.put(f"{mock.url}/admin/userinfo", json=change, trust_env=False)
    assert response.status_code == 200, response.text


def userinfo_calls(mock: Any) -> int:
    response = httpx.get(f"{mock.url}/admin/stats", trust_env=False)
    assert response.status_code == 200, response.text
    calls: int = response.json()["userinfo_calls"]
    return calls


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_refused(decision: Decision) -> None:
    assert decision.status == 401
    assert decision.reason == "invalid_token"
    assert decision.principal is None
    assert decision.rule is None
    assert decision.headers == (("WWW-Authenticate", 'Bearer realm="mock", error="invalid_token"'),)


@pytest.fixture(params=["userinfo", "discovery"])
def engine_and_text(
    request: pytest.FixtureRequest, mock_server: Any
) -> Iterator[tuple[Engine, str]]:
    """An Engine over the mock, finding userinfo by its URL or by OIDC discovery."""
    text = policy_text(mock_server, discovery=request.param == "discovery")
    with Engine(policyauth.loads(text, name="mock.policy")) as engine:
        yield engine, text


def test_claims_with_colons_and_urls_in_their_names(
    mock_server: Any, engine_and_text: tuple[Engine, str]
) -> None:
    engine, text = engine_and_text
    token = mint(mock_server, COGNITO)

    admin = engine.authorize_sync("GET", "/admin/users", bearer(token))
    editor = engine.authorize_sync("GET", "/editor/page/7", bearer(token))

    assert (admin.status, admin.reason) == (200, "allowed")
    assert admin.rule is not None
    assert admin.rule.line == line_of(text, 'allow if "admins" in groups')
    assert (editor.status, editor.reason) == (200, "allowed")
    assert editor.rule is not None
    assert editor.rule.line == line_of(text, 'allow if "editor" in roles')
    for decision in (admin, editor):
        assert decision.principal is not None
        assert decision.principal.provider == "mock"
        assert decision.principal.username == "carol"
        assert decision.principal.groups == ("admins", "dev")
        assert decision.principal.claims["roles"] == ["editor", "viewer"]
        assert "team" not in decision.principal.claims


def test_rules_that_do_not_hold_for_the_claims(
    mock_server: Any, engine_and_text: tuple[Engine, str]
) -> None:
    engine, _ = engine_and_text
    token = mint(
        mock_server,
        {"username": "dave", "cognito:groups": ["dev"], "https://example.com/roles": ["viewer"]},
    )

    admin = engine.authorize_sync("GET", "/admin", bearer(token))
    editor = engine.authorize_sync("GET", "/editor", bearer(token))

    for decision in (admin, editor):
        assert (decision.status, decision.reason) == (403, "not_allowed")
        assert decision.rule is None
        assert decision.principal is not None
        assert decision.principal.username == "dave"
        assert decision.principal.groups == ("dev",)
        assert decision.principal.claims["roles"] == ["viewer"]


def test_a_missing_claim_fails_closed(
    mock_server: Any, engine_and_text: tuple[Engine, str]
) -> None:
    engine, text = engine_and_text
    token = mint(mock_server, {"username": "erin", "cognito:groups": ["dev"]})

    read = engine.authorize_sync("GET", "/team/blue", bearer(token))
    delete = engine.authorize_sync("DELETE", "/team/blue", bearer(token))

    # An allow that cannot be decided does not allow ...
    assert (read.status, read.reason) == (403, "not_allowed")
    assert read.rule is None
    assert [(t.kind, t.outcome) for t in read.trace] == [("allow", "error")]
    assert "team" in read.trace[0].detail
    # ... and a deny that cannot be decided denies.
    assert (delete.status, delete.reason) == (403, "denied")
    assert delete.rule is not None
    assert delete.rule.line == line_of(text, 'deny if team != "blue"')
    for decision in (read, delete):
        assert decision.principal is not None
        assert decision.principal.username == "erin"
        assert decision.principal.groups == ("dev",)
        assert "team" not in decision.principal.claims
        assert "roles" not in decision.principal.claims


def test_a_present_claim_decides(mock_server: Any, engine_and_text: tuple[Engine, str]) -> None:
    engine, text = engine_and_text
    token = mint(mock_server, {"username": "frank", "team": "blue"})

    read = engine.authorize_sync("GET", "/team/blue", bearer(token))
    delete = engine.authorize_sync("DELETE", "/team/blue", bearer(token))

    assert (read.status, read.reason) == (200, "allowed")
    assert read.rule is not None
    assert read.rule.line == line_of(text, 'allow if team == "blue"')
    assert (delete.status, delete.reason) == (200, "allowed")
    assert delete.rule is not None
    assert delete.rule.line == line_of(text, "deny if team") + 1
    for decision in (read, delete):
        assert decision.principal is not None
        assert decision.principal.username == "frank"
        assert decision.principal.groups == ()
        assert decision.principal.claims["team"] == "blue"


def test_a_numeric_username(mock_server: Any, engine_and_text: tuple[Engine, str]) -> None:
    engine, text = engine_and_text
    token = mint(mock_server, {"username": 12345, "cognito:groups": ["dev"]})

    decision = engine.authorize_sync("GET", "/numbers/1", bearer(token))

    assert (decision.status, decision.reason) == (200, "allowed")
    assert decision.rule is not None
    assert decision.rule.line == line_of(text, 'allow if username == "12345"')
    assert decision.principal is not None
    assert decision.principal.username == "12345"  # the principal's name is always a string
    assert decision.principal.claims["username"] == "12345"  # and rules see that same string
    assert decision.principal.groups == ("dev",)


@pytest.mark.parametrize(
    "userinfo",
    [
        pytest.param({"sub": "u-1", "cognito:groups": ["admins"]}, id="no-username"),
        pytest.param({"username": "", "cognito:groups": ["admins"]}, id="empty-username"),
        pytest.param({"username": ["a", "b"]}, id="list-username"),
        pytest.param({"username": True}, id="boolean-username"),
    ],
)
def test_a_token_without_a_usable_username_is_refused(
    mock_server: Any, engine_and_text: tuple[Engine, str], userinfo: dict[str, Any]
) -> None:
    engine, _ = engine_and_text
    decision = engine.authorize_sync("GET", "/admin", bearer(mint(mock_server, userinfo)))

    assert_refused(decision)


def test_tokens_the_provider_refuses(mock_server: Any, engine_and_text: tuple[Engine, str]) -> None:
    engine, _ = engine_and_text
    expired = mint(mock_server, COGNITO, expires_in=-5)
    unknown = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJjYXJvbCJ9."  # a JWT this server never issued

    for token in (expired, unknown):
        assert_refused(engine.authorize_sync("GET", "/admin", bearer(token)))


def test_an_outage_is_503_and_never_cached(mock_server: Any) -> None:
    text = policy_text(mock_server, settings="cache_ttl = 5m\nnegative_ttl = 5m")
    token = mint(mock_server, COGNITO)
    set_userinfo(mock_server, token, status=503, claims={"error": "temporarily_unavailable"})
    with Engine(policyauth.loads(text, name="mock.policy")) as engine:
        calls = userinfo_calls(mock_server)
        first = engine.authorize_sync("GET", "/admin", bearer(token))
        second = engine.authorize_sync("GET", "/admin", bearer(token))
        assert userinfo_calls(mock_server) == calls + 2  # an outage is never remembered

        set_userinfo(mock_server, token, status=200, claims=COGNITO)
        recovered = engine.authorize_sync("GET", "/admin", bearer(token))
        cached = engine.authorize_sync("GET", "/admin", bearer(token))
        assert userinfo_calls(mock_server) == calls + 3  # an identity is

    for decision in (first, second):
        assert (decision.status, decision.reason, decision.allowed) == (
            503,
            "provider_unavailable",
            False,
        )
        assert decision.principal is None
        assert decision.rule is None
    for decision in (recovered, cached):
        assert (decision.status, decision.reason) == (200, "allowed")
        assert decision.principal is not None
        assert decision.principal.username == "carol"
        assert decision.principal.groups == ("admins", "dev")


def test_a_refused_token_is_remembered_for_negative_ttl(mock_server: Any) -> None:
    text = policy_text(mock_server, settings="negative_ttl = 1m")
    token = mint(mock_server, COGNITO)
    set_userinfo(mock_server, token, status=401, claims={"error": "invalid_token"})
    with Engine(policyauth.loads(text, name="mock.policy")) as engine:
        calls = userinfo_calls(mock_server)
        first = engine.authorize_sync("GET", "/admin", bearer(token))
        set_userinfo(mock_server, token, status=200, claims=COGNITO)
        second = engine.authorize_sync("GET", "/admin", bearer(token))
        assert userinfo_calls(mock_server) == calls + 1

    assert_refused(first)
    assert_refused(second)


def test_the_cache_never_outlives_the_exp_claim(mock_server: Any) -> None:
    """An identity is reused for `cache_ttl` at most, and never past the `exp` userinfo gives."""
    text = policy_text(mock_server, settings="cache_ttl = 5m")
    token = mint(mock_server, COGNITO, expires_in=2)
    exp = jwt_payload(token)["exp"]
    set_userinfo(mock_server, token, claims={**COGNITO, "exp": exp})
    with Engine(policyauth.loads(text, name="mock.policy")) as engine:
        calls = userinfo_calls(mock_server)
        live = engine.authorize_sync("GET", "/admin", bearer(token))
        time.sleep(max(0.0, exp + 0.2 - time.time()))
        expired = engine.authorize_sync("GET", "/admin", bearer(token))
        assert userinfo_calls(mock_server) == calls + 2

    assert (live.status, live.reason) == (200, "allowed")
    assert live.principal is not None
    assert live.principal.username == "carol"
    assert live.principal.groups == ("admins", "dev")
    assert_refused(expired)
