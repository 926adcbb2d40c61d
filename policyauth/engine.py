"""The embedding object: a Policy, an identity source, and `authorize`, sync or async.

One Engine per policy and process. It does no policy work of its own: the evaluator decides,
the identity source validates credentials; the engine only carries a request from one to the
other, so that every integration (ASGI, WSGI, the CLI) gets exactly the same decision.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from policyauth.compiler import Policy
from policyauth.decision import Decision
from policyauth.evaluator import Located, Pending, finish, locate, prepare
from policyauth.identity.remote import RemoteIdentitySource
from policyauth.identity.source import IdentityResult, IdentitySource, Invalid, Unavailable
from policyauth.logline import DECISIONS, log_line
from policyauth.request import Rejection, normalize_headers

log = logging.getLogger("policyauth.engine")
_logging_decisions = DECISIONS.isEnabledFor  # the one switch: `policyauth.decisions` at INFO
_LOCATED_SIZE = 4096  # recent (method, target) pairs whose canonical form and route are kept


HeadersIn = Mapping[str, str] | Iterable[tuple[str, str]] | Iterable[tuple[bytes, bytes]]


class Engine:
    """Authorizes requests against one policy.

    By default credentials are validated for real: bearer tokens by the provider's userinfo
    endpoint (through the identity cache), API tokens by their stores. `transport` replaces
    the HTTP transport of the providers' client (an httpx transport, for tests); `identities`
    replaces the whole identity source (tests and offline tools pass a StaticIdentitySource).
    Close the engine (or use it as a context manager) to release its HTTP connections.
    """

    def __init__(
        self,
        policy: Policy,
        transport: object | None = None,
        *,
        identities: IdentitySource | None = None,
        cache_size: int | None = None,
    ) -> None:
        self.policy = policy
        self._located: dict[tuple[str, str], Located] = {}
        # `cache_size`: bytes the identity cache may hold (identity/cache.py says how counted).
        self._remote = (
            RemoteIdentitySource(policy, transport, cache_size=cache_size)
            if identities is None
            else None
        )
        self._identities: IdentitySource = (
            identities if identities is not None else self._remote  # type: ignore[assignment]
        )
        # Sources that can answer some credentials at once (a cache hit) say so with
        # `identify_now`; `authorize` then awaits `identify` only when that is None.
        self._at_hand = getattr(self._identities, "identify_now", None)

    async def authorize(
        self, method: str, target: str | Rejection, headers: HeadersIn = ()
    ) -> Decision:
        """Decide one request; `target` is the raw request target (`/a/b?x=1`), or the
        Rejection an integration found in it (a mount that does not match), answered 400."""
        decision = await self._authorize(method, target, headers)
        if _logging_decisions(logging.INFO):
            log_line(method, target, self._locate(method, target), decision)
        return decision

    def authorize_sync(
        self, method: str, target: str | Rejection, headers: HeadersIn = ()
    ) -> Decision:
        """The same decision as `authorize`, for synchronous servers (WSGI)."""
        decision = self._authorize_sync(method, target, headers)
        if _logging_decisions(logging.INFO):
            log_line(method, target, self._locate(method, target), decision)
        return decision

    async def _authorize(
        self, method: str, target: str | Rejection, headers: HeadersIn
    ) -> Decision:
        normalized = normalize_headers(headers)
        step = prepare(self.policy, method, target, normalized, self._locate(method, target))
        if not isinstance(step, Pending):
            return step
        outcome: IdentityResult | None = None
        at_hand = self._at_hand
        for name in step.authenticators:
            try:
                result = at_hand(name, step.credential) if at_hand is not None else None
                if result is None:
                    result = await self._identities.identify(name, step.credential)
            except Exception:
                result = _failed(name)
            if not isinstance(result, Invalid):
                return finish(self.policy, step, name, result)
            outcome = outcome or result
        assert outcome is not None  # `authenticators` is never empty
        return finish(self.policy, step, step.authenticators[0], outcome)

    def _authorize_sync(self, method: str, target: str | Rejection, headers: HeadersIn) -> Decision:
        normalized = normalize_headers(headers)
        step = prepare(self.policy, method, target, normalized, self._locate(method, target))
        if not isinstance(step, Pending):
            return step
        outcome: IdentityResult | None = None
        for name in step.authenticators:
            try:
                result = self._identities.identify_sync(name, step.credential)
            except Exception:
                result = _failed(name)
            if not isinstance(result, Invalid):
                return finish(self.policy, step, name, result)
            outcome = outcome or result
        assert outcome is not None  # `authenticators` is never empty
        return finish(self.policy, step, step.authenticators[0], outcome)

    def _locate(self, method: str, target: str | Rejection) -> Located:
        """`locate`, remembered for recent targets: canonicalizing a target and finding its
        route are pure, and most traffic repeats its targets. Bounded: the memory is emptied
        when full, so a flood of distinct targets costs no more than no memory at all.

        Only targets without a query are remembered: a query may carry a token
        (`access_token=`, refused with 400), and no raw token is ever kept."""
        if isinstance(target, Rejection):
            return target
        if "?" in target:
            return locate(self.policy, method, target)
        key = (method, target)
        found = self._located.get(key)
        if found is None:
            found = locate(self.policy, method, target)
            if len(self._located) >= _LOCATED_SIZE:
                self._located.clear()
            self._located[key] = found
        return found

    def close(self) -> None:
        if self._remote is not None:
            self._remote.close()

    async def aclose(self) -> None:
        if self._remote is not None:
            await self._remote.aclose()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _failed(authenticator: str) -> Unavailable:
    """An identity source that raised decides nothing: the request is refused with 503."""
    log.exception("the identity source failed for `%s`", authenticator)
    return Unavailable("the identity source failed")
