"""Provider failures fail closed (security rule 6, language page section 5 step 6).

Timeout, connection refused, 5xx, 429, redirects, and every body that is not one sane JSON
object are 503 `provider_unavailable` and never cached: a second request makes a second call,
and once the provider recovers the same token works. 401 and 403 are 401 `invalid_token`
(remembered for negative_ttl), except a 403 marked as rate limiting, which is 503 like a 429.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from provider_server import (
    GITHUB_USER,
    OKTA_USERINFO,
    Engines,
    ProviderApp,
    ProviderServer,
    Reply,
    RewriteTransport,
    bearer,
    closed_port,
    new_token,
    observe_decision,
    policy_for,
)

import policyauth
from policyauth import Decision, Reason

MODES = ["async", "sync"]
OKTA = "/oauth2/default/v1/userinfo"


async def decide(engine: policyauth.Engine, mode: str, path: str, token: str) -> Decision:
    if mode == "async":
        decision = await engine.authorize("GET", path, bearer(token))
    else:
        decision = await asyncio.to_thread(engine.authorize_sync, "GET", path, bearer(token))
    return observe_decision(decision)


def assert_unavailable(decision: Decision) -> None:
    assert (decision.status, decision.reason) == (503, Reason.PROVIDER_UNAVAILABLE), (
        decision.message
    )
    assert decision.principal is None
    assert not decision.allowed


def assert_invalid(decision: Decision) -> None:
    assert (decision.status, decision.reason) == (401, Reason.INVALID_TOKEN), decision.message
    assert decision.principal is None
    assert (
        "WWW-Authenticate",
        'Bearer realm="identity-tests", error="invalid_token"',
    ) in decision.headers


def assert_allowed(decision: Decision) -> None:
    assert (decision.status, decision.reason) == (200, Reason.ALLOWED), decision.message
    assert decision.principal is not None
    assert decision.principal.username == OKTA_USERINFO["preferred_username"]


def nested(depth: int) -> bytes:
    return b'{"preferred_username": "ada", "x": ' + b"[" * depth + b"]" * depth + b"}"


OKTA_JSON = (
    b'{"sub": "00uid4BxXw6I6TV4m0g3", "preferred_username": "john.doe@example.com", '
    b'"groups": ["Everyone"]'
)
FAILURES = {
    "500": Reply(500, {"errorCode": "E0000009", "errorSummary": "Internal Server Error"}),
    "502": Reply(502, "<html><body><h1>502 Bad Gateway</h1></body></html>", {}),
    "503": Reply(503, b"", {"retry-after": "30"}),
    "504": Reply(504, "Gateway Timeout"),
    "429": Reply(429, {"errorCode": "E0000047", "errorSummary": "API call exceeded rate limit"}),
    "429-retry-after": Reply(429, b"", {"retry-after": "60", "x-rate-limit-remaining": "0"}),
    "404": Reply(404, {"errorCode": "E0000022", "errorSummary": "The endpoint does not exist."}),
    "redirect-302": Reply(302, b"", {"location": "https://acme.okta.com/oauth2/v1/userinfo"}),
    "redirect-301": Reply(301, b"", {"location": "https://evil.example.com/userinfo"}),
    "redirect-307": Reply(307, b"", {"location": "/oauth2/v1/userinfo"}),
    "redirect-308": Reply(308, b"", {"location": "https://acme.okta.com/oauth2/v1/userinfo"}),
    "html-200": Reply(
        200, "<!DOCTYPE html><html><body>Sign in to Okta</body></html>", {}, 0, None, "text/html"
    ),
    "html-labelled-json": Reply(200, b"<html>oops</html>", content_type="application/json"),
    "json-array": Reply(200, [OKTA_USERINFO]),
    "json-string": Reply(200, '"john.doe@example.com"', content_type="application/json"),
    "json-null": Reply(200, b"null", content_type="application/json"),
    "empty-200": Reply(200, b"", content_type="application/json"),
    "204": Reply(204, b""),
    "truncated-json": Reply(200, OKTA_JSON, content_type="application/json"),
    "duplicate-keys": Reply(
        200,
        OKTA_JSON + b', "preferred_username": "admin@example.com"}',
        content_type="application/json",
    ),
    "duplicate-nested-keys": Reply(
        200, OKTA_JSON + b', "x": {"a": 1, "a": 2}}', content_type="application/json"
    ),
    "nan": Reply(200, OKTA_JSON + b', "updated_at": NaN}', content_type="application/json"),
    "infinity": Reply(
        200, OKTA_JSON + b', "updated_at": -Infinity}', content_type="application/json"
    ),
    "invalid-utf8": Reply(
        200, OKTA_JSON + b', "name": "\xff\xfe"}', content_type="application/json"
    ),
    "signed-userinfo-jwt": Reply(
        200, b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", content_type="application/jwt"
    ),
    "body-10MB": Reply(200, stream=10 * 1024 * 1024),
    "body-just-over-1MiB": Reply(200, stream=(1 << 20) + 1),
    "nesting-40": Reply(200, nested(40), content_type="application/json"),
    "nesting-100000": Reply(200, nested(100_000), content_type="application/json"),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reply", list(FAILURES.values()), ids=list(FAILURES))
async def test_provider_failure_is_503_and_never_cached(
    reply: Reply, mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, _ = aengines("okta")
    token = new_token()
    server.grant(token, OKTA_USERINFO)  # where a redirect would lead, and the recovery
    server.script(token, reply, path=OKTA)

    assert_unavailable(await decide(engine, mode, "/okta", token))
    assert_unavailable(await decide(engine, mode, "/okta", token))

    assert server.count(path=OKTA, token=token) == 2
    assert server.count(path="/oauth2/v1/userinfo", token=token) == 0  # redirects not followed
    assert server.count(token=token) == 2
    del server.scripts[(OKTA, token)]  # the provider recovers
    assert_allowed(await decide(engine, mode, "/okta", token))
    assert server.count(token=token) == 3


@pytest.mark.parametrize("mode", MODES)
async def test_a_timeout_is_503_and_never_cached(
    mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, _ = aengines("okta", timeout="300ms")
    token = new_token()
    server.grant(token, OKTA_USERINFO)
    server.script(token, Reply(200, OKTA_USERINFO, delay=1.5), path=OKTA)

    loop = asyncio.get_running_loop()
    started = loop.time()
    assert_unavailable(await decide(engine, mode, "/okta", token))
    assert_unavailable(await decide(engine, mode, "/okta", token))
    assert loop.time() - started < 1.5  # each request gave up after the policy's timeout
    assert server.count(path=OKTA, token=token) == 2
    del server.scripts[(OKTA, token)]
    assert_allowed(await decide(engine, mode, "/okta", token))


@pytest.mark.parametrize("mode", MODES)
async def test_a_provider_dripping_its_answer_is_cut_off_at_the_timeout(
    mode: str, aengines: Engines, server: ProviderApp
) -> None:
    """Every read completes within httpx's per-read timeout, but the call as a whole does not
    finish within the policy's `timeout` (per call): 503, not a late identity."""
    engine, _ = aengines("okta", timeout="300ms")
    token = new_token()
    server.grant(token, OKTA_USERINFO)
    server.script(token, Reply(200, OKTA_USERINFO, drip=0.05), path=OKTA)

    loop = asyncio.get_running_loop()
    started = loop.time()
    assert_unavailable(await decide(engine, mode, "/okta", token))
    assert loop.time() - started < 1.0
    assert_unavailable(await decide(engine, mode, "/okta", token))
    assert server.count(path=OKTA, token=token) == 2


@pytest.mark.parametrize("mode", MODES)
async def test_connection_refused_is_503_and_never_cached(
    mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, transport = aengines("okta", ports={"acme.okta.com": closed_port()})
    token = new_token()
    server.grant(token, OKTA_USERINFO)

    assert_unavailable(await decide(engine, mode, "/okta", token))
    assert_unavailable(await decide(engine, mode, "/okta", token))
    assert len(transport.seen) == 2  # two attempts, no cached refusal
    assert server.count(token=token) == 0
    del transport.ports["acme.okta.com"]  # the provider comes back
    assert_allowed(await decide(engine, mode, "/okta", token))


class Exploding(RewriteTransport):
    """A transport that fails with something that is not an httpx error."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        raise RuntimeError("the transport broke")

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise RuntimeError("the transport broke")


@pytest.mark.parametrize("mode", MODES)
async def test_an_unexpected_exception_is_503_and_never_cached(
    mode: str, server: ProviderApp, provider_server: ProviderServer
) -> None:
    transport = Exploding(provider_server.port)
    engine = policyauth.Engine(policy_for(["facebook"]), transport=transport)
    token = new_token("EAAB")
    try:
        assert_unavailable(await decide(engine, mode, "/facebook", token))
        assert_unavailable(await decide(engine, mode, "/facebook", token))
    finally:
        await engine.aclose()
    assert server.count(token=token) == 0


# --- refusals: 401 and 403 are invalid tokens, remembered for negative_ttl ------------------------

REFUSALS = {
    "401-empty": Reply(401, b"", {"www-authenticate": 'Bearer error="invalid_token"'}),
    "401-json": Reply(401, {"error": "invalid_token"}),
    "401-text": Reply(401, "Unauthorized"),
    "401-html": Reply(401, "<html>Unauthorized</html>", content_type="text/html"),
    "403-empty": Reply(403, b"", {"www-authenticate": 'Bearer error="insufficient_scope"'}),
    "403-json": Reply(403, {"errorCode": "E0000006", "errorSummary": "You do not have permission"}),
    "403-ratelimit-remaining-nonzero": Reply(403, b"", {"x-ratelimit-remaining": "12"}),
    "400-invalid-request": Reply(400, {"error": "invalid_request"}),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reply", list(REFUSALS.values()), ids=list(REFUSALS))
async def test_401_and_403_are_invalid_token(
    reply: Reply, mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, _ = aengines("okta")
    token = new_token()
    server.script(token, reply, path=OKTA)

    assert_invalid(await decide(engine, mode, "/okta", token))
    assert_invalid(await decide(engine, mode, "/okta", token))
    assert server.count(token=token) == 1  # remembered for negative_ttl


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "headers",
    [
        {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1767225600"},
        {"retry-after": "120"},
    ],
    ids=["x-ratelimit-remaining-0", "retry-after"],
)
async def test_a_403_marked_as_rate_limiting_is_503_like_a_429(
    headers: dict[str, str], mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, _ = aengines("github")
    token = new_token("gho_")
    server.grant(token, GITHUB_USER)
    body = {"message": "API rate limit exceeded", "documentation_url": "https://docs.github.com"}
    server.script(token, Reply(403, body, headers), path="/user")

    assert_unavailable(await decide(engine, mode, "/github", token))
    assert_unavailable(await decide(engine, mode, "/github", token))
    assert server.count(token=token) == 2
    del server.scripts[("/user", token)]
    decision = await decide(engine, mode, "/github", token)
    assert (decision.status, decision.reason) == (200, Reason.ALLOWED)
    assert decision.principal is not None
    assert decision.principal.username == "octocat"


@pytest.mark.parametrize("mode", MODES)
async def test_a_document_without_the_username_claim_is_invalid(
    mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, _ = aengines("okta")
    token = new_token()
    server.grant(token, {"sub": "00uid4BxXw6I6TV4m0g3", "email": "john.doe@example.com"})

    assert_invalid(await decide(engine, mode, "/okta", token))
