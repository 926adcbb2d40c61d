"""No raw token in any log record, exception message, cache key or repr (security rule 10).

Named to run last in tests/identity/: by then conftest.py's leak watch has captured every log
record (root logger, DEBUG) of every provider test, and every token those tests used is
registered with it. This module adds its own pass over the riskiest paths (Facebook's query
string token through success, refusal, outage and an internal error, sync and async), so that
it proves something when run alone too, and checks that the watch itself would catch a leak.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from jwt_issuer import Issuer, engine_for, register, sign
from provider_server import (
    FACEBOOK_ME,
    GOOGLE_USERINFO,
    WATCH,
    Engines,
    LeakWatch,
    ProviderApp,
    ProviderServer,
    Reply,
    RewriteTransport,
    bearer,
    google_tokeninfo,
    new_token,
    observe_decision,
    policy_for,
)

import policyauth
from policyauth import Reason
from policyauth.evaluator import Pending, prepare
from policyauth.identity import Identity
from policyauth.identity.cache import IdentityCache
from policyauth.identity.userinfo import Request, userinfo_request
from policyauth.request import BearerCredential, normalize_headers, read_credentials


class Broken(RewriteTransport):
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        raise RuntimeError("the transport broke")

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise RuntimeError("the transport broke")


@pytest.mark.parametrize("mode", ["async", "sync"])
async def test_query_string_tokens_through_every_outcome(
    mode: str, aengines: Engines, server: ProviderApp, provider_server: ProviderServer
) -> None:
    engine, _ = aengines("facebook", "google-aud")
    good, bad, down, broken = (new_token("EAAB") for _ in range(4))
    google = new_token("ya29.")
    server.grant(good, FACEBOOK_ME)
    server.script(down, Reply(502, "Bad Gateway"))
    server.grant(google, GOOGLE_USERINFO)
    server.tokeninfo[google] = google_tokeninfo()

    async def decide(eng: policyauth.Engine, path: str, token: str) -> policyauth.Decision:
        if mode == "async":
            decision = await eng.authorize("GET", path, bearer(token))
        else:
            decision = await asyncio.to_thread(eng.authorize_sync, "GET", path, bearer(token))
        return observe_decision(decision)

    allowed = await decide(engine, "/facebook", good)
    assert (allowed.status, allowed.reason) == (200, Reason.ALLOWED)
    assert allowed.principal is not None
    assert allowed.principal.username == FACEBOOK_ME["id"]
    refused = await decide(engine, "/facebook", bad)
    assert (refused.status, refused.reason) == (401, Reason.INVALID_TOKEN)
    down_decision = await decide(engine, "/facebook", down)
    assert (down_decision.status, down_decision.reason) == (503, Reason.PROVIDER_UNAVAILABLE)
    audience = await decide(engine, "/google-aud", google)
    assert (audience.status, audience.reason) == (200, Reason.ALLOWED)
    assert audience.principal is not None
    assert audience.principal.username == GOOGLE_USERINFO["email"]

    failing = policyauth.Engine(policy_for(["facebook"]), transport=Broken(provider_server.port))
    try:
        broken_decision = await decide(failing, "/facebook", broken)
        assert (broken_decision.status, broken_decision.reason) == (
            503,
            Reason.PROVIDER_UNAVAILABLE,
        )
        assert broken_decision.message == "internal error while validating the token"
    finally:
        await failing.aclose()
    assert server.count(token=good) == 1
    assert server.count(token=down) == 1


class Chatty(RewriteTransport):
    """Fails the way a proxy or custom transport might: with the request in the message."""

    def fail(self, request: httpx.Request) -> httpx.ConnectError:
        return httpx.ConnectError(
            f"cannot reach {request.url} with {request.headers.get('authorization')}",
            request=request,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        raise self.fail(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise self.fail(request)


@pytest.mark.parametrize("provider", ["facebook", "github"])
async def test_transport_error_messages_stay_out_of_decisions_and_logs(
    provider: str, server: ProviderApp, provider_server: ProviderServer
) -> None:
    engine = policyauth.Engine(policy_for([provider]), transport=Chatty(provider_server.port))
    prefix = "gho_" if provider == "github" else "EAAB"
    sync_token, async_token = new_token(prefix), new_token(prefix)
    try:
        decisions = [
            await engine.authorize("GET", f"/{provider}", bearer(async_token)),
            await asyncio.to_thread(
                engine.authorize_sync, "GET", f"/{provider}", bearer(sync_token)
            ),
        ]
    finally:
        await engine.aclose()
    for decision in decisions:
        observe_decision(decision)
        assert (decision.status, decision.reason) == (503, Reason.PROVIDER_UNAVAILABLE)
        assert "ConnectError" in decision.message


def test_reprs_never_show_the_token() -> None:
    token = new_token("gho_")
    policy = policy_for(["github"])
    credential = read_credentials(normalize_headers(bearer(token)), "")
    assert isinstance(credential, BearerCredential)
    pending = prepare(policy, "GET", "/github", normalize_headers(bearer(token)))
    assert isinstance(pending, Pending)
    request = userinfo_request(policy.providers["github"], "https://api.github.com/user", token)
    assert isinstance(request, Request)
    cache = IdentityCache(ttl=60, negative_ttl=30)
    key = cache.key("github", token)
    cache.put(key, Identity({"username": "octocat"}))
    for obj in (credential, pending, request, key, key.hex(), cache, dict(cache._entries)):
        assert token not in repr(obj)
        WATCH.observe(type(obj).__name__, obj)


class JwksBroken(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """A JWKS transport that raises with whatever it was given in the message."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        raise RuntimeError(f"broken while fetching {request.url} {request.headers}")

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise RuntimeError(f"broken while fetching {request.url} {request.headers}")


@pytest.mark.parametrize("mode", ["async", "sync"])
async def test_jwts_and_their_signatures_through_every_outcome(mode: str) -> None:
    """Valid, each kind of invalid, outage and internal error, and `inspect`: neither a JWT nor
    its signature part in any log record (DEBUG included), decision, repr or exception."""
    issuer = Issuer()
    issuer.add("k1", "ES256")
    tokens = [
        issuer.token(),
        issuer.token(exp=1),
        issuer.token(aud="other"),
        issuer.token(iss="https://evil.example"),
        issuer.token(headers={"crit": ["x"]}),
        issuer.token(headers={"typ": "JWT"}),
    ]
    header, payload, signature = issuer.token().split(".")
    tokens.append(register(f"{header}.{payload}.{signature[::-1]}"))  # a bad signature
    unknown = issuer.add("k2", "ES256", publish=False)
    tokens.append(sign(unknown, "ES256", issuer.claims(), {"kid": "k2", "typ": "at+jwt"}))

    async def decide(engine: policyauth.Engine, token: str) -> policyauth.Decision:
        if mode == "async":
            decision = await engine.authorize("GET", "/reports", bearer(token))
        else:
            decision = await asyncio.to_thread(
                engine.authorize_sync, "GET", "/reports", bearer(token)
            )
        return observe_decision(decision)

    engine = engine_for(issuer, use_async=mode == "async")
    statuses = [(await decide(engine, token)).status for token in tokens]
    assert statuses == [200, 401, 401, 401, 401, 401, 401, 401]
    remote = engine._state.remote
    assert remote is not None
    inspection = remote.inspect_sync("corp", tokens[0])
    WATCH.observe("inspection", inspection, inspection.result)
    for token in tokens:
        result = remote._jwt.verify_sync(engine.policy.providers["corp"], token)
        WATCH.observe("verdict", result)
    await engine.aclose()

    issuer.fail = True
    down = policyauth.Engine(engine.policy, issuer.transport())
    assert (await decide(down, issuer.token())).status == 503
    down.close()
    broken = policyauth.Engine(engine.policy, JwksBroken())
    decision = await decide(broken, issuer.token())
    assert (decision.status, decision.message) == (503, "internal error fetching keys")
    broken.close()
    assert WATCH.leaks() == []


def test_the_watch_catches_a_leak() -> None:
    """The check below is not vacuous: a token in a message, in args, in a traceback, or in
    an observed repr is found, also when URL-encoded."""
    watch = LeakWatch()
    token = "canary/" + "x" * 20
    watch.register(token)
    logger = logging.getLogger("policyauth.identity.canary")
    logger.addHandler(watch)
    logger.propagate = False
    try:
        logger.debug("calling %s", f"https://example.com/?access_token={token.replace('/', '%2F')}")
        try:
            raise ValueError(f"bad token {token}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(watch)
        logger.propagate = True
    watch.observe("object", {"token": token})
    leaks = watch.leaks()
    assert len(leaks) == 4  # the URL in the message and in args, the traceback, the repr
    assert sum("log " in leak for leak in leaks) == 3
    assert LeakWatch().leaks() == []


def test_the_watch_saw_the_provider_tests() -> None:
    names = {record.logger for record in WATCH.records}
    assert "httpx" in names, "httpx's request lines (with URLs) were captured"
    assert "policyauth.identity" in names
    assert any(name.startswith("httpcore") for name in names), "DEBUG records were captured"
    assert any("graph.facebook.com" in record.message for record in WATCH.records)
    assert len(WATCH.tokens) >= 10


def test_no_registered_token_appears_in_any_log_record_or_repr() -> None:
    leaks = WATCH.leaks()
    assert leaks == [], "\n".join(leaks[:20])
