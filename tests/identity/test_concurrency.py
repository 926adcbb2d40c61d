"""Single flight and negative caching, counted at the provider.

500 concurrent requests with one uncached token make exactly one provider call, whether the
token is valid, invalid, or the provider fails (a failure is shared by the requests that waited
for it, but not remembered). A repeated invalid token makes at most one call per negative_ttl.
Both for the async client (asyncio.gather of `authorize`) and the sync one (threads calling
`authorize_sync`).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from provider_server import (
    KEYCLOAK_USERINFO,
    Engines,
    ProviderApp,
    ProviderServer,
    Reply,
    RewriteTransport,
    bearer,
    new_token,
    observe_decision,
    policy_for,
)

import policyauth
from policyauth import Decision, Reason
from policyauth.identity import IdentityResult
from policyauth.identity.remote import RemoteIdentitySource

N = 500
THREADS = 50
USERINFO = "/realms/corp/protocol/openid-connect/userinfo"
SLOW = 0.3  # the provider's answer takes this long, so that every request overlaps the call


def outcomes(decisions: list[Decision]) -> set[tuple[int, Reason, str | None]]:
    for decision in decisions[:3]:
        observe_decision(decision)
    return {(d.status, d.reason, d.principal.username if d.principal else None) for d in decisions}


def assert_ada(decision: Decision) -> None:
    observe_decision(decision)
    assert (decision.status, decision.reason) == (200, Reason.ALLOWED), decision.message
    assert decision.principal is not None
    assert decision.principal.username == "ada"


def in_threads(engine: policyauth.Engine, token: str) -> list[Decision]:
    with ThreadPoolExecutor(THREADS) as pool:
        return list(
            pool.map(lambda _: engine.authorize_sync("GET", "/keycloak", bearer(token)), range(N))
        )


async def test_500_concurrent_async_requests_make_one_call(
    aengines: Engines, server: ProviderApp
) -> None:
    engine, _ = aengines("keycloak")
    token = new_token("eyJ")
    server.grant(token, KEYCLOAK_USERINFO, delay=SLOW)

    decisions = await asyncio.gather(
        *(engine.authorize("GET", "/keycloak", bearer(token)) for _ in range(N))
    )

    assert outcomes(decisions) == {(200, Reason.ALLOWED, "ada")}
    assert server.count(path=USERINFO, token=token) == 1


async def test_500_concurrent_sync_requests_make_one_call(
    engines: Engines, server: ProviderApp
) -> None:
    engine, _ = engines("keycloak")
    token = new_token("eyJ")
    server.grant(token, KEYCLOAK_USERINFO, delay=SLOW)

    decisions = await asyncio.to_thread(in_threads, engine, token)

    assert outcomes(decisions) == {(200, Reason.ALLOWED, "ada")}
    assert server.count(path=USERINFO, token=token) == 1


def test_a_thread_that_missed_the_cache_just_before_the_answer_makes_no_second_call(
    provider_server: ProviderServer, server: ProviderApp
) -> None:
    """Thread B misses the cache while A's call is in flight; A stores the answer and leaves
    before B looks for the flight. B must take the answer from the cache, not call again."""
    policy = policy_for(["keycloak"])
    source = RemoteIdentitySource(policy, RewriteTransport(provider_server.port))
    engine = policyauth.Engine(policy, identities=source)
    token = new_token("eyJ")
    server.grant(token, KEYCLOAK_USERINFO)
    cache = source._cache
    real_get = cache.get
    a_done = threading.Event()
    stale = {"B"}

    def get(key: bytes) -> IdentityResult | None:
        name = threading.current_thread().name
        if name in stale:  # B's first lookup: the miss it saw, delivered after A finished
            stale.discard(name)
            a_done.wait(5)
            return None
        return real_get(key)

    cache.get = get  # type: ignore[method-assign]
    decisions: dict[str, Decision] = {}

    def run(name: str) -> None:
        decisions[name] = engine.authorize_sync("GET", "/keycloak", bearer(token))
        if name == "A":
            a_done.set()

    threads = [threading.Thread(target=run, args=(name,), name=name) for name in "AB"]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    finally:
        source.close()
    assert {name: d.status for name, d in decisions.items()} == {"A": 200, "B": 200}
    assert server.count(token=token) == 1


async def test_cancelling_the_request_that_started_the_call_fails_no_other_request(
    aengines: Engines, server: ProviderApp
) -> None:
    """The first request's client goes away mid-call; the others still get the answer. The
    provider takes 1.2 s here (the timeout is 2 s), so that the first request is surely still
    waiting when it is cancelled, however loaded the machine."""
    engine, _ = aengines("keycloak")
    token = new_token("eyJ")
    server.grant(token, KEYCLOAK_USERINFO, delay=1.2)

    first = asyncio.create_task(engine.authorize("GET", "/keycloak", bearer(token)))
    await asyncio.sleep(SLOW / 6)
    others = [
        asyncio.create_task(engine.authorize("GET", "/keycloak", bearer(token))) for _ in range(50)
    ]
    await asyncio.sleep(SLOW / 6)
    assert not first.done()
    first.cancel()
    decisions = await asyncio.gather(*others)

    assert outcomes(decisions) == {(200, Reason.ALLOWED, "ada")}
    assert server.count(token=token) == 1
    assert first.cancelled()


async def test_500_concurrent_async_requests_with_an_invalid_token_make_one_call(
    aengines: Engines, server: ProviderApp
) -> None:
    engine, _ = aengines("keycloak")
    token = new_token("eyJ")
    server.script(token, Reply(401, b"", {"www-authenticate": 'Bearer error="invalid_token"'}))
    server.delays[token] = SLOW

    decisions = await asyncio.gather(
        *(engine.authorize("GET", "/keycloak", bearer(token)) for _ in range(N))
    )

    assert outcomes(decisions) == {(401, Reason.INVALID_TOKEN, None)}
    assert server.count(token=token) == 1


async def test_500_concurrent_sync_requests_with_an_invalid_token_make_one_call(
    engines: Engines, server: ProviderApp
) -> None:
    engine, _ = engines("keycloak")
    token = new_token("eyJ")
    server.delays[token] = SLOW  # not granted: Keycloak's empty 401

    decisions = await asyncio.to_thread(in_threads, engine, token)

    assert outcomes(decisions) == {(401, Reason.INVALID_TOKEN, None)}
    assert server.count(token=token) == 1


async def test_concurrent_async_requests_share_a_failure_without_remembering_it(
    aengines: Engines, server: ProviderApp
) -> None:
    engine, _ = aengines("keycloak")
    token = new_token("eyJ")
    server.script(token, Reply(502, "Bad Gateway", delay=SLOW))

    decisions = await asyncio.gather(
        *(engine.authorize("GET", "/keycloak", bearer(token)) for _ in range(N))
    )

    assert outcomes(decisions) == {(503, Reason.PROVIDER_UNAVAILABLE, None)}
    assert server.count(token=token) == 1
    observe_decision(await engine.authorize("GET", "/keycloak", bearer(token)))
    assert server.count(token=token) == 2  # not cached: the next request asks again


async def test_concurrent_sync_requests_share_a_failure_without_remembering_it(
    engines: Engines, server: ProviderApp
) -> None:
    engine, _ = engines("keycloak")
    token = new_token("eyJ")
    server.script(token, Reply(500, "oops", delay=1.0))  # long enough for all threads to join

    with ThreadPoolExecutor(THREADS) as pool:
        futures = [
            pool.submit(engine.authorize_sync, "GET", "/keycloak", bearer(token))
            for _ in range(THREADS)
        ]
        decisions = await asyncio.to_thread(lambda: [f.result() for f in futures])

    assert outcomes(decisions) == {(503, Reason.PROVIDER_UNAVAILABLE, None)}
    assert server.count(token=token) == 1
    server.script(token, Reply(500, "oops"))
    decision = await asyncio.to_thread(engine.authorize_sync, "GET", "/keycloak", bearer(token))
    assert (decision.status, decision.reason) == (503, Reason.PROVIDER_UNAVAILABLE)
    assert server.count(token=token) == 2  # not cached: the next request asks again


# --- negative_ttl --------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def engine_with_clock(
    provider_server: ProviderServer, clock: Clock
) -> tuple[policyauth.Engine, RemoteIdentitySource]:
    policy = policy_for(["keycloak"], negative_ttl="30s", cache_ttl="5m")
    source = RemoteIdentitySource(policy, RewriteTransport(provider_server.port), clock=clock)
    return policyauth.Engine(policy, identities=source), source


async def test_a_repeated_invalid_token_makes_one_call_per_negative_ttl_async(
    provider_server: ProviderServer, server: ProviderApp
) -> None:
    clock = Clock()
    engine, source = engine_with_clock(provider_server, clock)
    token = new_token("eyJ")
    try:
        for second in range(95):  # one request a second for 95 s: 30 s windows at 0, 30, 60, 90
            clock.now = 1000.0 + second
            decision = observe_decision(await engine.authorize("GET", "/keycloak", bearer(token)))
            assert (decision.status, decision.reason) == (401, Reason.INVALID_TOKEN)
    finally:
        await source.aclose()
    assert server.count(token=token) == 4


def test_a_repeated_invalid_token_makes_one_call_per_negative_ttl_sync(
    provider_server: ProviderServer, server: ProviderApp
) -> None:
    clock = Clock()
    engine, source = engine_with_clock(provider_server, clock)
    token = new_token("eyJ")
    calls = []
    try:
        for second in range(95):
            clock.now = 1000.0 + second
            decision = observe_decision(engine.authorize_sync("GET", "/keycloak", bearer(token)))
            assert (decision.status, decision.reason) == (401, Reason.INVALID_TOKEN)
            calls.append(server.count(token=token))
    finally:
        source.close()
    assert calls[0] == 1
    assert calls[29] == 1
    assert calls[30] == 2
    assert calls[-1] == 4


async def test_a_repeated_invalid_token_in_real_time(
    aengines: Engines, server: ProviderApp
) -> None:
    """The same with the real monotonic clock: 200 ms negative_ttl, hammered for at least 0.7 s
    and 50 requests (a loaded machine takes longer for them, and the bound follows the time)."""
    engine, _ = aengines("keycloak", negative_ttl="200ms")
    token = new_token("eyJ")
    loop = asyncio.get_running_loop()
    started = loop.time()
    requests = 0
    while loop.time() - started < 0.7 or requests < 50:
        decision = await engine.authorize("GET", "/keycloak", bearer(token))
        assert (decision.status, decision.reason) == (401, Reason.INVALID_TOKEN)
        requests += 1
        await asyncio.sleep(0.005)
    elapsed = loop.time() - started
    calls = server.count(token=token)
    assert 2 <= calls <= math.ceil(elapsed / 0.2) + 1


def test_a_valid_token_is_reused_for_cache_ttl_then_asked_again(
    provider_server: ProviderServer, server: ProviderApp
) -> None:
    clock = Clock()
    policy = policy_for(["keycloak"], cache_ttl="2m")
    source = RemoteIdentitySource(policy, RewriteTransport(provider_server.port), clock=clock)
    engine = policyauth.Engine(policy, identities=source)
    token = new_token("eyJ")
    server.grant(token, KEYCLOAK_USERINFO)
    try:
        for second in (0, 60, 119.9):
            clock.now = 1000.0 + second
            assert_ada(engine.authorize_sync("GET", "/keycloak", bearer(token)))
        assert server.count(token=token) == 1
        clock.now = 1000.0 + 120
        assert_ada(engine.authorize_sync("GET", "/keycloak", bearer(token)))
        assert server.count(token=token) == 2
    finally:
        source.close()


def test_an_identity_is_not_kept_past_the_exp_the_provider_gave(
    provider_server: ProviderServer, server: ProviderApp
) -> None:
    clock = Clock()
    policy = policy_for(["keycloak"], cache_ttl="5m")
    source = RemoteIdentitySource(policy, RewriteTransport(provider_server.port), clock=clock)
    engine = policyauth.Engine(policy, identities=source)
    token = new_token("eyJ")
    server.grant(token, {**KEYCLOAK_USERINFO, "exp": int(time.time()) + 10})
    try:
        assert_ada(engine.authorize_sync("GET", "/keycloak", bearer(token)))
        clock.now += 8
        assert_ada(engine.authorize_sync("GET", "/keycloak", bearer(token)))
        assert server.count(token=token) == 1
        clock.now += 4  # past exp, long before cache_ttl
        assert_ada(engine.authorize_sync("GET", "/keycloak", bearer(token)))
        assert server.count(token=token) == 2
    finally:
        source.close()
