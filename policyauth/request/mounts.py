"""The raw form of the path an application routes on, cut from the raw request path, or a 400.

The policy must judge the raw target (so that `%2e%2e` and `%2F` still reach the
canonicalizer), but applications do not route on the raw target: they route on a decoded path
less a mount (WSGI `PATH_INFO` below `SCRIPT_NAME`, Starlette's `path` less `root_path`,
Django's `path_info` less its script prefix). Where the mount comes from can be hostile:
werkzeug's `ProxyFix(x_prefix=1)` sets `SCRIPT_NAME` from the client's `X-Forwarded-Prefix`
and leaves `PATH_INFO` whole, so cutting that prefix from the raw path judged
`/reports/bob/reports/ci/q1` as `/reports/ci/q1` while the application served the whole path.

So a mount is cut only when it provably corresponds: when the decoded raw path is exactly the
mount followed by the routed path. When it is the routed path itself, it is judged whole. Any
other relation means that the server, a proxy fix or a framework changed the path on its way,
and the request is refused (400 `malformed_request`) rather than judged by a guess.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from policyauth.request.canonical import Rejection, canonical_target, quote_input

_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


def routed_target(
    raw_path: str, routed: bytes, mount: bytes, *, whole: bool = True
) -> str | Rejection:
    """The part of `raw_path` that decodes to `routed`, the path the application routes on.

    `raw_path` is the path as received (one character per byte, no query); `routed` and
    `mount` are the application's decoded path and the mount it was cut from, as bytes in the
    encoding the server or framework used for them (latin-1 for WSGI environ strings, UTF-8
    for ASGI and Django). Returns `raw_path` whole when it decodes to `routed`, the raw rest
    after the mount when it decodes to `mount + routed` (`/` for an empty rest, which
    frameworks serve as their root), and otherwise a Rejection: the canonicalizer's own, when
    the raw path is malformed anyway, else one that names the path the application routes on.

    `whole=False` refuses a raw path that decodes to `routed` itself when a mount was cut: in
    ASGI, `path` includes `root_path` (servers put it in both `path` and `raw_path`), so a raw
    path without it means that something changed `path` on its way to the application.
    """
    if "%" not in raw_path and raw_path.isascii():
        decoded = raw_path.encode("ascii")  # the common case: nothing to decode
    else:
        try:
            decoded = unquote_to_bytes(raw_path.encode("latin-1"))
        except UnicodeEncodeError:  # not one character per byte: never guessed at
            return _mismatch(raw_path, routed, mount)
    if decoded == routed and (whole or not mount):
        return raw_path
    if mount and decoded == mount + routed:
        cut = _raw_length(raw_path, len(mount))
        rest = raw_path[cut:]
        if not rest or rest.startswith("/"):
            # The mount is not judged, but it is part of the request: refuse in it what would
            # be refused in the rest (`..`, `//`, encoded separators, controls).
            problem = canonical_target("GET", raw_path[:cut])
            return problem if isinstance(problem, Rejection) else rest or "/"
    return _mismatch(raw_path, routed, mount)


def _raw_length(raw_path: str, decoded_length: int) -> int:
    """How many characters of `raw_path` decode to its first `decoded_length` bytes."""
    position = 0
    for _ in range(decoded_length):
        position += 3 if _ESCAPE.match(raw_path, position) else 1
    return position


def _mismatch(raw_path: str, routed: bytes, mount: bytes) -> Rejection:
    whole = canonical_target("GET", raw_path)
    if isinstance(whole, Rejection):
        return whole
    shown = quote_input(routed.decode("latin-1"))
    where = f" below the mount {quote_input(mount.decode('latin-1'))}" if mount else ""
    return Rejection(
        status=400,
        reason="malformed_request",
        detail=f"the request path is not the path the application routes on, {shown}{where}",
    )
