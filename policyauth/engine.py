"""The embedding object: a Policy, an identity source, and `authorize`, sync or async.

One Engine per policy and process. It does no policy work of its own: the evaluator decides,
the identity source validates credentials; the engine only carries a request from one to the
other, so that every integration (ASGI, WSGI, the CLI) gets exactly the same decision.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from policyauth.compiler import Policy
from policyauth.decision import Decision
from policyauth.evaluator import Pending, finish, prepare
from policyauth.identity.source import IdentitySource, Unavailable
from policyauth.request import normalize_headers

HeadersIn = Mapping[str, str] | Iterable[tuple[str, str]] | Iterable[tuple[bytes, bytes]]


class _NoIdentitySource:
    """Fails closed: with no way to validate credentials, every credential is unavailable."""

    async def identify(self, authenticator: str, credential: object) -> Unavailable:
        return self.identify_sync(authenticator, credential)

    def identify_sync(self, authenticator: str, credential: object) -> Unavailable:
        return Unavailable(f"no identity source is configured for `{authenticator}`")


class Engine:
    """Authorizes requests against one policy.

    `identities` validates credentials; tests and offline tools pass a StaticIdentitySource.
    `transport` is accepted for the providers' HTTP client (an httpx transport, for tests).
    """

    def __init__(
        self,
        policy: Policy,
        transport: object | None = None,
        *,
        identities: IdentitySource | None = None,
    ) -> None:
        self.policy = policy
        self.transport = transport
        self._identities: IdentitySource = identities or _NoIdentitySource()

    async def authorize(self, method: str, target: str, headers: HeadersIn = ()) -> Decision:
        """Decide one request; `target` is the raw request target (`/a/b?x=1`)."""
        step = prepare(self.policy, method, target, normalize_headers(headers))
        if not isinstance(step, Pending):
            return step
        result = await self._identities.identify(step.authenticator, step.credential)
        return finish(self.policy, step, result)

    def authorize_sync(self, method: str, target: str, headers: HeadersIn = ()) -> Decision:
        """The same decision as `authorize`, for synchronous servers (WSGI)."""
        step = prepare(self.policy, method, target, normalize_headers(headers))
        if not isinstance(step, Pending):
            return step
        result = self._identities.identify_sync(step.authenticator, step.credential)
        return finish(self.policy, step, result)
