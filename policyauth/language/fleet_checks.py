"""Checks of the fleet settings: `cache` and `cache_secret` (production.md section 2).

A Redis cache is shared by every process that can reach it, so its keys are MACs under
`cache_secret`: a missing or short secret would let anyone with Redis access test tokens
offline, hence a load error rather than a warning.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

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
