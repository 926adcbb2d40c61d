"""What the Redis cache accepts and stores, against a real redis-server, sync and asyncio.

Each test makes engines of its own (a fresh in-process cache each, as another worker would
have) on one Redis, and a userinfo server that counts calls: a lookup that costs no call came
from Redis, one that costs a call did not.

- an entry forged by someone without the token, or moved under another token's key, or an
  expired one written back, is a miss: the provider is asked, its answer stands;
- Redis expiry never past the token's lifetime; refusals shared; "unavailable" never stored but
  told to the waiters of the same call;
- the in-process layer in front of Redis keeps an identity no longer than its Redis entry, so
  a revocation is seen within `cache_ttl` of the provider call, in every process;
- Redis slow (accepting, never answering): decisions go on well within the provider timeout,
  one warning per outage, never an allow, and Redis is used again once it answers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

sys.path.insert(0, str(Path(__file__).parent))
from redis_parts import SECRET, StallingProxy, Userinfo, policy_text

import policyauth
from policyauth import Reason
from policyauth.identity.rediscache import SharedCache
from policyauth.identity.source import Identity

UNAVAILABLE = "the Redis identity cache is unavailable"
BACK = "the Redis identity cache is back"


@pytest.fixture(scope="module")
def userinfo() -> Iterator[Userinfo]:
    server = Userinfo()
    yield server
    server.close()


@pytest.fixture
def store(redis_server: Any) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def engine(cache: str, userinfo: Userinfo, **settings: str) -> policyauth.Engine:
    extra = "".join(f"  {name} = {value}\n" for name, value in settings.items())
    return policyauth.Engine(policyauth.loads(policy_text(cache, userinfo.url, extra=extra)))


def decide(eng: policyauth.Engine, token: str) -> policyauth.Decision:
    return eng.authorize_sync("GET", "/x", [("authorization", f"Bearer {token}")])


async def adecide(eng: policyauth.Engine, token: str) -> policyauth.Decision:
    return await eng.authorize("GET", "/x", [("authorization", f"Bearer {token}")])


def entries(store: redis.Redis) -> set[bytes]:
    return {key for key in store.keys("policyauth:*") if not key.endswith(b":lock")}


def only_new_entry(store: redis.Redis, before: set[bytes]) -> bytes:
    (key,) = entries(store) - before
    return key


def sealer(url: str) -> SharedCache:
    """What a writer to Redis who knows `cache_secret` (so the keys) but not the token has."""
    return SharedCache(url, SECRET, ttl=300, negative_ttl=30, provider_timeout=3)


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_an_entry_forged_without_the_token_is_refused(
    redis_server: Any, store: redis.Redis, userinfo: Userinfo, flavour: str
) -> None:
    """A refused token's key holds a made-up identity in staff-group: still 401, asked again."""
    token = f"bad-forge-{flavour}"
    before = entries(store)
    with engine(redis_server.url, userinfo) as first:
        assert decide(first, token).status == 401
    key = only_new_entry(store, before)
    forged = Identity({"sub": "mallory", "groups": ["staff-group"]})
    for value in (
        sealer(redis_server.url)._seal(key.decode(), "another-token", forged, time.time() + 60),
        b'{"kind":"identity","claims":{"sub":"mallory","groups":["staff-group"]}}',
        b"\x00" * 64,
    ):
        store.set(key, value)
        calls = userinfo.calls[token]
        with engine(redis_server.url, userinfo) as second:
            if flavour == "sync":
                decision = decide(second, token)
            else:
                decision = await adecide(second, token)
        assert (decision.status, decision.reason) == (401, Reason.INVALID_TOKEN)
        assert userinfo.calls[token] == calls + 1  # the forged entry was a miss


def test_an_entry_moved_under_another_tokens_key_is_refused(
    redis_server: Any, store: redis.Redis, userinfo: Userinfo
) -> None:
    before = entries(store)
    with engine(redis_server.url, userinfo) as first:
        assert decide(first, "good-move").status == 200
        good = only_new_entry(store, before)
        assert decide(first, "bad-move").status == 401
        bad = only_new_entry(store, before | {good})
    store.set(bad, store.get(good))  # a valid sealed identity, under the refused token's key
    with engine(redis_server.url, userinfo) as second:
        decision = decide(second, "bad-move")
    assert (decision.status, decision.reason) == (401, Reason.INVALID_TOKEN)
    assert userinfo.calls["bad-move"] == 2


def test_an_expired_entry_written_back_is_refused(
    redis_server: Any, store: redis.Redis, userinfo: Userinfo
) -> None:
    """The token is revoked after its entry was made; the entry, copied then and written back
    (without an expiry) once Redis dropped it, would allow it again: it is refused."""
    before = entries(store)
    with engine(redis_server.url, userinfo, cache_ttl="1s") as first:
        assert decide(first, "good-replay").status == 200
    key = only_new_entry(store, before)
    old = store.get(key)
    assert old is not None
    assert 0 < store.pttl(key) <= 1000
    userinfo_revoke(userinfo, "good-replay")
    time.sleep(1.1)
    assert store.get(key) is None
    store.set(key, old)
    with engine(redis_server.url, userinfo, cache_ttl="1s") as second:
        decision = decide(second, "good-replay")
    assert (decision.status, decision.reason) == (401, Reason.INVALID_TOKEN)
    assert userinfo.calls["good-replay"] == 2


def userinfo_revoke(userinfo: Userinfo, token: str) -> None:
    """The provider refuses `token` from now on (as after a logout or a revocation)."""
    answer = userinfo.answer

    def revoked(asked: str) -> tuple[int, dict[str, Any]]:
        return (401, {"error": "invalid_token"}) if asked == token else answer(asked)

    userinfo.answer = revoked  # type: ignore[method-assign]


@pytest.mark.parametrize(
    ("token", "settings", "longest_ms", "shortest_ms"),
    [
        ("exp20-pttl", {}, 20_000, 15_000),  # the token's own exp, under cache_ttl
        ("good-pttl", {"cache_ttl": "2m"}, 120_000, 115_000),  # cache_ttl, the token says none
        ("bad-pttl", {"negative_ttl": "7s"}, 7_000, 5_000),  # a refusal: negative_ttl
    ],
)
def test_redis_expiry_is_never_past_the_entrys_lifetime(
    redis_server: Any,
    store: redis.Redis,
    userinfo: Userinfo,
    token: str,
    settings: dict[str, str],
    longest_ms: int,
    shortest_ms: int,
) -> None:
    before = entries(store)
    with engine(redis_server.url, userinfo, **settings) as eng:
        decide(eng, token)
    key = only_new_entry(store, before)
    assert shortest_ms < store.pttl(key) <= longest_ms


async def test_a_refusal_is_shared_between_sync_and_async_engines(
    redis_server: Any, userinfo: Userinfo
) -> None:
    with engine(redis_server.url, userinfo) as first:
        assert decide(first, "bad-shared").status == 401
    async with engine(redis_server.url, userinfo) as second:
        decision = await adecide(second, "bad-shared")
    assert (decision.status, decision.reason) == (401, Reason.INVALID_TOKEN)
    assert userinfo.calls["bad-shared"] == 1


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_unavailable_is_never_stored(
    redis_server: Any, store: redis.Redis, userinfo: Userinfo, flavour: str
) -> None:
    token = f"down-{flavour}"
    before = entries(store)
    for round_ in (1, 2):
        with engine(redis_server.url, userinfo) as eng:
            if flavour == "sync":
                decision = decide(eng, token)
            else:
                decision = await adecide(eng, token)
        assert (decision.status, decision.reason) == (503, Reason.PROVIDER_UNAVAILABLE)
        assert entries(store) == before  # no entry, and the lock is gone
        assert store.keys("policyauth:*:lock") == []
        assert userinfo.calls[token] == round_


@pytest.mark.parametrize("token", ["good-told", "bad-told", "down-told"])
async def test_waiters_in_other_engines_are_told_the_outcome(
    redis_server: Any, store: redis.Redis, token: str
) -> None:
    """Three engines (three processes' worth of caches) on one loop, 5 requests each: one call,
    and every request gets its outcome, "unavailable" included (told, never stored). The
    provider answers only once all three engines listen for the outcome: a latecomer after
    an "unavailable" would rightly ask again, since nothing is stored for it."""
    gate = threading.Event()
    gated = Userinfo(gate=gate)
    engines = [engine(redis_server.url, gated) for _ in range(3)]
    try:
        asked = asyncio.gather(*(adecide(eng, token) for eng in engines for _ in range(5)))
        deadline = time.monotonic() + 20
        while not gate.is_set():
            channels = store.pubsub_channels("policyauth:*:done")
            counts = store.pubsub_numsub(*channels) if channels else []
            if sum(count for _, count in counts) >= 3 or time.monotonic() > deadline:
                gate.set()
            await asyncio.sleep(0.01)
        decisions = await asked
    finally:
        gate.set()
        for eng in engines:
            await eng.aclose()
        gated.close()
    statuses = {d.status for d in decisions}
    assert statuses == {{"good": 200, "bad": 401, "down": 503}[token.split("-")[0]]}
    assert gated.calls[token] == 1


def test_an_identity_from_redis_is_kept_in_process_no_longer_than_its_entry(
    redis_server: Any, userinfo: Userinfo
) -> None:
    """Another worker reads the identity half-way through its 1 s: once the provider revokes
    the token, that worker refuses it 1 s after the provider call, not 1 s after its read."""
    with (
        engine(redis_server.url, userinfo, cache_ttl="1s") as first,
        engine(redis_server.url, userinfo, cache_ttl="1s") as second,
    ):
        assert decide(first, "good-revoked").status == 200
        called = time.monotonic()  # the provider answered before this
        time.sleep(0.5)
        assert decide(second, "good-revoked").status == 200  # from Redis
        assert userinfo.calls["good-revoked"] == 1
        userinfo_revoke(userinfo, "good-revoked")
        time.sleep(max(0.0, called + 1.05 - time.monotonic()))
        decision = decide(second, "good-revoked")
    assert (decision.status, decision.reason) == (401, Reason.INVALID_TOKEN)
    assert userinfo.calls["good-revoked"] == 2


@pytest.fixture
def proxy(redis_server: Any) -> Iterator[StallingProxy]:
    server = StallingProxy(redis_server.port)
    yield server
    server.close()


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_a_slow_redis_costs_calls_never_time_or_an_allow(
    store: redis.Redis,
    userinfo: Userinfo,
    proxy: StallingProxy,
    caplog: pytest.LogCaptureFixture,
    flavour: str,
) -> None:
    """Redis stalls (accepts, never answers): each decision still comes well within the
    provider timeout (3 s; the Redis timeout is 0.25 s, without retries), from direct provider
    calls; one warning for the outage; a refusal stays a refusal; once Redis answers again,
    new identities are shared through it again."""
    eng = engine(proxy.url, userinfo)

    async def timed(token: str) -> tuple[int, float]:
        started = time.monotonic()
        if flavour == "sync":
            decision = decide(eng, token)
        else:
            decision = await adecide(eng, token)
        return decision.status, time.monotonic() - started

    try:
        before = entries(store)
        assert (await timed(f"good-{flavour}-slow-0"))[0] == 200
        assert len(entries(store) - before) == 1
        proxy.stall()
        with caplog.at_level(logging.WARNING, logger="policyauth.identity"):
            results = [await timed(f"good-{flavour}-slow-{i}") for i in range(1, 4)]
            results.append(await timed(f"bad-{flavour}-slow"))
            time.sleep(1.1)  # past the retry pause: the next miss tries Redis again
            results.append(await timed(f"good-{flavour}-slow-4"))
            assert [status for status, _ in results] == [200, 200, 200, 401, 200]
            assert max(seconds for _, seconds in results) < 3.0
            assert caplog.text.count(UNAVAILABLE) == 1
            assert BACK not in caplog.text
            proxy.resume()
            time.sleep(1.1)
            before = entries(store)
            assert (await timed(f"good-{flavour}-slow-5"))[0] == 200
        assert caplog.text.count(BACK) == 1
        assert len(entries(store) - before) == 1  # shared through Redis again
        for i in range(6):
            assert userinfo.calls[f"good-{flavour}-slow-{i}"] == 1
    finally:
        if flavour == "sync":
            eng.close()
        else:
            await eng.aclose()


def test_an_outcome_told_to_waiters_and_written_back_as_an_entry_is_refused(
    redis_server: Any, store: redis.Redis, userinfo: Userinfo
) -> None:
    """Waiters are told "unavailable" too; a copy of that message stored under the entry's
    key (where "unavailable" never is) is a miss: the provider is asked, not a stored 503."""
    listener = store.pubsub(ignore_subscribe_messages=True)
    listener.psubscribe("policyauth:*:done")
    try:
        with engine(redis_server.url, userinfo) as first:
            assert decide(first, "down-told-back").status == 503
        message = None
        deadline = time.monotonic() + 5
        while message is None and time.monotonic() < deadline:
            message = listener.get_message(timeout=0.2)
    finally:
        listener.close()
    assert message is not None
    key = message["channel"].removesuffix(b":done")
    store.set(key, message["data"], px=5000)
    with engine(redis_server.url, userinfo) as second:
        assert decide(second, "down-told-back").status == 503
    assert userinfo.calls["down-told-back"] == 2


class NoThreads(concurrent.futures.ThreadPoolExecutor):
    """A loop's default executor that refuses work: what runs in a thread fails loudly."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        raise AssertionError(f"a thread was asked to run {fn!r}")


async def test_an_async_lookup_through_redis_takes_no_thread(
    redis_server: Any, userinfo: Userinfo
) -> None:
    asyncio.get_running_loop().set_default_executor(NoThreads())
    async with engine(redis_server.url, userinfo) as eng:
        decision = await adecide(eng, "good-no-thread")
    assert (decision.status, decision.reason) == (200, Reason.ALLOWED)
    assert userinfo.calls["good-no-thread"] == 1


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_timeouts_in_the_redis_url_cannot_lengthen_a_lookup(
    userinfo: Userinfo, proxy: StallingProxy, flavour: str
) -> None:
    """redis-py lets `?socket_timeout=` in a URL override the client's arguments: the cache's
    own bound (0.25 s here) still holds against a stalled Redis."""
    proxy.stall()
    url = proxy.url + "?socket_timeout=10&socket_connect_timeout=10"
    eng = engine(url, userinfo)
    started = time.monotonic()
    try:
        if flavour == "sync":
            decision = decide(eng, f"good-url-timeout-{flavour}")
        else:
            decision = await adecide(eng, f"good-url-timeout-{flavour}")
    finally:
        if flavour == "sync":
            eng.close()
        else:
            await eng.aclose()
    assert (decision.status, decision.reason) == (200, Reason.ALLOWED)
    assert time.monotonic() - started < 3.0  # the provider timeout; 10 s without the bound
