"""The checked policy: every value resolved and typed, ready for the compiler.

The checker builds this while it looks for errors, so nothing is resolved twice: env() values
are read once, presets are merged with the block that uses them, claim paths are compiled once,
and the route index the checker used to find unreachable routes is the one the Plan keeps.
"""

from __future__ import annotations

import attrs

from policyauth.diagnostics import Span
from policyauth.language import ast
from policyauth.language.claimpath import ClaimPath
from policyauth.language.presets import Audience, TokenTransport
from policyauth.language.routing import RouteIndex

DEFAULT_CACHE_TTL_MS = 5 * 60_000
DEFAULT_NEGATIVE_TTL_MS = 30_000
DEFAULT_TIMEOUT_MS = 3_000
DEFAULT_MAX_PATH = 8192


@attrs.frozen
class Settings:
    realm: str = "policyauth"
    cache_ttl_ms: int = DEFAULT_CACHE_TTL_MS
    negative_ttl_ms: int = DEFAULT_NEGATIVE_TTL_MS
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    max_path: int = DEFAULT_MAX_PATH
    decision_log: str = "off"  # "off", "stderr", or a file (absolute, or relative to the cwd)


@attrs.frozen
class ProviderSpec:
    """A provider block merged with its preset; `userinfo` is None only for OIDC discovery.

    `audience` is the check that a token was issued to `client_id` (NONE when not configured).
    """

    name: str
    span: Span = attrs.field(eq=False)
    preset: str | None
    userinfo: str | None
    issuer: str | None
    method: str
    transport: TokenTransport
    headers: tuple[tuple[str, str], ...]
    success: ast.Expr | None
    claims: tuple[tuple[str, ClaimPath], ...]
    token_prefix: tuple[str, ...]
    client_id: str | None
    client_secret: str | None = attrs.field(repr=False)
    audience: Audience
    audience_url: str | None  # None with Audience.INTROSPECTION on `oidc`: from discovery


@attrs.frozen
class TokensSpec:
    name: str
    span: Span = attrs.field(eq=False)
    store: str  # absolute, or relative to the working directory for inline policies


@attrs.frozen
class CheckedPolicy:
    file: str
    settings: Settings
    providers: dict[str, ProviderSpec]
    tokens: dict[str, TokensSpec]
    routes: tuple[ast.RouteDecl, ...]
    index: RouteIndex = attrs.field(eq=False)
    source: str = attrs.field(eq=False, repr=False)
    comments: tuple[ast.Comment, ...] = attrs.field(eq=False, repr=False, default=())
