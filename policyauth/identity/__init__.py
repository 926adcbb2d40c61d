"""Who a credential belongs to: identity sources, their results, and the principal they give."""

from policyauth.identity.source import (
    Identity,
    IdentityResult,
    IdentitySource,
    Invalid,
    StaticIdentitySource,
    Unavailable,
)

__all__ = [
    "Identity",
    "IdentityResult",
    "IdentitySource",
    "Invalid",
    "StaticIdentitySource",
    "Unavailable",
]
