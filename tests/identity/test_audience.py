"""Audience binding for every preset that offers it: the check's request is the provider's
documented one, a token issued to our client passes, one issued to another client is 401, and
a check that fails (or refuses our client credentials) is 503, never an allow.

The provider is an httpx.MockTransport that answers userinfo and the audience endpoint with the
response shapes of shared/reference/providers.md and records every request.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from provider_server import WATCH

import policyauth

TOKEN = WATCH.register("user-token-31337")  # the session's leak check looks for it
Answer = Callable[[httpx.Request], httpx.Response]


class Provider:
    """Answers userinfo with `userinfo`, the audience check with `audience`; records requests."""

    def __init__(self, userinfo: dict[str, Any], audience: Answer) -> None:
        self.userinfo = userinfo
        self.audience = audience
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path.endswith(("/userinfo", "/user", "/me")):
            return httpx.Response(200, json=self.userinfo)
        return self.audience(request)

    @property
    def audience_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if r not in self._userinfo_requests()]

    def _userinfo_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path.endswith(("/userinfo", "/user", "/me"))]


def decide(policy_text: str, provider: Provider) -> policyauth.Decision:
    policy = policyauth.loads(policy_text)
    with policyauth.Engine(policy, transport=httpx.MockTransport(provider)) as engine:
        token = f"gho_{TOKEN}" if "github" in policy_text else TOKEN
        return engine.authorize_sync("GET", "/api", [("Authorization", f"Bearer {token}")])


def basic(client: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client}:{secret}".encode()).decode()


def route(provider: str) -> str:
    return f"route GET /api {{\n  auth {provider}\n  allow\n}}\n"


# --- GitLab: GET /oauth/token/info, `application.uid` --------------------------------------------

GITLAB = (
    'provider gl {\n  preset = "gitlab"\n  base_url = "https://gitlab.example.com"\n'
    '  client_id = "gl-app"\n}\n' + route("gl")
)


def gitlab_info(uid: str) -> Answer:
    def answer(request: httpx.Request) -> httpx.Response:
        body = {
            "resource_owner_id": 1,
            "scope": ["openid"],
            "expires_in": 7200,
            "application": {"uid": uid},
            "created_at": 1767225600,
        }
        return httpx.Response(200, json=body)

    return answer


def test_gitlab_token_of_our_application_passes() -> None:
    provider = Provider({"nickname": "ann", "sub": "1"}, gitlab_info("gl-app"))
    decision = decide(GITLAB, provider)
    assert (decision.status, decision.reason) == (200, "allowed")
    (check,) = provider.audience_requests
    assert (check.method, str(check.url)) == ("GET", "https://gitlab.example.com/oauth/token/info")
    assert check.headers["authorization"] == f"Bearer {TOKEN}"


def test_gitlab_token_of_another_application_is_401() -> None:
    decision = decide(GITLAB, Provider({"nickname": "ann"}, gitlab_info("someone-else")))
    assert (decision.status, decision.reason) == (401, "invalid_token")
    assert decision.message == (
        "the token was issued to client `someone-else`, the policy's client_id is `gl-app`"
    )


# --- GitHub: POST /applications/{client_id}/token with the app's credentials --------------------

GITHUB = (
    'provider gh {\n  preset = "github"\n  client_id = "Iv1.app"\n  client_secret = "s3cret"\n}\n'
    + route("gh")
)


def github_check(status: int) -> Answer:
    def answer(request: httpx.Request) -> httpx.Response:
        if status != 200:
            return httpx.Response(status, json={"message": "Not Found"})
        return httpx.Response(200, json={"id": 1, "app": {"client_id": "Iv1.app"}, "user": {}})

    return answer


def test_github_token_of_our_app_passes_and_the_check_is_authenticated_as_the_app() -> None:
    provider = Provider({"login": "octocat", "id": 1}, github_check(200))
    decision = decide(GITHUB, provider)
    assert (decision.status, decision.reason) == (200, "allowed")
    (check,) = provider.audience_requests
    assert check.method == "POST"
    assert str(check.url) == "https://api.github.com/applications/Iv1.app/token"
    assert check.headers["authorization"] == basic("Iv1.app", "s3cret")
    assert json.loads(check.content) == {"access_token": f"gho_{TOKEN}"}


def test_github_404_means_another_app() -> None:
    decision = decide(GITHUB, Provider({"login": "octocat"}, github_check(404)))
    assert (decision.status, decision.reason) == (401, "invalid_token")


def test_github_refusing_our_app_credentials_is_503() -> None:
    decision = decide(GITHUB, Provider({"login": "octocat"}, github_check(401)))
    assert (decision.status, decision.reason) == (503, "provider_unavailable")


def test_github_client_id_without_secret_is_a_load_error() -> None:
    with pytest.raises(policyauth.PolicyError) as error:
        policyauth.loads('provider gh {\n  preset = "github"\n  client_id = "Iv1.app"\n}\n')
    (diagnostic,) = error.value.diagnostics
    assert (diagnostic.code, diagnostic.line) == ("PA106", 1)
    assert "needs `client_secret` with `client_id`" in diagnostic.message


# --- Facebook: GET /debug_token?input_token=...&access_token=APP|SECRET ---------------------------

FACEBOOK = (
    'provider fb {\n  preset = "facebook"\n  client_id = "1234"\n  client_secret = "s3cret"\n}\n'
    + route("fb")
)


def debug_token(app_id: str, valid: bool = True) -> Answer:
    def answer(request: httpx.Request) -> httpx.Response:
        data = {"app_id": app_id, "type": "USER", "is_valid": valid, "user_id": "42"}
        return httpx.Response(200, json={"data": data})

    return answer


def test_facebook_token_of_our_app_passes() -> None:
    provider = Provider({"id": "42", "name": "Ada"}, debug_token("1234"))
    decision = decide(FACEBOOK, provider)
    assert (decision.status, decision.reason) == (200, "allowed")
    (check,) = provider.audience_requests
    assert check.url.path == "/debug_token"
    assert parse_qs(check.url.query.decode()) == {
        "input_token": [TOKEN],
        "access_token": ["1234|s3cret"],
    }


@pytest.mark.parametrize(("app_id", "valid"), [("9999", True), ("1234", False)])
def test_facebook_other_app_or_invalid_is_401(app_id: str, valid: bool) -> None:
    decision = decide(FACEBOOK, Provider({"id": "42"}, debug_token(app_id, valid)))
    assert (decision.status, decision.reason) == (401, "invalid_token")


# --- Keycloak (and Okta, oidc): RFC 7662 introspection -------------------------------------------

KEYCLOAK = (
    'provider kc {\n  preset = "keycloak"\n  base_url = "https://sso.example.com"\n'
    '  realm = "corp"\n  client_id = "api"\n  client_secret = "s3cret"\n}\n' + route("kc")
)


def introspection(document: dict[str, Any], status: int = 200) -> Answer:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=document)

    return answer


def test_keycloak_introspection_of_our_client_passes() -> None:
    provider = Provider(
        {"preferred_username": "ann", "realm_access": {"roles": []}},
        introspection({"active": True, "client_id": "api", "azp": "api"}),
    )
    decision = decide(KEYCLOAK, provider)
    assert (decision.status, decision.reason) == (200, "allowed")
    (check,) = provider.audience_requests
    assert check.method == "POST"
    assert str(check.url) == (
        "https://sso.example.com/realms/corp/protocol/openid-connect/token/introspect"
    )
    assert check.headers["authorization"] == basic("api", "s3cret")
    assert parse_qs(check.content.decode()) == {
        "token": [TOKEN],
        "token_type_hint": ["access_token"],
    }


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"active": False}, "the token is not active"),
        (
            {"active": True, "client_id": "other", "azp": "other"},
            "the token was issued to client `other`, the policy's client_id is `api`",
        ),
    ],
)
def test_keycloak_inactive_or_foreign_token_is_401(document: dict[str, Any], message: str) -> None:
    decision = decide(KEYCLOAK, Provider({"preferred_username": "ann"}, introspection(document)))
    assert (decision.status, decision.reason, decision.message) == (401, "invalid_token", message)


def test_introspection_refusing_our_client_is_503() -> None:
    provider = Provider({"preferred_username": "ann"}, introspection({}, status=401))
    decision = decide(KEYCLOAK, provider)
    assert (decision.status, decision.reason) == (503, "provider_unavailable")


def test_audience_from_an_aud_list_passes() -> None:
    provider = Provider(
        {"preferred_username": "ann"},
        introspection({"active": True, "client_id": "web", "aud": ["web", "api"]}),
    )
    assert decide(KEYCLOAK, provider).status == 200


def oidc_provider(introspection_endpoint: str | None) -> Provider:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            document = {
                "issuer": "https://id.example.com",
                "userinfo_endpoint": "https://id.example.com/me",
            }
            if introspection_endpoint:
                document["introspection_endpoint"] = introspection_endpoint
            return httpx.Response(200, json=document)
        return httpx.Response(200, json={"active": True, "client_id": "api"})

    return Provider({"sub": "u1"}, answer)


OIDC = (
    'provider id {\n  preset = "oidc"\n  issuer = "https://id.example.com"\n'
    '  client_id = "api"\n  client_secret = "s3cret"\n}\n' + route("id")
)


def test_oidc_introspection_endpoint_comes_from_discovery() -> None:
    provider = oidc_provider("https://id.example.com/token/introspection")
    decision = decide(OIDC, provider)
    assert (decision.status, decision.reason) == (200, "allowed")
    paths = [r.url.path for r in provider.requests]
    assert paths == ["/.well-known/openid-configuration", "/me", "/token/introspection"]


def test_oidc_without_introspection_fails_closed() -> None:
    decision = decide(OIDC, oidc_provider(None))
    assert (decision.status, decision.reason) == (503, "provider_unavailable")
    assert decision.message == "the issuer offers no introspection endpoint"
