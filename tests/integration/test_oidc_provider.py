"""policyauth against a real OpenID Connect provider (oidc-provider), end to end.

Tokens come from the provider's own authorization code flow, driven over HTTP as a browser
would drive it: the authorization request (with PKCE), the provider's login form, its consent
form, the redirect carrying the code, and the token endpoint with client_secret_basic. The
Engine then validates them for real, by the provider's userinfo endpoint (found by OIDC
discovery, or named directly), through its identity cache.

Provider calls are counted by wrapping the Engine's httpx transport, so that "answered from the
cache" is observed rather than inferred from timing.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import secrets
import time
from collections import Counter
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest

import policyauth
from policyauth import Decision, Engine

GROUP_RULES = """\
route GET /wiki/** {
  auth corp
  deny  if "contractors" in groups
  allow if "engineering" in groups
}
"""


# --- the provider's login flow ---------------------------------------------------------------


class _Form(HTMLParser):
    """The first form of a page: its action and its fields (name -> value)."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self._done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if self._done:
            return
        if tag == "form" and self.action is None:
            self.action = found.get("action", "")
        elif tag == "input" and self.action is not None and found.get("name"):
            self.fields[found["name"]] = found.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self.action is not None:
            self._done = True


@functools.cache
def discover(issuer: str) -> dict[str, Any]:
    """The provider's discovery document (fetched once per issuer)."""
    response = httpx.get(f"{issuer}/.well-known/openid-configuration", trust_env=False)
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def login(provider: Any, username: str, *, client_id: str | None = None) -> dict[str, Any]:
    """Sign in as `username` through the provider's pages; the token endpoint's response."""
    client_id = client_id or provider.client_id
    config = discover(provider.issuer)
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    state = secrets.token_urlsafe(16)
    with httpx.Client(follow_redirects=False, trust_env=False, timeout=10) as browser:
        page = browser.get(
            config["authorization_endpoint"],
            params={
                "client_id": client_id,
                "response_type": "code",
                "scope": "openid profile email groups",
                "redirect_uri": provider.redirect_uri,
                "code_challenge": challenge.rstrip(b"=").decode(),
                "code_challenge_method": "S256",
                "state": state,
                "nonce": secrets.token_urlsafe(16),
            },
        )
        prompts = []
        for _ in range(12):
            if page.is_redirect:
                location = urljoin(str(page.url), page.headers["location"])
                if location.startswith(provider.redirect_uri + "?"):
                    break
                page = browser.get(location)
                continue
            assert page.status_code == 200, page.text
            form = _Form()
            form.feed(page.text)
            assert form.action is not None, f"no form on {page.url}:\n{page.text}"
            fields = dict(form.fields)
            prompts.append(fields.get("prompt"))
            if "login" in fields:
                fields |= {"login": username, "password": "not checked by dev interactions"}
            page = browser.post(urljoin(str(page.url), form.action), data=fields)
        else:
            pytest.fail(f"the login flow never redirected back; prompts seen: {prompts}")
    assert prompts == ["login", "consent"]
    answer = parse_qs(urlsplit(location).query)
    assert answer["state"] == [state]
    assert answer["iss"] == [provider.issuer]  # RFC 9207
    token = httpx.post(
        config["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": answer["code"][0],
            "redirect_uri": provider.redirect_uri,
            "code_verifier": verifier,
        },
        auth=(client_id, provider.client_secret),
        trust_env=False,
    )
    assert token.status_code == 200, token.text
    body: dict[str, Any] = token.json()
    assert body["token_type"] == "Bearer"
    assert set(body["scope"].split()) == {"openid", "profile", "email", "groups"}
    return body


def revoke(provider: Any, token: str) -> None:
    response = httpx.post(
        discover(provider.issuer)["revocation_endpoint"],
        data={"token": token, "token_type_hint": "access_token"},
        auth=(provider.client_id, provider.client_secret),
        trust_env=False,
    )
    assert response.status_code == 200, response.text


def introspect(provider: Any, token: str) -> dict[str, Any]:
    response = httpx.post(
        discover(provider.issuer)["introspection_endpoint"],
        data={"token": token},
        auth=(provider.client_id, provider.client_secret),
        trust_env=False,
    )
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


# --- counting provider calls -----------------------------------------------------------------


class CountingTransport(httpx.BaseTransport):
    """The real transport, counting requests by path."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls[request.url.path] += 1
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class AsyncCountingTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls[request.url.path] += 1
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


# --- policies --------------------------------------------------------------------------------


def policy_text(provider: Any, *, settings: str = "", direct: bool = False) -> str:
    """The corp policy: the provider found by discovery, or (`direct`) by its userinfo URL."""
    endpoint = (
        [f'userinfo = "{provider.issuer}/me"']
        if direct
        else ['preset   = "oidc"', f'issuer   = "{provider.issuer}"']
    )
    claims = ["username = $.preferred_username", "groups   = $.groups[*]"]
    if direct:
        claims.append("email    = $.email")
    return "\n".join(
        [
            "settings {",
            '  realm = "corp"',
            *(f"  {line}" for line in settings.splitlines()),
            "}",
            "",
            "provider corp {",
            *(f"  {line}" for line in endpoint + claims),
            "}",
            "",
            GROUP_RULES,
        ]
    )


def line_of(text: str, fragment: str) -> int:
    """The 1-based line of the policy text that holds `fragment`."""
    return next(n for n, line in enumerate(text.splitlines(), 1) if fragment in line)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_refused(decision: Decision) -> None:
    assert decision.status == 401
    assert decision.reason == "invalid_token"
    assert decision.principal is None
    assert decision.rule is None
    assert decision.headers == (("WWW-Authenticate", 'Bearer realm="corp", error="invalid_token"'),)


# --- a user's token ----------------------------------------------------------------------------


def test_login_token_is_accepted_through_discovery(oidc_provider: Any) -> None:
    text = policy_text(oidc_provider)
    transport = CountingTransport(httpx.HTTPTransport())
    token = login(oidc_provider, "alice")["access_token"]
    with Engine(policyauth.loads(text, name="corp.policy"), transport=transport) as engine:
        decision = engine.authorize_sync("GET", "/wiki/pages/1?v=2", bearer(token))

        assert decision.status == 200
        assert decision.allowed
        assert decision.reason == "allowed"
        assert decision.rule is not None
        assert decision.rule.line == line_of(text, 'allow if "engineering"')
        assert decision.principal is not None
        assert decision.principal.provider == "corp"
        assert decision.principal.username == "alice"
        assert decision.principal.groups == ("engineering", "confluence-writers")
        assert decision.principal.claims["email"] == "alice@example.com"
        assert decision.principal.claims["email_verified"] is True
        assert decision.principal.claims["preferred_username"] == "alice"
        # Discovery found the userinfo endpoint; the token was shown to it once.
        assert transport.calls == {"/.well-known/openid-configuration": 1, "/me": 1}

        again = engine.authorize_sync("GET", "/wiki/pages/2", bearer(token))
        assert (again.status, again.reason) == (200, "allowed")
        assert again.principal == decision.principal
        assert transport.calls == {"/.well-known/openid-configuration": 1, "/me": 1}


def test_login_token_through_a_direct_userinfo_url(oidc_provider: Any) -> None:
    text = policy_text(oidc_provider, direct=True)
    transport = CountingTransport(httpx.HTTPTransport())
    alice = login(oidc_provider, "alice")["access_token"]
    bob = login(oidc_provider, "bob")["access_token"]
    with Engine(policyauth.loads(text, name="corp.policy"), transport=transport) as engine:
        allowed = engine.authorize_sync("GET", "/wiki", bearer(alice))
        denied = engine.authorize_sync("GET", "/wiki/x", bearer(bob))

    assert (allowed.status, allowed.reason) == (200, "allowed")
    assert allowed.rule is not None
    assert allowed.rule.line == line_of(text, 'allow if "engineering"')
    assert allowed.principal is not None
    assert allowed.principal.username == "alice"
    assert allowed.principal.groups == ("engineering", "confluence-writers")
    assert allowed.principal.claims["email"] == "alice@example.com"

    assert (denied.status, denied.reason, denied.allowed) == (403, "denied", False)
    assert denied.rule is not None
    assert denied.rule.line == line_of(text, 'deny  if "contractors"')
    assert denied.principal is not None
    assert denied.principal.provider == "corp"
    assert denied.principal.username == "bob"
    assert denied.principal.groups == ("contractors",)
    assert denied.principal.claims["email"] == "bob@example.com"
    assert transport.calls == {"/me": 2}  # no discovery when the URL is given


async def test_login_token_is_accepted_by_the_async_engine(oidc_provider: Any) -> None:
    text = policy_text(oidc_provider)
    transport = AsyncCountingTransport(httpx.AsyncHTTPTransport())
    token = login(oidc_provider, "alice")["access_token"]
    async with Engine(policyauth.loads(text, name="corp.policy"), transport=transport) as engine:
        decision = await engine.authorize("GET", "/wiki/a", bearer(token))
        again = await engine.authorize("GET", "/wiki/b", bearer(token))

    for answer in (decision, again):
        assert (answer.status, answer.reason) == (200, "allowed")
        assert answer.rule is not None
        assert answer.rule.line == line_of(text, 'allow if "engineering"')
        assert answer.principal is not None
        assert answer.principal.provider == "corp"
        assert answer.principal.username == "alice"
        assert answer.principal.groups == ("engineering", "confluence-writers")
    assert transport.calls == {"/.well-known/openid-configuration": 1, "/me": 1}


# --- tokens that must be refused ---------------------------------------------------------------


def test_revoked_token_is_refused_once_its_cache_entry_expires(oidc_provider: Any) -> None:
    text = policy_text(oidc_provider, settings="cache_ttl = 1s", direct=True)
    transport = CountingTransport(httpx.HTTPTransport())
    token = login(oidc_provider, "alice")["access_token"]
    with Engine(policyauth.loads(text, name="corp.policy"), transport=transport) as engine:
        before = engine.authorize_sync("GET", "/wiki", bearer(token))
        validated = time.monotonic()
        revoke(oidc_provider, token)
        assert introspect(oidc_provider, token) == {"active": False}
        cached = engine.authorize_sync("GET", "/wiki", bearer(token))
        assert time.monotonic() - validated < 1.0, "too slow to observe the cached identity"
        assert transport.calls == {"/me": 1}

        time.sleep(max(0.0, validated + 1.1 - time.monotonic()))
        after = engine.authorize_sync("GET", "/wiki", bearer(token))

    for answer in (before, cached):
        assert (answer.status, answer.reason) == (200, "allowed")
        assert answer.principal is not None
        assert answer.principal.username == "alice"
        assert answer.principal.groups == ("engineering", "confluence-writers")
    assert_refused(after)
    assert transport.calls == {"/me": 2}


def test_expired_token_is_refused(oidc_provider: Any) -> None:
    text = policy_text(oidc_provider, settings="cache_ttl = 1s")
    issued = login(oidc_provider, "alice", client_id=oidc_provider.short_client_id)
    received = time.monotonic()
    assert issued["expires_in"] == oidc_provider.short_access_ttl
    token = issued["access_token"]
    with Engine(policyauth.loads(text, name="corp.policy")) as engine:
        live = engine.authorize_sync("GET", "/wiki", bearer(token))
        time.sleep(max(0.0, received + issued["expires_in"] + 0.5 - time.monotonic()))
        assert introspect(oidc_provider, token) == {"active": False}
        expired = engine.authorize_sync("GET", "/wiki", bearer(token))

    assert (live.status, live.reason) == (200, "allowed")
    assert live.principal is not None
    assert live.principal.username == "alice"
    assert live.principal.groups == ("engineering", "confluence-writers")
    assert_refused(expired)


def test_client_credentials_token_without_openid_scope_is_refused(oidc_provider: Any) -> None:
    response = httpx.post(
        discover(oidc_provider.issuer)["token_endpoint"],
        data={"grant_type": "client_credentials"},
        auth=(oidc_provider.client_id, oidc_provider.client_secret),
        trust_env=False,
    )
    assert response.status_code == 200, response.text
    issued = response.json()
    assert "openid" not in issued.get("scope", "").split()
    token = issued["access_token"]
    assert introspect(oidc_provider, token)["active"] is True  # a live token, just not a user's

    text = policy_text(oidc_provider)
    transport = CountingTransport(httpx.HTTPTransport())
    with Engine(policyauth.loads(text, name="corp.policy"), transport=transport) as engine:
        decision = engine.authorize_sync("GET", "/wiki", bearer(token))

    assert_refused(decision)
    assert transport.calls["/me"] == 1


def test_garbage_token_is_refused_and_remembered(oidc_provider: Any) -> None:
    text = policy_text(oidc_provider, settings="negative_ttl = 1m")
    transport = CountingTransport(httpx.HTTPTransport())
    garbage = "not-a-token-" + secrets.token_urlsafe(16)
    with Engine(policyauth.loads(text, name="corp.policy"), transport=transport) as engine:
        first = engine.authorize_sync("GET", "/wiki", bearer(garbage))
        second = engine.authorize_sync("GET", "/wiki/other", bearer(garbage))

    assert_refused(first)
    assert_refused(second)
    assert transport.calls == {"/.well-known/openid-configuration": 1, "/me": 1}


async def test_garbage_token_is_refused_and_remembered_async(oidc_provider: Any) -> None:
    text = policy_text(oidc_provider, settings="negative_ttl = 1m")
    transport = AsyncCountingTransport(httpx.AsyncHTTPTransport())
    garbage = "not-a-token-" + secrets.token_urlsafe(16)
    async with Engine(policyauth.loads(text, name="corp.policy"), transport=transport) as engine:
        first = await engine.authorize("GET", "/wiki", bearer(garbage))
        second = await engine.authorize("GET", "/wiki/other", bearer(garbage))

    assert_refused(first)
    assert_refused(second)
    assert transport.calls == {"/.well-known/openid-configuration": 1, "/me": 1}


def test_request_without_credentials_never_reaches_the_provider(oidc_provider: Any) -> None:
    text = policy_text(oidc_provider)
    transport = CountingTransport(httpx.HTTPTransport())
    with Engine(policyauth.loads(text, name="corp.policy"), transport=transport) as engine:
        decision = engine.authorize_sync("GET", "/wiki", {})

    assert (decision.status, decision.reason) == (401, "no_credentials")
    assert decision.principal is None
    assert decision.headers == (("WWW-Authenticate", 'Bearer realm="corp"'),)
    assert transport.calls == {}


async def test_concurrent_requests_share_one_provider_call(oidc_provider: Any) -> None:
    text = policy_text(oidc_provider)
    transport = AsyncCountingTransport(httpx.AsyncHTTPTransport())
    token = login(oidc_provider, "bob")["access_token"]
    async with Engine(policyauth.loads(text, name="corp.policy"), transport=transport) as engine:
        decisions = await asyncio.gather(
            *(engine.authorize("GET", f"/wiki/{n}", bearer(token)) for n in range(20))
        )

    for decision in decisions:
        assert (decision.status, decision.reason) == (403, "denied")
        assert decision.rule is not None
        assert decision.rule.line == line_of(text, 'deny  if "contractors"')
        assert decision.principal is not None
        assert decision.principal.username == "bob"
        assert decision.principal.groups == ("contractors",)
    assert transport.calls == {"/.well-known/openid-configuration": 1, "/me": 1}


# --- providers on other loopback addresses ----------------------------------------------------


def test_direct_userinfo_on_another_loopback_address(oidc_provider_127_0_0_2: Any) -> None:
    provider = oidc_provider_127_0_0_2
    assert provider.issuer.startswith("http://127.0.0.2:")
    text = policy_text(provider, direct=True)
    token = login(provider, "alice")["access_token"]
    with Engine(policyauth.loads(text, name="corp.policy")) as engine:
        decision = engine.authorize_sync("GET", "/wiki", bearer(token))

    assert (decision.status, decision.reason) == (200, "allowed")
    assert decision.principal is not None
    assert decision.principal.username == "alice"
    assert decision.principal.groups == ("engineering", "confluence-writers")


def test_discovery_on_another_loopback_address(oidc_provider_127_0_0_2: Any) -> None:
    provider = oidc_provider_127_0_0_2
    text = policy_text(provider)
    policy = policyauth.loads(text, name="corp.policy")  # accepted, with the http warning
    assert "PA201" in [w.code for w in policy.warnings]
    token = login(provider, "alice")["access_token"]
    with Engine(policy) as engine:
        decision = engine.authorize_sync("GET", "/wiki", bearer(token))

    assert (decision.status, decision.reason) == (200, "allowed"), decision.message
    assert decision.principal is not None
    assert decision.principal.username == "alice"
    assert decision.principal.groups == ("engineering", "confluence-writers")
