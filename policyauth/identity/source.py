"""The contract between the engine and whatever validates credentials.

An identity source takes one credential and the name of the authenticator chosen for it (a
provider or a tokens block) and answers with the caller's claims, "invalid", or "unavailable".
The engine never asks a second authenticator about the same credential, and treats every
answer other than Identity as a denial: invalid is 401, unavailable is 503.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Protocol, TypeVar

import attrs

from policyauth.compiler import Policy
from policyauth.decision import Principal
from policyauth.request import BasicCredential, BearerCredential

T = TypeVar("T")
# Values per identity: its principal and recent (route, method, path) decisions. The identity
# cache charges each identity for a full memo (identity/cache.py), so this also sets how many
# identities fit in its byte bound.
DERIVED_SIZE = 33
DEFAULT_RETRY_AFTER = 5  # seconds: outages are mostly brief; clients that honour it back off


@attrs.frozen
class Identity:
    """Claims of a validated caller (for a provider: those its claim paths found).

    `lifetime` is how many more seconds the credential is valid, when the provider says so; the
    identity cache never keeps an identity longer than that.
    """

    claims: Mapping[str, Any] = attrs.field(repr=False)
    lifetime: float | None = None
    # Values computed from this identity alone (its principal, its decisions), kept with it: a
    # cached identity serves many requests, and making the same values again for each of them
    # would be wasted work on the request path. They live and die with the identity, so an
    # expired or evicted identity takes them along.
    _derived: dict[Hashable, Any] = attrs.field(factory=dict, init=False, eq=False, repr=False)

    def derived(self, key: Hashable, make: Callable[[], T]) -> T:
        """`make()`, remembered under `key` for this identity (a bounded memory, least recently
        used first out)."""
        memo = self._derived
        if key in memo:
            value = memo.pop(key)  # re-inserted last: dicts keep order, the first is the oldest
            memo[key] = value
            return value  # type: ignore[no-any-return]
        value = make()
        if len(memo) >= DERIVED_SIZE:
            # Forget the least recently used value only: emptying the memo when full made a
            # client cycling over one more path than it holds recompute every decision.
            del memo[next(iter(memo))]
        memo[key] = value
        return value

    def principal(self, authenticator: str) -> Principal | None:
        """The caller as `authenticator` vouches for them; None without a usable username."""
        return self.derived(authenticator, lambda: principal_from(authenticator, self.claims))


@attrs.frozen
class Invalid:
    """The credential is not valid: unknown, expired, revoked, or rejected by `success`."""

    detail: str


@attrs.frozen
class Unavailable:
    """The credential could not be checked: the provider failed or answered nonsense.

    `retry_after` is when a retry may succeed, in whole seconds, where it is known (the
    provider said so, or its calls are being rationed); the decision's `Retry-After` header
    falls back to DEFAULT_RETRY_AFTER without it, so that every 503 tells clients to back off.
    """

    detail: str
    retry_after: int | None = None


IdentityResult = Identity | Invalid | Unavailable
Credential = BearerCredential | BasicCredential


class IdentitySource(Protocol):
    async def identify(self, authenticator: str, credential: Credential) -> IdentityResult: ...

    def identify_sync(self, authenticator: str, credential: Credential) -> IdentityResult: ...


class StaticIdentitySource:
    """Identities known in advance: for tests, `policyauth explain --identity` and offline runs.

    `documents` maps (authenticator, secret) to what the real source would have received: a
    userinfo JSON document for a provider (claims are extracted and `success` applied exactly
    as for a live response), or `{"username": ..., "groups": [...]}` for a tokens block. For
    Basic credentials the secret is the password part and the user must match `username`.
    """

    def __init__(self, policy: Policy, documents: Mapping[tuple[str, str], Any]) -> None:
        self._policy = policy
        self._documents = dict(documents)

    async def identify(self, authenticator: str, credential: Credential) -> IdentityResult:
        return self.identify_sync(authenticator, credential)

    def identify_sync(self, authenticator: str, credential: Credential) -> IdentityResult:
        secret = credential.token if isinstance(credential, BearerCredential) else credential.secret
        document = self._documents.get((authenticator, secret))
        if document is None:
            return Invalid("unknown token")
        if not isinstance(document, dict):  # a token record, too, must be an object
            return Unavailable("the identity document is not a JSON object")
        provider = self._policy.providers.get(authenticator)
        if provider is None:
            if (
                isinstance(credential, BasicCredential)
                and document.get("username") != credential.user
            ):
                return Invalid("the user does not own this token")
            # A record in a token store always has its groups, `[]` when it has none.
            return Identity({"groups": [], **document})
        if not provider.accepts(document):
            return Invalid("the response does not meet the provider's `success` condition")
        return Identity(provider.claims_from(document))


def principal_from(authenticator: str, claims: Mapping[str, Any]) -> Principal | None:
    """The principal for validated claims; None when `username` is missing or not a name.

    A numeric username (GitHub and Facebook ids are numbers) becomes its decimal text, in the
    principal and in the claims its rules read alike: `username` is one value, a string, so
    `username == "12345"` in a rule holds for the principal whose username is "12345".
    """
    username = claims.get("username")
    if isinstance(username, int) and not isinstance(username, bool):
        username = str(username)
        claims = {**claims, "username": username}
    if not isinstance(username, str) or not username:
        return None
    groups = claims.get("groups")
    if isinstance(groups, str):
        groups = [groups]
    names = tuple(g for g in groups if isinstance(g, str)) if isinstance(groups, list) else ()
    # A read-only view, not a copy: a cached identity's claims are shared by its requests, and
    # no handler may change them for the next one.
    view = claims if isinstance(claims, types.MappingProxyType) else types.MappingProxyType(claims)
    return Principal(authenticator, username, names, view)
