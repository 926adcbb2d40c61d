"""Remembered decisions: what a request carries, straight to the decision the full path made.

Most traffic repeats itself: the same client sends the same token to the same few targets.
The full path (headers normalized, the target located, the credential parsed, the
authenticator chosen, the identity cache asked, the rules' memo read) costs several times more
than the decision it finds again. So each engine generation keeps a small table from the
request's raw parts (method, raw target, every `Authorization` value) to the Decision it got.

It keeps every rule of the full path:

- No raw token is kept: the key is a keyed BLAKE2b MAC (a fresh random key per table) of the
  parts, length-prefixed so that no two requests share one; tokens, queries and targets are
  never stored.
- An answer that depends on an identity is given only while the identity cache still holds
  that very identity (or that very "invalid" answer) under the token's key: the cache's TTL,
  the token's own expiry and the negative TTL apply unchanged, and a replaced, evicted or
  expired entry sends the request down the full path. Entries refer to identities and their
  decisions weakly, so this table never keeps an evicted identity alive: its memory stays in
  the identity cache's byte bound. API tokens (the `tokens` stores) are never remembered
  here: their store is asked on every request, so a revocation takes effect as before.
- A request with a header that `header_problem` may refuse (a method override, a name with
  `_`), a duplicate header or a name not in lower case is never remembered: only the
  `Authorization` value is in the key.
- Bounded: at most SIZE entries (the oldest out first), each a 16-byte key, the cache key and
  two weak references, or a small Decision without a principal (its message quotes at most 64
  characters of input, its challenges are the realm's): under 1 KB each, about 4 MB at most,
  outside `cache_size`. A reload starts a new table (it belongs to the
  engine's generation, `engine._State`).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from policyauth.decision import Decision
from policyauth.identity.source import Identity, IdentityResult
from policyauth.request.canonical import _OVERRIDE_HEADERS

SIZE = 4096  # remembered requests per engine generation
# The method override headers `header_problem` refuses, as text and as ASGI's bytes.
_OVERRIDES = frozenset(_OVERRIDE_HEADERS | {name.encode() for name in _OVERRIDE_HEADERS})

# What the identity source offers for this (RemoteIdentitySource): the identity cache's key
# for an authenticator and credential, and the cache's current answer under a key.
CacheKey = Callable[[str, Any], "bytes | None"]
Cached = Callable[[bytes], "IdentityResult | None"]


class Recall:
    """One engine generation's remembered decisions (see the module)."""

    __slots__ = ("_cache_key", "_cached", "_entries", "_keyed", "_lock")

    def __init__(self, identities: object) -> None:
        self._keyed = hashlib.blake2b(key=secrets.token_bytes(32), digest_size=16)
        # Values: (decision, None, None) for an answer that needs no identity; else
        # (decision or None, weak decision or None, (cache key, weak identity result)).
        self._entries: dict[bytes, tuple[Any, Any, Any]] = {}
        self._cache_key: CacheKey | None = getattr(identities, "cache_key", None)
        self._cached: Cached | None = getattr(identities, "cached", None)
        self._lock = threading.Lock()

    def key(self, method: str, target: str, headers: Any) -> bytes | None:
        """The MAC of what decides this request, or None when it carries a header the table
        does not judge (or headers in a shape it does not read): then the full path runs."""
        text = f"{len(method)}:{method}{len(target)}:{target}"
        kind = type(headers)
        if kind is not list and kind is not tuple:  # ASGI's list first: ABC checks are slow
            if isinstance(headers, Mapping):
                headers = list(headers.items())
            elif not isinstance(headers, list | tuple):
                return None
        if headers:
            # In C, not a Python loop over the headers: a dict of them, and their names
            # joined. The request takes the full path when it has a duplicate header (two
            # `authorization`s, among others), a name not in lower case (ASGI servers lower
            # them; so do WSGI integrations), a name with `_` (a possible underscore alias) or
            # a method override: the headers `header_problem` judges are then never in the
            # way of a remembered decision. Any other shape (mixed bytes and text) raises
            # TypeError, ValueError or AttributeError, and takes the full path too.
            try:
                found = dict(headers)
                if type(next(iter(found))) is bytes:
                    names = b"\0".join(found).decode("latin-1")
                    value = found.get(b"authorization")
                    value = None if value is None else value.decode("latin-1")
                else:
                    names = "\0".join(found)
                    value = found.get("authorization")
                    if value is not None and type(value) is not str:
                        return None
            except (TypeError, ValueError, AttributeError):
                return None
            if (
                len(found) != len(headers)
                or not names.islower()
                or "_" in names
                or not _OVERRIDES.isdisjoint(found)
            ):
                return None
            if value is not None:
                text += f"{len(value)}:{value}"
        mac = self._keyed.copy()
        mac.update(text.encode("utf-8", "surrogatepass"))
        return mac.digest()

    def get(self, key: bytes) -> tuple[Decision, IdentityResult | None] | None:
        """The remembered decision and the cached identity result it rests on (None: it
        needs none), while still valid; else None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        decision, weak_decision, rests_on = entry
        if rests_on is None:
            return decision, None
        cache_key, weak_result = rests_on
        result = weak_result()
        if result is None or self._cached is None or self._cached(cache_key) is not result:
            self._entries.pop(key, None)  # gone from the identity cache: forget it here too
            return None
        if decision is None:
            decision = weak_decision()
            if decision is None:  # the identity's memo let it go
                self._entries.pop(key, None)
                return None
        return decision, result

    def remember(
        self,
        key: bytes,
        decision: Decision,
        authenticator: str | None = None,
        credential: object = None,
        result: IdentityResult | None = None,
    ) -> None:
        """Remember `decision` for `key`: with no authenticator, it needs no identity; else it
        rests on `result`, which must be what the identity cache holds for the credential now
        (nothing is remembered otherwise: a store's answer, or one the cache did not keep)."""
        if authenticator is None:
            self._put(key, (decision, None, None))
            return
        if self._cache_key is None or self._cached is None or result is None:
            return
        cache_key = self._cache_key(authenticator, credential)
        if cache_key is None or self._cached(cache_key) is not result:
            return
        entry: tuple[Any, Any, Any]
        if decision.principal is None:  # small, and often made afresh by each full path
            entry = (decision, None, (cache_key, weakref.ref(result)))
        else:  # lives in the identity's memo: held weakly, so as not to keep claims alive
            entry = (None, weakref.ref(decision), (cache_key, weakref.ref(result)))
        self._put(key, entry)

    def _put(self, key: bytes, entry: tuple[Any, Any, Any]) -> None:
        with self._lock:
            entries = self._entries
            while len(entries) >= SIZE:
                try:  # the oldest first; `get` may drop entries meanwhile, without the lock
                    entries.pop(next(iter(entries)), None)
                except (RuntimeError, StopIteration):
                    entries.clear()
            entries[key] = entry

    def __len__(self) -> int:
        return len(self._entries)


def counted(result: IdentityResult | None) -> str:
    """The identity cache metric a remembered answer counts as (what the full path counts)."""
    return "hit" if type(result) is Identity else "negative"
