"""Checks of the fleet settings: `cache` and `cache_secret`, and token stores in PostgreSQL
(production.md section 2).

A Redis cache is shared by every process that can reach it, so its keys are MACs under
`cache_secret`: a missing or short secret would let anyone with Redis access test tokens
offline, hence a load error rather than a warning.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

from policyauth.diagnostics import Severity, Span
from policyauth.language import ast

MIN_SECRET_BYTES = 32


class _Checker(Protocol):
    def report(
        self,
        span: Span,
        code: str,
        message: str,
        help: str | None = None,
        severity: Severity = Severity.ERROR,
    ) -> None: ...


def cache_settings(
    checker: _Checker,
    decl: ast.SettingsDecl,
    entries: Mapping[str, ast.Setting],
    values: Mapping[str, Any],
) -> dict[str, Any]:
    """The `cache` and `cache_secret` fields of Settings, once checked."""
    cache: str = values.get("cache", "memory")
    secret: str | None = values.get("cache_secret") or None
    if cache != "memory" and not cache.startswith(("redis://", "rediss://")):
        checker.report(
            entries["cache"].value.span,
            "PA160",
            '`cache` is neither "memory" nor a redis:// or rediss:// URL',
            'use "memory" (one cache per process) or "redis://HOST:6379/0"',
        )
        return {}
    if cache == "memory":
        return {"cache": cache, "cache_secret": secret}
    if secret is None:
        where = entries["cache_secret"].value.span if "cache_secret" in entries else decl.span
        checker.report(
            where,
            "PA161",
            "a Redis `cache` needs a `cache_secret`",
            'set `cache_secret = env("POLICYAUTH_CACHE_SECRET")`, 32 random bytes or more',
        )
        return {}
    if len(secret.encode()) < MIN_SECRET_BYTES:
        checker.report(
            entries["cache_secret"].value.span,
            "PA162",
            f"`cache_secret` is shorter than {MIN_SECRET_BYTES} bytes",
            "generate one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`",
        )
        return {}
    return {"cache": cache, "cache_secret": secret}


# --- token stores in PostgreSQL ---------------------------------------------------------------

_STORE_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
STORE_SCHEMES = ("postgresql", "postgres")
_PORT = re.compile(r"\d{1,5}")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def is_store_url(store: str) -> bool:
    """Whether a tokens block's `store` is a URL (`scheme://...`) rather than a file name.

    Only such a text is a URL: `C:\\x` or `tokens:v2` remain files, as they always were.
    """
    return _STORE_URL.match(store) is not None


def token_store_url(checker: _Checker, value: ast.Value, url: str) -> bool:
    """Whether the URL of a tokens block's `store` can be used; reports why not, if not.

    Checked here rather than when the engine first connects, so that a typo is a load error
    with a location. Messages never repeat the URL: it may carry a password.
    """
    scheme = url.partition("://")[0]
    if scheme.lower() not in STORE_SCHEMES:
        checker.report(
            value.span,
            "PA163",
            f"`store` is a `{_shown(scheme)}://` URL; a token store is a file or a PostgreSQL URL",
            'use a file name ("automation.tokens") or "postgresql://USER@HOST:5432/DATABASE"',
        )
        return False
    problem = _postgres_url_problem(url)
    if problem is not None:
        checker.report(
            value.span,
            "PA164",
            f"`store` is not a valid PostgreSQL URL: {problem}",
            "write postgresql://USER@HOST:PORT/DATABASE, with `%` only in %XX escapes",
        )
        return False
    if _written_password(value):
        checker.report(
            value.span,
            "PA165",
            "the `store` URL has a password written in the policy",
            'pass the URL with env("TOKENS_STORE"), or leave the password out and give it '
            "with PGPASSWORD or a ~/.pgpass file",
        )
        return False
    return True


def _postgres_url_problem(url: str) -> str | None:
    """What libpq would refuse in a postgresql:// URL, said without the URL itself."""
    if _BAD_ESCAPE.search(url):
        return "a `%` that does not start a %XX escape"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "an unbalanced `[` or `]` around an IPv6 address"
    hosts = parts.netloc.rpartition("@")[2].split(",")
    for host in hosts:
        if host.startswith("["):  # an IPv6 address, maybe followed by `:PORT`
            name, _, rest = host[1:].partition("]")
            port = rest.removeprefix(":")
            if rest and not rest.startswith(":"):
                return "text after the `]` of an IPv6 address"
        else:
            name, _, port = host.partition(":")
        if not name and len(hosts) > 1:
            return "an empty host in the host list"
        if port and (_PORT.fullmatch(port) is None or not 0 < int(port) < 65536):
            return "a port that is not a number from 1 to 65535"
    try:
        parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        return "a query parameter without `=`"
    return None


def _written_password(value: ast.Value) -> bool:
    """Whether the policy file itself holds a password: in the string, or in the default of
    an env() (which is in the file whether or not the variable is set)."""
    if isinstance(value, ast.StringValue):
        return _has_password(value.value)
    if isinstance(value, ast.EnvValue) and value.default is not None:
        return _has_password(value.default.value)
    return False


def _has_password(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if parts.netloc.rpartition("@")[0].partition(":")[2]:
        return True
    return any(key == "password" for key, _ in parse_qsl(parts.query, keep_blank_values=True))


def _shown(text: str) -> str:
    """A scheme for a message: printable, short."""
    return (
        text
        if text.isprintable() and len(text) <= 20
        else text[:20].encode("unicode_escape").decode()
    )
