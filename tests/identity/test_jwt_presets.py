"""The presets in jwt mode, each against tokens shaped as that provider issues them (claim
names and issuers from shared/reference/providers.md; values invented). The JWKS is served at
the URL the preset computes, by an httpx.MockTransport, so a wrong template fails here."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from jwt_issuer import Issuer, sign
from provider_server import bearer, observe_decision

import policyauth
from policyauth import Reason
from policyauth.language.presets import PRESETS

TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
API_CLIENT = "6e74172b-be56-4843-9ff4-e66a39bb12e3"


def engine(provider: str, issuer: Issuer, rule: str = "allow") -> policyauth.Engine:
    text = f"provider p {{\n{provider}\n}}\n\nroute GET /r {{\n  auth p\n  {rule}\n}}\n"
    policy = policyauth.loads(text, "preset.policy")
    spec = policy.providers["p"].spec
    discovery = {"issuer": spec.issuer, "jwks_uri": issuer.jwks_url}

    def handler(request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        if url.endswith("/.well-known/openid-configuration") and spec.jwks is None:
            return httpx.Response(200, json=discovery)
        if url == (spec.jwks or issuer.jwks_url):
            issuer.requests[url] += 1
            return httpx.Response(200, json=issuer.jwks())
        return httpx.Response(404)

    return policyauth.Engine(policy, httpx.MockTransport(handler))


def token(issuer: Issuer, claims: dict[str, Any], typ: str = "JWT", kid: str = "k1") -> str:
    key, alg = issuer.keys[kid]
    now = int(time.time())
    payload = {"iat": now, "nbf": now, "exp": now + 3600, **claims}
    payload = {k: v for k, v in payload.items() if v is not None}
    return sign(key, alg, payload, {"kid": kid, "typ": typ})


def decide(engine: policyauth.Engine, token: str) -> policyauth.Decision:
    return observe_decision(engine.authorize_sync("GET", "/r", bearer(token)))


def allowed(decision: policyauth.Decision, username: str, groups: tuple[str, ...] = ()) -> None:
    assert (decision.status, decision.reason) == (200, Reason.ALLOWED), decision.message
    assert decision.principal is not None
    assert (decision.principal.username, decision.principal.groups) == (username, groups)


def refused(decision: policyauth.Decision, message: str) -> None:
    assert (decision.status, decision.reason) == (401, Reason.INVALID_TOKEN), decision.message
    assert decision.message == message


# --- Entra ID ------------------------------------------------------------------------------------

ENTRA = f"""  preset   = "azure-ad"
  tenant   = "{TENANT}"
  validate = "jwt"
  audience = ["{API_CLIENT}", "api://reports"]
  groups   = $.roles[*]"""


def entra_issuer() -> Issuer:
    issuer = Issuer(
        issuer=f"https://login.microsoftonline.com/{TENANT}/v2.0",
        jwks_url=f"https://login.microsoftonline.com/{TENANT}/discovery/v2.0/keys",
    )
    issuer.add("k1")
    return issuer


def entra_v2(**overrides: Any) -> dict[str, Any]:
    return {
        "aud": API_CLIENT,
        "iss": f"https://login.microsoftonline.com/{TENANT}/v2.0",
        "aio": "AXQAi/8UAAAA",
        "azp": "0e5f4b6c-1b4c-4b3a-9c2d-1f8e7a6b5c4d",
        "azpacr": "0",
        "name": "Ada Lovelace",
        "oid": "690222be-ff1a-4d56-abd1-7e4f7d38e474",
        "preferred_username": "ada@contoso.com",
        "rh": "0.AAAA",
        "roles": ["Reports.Read"],
        "scp": "access_as_user",
        "sub": "OLu859SGc2Sr9ZsqbkG-QbeLgJlb41KcdiPoLYNpSFA",
        "tid": TENANT,
        "uti": "fqiBqXLPj0eQa82S-IYFAA",
        "ver": "2.0",
        **overrides,
    }


def entra_v1(**overrides: Any) -> dict[str, Any]:
    return {
        "aud": "api://reports",
        "iss": f"https://sts.windows.net/{TENANT}/",
        "acr": "1",
        "appid": "0e5f4b6c-1b4c-4b3a-9c2d-1f8e7a6b5c4d",
        "appidacr": "0",
        "name": "Ada Lovelace",
        "oid": "690222be-ff1a-4d56-abd1-7e4f7d38e474",
        "roles": ["Reports.Read"],
        "scp": "access_as_user",
        "sub": "OLu859SGc2Sr9ZsqbkG-QbeLgJlb41KcdiPoLYNpSFA",
        "tid": TENANT,
        "unique_name": "ada@contoso.com",
        "upn": "ada@contoso.com",
        "ver": "1.0",
        **overrides,
    }


def test_entra_v2_and_v1_tokens():
    issuer = entra_issuer()
    made = engine(ENTRA, issuer)
    allowed(decide(made, token(issuer, entra_v2())), "ada@contoso.com", ("Reports.Read",))
    allowed(decide(made, token(issuer, entra_v1())), "ada@contoso.com", ("Reports.Read",))
    # v1.0 tokens of guests have no `upn`: `unique_name` stands in.
    allowed(
        decide(made, token(issuer, entra_v1(upn=None, unique_name="eve@fabrikam.com"))),
        "eve@fabrikam.com",
        ("Reports.Read",),
    )
    assert issuer.jwks_requests == 1


def test_entra_refusals():
    issuer = entra_issuer()
    made = engine(ENTRA, issuer)
    # A Graph token (audience Microsoft Graph) is not for this API.
    graph = entra_v2(aud="00000003-0000-0000-c000-000000000000")
    refused(decide(made, token(issuer, graph)), "the token was issued for another audience")
    other_tenant = entra_v2(
        iss="https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0"
    )
    refused(decide(made, token(issuer, other_tenant)), "the token is from another issuer")


def test_entra_claims_map_oid_and_tid():
    issuer = entra_issuer()
    made = engine(ENTRA, issuer, f'allow if tid == "{TENANT}"')
    decision = decide(made, token(issuer, entra_v2()))
    allowed(decision, "ada@contoso.com", ("Reports.Read",))
    assert decision.principal is not None
    assert decision.principal.claims["oid"] == "690222be-ff1a-4d56-abd1-7e4f7d38e474"


# --- Cognito -------------------------------------------------------------------------------------

POOL = "us-east-1_Ex4mple"
COGNITO_CLIENT = "1example23456789"
COGNITO = f"""  preset    = "cognito"
  region    = "us-east-1"
  user_pool = "{POOL}"
  validate  = "jwt"
  audience  = "{COGNITO_CLIENT}\""""


def cognito_issuer() -> Issuer:
    issuer = Issuer(
        issuer=f"https://cognito-idp.us-east-1.amazonaws.com/{POOL}",
        jwks_url=f"https://cognito-idp.us-east-1.amazonaws.com/{POOL}/.well-known/jwks.json",
    )
    issuer.add("k1")
    return issuer


def cognito_access(**overrides: Any) -> dict[str, Any]:
    return {
        "sub": "aaaaaaaa-bbbb-cccc-dddd-example",
        "cognito:groups": ["reporting", "admin"],
        "iss": f"https://cognito-idp.us-east-1.amazonaws.com/{POOL}",
        "version": 2,
        "client_id": COGNITO_CLIENT,
        "origin_jti": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "event_id": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "token_use": "access",
        "scope": "phone openid profile email",
        "auth_time": int(time.time()),
        "jti": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "username": "ada",
        **overrides,
    }


def test_cognito_access_tokens_are_bound_by_client_id():
    issuer = cognito_issuer()
    made = engine(COGNITO, issuer)
    allowed(decide(made, token(issuer, cognito_access())), "ada", ("reporting", "admin"))
    refused(
        decide(made, token(issuer, cognito_access(client_id="another-app"))),
        "the token was issued for another audience",
    )


def test_cognito_id_tokens_are_refused():
    issuer = cognito_issuer()
    made = engine(COGNITO, issuer)
    id_token = cognito_access(token_use="id", aud=COGNITO_CLIENT, client_id=None)
    id_token = {k: v for k, v in id_token.items() if v is not None}
    # An ID token names the app in `aud`, not `client_id`: it is for no audience of ours.
    refused(decide(made, token(issuer, id_token)), "the token was issued for another audience")
    with_client = cognito_access(token_use="id")
    refused(
        decide(made, token(issuer, with_client)), "the token is not an access token (`token_use`)"
    )


# --- Okta, Auth0, Keycloak, oidc -----------------------------------------------------------------


def test_okta_custom_authorization_server():
    issuer = Issuer(
        issuer="https://acme.okta.com/oauth2/default",
        jwks_url="https://acme.okta.com/oauth2/default/v1/keys",
    )
    issuer.add("k1")
    made = engine(
        '  preset = "okta"\n  domain = "acme.okta.com"\n  authorization_server = "default"\n'
        '  validate = "jwt"\n  audience = "api://default"',
        issuer,
    )
    claims = {
        "ver": 1,
        "jti": "AT.0mP4JKAZX1iACIT4vbEDF7LpvDVjxypPMf0D7uX39RE",
        "iss": "https://acme.okta.com/oauth2/default",
        "aud": "api://default",
        "cid": "0oa1example",
        "uid": "00u1example",
        "scp": ["openid", "reports.read"],
        "auth_time": int(time.time()),
        "sub": "ada@example.com",
    }
    decision = decide(made, token(issuer, claims))
    allowed(decision, "ada@example.com")
    assert decision.principal is not None
    assert decision.principal.claims["scopes"] == ["openid", "reports.read"]
    refused(
        decide(made, token(issuer, {**claims, "aud": "api://other"})),
        "the token was issued for another audience",
    )


def test_auth0_issuer_has_its_trailing_slash():
    issuer = Issuer(
        issuer="https://acme.eu.auth0.com/",
        jwks_url="https://acme.eu.auth0.com/.well-known/jwks.json",
    )
    issuer.add("k1")
    made = engine(
        '  preset = "auth0"\n  domain = "acme.eu.auth0.com"\n  validate = "jwt"\n'
        '  audience = "https://reports.example/api"',
        issuer,
    )
    claims = {
        "iss": "https://acme.eu.auth0.com/",
        "sub": "auth0|5878e4cdf299cf16c0558a10",
        "aud": ["https://reports.example/api", "https://acme.eu.auth0.com/userinfo"],
        "azp": "kbyuFDidLLm280LIwVFiazOqjO3ty8KH",
        "scope": "openid read:reports",
        "permissions": ["read:reports"],
    }
    allowed(decide(made, token(issuer, claims)), "auth0|5878e4cdf299cf16c0558a10")
    no_slash = {**claims, "iss": "https://acme.eu.auth0.com"}
    refused(decide(made, token(issuer, no_slash)), "the token is from another issuer")


def keycloak_claims(**overrides: Any) -> dict[str, Any]:
    return {
        "jti": "6f5ca9a7-2e2f-4a6e-8d1c-111111111111",
        "iss": "https://kc.example/realms/corp",
        "aud": ["reports-api", "account"],
        "sub": "f:1234:ada",
        "typ": "Bearer",
        "azp": "reports-web",
        "session_state": "b1e4",
        "realm_access": {"roles": ["reporting", "offline_access"]},
        "scope": "openid profile email",
        "preferred_username": "ada",
        "email": "ada@example.com",
        **overrides,
    }


def test_keycloak_access_tokens_and_id_tokens():
    issuer = Issuer(
        issuer="https://kc.example/realms/corp",
        jwks_url="https://kc.example/realms/corp/protocol/openid-connect/certs",
    )
    issuer.add("k1")
    made = engine(
        '  preset = "keycloak"\n  base_url = "https://kc.example"\n  realm = "corp"\n'
        '  validate = "jwt"\n  audience = "reports-api"',
        issuer,
    )
    allowed(decide(made, token(issuer, keycloak_claims())), "ada", ("reporting", "offline_access"))
    id_token = keycloak_claims(typ="ID", aud="reports-api")
    refused(decide(made, token(issuer, id_token)), "the token is not an access token (`typ`)")


def test_oidc_preset_finds_keys_by_discovery():
    issuer = Issuer(issuer="https://sso.example.com", jwks_url="https://sso.example.com/jwks")
    issuer.add("k1", "ES256")
    made = engine(
        '  preset = "oidc"\n  issuer = "https://sso.example.com"\n  validate = "jwt"\n'
        '  audience = "reports-api"\n  token_type = "at+jwt"',
        issuer,
    )
    claims = {
        "iss": "https://sso.example.com",
        "aud": "reports-api",
        "sub": "ada",
        "client_id": "web",
    }
    allowed(decide(made, token(issuer, claims, typ="at+jwt")), "ada")
    refused(
        decide(made, token(issuer, claims, typ="JWT")),
        "the token is not of the required type (`typ`)",
    )
    assert issuer.jwks_requests == 1


# --- what the checker says -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "codes"),
    [
        (ENTRA, []),
        (COGNITO, []),
        (
            '  preset = "oidc"\n  issuer = "https://sso.example.com"\n'
            '  validate = "jwt"\n  audience = "a"',
            ["PA209"],
        ),
        ('  preset = "azure-ad"\n  validate = "jwt"\n  audience = "a"', ["PA106"]),
        ('  preset = "azure-ad"\n  tenant = "t"\n  validate = "jwt"', ["PA131"]),
        ('  preset = "azure-ad"', ["PA202"]),
        ('  preset = "cognito"\n  domain = "auth.example.com"', ["PA202"]),
        ('  preset = "slack"\n  validate = "jwt"\n  audience = "a"', ["PA137"]),
    ],
)
def test_lint_and_load_errors_of_jwt_presets(block, codes):
    text = f"provider p {{\n{block}\n}}\n"
    _, diagnostics = policyauth.analyze(text, "p.policy", env={})
    assert [d.code for d in diagnostics] == codes, [d.one_line() for d in diagnostics]


def test_the_missing_audience_error_names_it():
    text = (
        'provider p {\n  preset = "auth0"\n  domain = "acme.eu.auth0.com"\n  validate = "jwt"\n}\n'
    )
    _, diagnostics = policyauth.analyze(text, "p.policy", env={})
    (error,) = diagnostics
    assert (error.code, error.line, error.message) == (
        "PA131",
        1,
        "provider `p` validates JWTs and needs `audience`",
    )


def test_jwt_mode_parameters_replace_the_userinfo_ones():
    # Cognito in jwt mode needs the region and pool, not the userinfo domain.
    spec = policyauth.loads(f"provider p {{\n{COGNITO}\n}}\n", "p.policy").providers["p"].spec
    assert spec.issuers == (f"https://cognito-idp.us-east-1.amazonaws.com/{POOL}",)
    assert spec.audience_claim == "client_id"
    assert spec.required_claims == (("token_use", "access"),)
    spec = policyauth.loads(f"provider p {{\n{ENTRA}\n}}\n", "p.policy").providers["p"].spec
    assert spec.issuers == (
        f"https://login.microsoftonline.com/{TENANT}/v2.0",
        f"https://sts.windows.net/{TENANT}/",
    )


@pytest.mark.parametrize("name", sorted(n for n, p in PRESETS.items() if p.jwt is not None))
def test_the_jwt_presets_table_of_the_docs_matches_presets_py(name):
    text = (Path(__file__).resolve().parents[2] / "docs" / "language.md").read_text()
    table = text[text.index("| Preset | Parameters | Issuer |") :]
    (row,) = [line for line in table.splitlines() if line.startswith(f"| `{name}` |")][:1]
    _, parameters, issuers, claims, _ = (cell.strip() for cell in row.strip("|").split("|"))
    jwt = PRESETS[name].jwt
    assert jwt is not None
    assert parameters == ", ".join(f"`{p}`" for p in jwt.required)
    for template in jwt.issuers:
        assert f"`{template}`" in issuers or template == "{issuer}"
    for claim, path in jwt.claims:
        assert f"`{claim} = {path}`" in claims
