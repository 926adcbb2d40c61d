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
  else in its headers can change its decision. That is judged once per header name (the
  same few names come again and again; the full path's judgement is name by name) by the full
  path's own functions: each name as `normalize_headers` folds it must raise no
  `header_problem` (a method override, an underscore alias), and at most one may be an
  `Authorization` (`is_authorization`). Other requests, and headers in a shape this table does
  not read, take the full path.
- Bounded: at most SIZE entries (the oldest out first), each a key of at most a few hundred
  bytes, the cache key, a weak reference and the cache's (emptied or live) entry, or a small
  Decision without a principal (its
  message quotes at most 64 characters of input, its challenges are the realm's); and at most
  NAMES judged names of at most 256 characters each: a few MB at most, outside `cache_size`.
  A reload starts a new table (it belongs to the engine's generation, `engine._State`).
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
import threading
import weakref
from collections.abc import Callable, Hashable, Mapping
from time import perf_counter
from typing import Any

from policyauth.decision import Decision
from policyauth.identity.cache import Entry as Held
from policyauth.identity.cache import Touch
from policyauth.identity.source import Identity, IdentityResult
from policyauth.observe.metrics import METRICS, PENDING, Labels, labels
from policyauth.request import header_problem, is_authorization, normalize_headers

SIZE = 4096  # remembered requests per engine generation
NAMES = 1024  # judged header names per engine generation
_KEPT_NAME = 256  # a longer name is not judged (nor a request that carries it remembered)
_JUDGED_AT_ONCE = 128  # names of one request judged at most (more: the full path reads them)
# A name's verdict: read past, the one Authorization (at most one per request), or refused
# (the full path must see it: a method override, an underscore alias). Ints are cached objects,
# so `is` compares them.
_PLAIN, _AUTHORIZATION, _REFUSED = 0, 1, 2
_KEPT_TARGET = 256  # longer targets (and any with a query) go into the MAC
_KEPT_METHOD = 32

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
        "_target_mac",
        "_text_mac",
        "_verdicts",
    )

    def __init__(self, identities: object) -> None:
        # One key each for ASGI's bytes values, text values and long targets: a value of one
        # kind never shares a MAC with a value of another (b"\xe9" and "\xe9" differ).
        self._bytes_mac = _mac()
        self._text_mac = _mac()
        self._target_mac = _mac()
        self._entries: dict[Hashable, Entry] = {}
        # Header names (bytes or text, as given) and their verdicts, judged by the full path's
        # own functions.
        self._verdicts: dict[bytes | str, int] = {}
        self._cache_key: CacheKey | None = getattr(identities, "cache_key", None)
        self._held: HeldBy | None = getattr(identities, "held", None)
        self._clock: Clock | None = getattr(identities, "cache_clock", None)
        self._lock = threading.Lock()
        # The metrics' queue, where a remembered decision is counted as the full path would
        # count it (None without prometheus_client), and what to call when it is too long.
        self._events = METRICS.queue()
        self._overflow = METRICS.overflow

    def find(self, method: str, target: str, headers: Any, judge: bool = True) -> Found:
        """The request's key, and its remembered decision with the cached identity result it
        rests on (None: it needs none), while still valid.

        The key is what decides the request, with its `Authorization` value as a MAC; None
        when its headers are not judged (or come in a shape this table does not read): then
        the full path runs and nothing is remembered. Written for few bytecodes (the lookup
        inlined, errors caught rather than types tested): it runs on every request. A name
        not judged yet is judged, and the request looked up again (`judge=False`: once)."""
        started = perf_counter()
        if type(headers) is not list:  # ASGI's list first: ABC checks are slow
            headers = _pairs(headers)
            if headers is None:
                return _NOT_KEYED
        digest = None
        value = None
        verdicts = self._verdicts
        try:  # a Python loop over the pairs beats joining the names in C (and its dict key)
            for name, found in headers:
                verdict = verdicts[name]  # KeyError: a name not judged yet
                if verdict:  # the Authorization header, or a name the full path must see
                    if verdict is not _AUTHORIZATION or value is not None:
                        return _NOT_KEYED
                    value = found
        except KeyError:
            return self._judged(method, target, headers) if judge else _NOT_KEYED
        except (TypeError, ValueError):  # not pairs, or a name that is not hashable
            return _NOT_KEYED
        if value is not None:
            # ASGI's bytes, or text as UTF-8, each under its own key (b"\xe9" and "\xe9"
            # differ); any other value takes the full path.
            if type(value) is bytes:
                mac = self._bytes_mac.copy()
            elif type(value) is str:
                mac = self._text_mac.copy()
                value = value.encode("utf-8", "surrogatepass")
            else:
                return _NOT_KEYED
            mac.update(value)
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

    def _judged(self, method: str, target: str, headers: Any) -> Found:
        """`find` again, once every name in `headers` has a verdict (judged by the full
        path's own functions); `_NOT_KEYED` when some name gets none (too long, neither bytes
        nor text) or the request has too many names: the full path reads them."""
        if len(headers) > _JUDGED_AT_ONCE:
            return _NOT_KEYED
        judged: dict[bytes | str, int] = {}
        for pair in headers:
            name = pair[0]  # a pair: `find` read every one before the name it did not know
            if type(name) not in (bytes, str) or len(name) > _KEPT_NAME:
                return _NOT_KEYED
            normalized = normalize_headers([(name, name[:0])])
            judged[name] = (
                _REFUSED
                if header_problem(normalized) is not None
                else _AUTHORIZATION
                if is_authorization(normalized[0][0])
                else _PLAIN
            )
        with self._lock:  # all of this request's names fit: at most NAMES, then a fresh table
            if len(self._verdicts) + len(judged) > NAMES:
                self._verdicts.clear()
            self._verdicts.update(judged)
        return self.find(method, target, headers, judge=False)

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
