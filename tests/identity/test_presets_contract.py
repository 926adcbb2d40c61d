"""Contract tests: each preset against a local server that answers like the real provider.

For every preset: the request policyauth makes (URL, method, token transport, required headers),
the principal the documented success response gives, and the documented invalid-token response
as 401 `invalid_token`. Then the provider-specific behaviours of providers.md: Slack's 200
`ok:false`, GitHub's 401 and rate-limit 403, Okta's empty 401, Auth0's plain text, Facebook's
400, Cognito's bracketed claim names, Google's tokeninfo audience check, OIDC discovery.

Every test runs through the async client and the sync one (`mode`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from provider_server import (
    AUTH0_USERINFO,
    AZURE_ME,
    COGNITO_USERINFO,
    FACEBOOK_ME,
    GITHUB_USER,
    GITLAB_USERINFO,
    GOOGLE_CLIENT,
    GOOGLE_USERINFO,
    KEYCLOAK_USERINFO,
    OIDC_USERINFO,
    OKTA_USERINFO,
    SLACK_USERINFO,
    Engines,
    ProviderApp,
    Reply,
    bearer,
    google_tokeninfo,
    new_token,
    observe_decision,
)

import policyauth
from policyauth import Decision, Reason

CHALLENGE = ("WWW-Authenticate", 'Bearer realm="identity-tests", error="invalid_token"')
MODES = ["async", "sync"]


async def decide(engine: policyauth.Engine, mode: str, path: str, token: str) -> Decision:
    """One request through the async client or the sync one (on a worker thread)."""
    if mode == "async":
        decision = await engine.authorize("GET", path, bearer(token))
    else:
        decision = await asyncio.to_thread(engine.authorize_sync, "GET", path, bearer(token))
    return observe_decision(decision)


def assert_allowed(decision: Decision, provider: str) -> policyauth.Principal:
    assert (decision.status, decision.reason) == (200, Reason.ALLOWED), decision.message
    assert decision.principal is not None
    assert decision.principal.provider == provider
    return decision.principal


def assert_invalid(decision: Decision) -> None:
    assert (decision.status, decision.reason) == (401, Reason.INVALID_TOKEN), decision.message
    assert decision.principal is None
    assert CHALLENGE in decision.headers


def assert_unavailable(decision: Decision) -> None:
    assert (decision.status, decision.reason) == (503, Reason.PROVIDER_UNAVAILABLE), (
        decision.message
    )
    assert decision.principal is None
    assert not decision.allowed


@dataclass(frozen=True)
class Case:
    provider: str  # key of PRESET_BLOCKS, also the route path
    url: str  # the userinfo URL the preset must call (without the token)
    document: dict[str, Any]
    username: str
    groups: tuple[str, ...] = ()
    claims: dict[str, Any] = field(default_factory=dict)
    method: str = "GET"
    prefix: str = "tok-"
    server_path: str = ""

    @property
    def path(self) -> str:
        return self.server_path or httpx.URL(self.url).path


CASES = [
    Case(
        "google",
        "https://openidconnect.googleapis.com/v1/userinfo",
        GOOGLE_USERINFO,
        "ada@example.com",
        claims={"email_verified": True, "sub": "104857392018475639201", "hd": "example.com"},
        prefix="ya29.",
    ),
    Case(
        "azure-ad",
        "https://graph.microsoft.com/v1.0/me",
        AZURE_ME,
        "AdeleV@contoso.com",
        claims={"id": "87d349ed-44d7-43e1-9a83-5f2406dee5bd", "email": "AdeleV@contoso.com"},
        prefix="eyJ0eXAiOiJKV1Qi.",
    ),
    Case(
        "keycloak",
        "https://sso.example.com/realms/corp/protocol/openid-connect/userinfo",
        KEYCLOAK_USERINFO,
        "ada",
        groups=("offline_access", "uma_authorization", "default-roles-myrealm", "admin"),
        claims={"email_verified": True, "sub": "ccd1ab6c-0c54-4f27-82a9-092376a66cf4"},
        prefix="eyJhbGciOiJSUzI1NiJ9.",
    ),
    Case(
        "okta",
        "https://acme.okta.com/oauth2/default/v1/userinfo",
        OKTA_USERINFO,
        "john.doe@example.com",
        groups=("Everyone", "Engineering"),
        claims={"sub": "00uid4BxXw6I6TV4m0g3", "email_verified": True},
    ),
    Case(
        "okta-org",
        "https://acme.okta.com/oauth2/v1/userinfo",
        OKTA_USERINFO,
        "john.doe@example.com",
        groups=("Everyone", "Engineering"),
    ),
    Case(
        "cognito",
        "https://auth.example.com/oauth2/userInfo",
        COGNITO_USERINFO,
        "janedoe",
        groups=("admin", "billing"),
        # `email_verified` is the string "true" at Cognito, and stays a string
        claims={"tenant": "acme", "email_verified": "true", "email": "janedoe@example.com"},
    ),
    Case(
        "github",
        "https://api.github.com/user",
        GITHUB_USER,
        "octocat",
        claims={"id": 1},
        prefix="gho_",
    ),
    Case(
        "slack",
        "https://slack.com/api/openid.connect.userInfo",
        SLACK_USERINFO,
        "krane@example.com",
        claims={"user_id": "U0R7JM", "team_id": "T0R7GR", "email_verified": True},
        method="POST",
        prefix="xoxp-",
    ),
    Case(
        "gitlab",
        "https://gitlab.com/oauth/userinfo",
        GITLAB_USERINFO,
        "ada",
        groups=("acme", "acme/platform", "acme/platform/infra"),
        claims={"sub": "1234567", "email_verified": True},
    ),
    Case(
        "facebook",
        "https://graph.facebook.com/v19.0/me?fields=id,name,email",
        FACEBOOK_ME,
        "10224567890123456",
        claims={"email": "ada@example.com", "name": "Ada Lovelace"},
        prefix="EAAB",
    ),
    Case(
        "auth0",
        "https://acme.eu.auth0.com/userinfo",
        AUTH0_USERINFO,
        "ada@example.com",
        groups=("admin", "billing"),
        claims={"nickname": "ada", "sub": "auth0|5878e4cdf299cf16c0558a10"},
    ),
    Case(
        "oidc",
        "https://idp.example.com/userinfo",
        OIDC_USERINFO,
        "248289761001",
        claims={"preferred_username": "j.doe", "email_verified": True},
    ),
]
IDS = [case.provider for case in CASES]


# --- every preset: the request, the success document, the invalid token -------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_the_request_is_the_one_the_provider_documents(
    case: Case, mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, transport = aengines(case.provider)
    token = new_token(case.prefix)
    server.grant(token, case.document)

    assert_allowed(await decide(engine, mode, f"/{case.provider}", token), case.provider)

    userinfo = [seen for seen in transport.seen if seen.url.path == case.path]
    assert len(userinfo) == 1
    sent = userinfo[0]
    assert sent.method == case.method
    expected = httpx.URL(case.url)
    assert (sent.url.scheme, sent.url.host, sent.url.path) == (
        expected.scheme,
        expected.host,
        expected.path,
    )
    assert sent.headers.get("user-agent"), "every request names itself"
    if case.provider == "facebook":
        # Facebook documents only ?access_token=; the fields the preset asks for stay in the URL
        assert sent.url.params.get("access_token") == token
        assert sent.url.params.get("fields") == "id,name,email"
        assert "authorization" not in sent.headers
    else:
        assert sent.headers["authorization"] == f"Bearer {token}"
        assert token not in str(sent.url)
        assert sent.url.params == expected.params
    if case.provider == "github":
        assert sent.headers["accept"] == "application/vnd.github+json"
        assert sent.headers["x-github-api-version"] == "2022-11-28"
    else:
        assert "json" in sent.headers["accept"]
    # the server saw the call for the provider's own host, once
    calls = server.calls_for(token)
    assert [(c.method, c.host, c.path) for c in calls] == [(case.method, expected.host, case.path)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_the_documented_success_response_gives_the_principal(
    case: Case, mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, _ = aengines(case.provider)
    token = new_token(case.prefix)
    server.grant(token, case.document)

    principal = assert_allowed(
        await decide(engine, mode, f"/{case.provider}", token), case.provider
    )

    assert principal.username == case.username
    assert principal.groups == case.groups
    assert principal.claims["username"] == case.username
    for name, value in case.claims.items():
        assert principal.claims[name] == value, name
    # a second request is answered from the cache
    assert_allowed(await decide(engine, mode, f"/{case.provider}", token), case.provider)
    assert server.count(path=case.path, token=token) == 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_the_documented_invalid_token_response_is_401_invalid_token(
    case: Case, mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, _ = aengines(case.provider)
    token = new_token(case.prefix)  # never granted: the server answers as the provider does

    decision = await decide(engine, mode, f"/{case.provider}", token)

    assert_invalid(decision)
    assert server.count(path=case.path, token=token) == 1
    # remembered for negative_ttl: a retry does not reach the provider again
    assert_invalid(await decide(engine, mode, f"/{case.provider}", token))
    assert server.count(path=case.path, token=token) == 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("provider", "prefix"),
    [("google", "gho_"), ("github", "ya29."), ("slack", "xoxb-"), ("github", "tok-")],
)
async def test_a_token_outside_the_preset_s_prefixes_is_never_sent(
    provider: str, prefix: str, mode: str, aengines: Engines, server: ProviderApp
) -> None:
    """A preset that names its token prefixes is not shown other tokens (security case A20)."""
    engine, transport = aengines(provider)
    token = new_token(prefix)

    assert_invalid(await decide(engine, mode, f"/{provider}", token))
    assert transport.seen == []
    assert server.count(token=token) == 0


# --- provider-specific behaviours -------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("error", ["invalid_auth", "token_revoked", "not_authed", "missing_scope"])
async def test_slack_http_200_with_ok_false_is_invalid(
    error: str, mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, _ = aengines("slack")
    token = new_token("xoxp-")
    body = {"ok": False, "error": error, "response_metadata": {"messages": []}}
    server.script(token, Reply(200, body, content_type="application/json"))

    assert_invalid(await decide(engine, mode, "/slack", token))
    assert server.count(token=token) == 1


@pytest.mark.parametrize("mode", MODES)
async def test_slack_document_without_ok_is_invalid(
    mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, _ = aengines("slack")
    token = new_token("xoxp-")
    server.grant(token, {k: v for k, v in SLACK_USERINFO.items() if k != "ok"})

    assert_invalid(await decide(engine, mode, "/slack", token))


@pytest.mark.parametrize("mode", MODES)
async def test_github_bad_credentials_401_is_invalid(
    mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, _ = aengines("github")
    token = new_token("gho_")

    assert_invalid(await decide(engine, mode, "/github", token))
    call = server.calls_for(token)[0]
    assert call.headers["user-agent"] == "policyauth"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1767225600"}),
        (429, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1767225600"}),
        (403, {"retry-after": "60"}),  # secondary rate limit
        (429, {"retry-after": "60"}),
    ],
    ids=["403-primary", "429-primary", "403-secondary", "429-secondary"],
)
async def test_github_rate_limit_is_503_and_not_cached(
    status: int, headers: dict[str, str], mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, _ = aengines("github")
    token = new_token("gho_")
    body = {
        "message": "API rate limit exceeded for user ID 1.",
        "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
    }
    server.script(token, Reply(status, body, {"x-ratelimit-limit": "5000", **headers}))

    assert_unavailable(await decide(engine, mode, "/github", token))
    assert_unavailable(await decide(engine, mode, "/github", token))
    assert server.count(token=token) == 2
    # once the limit resets, the same token works
    del server.scripts[("*", token)]
    server.grant(token, GITHUB_USER)
    assert_allowed(await decide(engine, mode, "/github", token), "github")


@pytest.mark.parametrize("mode", MODES)
async def test_github_403_that_is_not_rate_limiting_is_invalid(
    mode: str, aengines: Engines, server: ProviderApp
) -> None:
    """The failed-login lockout and SAML SSO enforcement are 403 without rate-limit headers."""
    engine, _ = aengines("github")
    token = new_token("gho_")
    body = {"message": "Maximum number of login attempts exceeded."}
    server.script(token, Reply(403, body, {"x-ratelimit-remaining": "4990"}))

    assert_invalid(await decide(engine, mode, "/github", token))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", ["okta", "okta-org"])
async def test_okta_empty_401_body_is_invalid(
    provider: str, mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, transport = aengines(provider)
    token = new_token()

    assert_invalid(await decide(engine, mode, f"/{provider}", token))
    call = server.calls_for(token)[0]
    assert call.query == ()  # Okta refuses query-string tokens with 400
    assert transport.seen[0].headers["authorization"] == f"Bearer {token}"


@pytest.mark.parametrize("mode", MODES)
async def test_okta_403_insufficient_scope_is_invalid(
    mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, _ = aengines("okta")
    token = new_token()
    challenge = 'Bearer error="insufficient_scope", error_description="The access token must..."'
    server.script(token, Reply(403, b"", {"www-authenticate": challenge}))

    assert_invalid(await decide(engine, mode, "/okta", token))


@pytest.mark.parametrize("mode", MODES)
async def test_auth0_plain_text_401_is_invalid(
    mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, _ = aengines("auth0")
    token = new_token()

    assert_invalid(await decide(engine, mode, "/auth0", token))
    assert server.count(path="/userinfo", token=token) == 1


@pytest.mark.parametrize("mode", MODES)
async def test_facebook_400_oauth_exception_is_invalid(
    mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, _ = aengines("facebook")
    token = new_token("EAAB")

    assert_invalid(await decide(engine, mode, "/facebook", token))
    call = server.calls_for(token)[0]
    assert dict(call.query) == {"fields": "id,name,email", "access_token": token}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("subcode", [460, 463, 467])
async def test_facebook_expired_and_logged_out_sessions_are_invalid(
    subcode: int, mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, _ = aengines("facebook")
    token = new_token("EAAB")
    error = {"message": "Error validating access token", "type": "OAuthException", "code": 190}
    server.script(token, Reply(400, {"error": {**error, "error_subcode": subcode}}))

    assert_invalid(await decide(engine, mode, "/facebook", token))


@pytest.mark.parametrize("mode", MODES)
async def test_facebook_without_email_permission_still_authenticates(
    mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, _ = aengines("facebook")
    token = new_token("EAAB")
    server.grant(token, {"id": "10224567890123456", "name": "Ada Lovelace"})

    principal = assert_allowed(await decide(engine, mode, "/facebook", token), "facebook")
    assert principal.username == "10224567890123456"
    assert "email" not in principal.claims


@pytest.mark.parametrize("mode", MODES)
async def test_cognito_bracketed_claim_names(
    mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, _ = aengines("cognito")
    token = new_token()
    server.grant(token, COGNITO_USERINFO)

    principal = assert_allowed(await decide(engine, mode, "/cognito", token), "cognito")
    assert principal.groups == ("admin", "billing")  # $['cognito:groups'][*]
    assert principal.claims["tenant"] == "acme"  # $['custom:tenant_id']


@pytest.mark.parametrize("mode", MODES)
async def test_cognito_401_without_bearer_scheme_is_invalid(
    mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, _ = aengines("cognito")
    token = new_token()

    assert_invalid(await decide(engine, mode, "/cognito", token))
    assert server.count(path="/oauth2/userInfo", token=token) == 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "reply",
    [
        Reply(401, {"error": "invalid_token", "error_description": "Token verification failed"}),
        Reply(
            403,
            b"",
            {
                "www-authenticate": 'Bearer realm="corp", error="insufficient_scope", '
                'error_description="Missing openid scope"'
            },
        ),
    ],
    ids=["legacy-json-401", "missing-openid-scope-403"],
)
async def test_keycloak_refusals_are_invalid(
    reply: Reply, mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, _ = aengines("keycloak")
    token = new_token("eyJ")
    server.script(token, reply)

    assert_invalid(await decide(engine, mode, "/keycloak", token))


@pytest.mark.parametrize("mode", MODES)
async def test_keycloak_without_realm_roles_in_userinfo_has_no_groups(
    mode: str, aengines: Engines, server: ProviderApp
) -> None:
    """The default Keycloak userinfo has no realm_access: authenticated, with no groups."""
    engine, _ = aengines("keycloak")
    token = new_token("eyJ")
    server.grant(token, {k: v for k, v in KEYCLOAK_USERINFO.items() if k != "realm_access"})

    principal = assert_allowed(await decide(engine, mode, "/keycloak", token), "keycloak")
    assert principal.groups == ()
    assert "groups" not in principal.claims


@pytest.mark.parametrize("mode", MODES)
async def test_azure_graph_json_401_is_invalid(
    mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, _ = aengines("azure-ad")
    token = new_token("eyJ0eXAi.")

    assert_invalid(await decide(engine, mode, "/azure-ad", token))


@pytest.mark.parametrize("mode", MODES)
async def test_azure_graph_429_with_retry_after_is_unavailable(
    mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, _ = aengines("azure-ad")
    token = new_token("eyJ0eXAi.")
    body = {"error": {"code": "TooManyRequests", "message": "Too many requests"}}
    server.script(token, Reply(429, body, {"retry-after": "10"}))

    assert_unavailable(await decide(engine, mode, "/azure-ad", token))


# --- Google with client_id: tokeninfo binds the token to our client -----------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("field_name", ["aud", "azp"])
async def test_google_tokeninfo_for_our_client_is_allowed(
    field_name: str, mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, transport = aengines("google-aud")
    token = new_token("ya29.")
    server.grant(token, GOOGLE_USERINFO)
    info = google_tokeninfo("someone-else.apps.googleusercontent.com")
    info[field_name] = GOOGLE_CLIENT
    server.tokeninfo[token] = info

    principal = assert_allowed(await decide(engine, mode, "/google-aud", token), "google-aud")
    assert principal.username == "ada@example.com"

    [check] = [seen for seen in transport.seen if seen.url.host == "oauth2.googleapis.com"]
    assert (check.method, str(check.url)) == ("POST", "https://oauth2.googleapis.com/tokeninfo")
    assert check.headers["authorization"] == f"Bearer {token}"
    assert token not in str(check.url)
    assert token.encode() not in check.body
    assert server.count(path="/tokeninfo", token=token) == 1
    assert server.count(path="/v1/userinfo", token=token) == 1


@pytest.mark.parametrize("mode", MODES)
async def test_google_token_of_another_client_is_invalid(
    mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, _ = aengines("google-aud")
    token = new_token("ya29.")
    server.grant(token, GOOGLE_USERINFO)  # userinfo accepts any client's token...
    server.tokeninfo[token] = google_tokeninfo("407408718192.apps.googleusercontent.com")

    assert_invalid(await decide(engine, mode, "/google-aud", token))  # ...tokeninfo does not
    assert server.count(path="/tokeninfo", token=token) == 1
    assert_invalid(await decide(engine, mode, "/google-aud", token))
    assert server.count(token=token) == 2  # remembered as invalid: no new calls


@pytest.mark.parametrize("mode", MODES)
async def test_google_tokeninfo_400_invalid_value_is_invalid(
    mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, _ = aengines("google-aud")
    token = new_token("ya29.")
    server.grant(token, GOOGLE_USERINFO)  # no tokeninfo entry: 400 invalid_token

    assert_invalid(await decide(engine, mode, "/google-aud", token))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "reply",
    [
        Reply(500, {"error": "internal_failure"}),
        Reply(503, "Service Unavailable"),
        Reply(429, {"error": "rate_limit_exceeded"}),
        Reply(200, "<html><body>Sign in</body></html>", content_type="text/html"),
    ],
    ids=["500", "503", "429", "html"],
)
async def test_google_tokeninfo_failing_is_503_and_not_cached(
    reply: Reply, mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, _ = aengines("google-aud")
    token = new_token("ya29.")
    server.grant(token, GOOGLE_USERINFO)
    server.script(token, reply, path="/tokeninfo")

    assert_unavailable(await decide(engine, mode, "/google-aud", token))
    assert_unavailable(await decide(engine, mode, "/google-aud", token))
    assert server.count(path="/tokeninfo", token=token) == 2
    assert server.count(path="/v1/userinfo", token=token) == 2


@pytest.mark.parametrize("mode", MODES)
async def test_google_tokeninfo_is_not_asked_about_a_token_userinfo_refused(
    mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, _ = aengines("google-aud")
    token = new_token("ya29.")

    assert_invalid(await decide(engine, mode, "/google-aud", token))
    assert server.count(path="/tokeninfo", token=token) == 0


@pytest.mark.parametrize("mode", MODES)
async def test_google_without_client_id_makes_no_tokeninfo_call(
    mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, transport = aengines("google")
    token = new_token("ya29.")
    server.grant(token, GOOGLE_USERINFO)

    assert_allowed(await decide(engine, mode, "/google", token), "google")
    assert [seen.url.host for seen in transport.seen] == ["openidconnect.googleapis.com"]


# --- OIDC discovery -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_oidc_discovery_happens_once(
    mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, transport = aengines("oidc")
    first, second = new_token(), new_token()
    server.grant(first, OIDC_USERINFO)
    server.grant(second, OIDC_USERINFO)

    assert_allowed(await decide(engine, mode, "/oidc", first), "oidc")
    assert_allowed(await decide(engine, mode, "/oidc", second), "oidc")

    assert [str(seen.url) for seen in transport.seen] == [
        "https://idp.example.com/.well-known/openid-configuration",
        "https://idp.example.com/userinfo",
        "https://idp.example.com/userinfo",
    ]
    assert "authorization" not in transport.seen[0].headers  # no token goes to discovery


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (
            Reply(500, "oops"),
            "discovery of `https://idp.example.com` answered 500, not 200 with a document",
        ),
        (
            Reply(200, {"issuer": "https://evil.example.com", "userinfo_endpoint": "https://x/u"}),
            # both sides (issue 15): what the document names, and what the policy says
            "the discovery document names issuer `https://evil.example.com`, the policy says "
            "`https://idp.example.com`",
        ),
        (
            Reply(200, {"issuer": "https://idp.example.com", "userinfo_endpoint": "http://x/u"}),
            "the discovery document names `userinfo_endpoint` `http://x/u`; policyauth needs "
            "https (http only on loopback, or with `insecure_http = true`)",
        ),
        (
            Reply(200, {"issuer": "https://idp.example.com"}),
            "the discovery document names no `userinfo_endpoint`",
        ),
    ],
    ids=["500", "other-issuer", "plain-http-endpoint", "no-userinfo-endpoint"],
)
async def test_oidc_discovery_failing_is_503_and_retried(
    reply: Reply, message: str, mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, _transport = aengines("oidc")
    token = new_token()
    server.grant(token, OIDC_USERINFO)
    server.script("", reply, path="/.well-known/openid-configuration")

    refused = await decide(engine, mode, "/oidc", token)
    assert_unavailable(refused)
    assert refused.message == message
    assert server.count(path="/userinfo") == 0  # the token went nowhere
    del server.scripts[("/.well-known/openid-configuration", "")]
    assert_allowed(await decide(engine, mode, "/oidc", token), "oidc")
    assert server.count(path="/.well-known/openid-configuration") == 2
