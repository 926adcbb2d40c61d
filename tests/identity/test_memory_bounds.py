"""Memory bounds of cached identities (issue 13): the identity cache is bounded in bytes as well
as entries, an Engine takes that bound, and an identity's memo of decisions forgets its least
recently used entry instead of emptying itself."""

from __future__ import annotations

import httpx

import policyauth
from policyauth.identity import Identity
from policyauth.identity.cache import (
    ENTRY_BYTES,
    MEMO_ENTRY_BYTES,
    IdentityCache,
    footprint,
)
from policyauth.identity.source import DERIVED_SIZE

POLICY = """
provider corp {
  userinfo = "https://sso.example.com/userinfo"
  username = $.preferred_username
}

route GET /reports/{id} {
  auth corp
  allow if username != ""
}
"""


def _charge(identity: Identity) -> int:
    return footprint(identity.claims) + ENTRY_BYTES + DERIVED_SIZE * MEMO_ENTRY_BYTES


def test_the_memo_forgets_the_least_recently_used_value_only() -> None:
    identity = Identity({"username": "ada"})
    made: list[int] = []

    def make(n: int) -> int:
        made.append(n)
        return n * 10

    for n in range(DERIVED_SIZE):
        assert identity.derived(n, lambda n=n: make(n)) == n * 10
    assert identity.derived(0, lambda: make(-1)) == 0  # a hit: 0 is now the most recent
    assert identity.derived(DERIVED_SIZE, lambda: make(DERIVED_SIZE)) == DERIVED_SIZE * 10
    made.clear()
    assert identity.derived(0, lambda: make(-1)) == 0  # kept: it was used recently
    for n in range(2, DERIVED_SIZE + 1):
        assert identity.derived(n, lambda n=n: make(n)) == n * 10
    assert made == []  # all still remembered: the memo was not emptied
    assert identity.derived(1, lambda: make(1)) == 10  # 1 was the least recent: forgotten
    assert made == [1]


def test_the_cache_keeps_its_identities_within_max_bytes() -> None:
    identities = [Identity({"username": f"user-{i}", "groups": ["a", "b"]}) for i in range(10)]
    budget = _charge(identities[0]) * 3 + 10  # room for three
    cache = IdentityCache(ttl=300, negative_ttl=30, max_bytes=budget)
    keys = [cache.key("corp", f"token-{i}") for i in range(10)]
    for key, identity in zip(keys, identities, strict=True):
        cache.put(key, identity)
        assert cache.charged_bytes <= budget
    assert len(cache) == 3
    assert [cache.get(key) for key in keys[-3:]] == identities[-3:]
    assert all(cache.get(key) is None for key in keys[:-3])
    assert cache.charged_bytes == 3 * _charge(identities[0])


def test_replacing_or_expiring_an_entry_gives_its_bytes_back() -> None:
    now = [100.0]
    cache = IdentityCache(ttl=10, negative_ttl=30, clock=lambda: now[0])
    key = cache.key("corp", "token")
    identity = Identity({"username": "ada"})
    cache.put(key, identity)
    cache.put(key, identity)
    assert cache.charged_bytes == _charge(identity)
    now[0] += 11
    assert cache.get(key) is None
    assert cache.charged_bytes == 0


def test_an_engine_takes_the_cache_size_in_bytes() -> None:
    calls: list[str] = []

    def provider(request: httpx.Request) -> httpx.Response:
        token = request.headers["authorization"].removeprefix("Bearer ")
        calls.append(token)
        return httpx.Response(200, json={"preferred_username": token})

    policy = policyauth.loads(POLICY)
    one = _charge(Identity({"username": "token-0"}))
    with policyauth.Engine(
        policy, transport=httpx.MockTransport(provider), cache_size=2 * one + one // 2
    ) as engine:
        for token in ("token-0", "token-1", "token-2", "token-2", "token-0"):
            decision = engine.authorize_sync(
                "GET", "/reports/1", [("authorization", f"Bearer {token}")]
            )
            assert decision.status == 200
    # token-0 was pushed out by token-2 (room for two), so it is asked about again
    assert calls == ["token-0", "token-1", "token-2", "token-0"]
