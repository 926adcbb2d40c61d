"""Request headers in the one shape every policyauth stage reads.

ASGI hands headers over as ``(bytes, bytes)`` pairs, WSGI integrations rebuild them from the
environ, and frameworks offer mappings. The security checks downstream ("exactly one
``Authorization`` header", "no underscore alias of a forwarded header") are only sound if
duplicates and their order survive, so the shared shape is an ordered tuple of
``(name, value)`` pairs with lower-cased names and nothing merged or dropped.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from typing import TypeAlias

Headers: TypeAlias = tuple[tuple[str, str], ...]

_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def lower_ascii(text: str) -> str:
    """Lower-case ASCII letters only.

    HTTP header names and authentication schemes are case-insensitive in ASCII only.
    ``str.lower`` and ``str.casefold`` apply Unicode rules, under which, for example,
    U+212A KELVIN SIGN becomes ``k`` and U+017F LONG S folds to ``s``: a name that no server
    treats as ``authorization`` or ``basic`` must not become one here. Pure ASCII text (every
    real header name) takes ``str.lower``, which is the same there and ten times faster.
    """
    return text.lower() if text.isascii() else text.translate(_ASCII_LOWER)


def normalize_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | Iterable[tuple[bytes, bytes]],
) -> Headers:
    """Return ``headers`` as ordered ``(name, value)`` pairs with lower-cased names.

    Values are kept exactly as received, and bytes are decoded as latin-1, as ASGI servers
    and PEP 3333 do, so that every byte maps to one character and nothing can fail to decode.
    Duplicates are kept: deciding what a duplicate means is the reader's job, not this one's.
    """
    if isinstance(headers, list) and headers and isinstance(headers[0][0], bytes):
        # ASGI's list of byte pairs, the shape every request through the middleware has:
        # bytes.lower() changes ASCII letters only, as wanted.
        return tuple([(n.lower().decode("latin-1"), v.decode("latin-1")) for n, v in headers])
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    normalized = []
    for raw_name, raw_value in pairs:  # a loop, not a generator: this runs on every request
        value = raw_value.decode("latin-1") if isinstance(raw_value, bytes) else raw_value
        if isinstance(raw_name, bytes):  # bytes.lower() changes ASCII letters only, as wanted
            normalized.append((raw_name.lower().decode("latin-1"), value))
        else:
            name = raw_name.lower() if raw_name.isascii() else lower_ascii(raw_name)
            normalized.append((name, value))
    return tuple(normalized)
