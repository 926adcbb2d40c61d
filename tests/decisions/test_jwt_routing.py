"""Routes with several providers: a JWT goes to the jwt provider whose issuer is its `iss`
(production.md section 1); anything else is routed as an opaque token, as before."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

import policyauth
from policyauth.evaluator import Pending, prepare
from policyauth.request import normalize_headers

POLICY = """
provider corp {
  validate   = "jwt"
  issuer     = "https://sso.example.com/realms/corp"
  jwks       = "https://sso.example.com/realms/corp/certs"
  audience   = "reports-api"
  token_type = "at+jwt"
  username   = $.sub
}

provider entra {
  preset   = "azure-ad"
  tenant   = "contoso"
  validate = "jwt"
  audience = "api://reports"
}

provider github {  # policyauth: ignore[PA202]
  preset = "github"
}

provider staff {  # policyauth: ignore[PA202]
  userinfo = "https://sso.example.com/userinfo"
  username = $.sub
}

route GET /mixed {
  auth corp, entra, github
  allow
}

route GET /opaque-fallback {
  auth corp, staff
  allow
}

route GET /alone {
  auth corp
  allow
}
"""


def fake_jwt(**payload: object) -> str:
    """Routing reads the unverified `iss` only; the signature is never looked at here."""

    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'kid': 'k', 'typ': 'at+jwt'})}.{part(payload)}.c2lnbmF0dXJl"


@pytest.fixture(scope="module")
def policy() -> policyauth.Policy:
    return policyauth.loads(POLICY, "routing.policy")


def chosen(policy: policyauth.Policy, path: str, token: str) -> tuple[str, ...] | int:
    headers = normalize_headers([("Authorization", f"Bearer {token}")])
    step = prepare(policy, "GET", path, headers)
    return step.authenticators if isinstance(step, Pending) else step.status


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (fake_jwt(iss="https://sso.example.com/realms/corp"), ("corp",)),
        (fake_jwt(iss="https://login.microsoftonline.com/contoso/v2.0"), ("entra",)),
        (fake_jwt(iss="https://sts.windows.net/contoso/"), ("entra",)),
        ("gho_16C7e42F292c6912E7710c838347Ae178B4a", ("github",)),
        # A JWT from an issuer no jwt provider has, and an opaque token without a known prefix:
        # no provider of this route takes it (github takes only its prefixes).
        (fake_jwt(iss="https://evil.example"), 401),
        ("opaque-token-without-prefix", 401),
    ],
)
def test_a_route_with_two_jwt_providers_and_one_opaque(policy, token, expected):
    assert chosen(policy, "/mixed", token) == expected


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (fake_jwt(iss="https://sso.example.com/realms/corp"), ("corp",)),
        (fake_jwt(iss="https://other.example"), ("staff",)),  # routed as an opaque token
        ("opaque-token", ("staff",)),
        ("not.a.jwt", ("staff",)),
    ],
)
def test_a_token_that_names_no_jwt_provider_goes_to_the_only_opaque_one(policy, token, expected):
    assert chosen(policy, "/opaque-fallback", token) == expected


def test_a_jwt_provider_alone_takes_every_token(policy):
    assert chosen(policy, "/alone", fake_jwt(iss="https://other.example")) == ("corp",)
    assert chosen(policy, "/alone", "opaque") == ("corp",)


def test_a_foreign_token_on_a_lone_jwt_route_is_refused_without_any_request():
    requests: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(str(request.url))
        return httpx.Response(500)

    engine = policyauth.Engine(
        policyauth.loads(POLICY, "routing.policy"), httpx.MockTransport(handler)
    )
    for token in (fake_jwt(iss="https://other.example"), "opaque-token"):
        decision = engine.authorize_sync("GET", "/alone", [("Authorization", f"Bearer {token}")])
        assert (decision.status, decision.reason) == (401, policyauth.Reason.INVALID_TOKEN)
    assert requests == []


def test_two_jwt_providers_sharing_an_issuer_on_a_route_is_a_load_error():
    text = POLICY.replace(
        'tenant   = "contoso"',
        'tenant   = "contoso"\n  issuer = "https://sso.example.com/realms/corp"',
    )
    _, diagnostics = policyauth.analyze(text, "routing.policy", env={})
    errors = [d for d in diagnostics if d.is_error]
    assert [d.code for d in errors] == ["PA134"]
    assert errors[0].message == (
        "jwt providers `corp` and `entra` on this route share the issuer "
        "`https://sso.example.com/realms/corp`"
    )
    assert (errors[0].file, errors[0].line) == ("routing.policy", 29)  # the `auth` line


def test_jwt_providers_need_no_token_prefix_to_share_a_route(policy):
    assert [d.code for d in policy.warnings] == []


def test_each_token_reaches_only_its_own_provider():
    """A JWT of `corp` is verified locally (only corp's JWKS is fetched); an opaque token goes
    to `staff`'s userinfo; neither is ever sent to the other."""
    seen: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((str(request.url), request.headers.get("authorization", "")))
        if request.url.path == "/userinfo":
            return httpx.Response(200, json={"sub": "svc"})
        return httpx.Response(200, json={"keys": []})

    engine = policyauth.Engine(
        policyauth.loads(POLICY, "routing.policy"), httpx.MockTransport(handler)
    )
    jwt = fake_jwt(iss="https://sso.example.com/realms/corp", aud="reports-api")
    decision = engine.authorize_sync(
        "GET", "/opaque-fallback", [("Authorization", f"Bearer {jwt}")]
    )
    assert (decision.status, decision.message) == (503, "the key set has no usable signing key")
    assert seen == [("https://sso.example.com/realms/corp/certs", "")]
    seen.clear()
    decision = engine.authorize_sync(
        "GET", "/opaque-fallback", [("Authorization", "Bearer opaque-1")]
    )
    assert (decision.status, decision.principal.username if decision.principal else None) == (
        200,
        "svc",
    )
    assert seen == [("https://sso.example.com/userinfo", "Bearer opaque-1")]
