"""Junk tokens (issue 9 item 9): a flood of made-up tokens neither evicts real identities nor
spends the provider's rate limit, and normal traffic of new valid tokens is never capped.

The rationing rules are unit-tested on a fake clock; the engine tests run against the fake
provider server (a real uvicorn on loopback) and count calls at the server.
"""

from __future__ import annotations

import asyncio

import pytest
from provider_server import (
    OKTA_USERINFO,
    Engines,
    ProviderApp,
    bearer,
    new_token,
    observe_decision,
)

import policyauth
from policyauth import Decision, Reason
from policyauth.identity import Identity, Invalid, Unavailable
from policyauth.identity.flood import (
    FLOOD_CALLS,
    FLOOD_REFUSALS,
    FLOOD_UNANSWERED,
    CallRation,
)

OKTA = "/oauth2/default/v1/userinfo"
ADA = Identity({"username": "ada"})
REFUSED = Invalid("the provider answered 401")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def call(ration: CallRation, result: Identity | Invalid | Unavailable) -> int | None:
    """One request that is not a cache hit: admitted and answered, or turned away."""
    wait = ration.admit("corp")
    if wait is None:
        ration.record("corp", result)
    return wait


# --- the rules --------------------------------------------------------------------------------


def test_new_valid_tokens_are_never_capped() -> None:
    clock = Clock()
    ration = CallRation(clock=clock)
    for second in range(5):
        clock.now = 1000.0 + second
        for i in range(2_000):  # 2,000 new valid tokens a second, 1 in 20 expired
            assert call(ration, REFUSED if i % 20 == 0 else ADA) is None


def test_a_flood_of_refusals_caps_new_calls_per_window() -> None:
    clock = Clock()
    ration = CallRation(clock=clock)
    outcomes = [call(ration, REFUSED) for _ in range(1_000)]
    assert outcomes[:FLOOD_REFUSALS] == [None] * FLOOD_REFUSALS  # the flood is seen...
    assert set(outcomes[FLOOD_REFUSALS:]) == {1}  # ...then turned away: Retry-After: 1
    clock.now += 1.0  # the next window: FLOOD_CALLS calls, the rest turned away
    outcomes = [call(ration, REFUSED) for _ in range(1_000)]
    assert outcomes.count(None) == FLOOD_CALLS
    clock.now += 0.4
    assert call(ration, REFUSED) == 1  # ceil(0.6 s left in the window)


def test_the_flood_ends_when_demand_falls_within_the_cap() -> None:
    clock = Clock()
    ration = CallRation(clock=clock)
    for _ in range(100):
        call(ration, REFUSED)
    clock.now += 1.0
    for _ in range(FLOOD_CALLS):  # within the cap: nothing turned away
        assert call(ration, REFUSED) is None
    clock.now += 1.0
    assert [call(ration, ADA) for _ in range(50)] == [None] * 50


def test_the_flood_ends_when_the_calls_made_find_mostly_valid_tokens() -> None:
    clock = Clock()
    ration = CallRation(clock=clock)
    for _ in range(100):
        call(ration, REFUSED)
    clock.now += 1.0
    outcomes = [call(ration, ADA) for _ in range(100)]  # the demand is real users now
    assert outcomes.count(None) == FLOOD_CALLS
    clock.now += 1.0
    assert [call(ration, ADA) for _ in range(100)] == [None] * 100


def test_outages_neither_start_nor_feed_a_flood() -> None:
    ration = CallRation(clock=Clock())
    down = Unavailable("the provider answered 502")
    assert [call(ration, down) for _ in range(500)] == [None] * 500


def test_unanswered_calls_are_bounded_until_answers_show_real_traffic() -> None:
    ration = CallRation(clock=Clock())
    admitted = [ration.admit("corp") for _ in range(FLOOD_UNANSWERED + 50)]
    assert admitted.count(None) == FLOOD_UNANSWERED  # a burst, before any answer
    assert set(admitted[FLOOD_UNANSWERED:]) == {1}
    ration.record("corp", ADA)  # the answers say: real users
    assert [ration.admit("corp") for _ in range(300)] == [None] * 300
    assert ration.admit("other") is None  # counted per provider


# --- through the engine -----------------------------------------------------------------------


async def decide(engine: policyauth.Engine, mode: str, token: str) -> Decision:
    if mode == "async":
        decision = await engine.authorize("GET", "/okta", bearer(token))
    else:
        decision = engine.authorize_sync("GET", "/okta", bearer(token))
    return observe_decision(decision)


@pytest.mark.parametrize("mode", ["async", "sync"])
async def test_ten_thousand_junk_tokens_neither_evict_nor_flood(
    mode: str, aengines: Engines, server: ProviderApp
) -> None:
    """Before: every junk token was a provider call, and the 10,000 refusals pushed the valid
    identity out of the cache (a second call for it). Now the identity stays cached, the
    provider sees a bounded number of junk calls, and the rest are 503 with Retry-After."""
    engine, _ = aengines("okta")
    valid = new_token()
    server.grant(valid, OKTA_USERINFO)
    assert (await decide(engine, mode, valid)).status == 200

    loop = asyncio.get_running_loop()
    started = loop.time()
    statuses: dict[tuple[int, str], int] = {}
    retry_after: set[str] = set()
    for i in range(10_000):
        decision = await decide(engine, mode, f"junk-{mode}-{i}")
        key = (decision.status, decision.reason.value)
        statuses[key] = statuses.get(key, 0) + 1
        if decision.status == 503:
            retry_after.update(v for n, v in decision.headers if n == "Retry-After")
    elapsed = loop.time() - started

    assert set(statuses) == {(401, "invalid_token"), (503, "provider_unavailable")}
    assert retry_after == {"1"}
    junk_calls = server.count(path=OKTA) - 1
    assert junk_calls == statuses[(401, "invalid_token")]  # a 503 never called the provider
    assert junk_calls <= FLOOD_REFUSALS + FLOOD_CALLS * (int(elapsed) + 2)
    decision = await decide(engine, mode, valid)
    assert (decision.status, decision.reason) == (200, Reason.ALLOWED)
    assert server.count(token=valid) == 1  # still cached: never evicted, never asked again


async def test_a_concurrent_burst_of_junk_is_bounded(
    aengines: Engines, server: ProviderApp
) -> None:
    engine, _ = aengines("okta")
    decisions = await asyncio.gather(*(decide(engine, "async", f"burst-{i}") for i in range(2_000)))
    refused = [d for d in decisions if d.status == 401]
    rationed = [d for d in decisions if d.status == 503]
    assert len(refused) + len(rationed) == 2_000
    assert len(refused) == server.count(path=OKTA) <= FLOOD_UNANSWERED
    assert all(("Retry-After", "1") in d.headers for d in rationed)


@pytest.mark.parametrize("mode", ["async", "sync"])
async def test_normal_traffic_of_new_valid_tokens_is_never_capped(
    mode: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, _ = aengines("okta")
    tokens = [new_token() for _ in range(300)]
    for i, token in enumerate(tokens):
        if i % 10:  # one in ten is an expired token the provider refuses
            server.grant(token, OKTA_USERINFO)
    if mode == "async":  # in bursts of 50 at once
        decisions = []
        for start in range(0, 300, 50):
            batch = tokens[start : start + 50]
            decisions += await asyncio.gather(*(decide(engine, mode, t) for t in batch))
    else:
        decisions = [await decide(engine, mode, t) for t in tokens]
    assert [d.status for d in decisions] == [401 if i % 10 == 0 else 200 for i in range(300)]
    assert server.count(path=OKTA) == 300
