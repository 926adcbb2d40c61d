"""The contract between the engine and whatever validates credentials.

An identity source takes one credential and the name of the authenticator chosen for it (a
provider or a tokens block) and answers with the caller's claims, "invalid", or "unavailable".
The engine never asks a second authenticator about the same credential, and treats every
answer other than Identity as a denial: invalid is 401, unavailable is 503.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import attrs

from policyauth.compiler import Policy
from policyauth.request import BasicCredential, BearerCredential


@attrs.frozen
class Identity:
    """Claims of a validated caller (for a provider: those its claim paths found).

    `lifetime` is how many more seconds the credential is valid, when the provider says so; the
    identity cache never keeps an identity longer than that.
    """

    claims: Mapping[str, Any] = attrs.field(repr=False)
    lifetime: float | None = None


@attrs.frozen
class Invalid:
    """The credential is not valid: unknown, expired, revoked, or rejected by `success`."""

    detail: str


@attrs.frozen
class Unavailable:
    """The credential could not be checked: the provider failed or answered nonsense."""

    detail: str


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
            return Identity(dict(document))
        if not provider.accepts(document):
            return Invalid("the response does not meet the provider's `success` condition")
        return Identity(provider.claims_from(document))
