"""`validate = "jwt"` and `validate = "introspection"` against real servers on loopback.

- oidc-provider issues JWT access tokens (RFC 9068) for a resource indicator (RFC 8707, its
  resourceIndicators feature), signed with its own JWKS, found through discovery;
- oauth2-mock-server signs JWTs with its own JWKS too (another issuer, another key);
- oidc-provider's RFC 7662 introspection endpoint validates its opaque tokens.

Tokens from both JWT issuers are accepted by a jwt provider pointed at their discovery
documents, and refused when expired, minted for another audience, or from the other issuer.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

import policyauth
from policyauth import Reason

REPORTS = "https://reports.example/api"
OTHER = "https://other.example/api"


def discover(issuer: str) -> dict[str, Any]:
    response = httpx.get(f"{issuer}/.well-known/openid-configuration", trust_env=False)
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def oidc_jwt(provider: Any, *, resource: str = REPORTS, short: bool = False) -> str:
    """A client credentials JWT access token of oidc-provider for `resource`."""
    client = provider.short_client_id if short else provider.client_id
    response = httpx.post(
        discover(provider.issuer)["token_endpoint"],
        data={"grant_type": "client_credentials", "resource": resource, "scope": "reports"},
        auth=(client, provider.client_secret),
        trust_env=False,
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    assert token.count(".") == 2  # a JWT, not the opaque tokens of the login flow
    return token


def mock_jwt(mock: Any, *, audience: str = "reports-api", expires_in: int | None = None) -> str:
    data = {"grant_type": "client_credentials", "aud": audience, "sub": "svc-reports"}
    if expires_in is not None:
        data["expires_in"] = str(expires_in)
    response = httpx.post(f"{mock.url}/token", data=data, auth=("any", "any"), trust_env=False)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def policy(issuer: str, *, audience: str = "reports-api") -> policyauth.Policy:
    text = f"""
settings {{
  clock_skew = 0s
}}

provider api {{  # policyauth: ignore[PA201]
  preset   = "oidc"
  issuer   = "{issuer}"
  validate = "jwt"
  audience = "{audience}"
}}

route GET /reports {{
  auth api
  allow if username in ["policyauth", "policyauth-short", "svc-reports"]
}}
"""
    return policyauth.loads(text, "jwt.policy")


class Counting(httpx.HTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return super().handle_request(request)


def decide(engine: policyauth.Engine, token: str) -> policyauth.Decision:
    return engine.authorize_sync("GET", "/reports", {"Authorization": f"Bearer {token}"})


def refused(decision: policyauth.Decision, message: str) -> None:
    assert (decision.status, decision.reason) == (401, Reason.INVALID_TOKEN), decision.message
    assert decision.message == message


def test_oidc_provider_jwt_access_tokens(oidc_provider: Any, mock_server: Any) -> None:
    transport = Counting()
    with policyauth.Engine(policy(oidc_provider.issuer), transport) as engine:
        decision = decide(engine, oidc_jwt(oidc_provider))
        assert (decision.status, decision.reason) == (200, Reason.ALLOWED), decision.message
        assert decision.principal is not None
        assert decision.principal.username == "policyauth"
        assert decision.principal.claims["client_id"] == "policyauth"
        for _ in range(5):
            assert decide(engine, oidc_jwt(oidc_provider)).status == 200
        # Discovery once, the JWKS once; no request per token.
        assert transport.paths == ["/.well-known/openid-configuration", "/jwks"]
        refused(
            decide(engine, oidc_jwt(oidc_provider, resource=OTHER)),
            "the token was issued for another audience",
        )
        refused(decide(engine, mock_jwt(mock_server)), "the token is from another issuer")
        short = oidc_jwt(oidc_provider, short=True)
        assert decide(engine, short).status == 200
        time.sleep(oidc_provider.short_access_ttl + 1.1)
        fresh = policyauth.Engine(policy(oidc_provider.issuer), Counting())
        refused(decide(fresh, short), "the token has expired")
        fresh.close()
        assert transport.paths == ["/.well-known/openid-configuration", "/jwks"]


async def test_oidc_provider_jwt_access_tokens_async(oidc_provider: Any) -> None:
    tokens = [oidc_jwt(oidc_provider) for _ in range(20)]
    async with policyauth.Engine(policy(oidc_provider.issuer)) as engine:
        decisions = await asyncio.gather(
            *(engine.authorize("GET", "/reports", {"Authorization": f"Bearer {t}"}) for t in tokens)
        )
    assert {(d.status, d.reason) for d in decisions} == {(200, Reason.ALLOWED)}


def test_oauth2_mock_server_jwts(oidc_provider: Any, mock_server: Any) -> None:
    transport = Counting()
    with policyauth.Engine(policy(mock_server.url), transport) as engine:
        decision = decide(engine, mock_jwt(mock_server))
        assert (decision.status, decision.reason) == (200, Reason.ALLOWED), decision.message
        assert decision.principal is not None
        assert decision.principal.username == "svc-reports"
        refused(decide(engine, mock_jwt(mock_server, expires_in=-60)), "the token has expired")
        refused(
            decide(engine, mock_jwt(mock_server, audience="other-api")),
            "the token was issued for another audience",
        )
        refused(decide(engine, oidc_jwt(oidc_provider)), "the token is from another issuer")
        assert transport.paths == ["/.well-known/openid-configuration", "/jwks"]


# --- introspection -------------------------------------------------------------------------------


def client_credentials(provider: Any) -> str:
    """An opaque access token of oidc-provider (no resource: not a JWT)."""
    response = httpx.post(
        discover(provider.issuer)["token_endpoint"],
        data={"grant_type": "client_credentials"},
        auth=(provider.client_id, provider.client_secret),
        trust_env=False,
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    assert token.count(".") == 0
    return token


def introspection_policy(
    provider: Any, *, secret: str | None = None, direct: bool = False
) -> policyauth.Policy:
    endpoint = (
        f'introspection = "{discover(provider.issuer)["introspection_endpoint"]}"'
        if direct
        else f'issuer        = "{provider.issuer}"'
    )
    text = f"""
provider legacy {{  # policyauth: ignore[PA201, PA208]
  validate      = "introspection"
  {endpoint}
  client_id     = "{provider.client_id}"
  client_secret = "{secret or provider.client_secret}"
  username      = $.client_id
}}

route GET /reports {{
  auth legacy
  allow if username == "policyauth"
}}
"""
    return policyauth.loads(text, "introspection.policy")


@pytest.mark.parametrize("direct", [False, True], ids=["discovery", "direct"])
def test_introspection_of_opaque_tokens(oidc_provider: Any, direct: bool) -> None:
    transport = Counting()
    with policyauth.Engine(introspection_policy(oidc_provider, direct=direct), transport) as engine:
        token = client_credentials(oidc_provider)
        decision = decide(engine, token)
        assert (decision.status, decision.reason) == (200, Reason.ALLOWED), decision.message
        assert decision.principal is not None
        assert decision.principal.username == "policyauth"
        assert decide(engine, token).status == 200  # cached
        assert transport.paths.count("/token/introspection") == 1
        refused(decide(engine, "garbage-token-0123456789"), "the token is not active")


async def test_introspection_async_and_revocation(oidc_provider: Any) -> None:
    token = client_credentials(oidc_provider)
    async with policyauth.Engine(introspection_policy(oidc_provider)) as engine:
        decision = await engine.authorize("GET", "/reports", {"Authorization": f"Bearer {token}"})
        assert decision.status == 200, decision.message
    response = httpx.post(
        discover(oidc_provider.issuer)["revocation_endpoint"],
        data={"token": token},
        auth=(oidc_provider.client_id, oidc_provider.client_secret),
        trust_env=False,
    )
    assert response.status_code == 200
    async with policyauth.Engine(introspection_policy(oidc_provider)) as engine:
        decision = await engine.authorize("GET", "/reports", {"Authorization": f"Bearer {token}"})
        refused(decision, "the token is not active")


def test_introspection_with_wrong_client_credentials_is_503(oidc_provider: Any) -> None:
    token = client_credentials(oidc_provider)
    with policyauth.Engine(introspection_policy(oidc_provider, secret="wrong")) as engine:
        decision = decide(engine, token)
        assert (decision.status, decision.reason) == (503, Reason.PROVIDER_UNAVAILABLE)
        assert decision.message == "the introspection endpoint refused our client credentials (401)"
