"""Rationing provider calls while a flood of made-up tokens lasts.

Anyone can send a request with a token they made up, and each distinct one costs a call to the
provider: ten thousand junk tokens are ten thousand userinfo calls, spent from the provider's
rate limit (Auth0, Okta and Google all limit userinfo) and so taken from real users. The
negative cache does not help, since every junk token is new.

So the calls to each provider are counted in windows of FLOOD_INTERVAL. When, within one
window, the provider has refused at least FLOOD_REFUSALS tokens and refusals are at least half
of its answers, a flood has begun: from then on at most FLOOD_CALLS new calls start per window,
and a request over the cap is answered 503 with `Retry-After` (the end of the window). Never 401:
the token of a request turned away was not looked at, and a real user's new token may be among
them. The flood ends after a window in which demand stayed within the cap, or in which the
calls that were made found mostly valid tokens (then the demand is mostly real users).

Refusals are only known once answers come back, and a burst of concurrent requests would all
be let through before the first one: so while nothing shows that the traffic is mostly real
(no answers yet in the window, or mostly refusals), at most FLOOD_UNANSWERED calls are in
flight to a provider at once, and the excess is answered 503 with `Retry-After: 1`. That is
the HTTP client's own connection limit: beyond it calls would only queue for a connection.

Under normal traffic nothing is capped: new valid tokens are answers but not refusals, so they
never start a flood, however many there are; a few expired tokens among them do not either.
Cache hits, calls already in flight for the same token, and API tokens are never counted.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from policyauth.identity.source import Identity, IdentityResult, Invalid

FLOOD_INTERVAL = 1.0  # seconds: the counting window
FLOOD_REFUSALS = 20  # refusals within one window (and most of its answers) that mean a flood
FLOOD_CALLS = 10  # new provider calls per window while a flood lasts
FLOOD_UNANSWERED = 100  # calls in flight at once without evidence of real traffic

log = logging.getLogger("policyauth.identity")


class _Window:
    """What happened in the current window of one provider."""

    __slots__ = ("answers", "calls", "flooding", "refusals", "start", "turned_away")

    def __init__(self, start: float, flooding: bool) -> None:
        self.start = start
        self.flooding = flooding
        self.calls = 0
        self.answers = 0  # identities and refusals (outages say nothing about the tokens)
        self.refusals = 0
        self.turned_away = 0

    def mostly_refused(self) -> bool:
        return self.answers > 0 and self.refusals * 2 >= self.answers


class CallRation:
    """Per-provider windows; `admit` before a new provider call, `record` its answer."""

    def __init__(
        self,
        *,
        interval: float = FLOOD_INTERVAL,
        refusals: int = FLOOD_REFUSALS,
        calls: int = FLOOD_CALLS,
        unanswered: int = FLOOD_UNANSWERED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = interval
        self._refusals = refusals
        self._calls = calls
        self._unanswered = unanswered
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._in_flight: dict[str, int] = {}
        self._lock = threading.Lock()

    def admit(self, provider: str) -> int | None:
        """None: make the call (it is counted). Else the whole seconds until the next window,
        for `Retry-After`: the call is over the cap of a flood and must not be made."""
        with self._lock:
            window = self._current(provider)
            if window.flooding and window.calls >= self._calls:
                window.turned_away += 1
                remaining = window.start + self._interval - self._clock()
                return max(1, math.ceil(remaining))
            in_flight = self._in_flight.get(provider, 0)
            if in_flight >= self._unanswered and (window.answers == 0 or window.mostly_refused()):
                window.turned_away += 1
                return 1
            window.calls += 1
            self._in_flight[provider] = in_flight + 1
            return None

    def record(self, provider: str, result: IdentityResult) -> None:
        """The answer of a call `admit` let through (every one, outages included)."""
        with self._lock:
            self._in_flight[provider] -= 1
            window = self._current(provider)
            if isinstance(result, Identity):
                window.answers += 1
            if not isinstance(result, Invalid):
                return
            window.answers += 1
            window.refusals += 1
            if (
                not window.flooding
                and window.refusals >= self._refusals
                and window.mostly_refused()
            ):
                window.flooding = True
                log.warning(
                    "provider %s refused %d unknown tokens within %gs: rationing new calls to "
                    "%d per %gs (503 with Retry-After beyond that) while the flood lasts",
                    provider,
                    window.refusals,
                    self._interval,
                    self._calls,
                    self._interval,
                )

    def _current(self, provider: str) -> _Window:
        """The provider's window for now, starting a new one when its time is up."""
        now = self._clock()
        window = self._windows.get(provider)
        if window is None:
            window = self._windows[provider] = _Window(now, False)
        elif now >= window.start + self._interval:
            idle = now >= window.start + 2 * self._interval  # a whole window without any call
            still = (
                window.flooding and not idle and window.turned_away > 0 and window.mostly_refused()
            )
            if window.flooding and not still:
                log.warning("provider %s: the flood of unknown tokens is over", provider)
            window = self._windows[provider] = _Window(now, still)
        return window
