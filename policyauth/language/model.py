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
from policyauth.language.routing import Overlap, RouteIndex

DEFAULT_CACHE_TTL_MS = 5 * 60_000
DEFAULT_NEGATIVE_TTL_MS = 30_000
DEFAULT_TIMEOUT_MS = 3_000
DEFAULT_MAX_PATH = 8192
DEFAULT_STORE_GRACE_MS = 60_000


@attrs.frozen
class Outbound:
    """How calls to a provider reach it (the `settings` values, overridden per provider).

    `ca_file` replaces the default trust store (certifi's) for the provider's certificates;
    `client_cert` and `client_key` (PEM files; the key may be inside the certificate file) are
    the client certificate for mutual TLS; `proxy` is an HTTP(S) proxy URL, used with CONNECT
    for https providers, so TLS stays end to end; `insecure_http` allows plain http to a host
    that is not loopback. Paths are absolute (resolved against the policy file's folder).
    """

    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    proxy: str | None = attrs.field(default=None, repr=False)  # it may hold a password
    insecure_http: bool = False


DEFAULT_CLOCK_SKEW_MS = 30_000
# Asymmetric algorithms only: `none` and HMAC (whose secret would be the public key) never.
DEFAULT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA")


@attrs.frozen
class Settings:
    realm: str = "policyauth"
    cache_ttl_ms: int = DEFAULT_CACHE_TTL_MS
    negative_ttl_ms: int = DEFAULT_NEGATIVE_TTL_MS
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    max_path: int = DEFAULT_MAX_PATH
    store_grace_ms: int = DEFAULT_STORE_GRACE_MS
    outbound: Outbound = Outbound()  # every provider's, unless it sets its own
    clock_skew_ms: int = DEFAULT_CLOCK_SKEW_MS  # leeway for `exp`, `nbf` and `iat` of JWTs
    decision_log: str = "off"  # "off", "stderr", or a file (absolute, or relative to the cwd)
    cache_size: int | None = None  # bytes for the identity cache; None: its default
    cache: str = attrs.field(default="memory", repr=False)  # or a redis URL (may hold a password)
    cache_secret: str | None = attrs.field(default=None, repr=False)  # keys Redis entries


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
    outbound: Outbound = Outbound()
    # How a token is validated (production.md section 1): "userinfo" (the default), "jwt"
    # (locally, against the issuer's keys) or "introspection" (RFC 7662).
    validate: str = "userinfo"
    issuers: tuple[str, ...] = ()  # jwt: the exact `iss` values accepted
    jwks: str | None = None  # jwt: the key set's URL; None: `jwks_uri` from discovery
    audiences: tuple[str, ...] = ()  # jwt, introspection: accepted `aud` values
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    audience_claim: str = "aud"  # where a JWT names its audience (Cognito: `client_id`)
    required_claims: tuple[tuple[str, str], ...] = ()  # values an access token must carry
    token_type: str | None = None  # jwt: the `typ` header required (RFC 9068: "at+jwt")
    fallbacks: tuple[tuple[str, ClaimPath], ...] = ()  # claims tried when one is missing
    introspection: str | None = None  # introspection: the endpoint; None: from discovery


@attrs.frozen
class TokensSpec:
    name: str
    span: Span = attrs.field(eq=False)
    # A file (absolute, or relative to the working directory for inline policies) or a
    # PostgreSQL URL, whose password may come from env(): kept out of repr and logs.
    store: str = attrs.field(repr=False)


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
    # Pairs of routes that share requests (language/shadowing.py), found while the index was
    # built, so that the lint for crosswise overlaps need not build it again.
    overlaps: tuple[Overlap, ...] = attrs.field(eq=False, repr=False, default=())
