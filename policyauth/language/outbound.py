"""Outbound settings: how calls reach a provider behind a company CA, mutual TLS or a proxy.

`ca_file`, `client_cert`, `client_key` and `proxy` may be written in `settings` (for every
provider) and in a provider block (for that provider, replacing the settings' value); a
provider's `client_cert` brings its own `client_key`, since a certificate and a key only work
as a pair. `insecure_http` is a provider's own opt-in and is checked with its URLs (checker.py).

Everything is checked at load time, so that a missing or unreadable file, a file without PEM
certificates, a key that does not match its certificate or a proxy URL that cannot work is a
load error with a location (PA128, PA129), not a 503 on the first request. The files are read
again when the first call is made (the identity layer builds its TLS context from the paths).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

from policyauth.diagnostics import Severity, Span
from policyauth.language.model import Outbound

OUTBOUND_KEYS = ("ca_file", "client_cert", "client_key", "proxy")
FILE_KEYS = ("ca_file", "client_cert", "client_key")

Report = Callable[[Span, str, str, "str | None", Severity], None]


def no_password() -> bytes:
    """For `load_cert_chain`: an encrypted key fails to load instead of prompting on a TTY."""
    return b""


def resolve_outbound(
    values: Mapping[str, tuple[str, Span]],
    *,
    defaults: Outbound,
    base_dir: Path | None,
    report: Report,
    insecure_http: bool = False,
) -> Outbound:
    """The outbound settings of one block: its own `values` (key -> resolved string and where
    it was written) over `defaults`; every problem is reported, and a value with a problem is
    left out (the policy fails to load anyway)."""
    if not values and defaults.insecure_http == insecure_http:
        return defaults  # frozen: the block changes nothing, so the defaults themselves
    resolved: dict[str, str | None] = {}
    for name, (text, span) in values.items():
        if name in FILE_KEYS:
            resolved[name] = _readable(text, span, name, base_dir, report)
        else:
            resolved[name] = _proxy(text, span, report)
    if "client_key" in values and "client_cert" not in values:
        report(
            values["client_key"][1],
            "PA129",
            "`client_key` needs `client_cert` in the same block",
            'write the client certificate next to its key: `client_cert = "client.pem"`',
            Severity.ERROR,
        )
    ca_file = resolved.get("ca_file") if "ca_file" in values else defaults.ca_file
    if "ca_file" in values and ca_file is not None:
        _check_ca(ca_file, values["ca_file"][1], report)
    cert: str | None
    key: str | None
    if "client_cert" in values:
        cert, key = resolved.get("client_cert"), resolved.get("client_key")
        if cert is not None and ("client_key" not in values or key is not None):
            _check_pair(cert, key, values["client_cert"][1], report)
    else:
        cert, key = defaults.client_cert, defaults.client_key
    proxy = resolved.get("proxy") if "proxy" in values else defaults.proxy
    return Outbound(ca_file, cert, key, proxy, insecure_http)


def _readable(text: str, span: Span, key: str, base_dir: Path | None, report: Report) -> str | None:
    path = Path(text)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        with path.open("rb") as file:
            file.read(1)
    except OSError as exc:
        report(
            span,
            "PA128",
            f"`{key}` cannot be read: `{text[:80]}` ({exc.strerror or type(exc).__name__})",
            "paths are relative to the policy file; the server's user must be able to read it",
            Severity.ERROR,
        )
        return None
    return str(path)


def _check_ca(path: str, span: Span, report: Report) -> None:
    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, ValueError) as exc:
        report(
            span,
            "PA128",
            f"`ca_file` holds no usable PEM certificate ({_reason(exc)})",
            "give a PEM bundle of the CA certificates that sign the provider's certificate",
            Severity.ERROR,
        )


def _check_pair(cert: str, key: str | None, span: Span, report: Report) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_cert_chain(cert, key, password=no_password)
    except (ssl.SSLError, ValueError) as exc:
        report(
            span,
            "PA128",
            f"the client certificate cannot be loaded ({_reason(exc)})",
            "`client_cert` and `client_key` must be PEM files of one certificate and its "
            "unencrypted key (or one file holding both)",
            Severity.ERROR,
        )


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason).replace("_", " ").lower() if reason else type(exc).__name__


def _proxy(text: str, span: Span, report: Report) -> str | None:
    """An http:// or https:// proxy with a host (and maybe a port and credentials); SOCKS is
    not offered, since it needs another library."""
    try:
        parts = urlsplit(text)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        host = None
    if parts.scheme in ("http", "https") and host and parts.path in ("", "/") and not parts.query:
        return text
    report(
        span,
        "PA129",
        "`proxy` must be an http:// or https:// URL of a proxy host, such as "
        "`http://proxy.example.com:3128`",
        "https providers are reached through it with CONNECT, so TLS stays end to end",
        Severity.ERROR,
    )
    return None
