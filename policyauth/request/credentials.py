"""Credentials from exactly one ``Authorization`` header, or a 400.

Servers disagree about duplicate headers (WSGI joins them with ``", "``, ASGI keeps a list,
security reference A12 and A13), and a token in the query string leaks into logs and
``Referer`` headers (RFC 6750 section 5.3, A14). So this reader accepts one header with one
credential in one of the two schemes the engine can authenticate, Bearer (RFC 6750) and Basic
(RFC 7617), and refuses everything else with 400 ``invalid_request`` (language.md, section 5,
step 4). Tokens and secrets never appear in a repr or a rejection detail.
"""

from __future__ import annotations

import base64
import re
from typing import TypeAlias

import attrs

from policyauth.request.canonical import Rejection, query_may_name, query_names, quote_input
from policyauth.request.headers import Headers, lower_ascii

# RFC 6750 section 2.1 b64token; the classes are spelled out so no Unicode digit matches.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# Schemes a rejection may name: the IANA HTTP Authentication Scheme Registry and a few
# common unregistered ones. Any other first word is not echoed: it may be a bare token.
_KNOWN_SCHEMES = frozenset(
    {
        "aws4-hmac-sha256",
        "concealed",
        "digest",
        "dpop",
        "gnap",
        "hoba",
        "mutual",
        "negotiate",
        "ntlm",
        "oauth",
        "privatetoken",
        "scram-sha-1",
        "scram-sha-256",
        "token",
        "vapid",
    }
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@attrs.frozen
class NoCredentials:
    """The request carries no credentials; the engine answers 401 with its challenges."""


@attrs.frozen
class BearerCredential:
    """An RFC 6750 bearer token, syntactically valid; whether it is any good is not known yet."""

    token: str = attrs.field(repr=False)


@attrs.frozen
class BasicCredential:
    """An RFC 7617 user and secret, for the policy's API token stores."""

    user: str
    secret: str = attrs.field(repr=False)


Credential: TypeAlias = NoCredentials | BearerCredential | BasicCredential


# Characters after the scheme. JWT access tokens carry their claims: Entra ID and Keycloak
# tokens with many groups or roles pass 4 KiB; 8 KiB is nginx's default header buffer, so a
# longer one would not reach us through the usual proxy anyway.
MAX_CREDENTIALS = 8 * 1024


def read_credentials(
    headers: Headers, query: str, *, max_token: int = MAX_CREDENTIALS
) -> Credential | Rejection:
    """Read the one credential a request carries, if any, or reject the request.

    ``query`` is the raw query string, read only to refuse ``access_token`` there.
    ``max_token`` bounds the credentials after the scheme, in characters.

    An unknown scheme (``Digest``, ``Token``, ``Negotiate``) is rejected rather than treated
    as no credentials: the client meant to authenticate, and answering 401 with challenges
    would make it retry or fall back instead of showing the real problem. It also keeps a
    header that is present and unread from ever meaning "anonymous". Never raises.
    """
    if _has_query_token(query):
        return _invalid("tokens in the query string (`access_token`) are not accepted")
    values = [value for name, value in headers if is_authorization(name)]
    if not values:
        return NoCredentials()
    if len(values) > 1:
        return _invalid("more than one authorization header")
    value = values[0]
    # The common case, `Bearer <b64token>` exactly, without the general parse; anything else
    # (other spacing, case, schemes, bad characters) takes the general path below.
    if value[:7] == "Bearer " and len(value) - 7 <= max_token and _B64TOKEN.fullmatch(value, 7):
        return BearerCredential(token=value[7:])
    return _parse_authorization(value, max_token)


def is_authorization(name: str) -> bool:
    """Whether a header name is `Authorization`: normalized names compare as they are; others
    are folded, and only a name of the right length can fold to `authorization`."""
    return name == "authorization" or (len(name) == 13 and lower_ascii(name) == "authorization")


def _invalid(detail: str) -> Rejection:
    return Rejection(status=400, reason="invalid_request", detail=detail)


def _has_query_token(query: str) -> bool:
    """Whether any query parameter is named ``access_token``, as a framework would decode it.

    Names are percent-decoded because the application's framework decodes them: an
    ``access%5Ftoken`` parameter reaches it as ``access_token``.
    """
    return query_may_name(query, "access_token") and "access_token" in query_names(query)


def _parse_authorization(header: str, max_token: int) -> Credential | Rejection:
    """Split ``scheme 1*SP credentials`` and hand the credentials to the scheme's reader.

    Surrounding spaces and tabs are dropped: they are not part of a field value
    (RFC 9110 section 5.5) and servers differ in whether they strip them.
    """
    value = header.strip(" \t")
    scheme, separator, rest = value.partition(" ")
    credentials = rest.lstrip(" ")
    kind = lower_ascii(scheme)
    if kind not in ("bearer", "basic"):
        return _invalid(_describe_scheme(scheme, kind, separator))
    if not credentials:
        return _invalid(f"empty credentials after the `{kind}` scheme")
    if "," in credentials:
        return _invalid(
            "several credentials in one authorization header (duplicate headers joined by `,`)"
        )
    if len(credentials) > max_token:
        return _invalid(f"credentials longer than {max_token} characters")
    if kind == "bearer":
        return _read_bearer(credentials)
    return _read_basic(credentials)


def _describe_scheme(scheme: str, kind: str, separator: str) -> str:
    """Describe an unusable scheme, naming it only if it is a known scheme and not a secret.

    Clients do send a bare token, or a token followed by more words, so the first word of an
    unknown header is treated as possibly secret and never shown.
    """
    if not scheme:
        return "empty authorization header"
    if kind in _KNOWN_SCHEMES:
        return f"unsupported authorization scheme {quote_input(scheme)}"
    if separator:
        return "unsupported authorization scheme"
    return "malformed authorization header (expected `scheme credentials`)"


def _read_bearer(token: str) -> BearerCredential | Rejection:
    """Accept RFC 6750 b64token only, which also keeps non-ASCII out of digest comparisons (A09)."""
    if _B64TOKEN.fullmatch(token) is None:
        return _invalid("bearer token has characters outside the rfc 6750 b64token alphabet")
    return BearerCredential(token=token)


def _read_basic(encoded: str) -> BasicCredential | Rejection:
    """Accept canonical base64 of UTF-8 ``user:secret`` only (RFC 7617 with ``charset=UTF-8``).

    Re-encoding must reproduce the input, which refuses non-zero padding bits, so that each
    credential has exactly one accepted spelling, as every other input here does.
    """
    try:
        raw = base64.b64decode(encoded, validate=True)
    except ValueError:
        return _invalid("basic credentials are not valid base64")
    if base64.b64encode(raw).decode("ascii") != encoded:
        return _invalid("basic credentials are not canonical base64")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return _invalid("basic credentials are not valid utf-8")
    user, colon, secret = text.partition(":")
    if not colon:
        return _invalid("basic credentials have no `:` between user and secret")
    if not user:
        return _invalid("basic credentials have an empty user")
    if _CONTROL.search(user) is not None:
        return _invalid("basic credentials have a control character in the user")
    if not secret:
        return _invalid("basic credentials have an empty secret")
    return BasicCredential(user=user, secret=secret)
