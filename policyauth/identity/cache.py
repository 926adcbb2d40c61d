"""The identity cache: validated identities and invalid tokens, remembered briefly and safely.

Providers rate-limit userinfo (Auth0: 5 calls a minute per user), so a live identity is reused
for up to `cache_ttl`, never past the token's own expiry when the provider tells it; a token the
provider refused is remembered for `negative_ttl` so that a client retrying a bad token does not
turn into a flood of provider calls. "Unavailable" is never remembered.

Keys are keyed BLAKE2b MACs of (authenticator, token) under a random per-process key: the
raw token is never stored, and the keys are useless outside this process. Expiry uses the
monotonic clock, so a wall-clock jump neither extends nor cuts an entry. The size is bounded
(least recently used entries go first) in entries and in bytes: each identity is charged its
claims as Python holds them plus a full memo of derived values (DERIVED_SIZE decisions at
MEMO_ENTRY_BYTES each, measured by benchmarks/memory.py), so `max_bytes` holds whatever the
identities' traffic does afterwards.

Identities and invalid tokens are kept apart, each under its own bound, the invalid ones under
a smaller one: anyone can make up tokens, so a flood of distinct junk tokens must only ever
push out other junk, never a validated identity (which would cost a real user a provider call,
and a 503 against a rate-limited provider).
"""

from __future__ import annotations

import hashlib
import secrets
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from policyauth.identity.source import DERIVED_SIZE, Identity, IdentityResult, Invalid

DEFAULT_MAX_ENTRIES = 10_000  # identities
DEFAULT_MAX_BYTES = 128 * 1024 * 1024  # about 9,000 identities with a full memo each
MEMO_ENTRY_BYTES = 400  # one remembered decision: its key, the Decision, the dict slot
ENTRY_BYTES = 300  # the cache's own slot: the 32-byte key, the tuple, the OrderedDict node
DEFAULT_MAX_NEGATIVE = 2_000  # invalid tokens: enough for clients retrying a bad token

# One cached answer: [expires (the cache's clock), the result, the bytes it is charged]. A list,
# not a tuple, so that the cache can let go of it where others still hold it: when an entry
# leaves the cache (evicted, replaced, expired, forgotten), its result is set to None, and a
# holder (the engine's remembered decisions, policyauth/recall.py) sees that without a lookup.
Entry = list[Any]
# The call that marks a key as just used (its OrderedDict's `move_to_end`).
Touch = Callable[[bytes], None]


class IdentityCache:
    def __init__(
        self,
        *,
        ttl: float,
        negative_ttl: float,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_negative: int = DEFAULT_MAX_NEGATIVE,
        max_bytes: int = DEFAULT_MAX_BYTES,
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
        self._max_bytes = max_bytes
        self._bytes = 0  # what the identities in `_entries` are charged, together
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()
        self._negative: OrderedDict[bytes, Entry] = OrderedDict()
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
        expires, result, _ = entry
        try:
            if self._clock() >= expires:
                with self._lock:  # rare, and the byte count must not lose an update
                    self._drop(entries, key)
                return None
            entries.move_to_end(key)
        except KeyError:
            return None
        return result  # type: ignore[no-any-return]  # None: let go of meanwhile (see Entry)

    def held(self, key: bytes) -> tuple[Entry, Touch] | None:
        """The live entry under `key` and the call that marks it used, for a caller that
        checks one entry on every request (remembered decisions): while `entry[1]` is not None
        and `clock() < entry[0]`, the entry is still the cache's answer for `key`. None when
        nothing is cached under `key`."""
        for entries in (self._entries, self._negative):
            entry = entries.get(key)
            if entry is not None:
                return entry, entries.move_to_end
        return None

    @property
    def clock(self) -> Callable[[], float]:
        """The clock the entries' expiry is read on (monotonic, unless a test sets one)."""
        return self._clock

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
        charge = footprint(result.claims) + ENTRY_BYTES if isinstance(result, Identity) else 0
        if charge:
            charge += DERIVED_SIZE * MEMO_ENTRY_BYTES
        with self._lock:
            self._drop(other, key)  # a key lives in one of the two, with its latest answer
            self._drop(entries, key)
            entries[key] = [self._clock() + ttl, result, charge]
            if entries is self._entries:
                self._bytes += charge
            while len(entries) > bound or (
                entries is self._entries and self._bytes > self._max_bytes
            ):
                oldest = next(iter(entries))
                self._drop(entries, oldest)

    def _drop(self, entries: OrderedDict[bytes, Entry], key: bytes) -> None:
        """Forget `key` in `entries`, and its charge; nothing when another thread was first.
        The entry lets go of its result, for whoever still holds the entry (see Entry)."""
        entry = entries.pop(key, None)
        if entry is not None:
            entry[1] = None
            if entries is self._entries:
                self._bytes -= entry[2]

    @property
    def charged_bytes(self) -> int:
        """What the cached identities are charged together: never above `max_bytes`."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries) + len(self._negative)


def footprint(value: Any) -> int:
    """Bytes Python holds for a claims document (JSON shapes: dicts, lists, strings, numbers),
    counted with sys.getsizeof; shared objects count once per reference, an overestimate that
    only makes the bound safer."""
    size = sys.getsizeof(value)
    if isinstance(value, Mapping):
        return size + sum(footprint(k) + footprint(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return size + sum(footprint(item) for item in value)
    return size
