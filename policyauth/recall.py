"""Remembered decisions: what a request carries, straight to the decision the full path made.

Most traffic repeats itself: the same client sends the same token to the same few targets.
The full path (headers normalized, the target located, the credential parsed, the
authenticator chosen, the identity cache asked, the rules' memo read) costs several times more
than the decision it finds again. So each engine generation keeps a small table from the
request's raw parts (method, raw target, the `Authorization` value) to the Decision it got.

It keeps every rule of the full path:

- No raw token is kept: the key holds a keyed BLAKE2b MAC (a fresh random key per table) of the
  `Authorization` value, never the value. A target without a query, and at most 256
  characters long, is kept as it is (as the engine's located targets are); any other target
  goes into the MAC as well, since a query may carry a token.
- An answer that depends on an identity is given only while the identity cache still holds
  that very identity (or that very "invalid" answer) under the token's key: the cache's TTL,
  the token's own expiry and the negative TTL apply unchanged, and a replaced, evicted or
  expired entry sends the request down the full path. An entry holds the identity cache's own
  entry for the token (`IdentityCache.held`), which the cache empties when it lets go of it,
  so checking it costs no lookup; a hit marks it used in the cache, as a full path would.
  Decisions are held weakly (they live in the identity's memo), and an emptied cache entry
  holds no identity, so this table never keeps an evicted identity alive: its memory stays in
  the identity cache's byte bound. API tokens (the `tokens` stores) are never remembered
  here: their store is asked on every request, so a revocation takes effect as before.
- Only the `Authorization` value is in the key, so a request is looked up only when nothing
  else in its headers can change its decision. That is judged once per list of header names
  (the same few lists come again and again) by the full path's own functions: the names as
  `normalize_headers` folds them must raise no `header_problem` (a method override, an
  underscore alias) and hold at most one `Authorization` (`is_authorization`). Other lists,
  and headers in a shape this table does not read, take the full path.
- Bounded: at most SIZE entries (the oldest out first), each a key of at most a few hundred
  bytes, the cache key, a weak reference and the cache's (emptied or live) entry, or a small
  Decision without a principal (its
  message quotes at most 64 characters of input, its challenges are the realm's); and at most
  SHAPES judged lists of names of at most 2 KiB each: a few MB at most, outside `cache_size`.
  A reload starts a new table (it belongs to the engine's generation, `engine._State`).
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
import threading
import weakref
from collections.abc import Callable, Hashable, Mapping
from operator import itemgetter
from time import perf_counter
from typing import Any

from policyauth.decision import Decision
from policyauth.identity.cache import Entry as Held
from policyauth.identity.cache import Touch
from policyauth.identity.source import Identity, IdentityResult
from policyauth.observe.metrics import METRICS, PENDING, Labels, labels
from policyauth.request import header_problem, is_authorization, normalize_headers

SIZE = 4096  # remembered requests per engine generation
SHAPES = 256  # judged lists of header names per engine generation
_SHAPE_BYTES = 2048  # a longer list of names is not judged (nor its requests remembered)
_KEPT_TARGET = 256  # longer targets (and any with a query) go into the MAC
_KEPT_METHOD = 32
_NAME = itemgetter(0)
# A list of names that no request may be looked up with: (count, index) never matches.
_UNJUDGED = (-1, -1)

# What the identity source offers for this (RemoteIdentitySource): the identity cache's key
# for an authenticator and credential, the cache's live entry under a key with the call that
# marks it used, and the clock its entries expire on.
CacheKey = Callable[[str, Any], "bytes | None"]
HeldBy = Callable[[bytes], "tuple[Held, Touch] | None"]
Clock = Callable[[], float]
# `Recall.find`'s answer: the key (None: not rememberable), the remembered decision (None:
# none) and the cached identity result it rests on (None: it needs none).
Found = tuple["Hashable | None", "Decision | None", "IdentityResult | None"]
_NOT_KEYED: Found = (None, None, None)
# An entry: (a call that gives the decision, the identity cache's entry it rests on or None,
# its key, the call that marks it used, the labels a hit is counted under in the metrics).
# The call is a weak reference for a decision held in the identity's memo, else
# `repeat(decision).__next__` (a strong one).
Entry = tuple[Callable[[], "Decision | None"], "Held | None", bytes, "Touch | None", Labels]


class Recall:
    """One engine generation's remembered decisions (see the module)."""

    __slots__ = (
        "_bytes_mac",
        "_cache_key",
        "_clock",
        "_entries",
        "_events",
        "_held",
        "_lock",
        "_overflow",
        "_shapes",
        "_target_mac",
        "_text_mac",
    )

    def __init__(self, identities: object) -> None:
        # One key each for ASGI's bytes values, text values and long targets: a value of one
        # kind never shares a MAC with a value of another (b"\xe9" and "\xe9" differ).
        self._bytes_mac = _mac()
        self._text_mac = _mac()
        self._target_mac = _mac()
        self._entries: dict[Hashable, Entry] = {}
        # Joined header names: (how many names, index of the Authorization header or -1).
        self._shapes: dict[bytes | str, tuple[int, int]] = {}
        self._cache_key: CacheKey | None = getattr(identities, "cache_key", None)
        self._held: HeldBy | None = getattr(identities, "held", None)
        self._clock: Clock | None = getattr(identities, "cache_clock", None)
        self._lock = threading.Lock()
        # The metrics' queue, where a remembered decision is counted as the full path would
        # count it (None without prometheus_client), and what to call when it is too long.
        self._events = METRICS.queue()
        self._overflow = METRICS.overflow

    def find(self, method: str, target: str, headers: Any) -> Found:
        """The request's key, and its remembered decision with the cached identity result it
        rests on (None: it needs none), while still valid.

        The key is what decides the request, with its `Authorization` value as a MAC; None
        when its headers are not judged (or come in a shape this table does not read): then
        the full path runs and nothing is remembered. Written for few bytecodes (the lookup
        inlined, errors caught rather than types tested): it runs on every request."""
        started = perf_counter()
        if type(headers) is not list:  # ASGI's list first: ABC checks are slow
            headers = _pairs(headers)
            if headers is None:
                return _NOT_KEYED
        digest = None
        if headers:
            # The names joined in C, not in a Python loop: ASGI's bytes, or text (WSGI's, as
            # the first name tells: a join that raises costs more than the test); mixed bytes
            # and text, or pairs that are not pairs, raise and take the full path. Bytes and
            # text values have MACs under different keys (b"\xe9" and "\xe9" differ).
            try:
                text = type(headers[0][0]) is not bytes
                if text:
                    names: bytes | str = "\0".join(map(_NAME, headers))
                    mac = self._text_mac
                else:
                    names = b"\0".join(map(_NAME, headers))
                    mac = self._bytes_mac
            except (TypeError, IndexError, KeyError):
                return _NOT_KEYED
            try:  # subscripts, not `get`: a method call costs a hit more than a miss's raise
                count, at = self._shapes[names]
            except KeyError:
                count, at = self._judge(names)
            if count != len(headers):  # the count tells a name holding a NUL from two names
                return _NOT_KEYED
            if at >= 0:
                try:  # bytes for bytes names, text (as UTF-8) for text names; else an error
                    value = headers[at][1]
                    if text:
                        value = value.encode("utf-8", "surrogatepass")
                    mac = mac.copy()
                    mac.update(value)
                except (TypeError, AttributeError, IndexError, KeyError):
                    return _NOT_KEYED
                digest = mac.digest()
        key: Hashable | None
        if len(target) <= _KEPT_TARGET and "?" not in target and len(method) <= _KEPT_METHOD:
            key = (method, target, digest)
        else:
            key = self._long_key(method, target, digest)
            if key is None:
                return _NOT_KEYED
        try:
            fetch, held, cache_key, touch, counted = self._entries[key]
        except KeyError:
            return key, None, None
        # The entry's decision while what it rests on still holds (counted in the metrics as
        # the full path would count it); else it is forgotten.
        decision = fetch()
        result = None
        if held is not None:
            # Let go of by the identity cache (evicted, replaced: see its Entry), expired, or
            # gone from the identity's memo: forget it here too. Entries with a cache entry
            # have a clock and a touch.
            result = held[1]
            try:
                if decision is None or result is None or self._clock() >= held[0]:  # type: ignore[misc]
                    raise KeyError(cache_key)
                touch(cache_key)  # type: ignore[misc]  # KeyError: gone meanwhile
            except KeyError:
                self._entries.pop(key, None)
                return key, None, None
        events = self._events
        if events is not None:  # Metrics.queue's event, appended here: no call on this path
            events.append((counted, perf_counter() - started))
            if len(events) > PENDING:
                self._overflow()
        return key, decision, result

    def _long_key(self, method: str, target: str, digest: bytes | None) -> Hashable | None:
        """The key of a target with a query or over _KEPT_TARGET characters: the target goes
        into a MAC (a query may carry a token); None for a method too long to keep."""
        if len(method) > _KEPT_METHOD:
            return None
        mac = self._target_mac.copy()
        mac.update(b"\0" if digest is None else b"\1" + digest)  # fixed length: no ambiguity
        mac.update(target.encode("utf-8", "surrogatepass"))
        return method, mac.digest()

    def _judge(self, names: bytes | str) -> tuple[int, int]:
        """How many names the list holds and where its one `Authorization` is (-1: none), or
        _UNJUDGED when its requests must take the full path; remembered (see the module)."""
        shape = _UNJUDGED
        if len(names) <= _SHAPE_BYTES:
            split: list[Any] = names.split(b"\0" if isinstance(names, bytes) else "\0")  # type: ignore[arg-type]
            normalized = normalize_headers([(name, name[:0]) for name in split])
            found = [i for i, (name, _) in enumerate(normalized) if is_authorization(name)]
            if header_problem(normalized) is None and len(found) <= 1:
                shape = (len(split), found[0] if found else -1)
            with self._lock:
                if len(self._shapes) >= SHAPES:
                    self._shapes.clear()
                self._shapes[names] = shape
        return shape

    def remember(
        self,
        key: Hashable,
        decision: Decision,
        authenticator: str | None = None,
        credential: object = None,
        result: IdentityResult | None = None,
    ) -> None:
        """Remember `decision` for `key`: with no authenticator, it needs no identity; else it
        rests on `result`, which must be what the identity cache holds for the credential now
        (nothing is remembered otherwise: a store's answer, or one the cache did not keep)."""
        if authenticator is None:
            counted = labels(decision.status, decision.reason, None)
            self._put(key, (itertools.repeat(decision).__next__, None, b"", None, counted))
            return
        if self._cache_key is None or self._held is None or result is None:
            return
        cache_key = self._cache_key(authenticator, credential)
        if cache_key is None:
            return
        held = self._held(cache_key)
        if held is None or held[0][1] is not result:
            return
        fetch: Callable[[], Decision | None]
        if decision.principal is None:  # small, and often made afresh by each full path
            fetch = itertools.repeat(decision).__next__
        else:  # lives in the identity's memo: held weakly, so as not to keep claims alive
            fetch = weakref.ref(decision)
        # Counted as the full path counts it: the decision, and the identity cache lookup.
        lookup = "hit" if type(result) is Identity else "negative"
        counted = labels(decision.status, decision.reason, lookup)
        self._put(key, (fetch, held[0], cache_key, held[1], counted))

    def _put(self, key: Hashable, entry: Entry) -> None:
        with self._lock:
            entries = self._entries
            while len(entries) >= SIZE:
                try:  # the oldest first; `find` may drop entries meanwhile, without the lock
                    entries.pop(next(iter(entries)), None)
                except (RuntimeError, StopIteration):
                    entries.clear()
            entries[key] = entry

    def __len__(self) -> int:
        return len(self._entries)


def _mac() -> Any:
    """A keyed BLAKE2b (a MAC by design, RFC 7693) under a fresh random key, to be copied."""
    return hashlib.blake2b(key=secrets.token_bytes(32), digest_size=16)


def _pairs(headers: Any) -> list[Any] | tuple[Any, ...] | None:
    """Headers other than ASGI's list as pairs `find` reads: a tuple of pairs, a mapping's
    items; None for any other shape (an iterator is read once, by the full path)."""
    if type(headers) is tuple:
        return headers
    if isinstance(headers, Mapping):
        return list(headers.items())
    return headers if isinstance(headers, list | tuple) else None
