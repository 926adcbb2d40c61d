"""The identity cache: validated identities and invalid tokens, remembered briefly and safely.

Providers rate-limit userinfo (Auth0: 5 calls a minute per user), so a live identity is reused
for up to `cache_ttl`, never past the token's own expiry when the provider tells it; a token the
provider refused is remembered for `negative_ttl` so that a client retrying a bad token does not
turn into a flood of provider calls. "Unavailable" is never remembered.

Keys are keyed BLAKE2b MACs of (authenticator, token) under a random per-process key: the
raw token is never stored, and the keys are useless outside this process. Expiry uses the
monotonic clock, so a wall-clock jump neither extends nor cuts an entry. The size is bounded
(least recently used entries go first).

Identities and invalid tokens are kept apart, each under its own bound, the invalid ones under
a smaller one: anyone can make up tokens, so a flood of distinct junk tokens must only ever
push out other junk, never a validated identity (which would cost a real user a provider call,
and a 503 against a rate-limited provider).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from policyauth.identity.source import Identity, IdentityResult, Invalid

DEFAULT_MAX_ENTRIES = 10_000  # identities
DEFAULT_MAX_NEGATIVE = 2_000  # invalid tokens: enough for clients retrying a bad token


class IdentityCache:
    def __init__(
        self,
        *,
        ttl: float,
        negative_ttl: float,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_negative: int = DEFAULT_MAX_NEGATIVE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secret = secrets.token_bytes(32)
        # The keyed state is set up once; each key starts from a copy of it.
        self._keyed = hashlib.blake2b(key=self._secret, digest_size=32)
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._max_entries = max_entries
        self._max_negative = max_negative
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[float, IdentityResult]] = OrderedDict()
        self._negative: OrderedDict[bytes, tuple[float, IdentityResult]] = OrderedDict()
        self._lock = threading.Lock()

    def key(self, authenticator: str, token: str) -> bytes:
        """Keyed BLAKE2b (a MAC by design, RFC 7693), a third of HMAC-SHA256's cost here."""
        mac = self._keyed.copy()
        mac.update(authenticator.encode() + b"\0" + token.encode("utf-8", "backslashreplace"))
        return mac.digest()

    def get(self, key: bytes) -> IdentityResult | None:
        """Without the lock: a hit is on every request, and each OrderedDict operation here is
        atomic on its own; an entry evicted by another thread in between is simply a miss."""
        entries = self._entries
        entry = entries.get(key)
        if entry is None:
            entries = self._negative
            entry = entries.get(key)
            if entry is None:
                return None
        expires, result = entry
        try:
            if self._clock() >= expires:
                del entries[key]
                return None
            entries.move_to_end(key)
        except KeyError:
            return None
        return result

    def put(self, key: bytes, result: IdentityResult) -> None:
        """Remember `result` for as long as its kind allows (never an Unavailable)."""
        if isinstance(result, Identity):
            ttl = self._ttl if result.lifetime is None else min(self._ttl, result.lifetime)
            entries, other, bound = self._entries, self._negative, self._max_entries
        elif isinstance(result, Invalid):
            ttl = self._negative_ttl
            entries, other, bound = self._negative, self._entries, self._max_negative
        else:
            return
        if ttl <= 0:
            return
        with self._lock:
            other.pop(key, None)  # a key lives in one of the two, with its latest answer
            entries[key] = (self._clock() + ttl, result)
            entries.move_to_end(key)
            while len(entries) > bound:
                entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries) + len(self._negative)
