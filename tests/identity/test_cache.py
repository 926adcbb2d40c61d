"""The identity cache on its own: lifetimes by kind, the LRU bound, and keys that are MACs.

Identities live for cache_ttl, never past the provider's `exp`; invalid tokens for
negative_ttl; "unavailable" never. Expiry uses the injected (monotonic) clock.
"""

from __future__ import annotations

import hashlib
import hmac
import threading

import pytest
from provider_server import WATCH, new_token, policy_for

from policyauth.identity import Identity, Invalid, Unavailable
from policyauth.identity.cache import DEFAULT_MAX_NEGATIVE, IdentityCache
from policyauth.identity.userinfo import Response, judge


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def cache_with(
    clock: Clock,
    *,
    ttl: float = 300,
    negative_ttl: float = 30,
    size: int = 100,
    negative: int = 100,
) -> IdentityCache:
    return IdentityCache(
        ttl=ttl, negative_ttl=negative_ttl, max_entries=size, max_negative=negative, clock=clock
    )


ADA = Identity({"username": "ada", "groups": ["admin"]})


def test_an_identity_lives_for_the_ttl(clock: Clock) -> None:
    cache = cache_with(clock, ttl=300)
    key = cache.key("corp", new_token())
    cache.put(key, ADA)
    clock.now += 299.9
    assert cache.get(key) is ADA
    clock.now += 0.1
    assert cache.get(key) is None
    assert len(cache) == 0  # an expired entry is dropped when found


@pytest.mark.parametrize(
    ("lifetime", "expires_after"),
    [(10.0, 10.0), (299.0, 299.0), (301.0, 300.0), (3600.0, 300.0)],
)
def test_an_identity_never_outlives_the_token(
    clock: Clock, lifetime: float, expires_after: float
) -> None:
    cache = cache_with(clock, ttl=300)
    key = cache.key("corp", new_token())
    cache.put(key, Identity({"username": "ada"}, lifetime=lifetime))
    clock.now += expires_after - 0.01
    assert cache.get(key) is not None
    clock.now += 0.01
    assert cache.get(key) is None


@pytest.mark.parametrize("lifetime", [0.0, -1.0, -3600.0])
def test_an_expired_token_s_identity_is_not_stored(clock: Clock, lifetime: float) -> None:
    cache = cache_with(clock)
    key = cache.key("corp", new_token())
    cache.put(key, Identity({"username": "ada"}, lifetime=lifetime))
    assert cache.get(key) is None
    assert len(cache) == 0


def test_the_lifetime_comes_from_the_exp_claim(clock: Clock) -> None:
    """judge() turns `exp` (wall clock) into a lifetime; the cache counts it on its clock."""
    provider = policy_for(["keycloak"]).providers["keycloak"]
    wall = 1_767_225_600.0
    body = b'{"preferred_username": "ada", "sub": "1", "exp": 1767225645}'
    identity = judge(provider, Response(200, {"content-type": "application/json"}, body), wall)
    assert isinstance(identity, Identity)
    assert identity.lifetime == 45.0
    cache = cache_with(clock, ttl=300)
    key = cache.key("keycloak", new_token())
    cache.put(key, identity)
    clock.now += 44.9
    assert cache.get(key) is identity
    clock.now += 0.1
    assert cache.get(key) is None


def test_an_invalid_token_is_remembered_for_negative_ttl(clock: Clock) -> None:
    cache = cache_with(clock, ttl=300, negative_ttl=30)
    key = cache.key("corp", new_token())
    refusal = Invalid("the provider answered 401")
    cache.put(key, refusal)
    clock.now += 29.9
    assert cache.get(key) is refusal
    clock.now += 0.1
    assert cache.get(key) is None


def test_zero_ttls_store_nothing(clock: Clock) -> None:
    cache = cache_with(clock, ttl=0, negative_ttl=0)
    cache.put(cache.key("corp", new_token()), ADA)
    cache.put(cache.key("corp", new_token()), Invalid("no"))
    assert len(cache) == 0


def test_unavailable_is_never_stored(clock: Clock) -> None:
    cache = cache_with(clock)
    key = cache.key("corp", new_token())
    cache.put(key, Unavailable("the provider answered 502"))
    assert cache.get(key) is None
    assert len(cache) == 0


def test_an_unavailable_answer_does_not_replace_a_good_one(clock: Clock) -> None:
    cache = cache_with(clock)
    key = cache.key("corp", new_token())
    cache.put(key, ADA)
    cache.put(key, Unavailable("timeout"))
    assert cache.get(key) is ADA


def test_the_size_is_bounded_least_recently_used_first(clock: Clock) -> None:
    cache = cache_with(clock, size=3)
    keys = [cache.key("corp", new_token()) for _ in range(5)]
    for key in keys[:3]:
        cache.put(key, ADA)
    assert cache.get(keys[0]) is ADA  # keys[0] is now the most recently used
    cache.put(keys[3], ADA)  # evicts keys[1]
    assert len(cache) == 3
    assert cache.get(keys[1]) is None
    assert cache.get(keys[0]) is ADA
    cache.put(keys[4], ADA)  # evicts keys[2]
    assert cache.get(keys[2]) is None
    assert {cache.get(k) is not None for k in (keys[0], keys[3], keys[4])} == {True}


def test_a_replaced_entry_gets_a_fresh_expiry(clock: Clock) -> None:
    cache = cache_with(clock, ttl=300, negative_ttl=30)
    key = cache.key("corp", new_token())
    cache.put(key, Invalid("no"))
    clock.now += 20
    cache.put(key, ADA)
    clock.now += 20
    assert cache.get(key) is ADA


# --- keys ----------------------------------------------------------------------------------------


def test_keys_are_keyed_macs_under_a_per_process_secret(clock: Clock) -> None:
    cache = cache_with(clock)
    token = new_token("ya29.")
    key = cache.key("google", token)
    assert isinstance(key, bytes)
    assert len(key) == 32
    assert key == cache.key("google", token)  # stable within the cache
    expected = hashlib.blake2b(
        b"google\0" + token.encode(), key=cache._secret, digest_size=32
    ).digest()
    assert hmac.compare_digest(key, expected)
    assert key != hashlib.sha256(token.encode()).digest()  # not an unkeyed hash
    assert key != cache_with(clock).key("google", token)  # the secret differs per cache
    WATCH.observe("cache key", key, key.hex())


def test_keys_never_contain_the_token(clock: Clock) -> None:
    cache = cache_with(clock)
    token = new_token("gho_")
    key = cache.key("github", token)
    assert token.encode() not in key
    assert token not in key.hex()
    assert token not in repr(key)
    cache.put(key, ADA)
    assert token not in repr(cache._entries)
    assert token not in repr(cache)


def test_keys_separate_providers_and_tokens(clock: Clock) -> None:
    cache = cache_with(clock)
    token = new_token()
    keys = {
        cache.key("corp", token),
        cache.key("corp2", token),
        cache.key("corp", token + "x"),
        cache.key("cor", "p\0" + token),
    }
    assert len(keys) == 4


@pytest.mark.parametrize("token", ["caf\u00e9", "\udc80\udcff", "\x00", ""])
def test_any_string_makes_a_key(clock: Clock, token: str) -> None:
    cache = cache_with(clock)
    assert len(cache.key("corp", token)) == 32


def test_concurrent_use_keeps_the_bound(clock: Clock) -> None:
    cache = cache_with(clock, size=50, negative=10)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(300):
                key = cache.key("corp", f"t{n}-{i % 80}")
                if cache.get(key) is None:
                    cache.put(key, ADA if i % 2 else Invalid("no"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(cache) <= 50 + 10


def test_junk_tokens_never_push_out_an_identity(clock: Clock) -> None:
    """Issue 9 item 9: refusals live under their own, smaller bound, so 10,000 distinct junk
    tokens evict only each other."""
    cache = IdentityCache(ttl=300, negative_ttl=30, clock=clock)  # the default bounds
    valid = cache.key("corp", new_token())
    cache.put(valid, ADA)
    junk = [cache.key("corp", f"junk-{i}") for i in range(10_000)]
    for key in junk:
        cache.put(key, Invalid("the provider answered 401"))
    assert cache.get(valid) is ADA
    assert len(cache) == 1 + DEFAULT_MAX_NEGATIVE < 10_000
    assert cache.get(junk[-1]) == Invalid("the provider answered 401")  # the newest are kept
    assert cache.get(junk[0]) is None


def test_a_token_found_valid_later_leaves_the_refusals(clock: Clock) -> None:
    cache = cache_with(clock, size=2, negative=2)
    key = cache.key("corp", new_token())
    cache.put(key, Invalid("the provider answered 401"))
    cache.put(key, ADA)
    assert cache.get(key) is ADA
    assert len(cache) == 1
    cache.put(key, Invalid("revoked"))
    assert cache.get(key) == Invalid("revoked")
    assert len(cache) == 1
