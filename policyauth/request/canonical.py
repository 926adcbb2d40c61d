"""The one canonical form of a request, or a 400.

Proxies, routers and authorizers have disagreed about ``//``, ``..``, ``;``, ``%2F``, ``#``
and control characters for as long as they have existed, and every disagreement is an
authorization bypass (security reference, cases P03 to P40). The rule here is the
reference's first one: decide on exactly the path the upstream will serve, and reject
instead of guessing. Every integration calls :func:`canonicalize` once; anything that two
reasonable servers could read differently is refused with 400 ``malformed_request`` before
any authentication work is done (language.md, section 5, step 1).
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote_plus, unquote_to_bytes

import attrs

from policyauth.request.headers import Headers, lower_ascii

_METHOD = re.compile(r"[A-Z][A-Z-]{0,19}")

_OVERRIDE_HEADERS = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})
# Every header a decision reads: the one credential, and the overrides it refuses (underscore
# aliases aside, which only a server that keeps names apart can show). An integration that
# must rebuild headers (WSGI's environ) may rebuild just these.
DECIDING_HEADERS = ("authorization", *sorted(_OVERRIDE_HEADERS))
# Headers that some server or framework would read under an underscore spelling (security
# reference case F03: uvicorn passes them, WSGI maps both spellings to one environ key).
_ALIASED_HEADERS = _OVERRIDE_HEADERS | {
    "authorization",
    "x-forwarded-uri",
    "x-original-uri",
    "x-forwarded-prefix",
    "x-forwarded-host",
    "x-forwarded-for",
    "x-real-ip",
}

_ABSOLUTE_FORM = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_AUTHORITY_FORM = re.compile(r"[^/?#@]+:[0-9]*")
# Raw characters a path may not carry: anything outside printable ASCII (space, controls,
# DEL, non-ASCII), and the two that servers split or translate on, `\` and `;`.
_RAW_FORBIDDEN = re.compile(r"[^!-~]|[\\;]")
_MALFORMED_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ENCODED_DELIMITER = re.compile(r"%(?:2[Ff]|5[Cc]|3[Ff]|23|25)")
# Decoded characters a path may not carry: C0 and C1 controls, DEL, any Unicode whitespace
# (`str.strip` and friends remove more than the space), and `;`.
_DECODED_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\s;]")
# RFC 3986 pchar minus `;` and `%`: quote() also keeps ASCII letters, digits and `-._`.
_PATH_SAFE = "/~!$&'()*+,=:@"

_SHOWN_INPUT = 64


@attrs.frozen
class CanonicalRequest:
    """What the policy is matched against: the method and the decoded, canonical path.

    ``query`` is carried for integrations that rebuild the target; it is excluded from the
    repr because query strings carry secrets, and nothing ever matches against it
    (security reference, rule 3).
    """

    method: str
    path: str
    segments: tuple[str, ...]
    query: str = attrs.field(repr=False)


@attrs.frozen
class Rejection:
    """A request refused before authentication: always a 400, never an exception.

    ``reason`` is the decision code (``malformed_request`` or ``invalid_request``);
    ``detail`` is one lower-case sentence naming the problem, safe to log and to send.
    """

    status: int
    reason: str
    detail: str


def quote_input(text: str) -> str:
    """Render user input for a rejection detail.

    At most 64 characters of input are shown, in backticks, with anything outside printable
    ASCII escaped, so that a detail can neither grow with the request nor inject lines or
    terminal escapes into a log.
    """
    shown = text[:_SHOWN_INPUT].encode("unicode_escape").decode("ascii")
    ellipsis = "..." if len(text) > _SHOWN_INPUT else ""
    return f"`{shown}{ellipsis}`"


def canonicalize(
    method: str, target: str, headers: Headers, *, max_path: int = 8192
) -> CanonicalRequest | Rejection:
    """Canonicalize ``method`` and the raw origin-form ``target``, or reject the request.

    ``target`` is the request target as the server received it (``/a/b?x=1``), as a str of
    latin-1-decoded bytes. The path is decoded exactly once; the query is split off at the
    first ``?`` and kept raw. ``max_path`` bounds the decoded path in bytes; raw targets over
    four times that are refused before any other work. Never raises on str input.
    """
    problem = _length_problem(target, max_path) or _method_problem(method)
    if problem is None:
        problem = _header_problem(headers)
    if problem is not None:
        return _malformed(problem)
    return canonical_target(method, target, max_path=max_path)


def header_problem(headers: Headers) -> Rejection | None:
    """The header half of `canonicalize`: method overrides and underscore aliases."""
    problem = _header_problem(headers)
    return None if problem is None else _malformed(problem)


def canonical_target(
    method: str, target: str, *, max_path: int = 8192
) -> CanonicalRequest | Rejection:
    """The target half of `canonicalize`: a pure function of the method and the raw target,
    so that a caller may remember its answers (the engine does, for recent targets)."""
    problem = _length_problem(target, max_path) or _method_problem(method) or _form_problem(target)
    if problem is not None:
        return _malformed(problem)
    raw_path, _, query = target.partition("?")
    if query_may_name(query, "_method") and "_method" in query_names(query):
        return _malformed("method override parameter `_method` in the query")
    problem = _raw_path_problem(raw_path)
    if problem is not None:
        return _malformed(problem)
    if "%" in raw_path:
        decoded = unquote_to_bytes(raw_path)
        if len(decoded) > max_path:
            return _malformed(f"path longer than {max_path} bytes")
        try:
            path = decoded.decode("utf-8")
        except UnicodeDecodeError:
            return _malformed("percent-escapes in the path that are not valid utf-8")
        forbidden = _DECODED_FORBIDDEN.search(path)
        if forbidden is not None:
            return _malformed(_describe_decoded(forbidden.group()))
    else:
        # Nothing to decode, and the raw checks already refused every character the decoded
        # check looks for (controls, spaces, `;`, anything outside printable ASCII).
        path = raw_path
        if len(path) > max_path:
            return _malformed(f"path longer than {max_path} bytes")
    if path != "/" and path.endswith("/"):
        path = path[:-1]
    segments = tuple(path[1:].split("/")) if path != "/" else ()
    problem = _segment_problem(segments)
    if problem is not None:
        return _malformed(problem)
    return CanonicalRequest(method=method, path=path, segments=segments, query=query)


def query_may_name(query: str, name: str) -> bool:
    """Cheap test before `query_names`: a query can only name `name` if it holds it in some
    case, or hides it behind a percent-escape."""
    return bool(query) and (name in query.lower() or "%" in query)


def query_names(query: str) -> set[str]:
    """The parameter names of a raw query, decoded as the application's framework would
    decode them (`access%5Ftoken` reaches it as `access_token`), lower-cased."""
    return {unquote_plus(p.partition("=")[0]).lower() for p in query.split("&") if p}


def encode_path(path: str) -> str:
    """Percent-encode a canonical path so that :func:`canonicalize` reads it back unchanged.

    Everything but ASCII letters, digits, ``-._~``, the sub-delimiters other than ``;``,
    ``:``, ``@`` and ``/`` is encoded as UTF-8 escapes. Used by integrations that forward a
    canonical path and by the tests that prove canonicalization is a fixed point.
    """
    return quote(path, safe=_PATH_SAFE)


def _malformed(detail: str) -> Rejection:
    return Rejection(status=400, reason="malformed_request", detail=detail)


def _length_problem(target: str, max_path: int) -> str | None:
    """Bound the work before doing any on hostile input.

    A path of ``max_path`` decoded bytes takes at most three times as many raw characters
    (``%xx`` per byte); the remaining margin is for the query.
    """
    if len(target) > 4 * max_path:
        return f"request target longer than {4 * max_path} characters"
    return None


def _method_problem(method: str) -> str | None:
    """Methods are case-sensitive (RFC 9110 9.1): `get` is not GET, so it is not guessed at."""
    if _METHOD.fullmatch(method) is None:
        return f"method {quote_input(method)} is not an upper-case token"
    return None


def _header_problem(headers: Headers) -> str | None:
    """Refuse method overrides (M06) and underscore aliases of security headers (F03).

    An override header makes the application run a different method than the one the policy
    was matched against; an underscore alias is read as the real header by some servers and
    ignored by others. Names are compared case-insensitively even if the caller did not
    normalize them, because a missed override would open, not close.
    """
    for name, _ in headers:
        folded = name.lower() if name.isascii() else lower_ascii(name)
        if folded in _OVERRIDE_HEADERS:
            return f"method override header {quote_input(name)} is not accepted"
        if "_" in folded and folded.replace("_", "-") in _ALIASED_HEADERS:
            alias = folded.replace("_", "-")
            return f"header {quote_input(name)} is an underscore alias of `{alias}`"
    return None


def _form_problem(target: str) -> str | None:
    """Accept origin-form only: the policy never matches an authority (P39, P40)."""
    if target.startswith("//"):
        return "request target starts with `//`, which reads as an authority, not a path"
    if target.startswith("/"):
        if "#" in target:
            return "raw `#` in the request target (a fragment is never sent to a server)"
        return None
    if target == "*":
        return "asterisk-form request target `*` is not accepted"
    if _ABSOLUTE_FORM.match(target):
        return "absolute-form request target (with a scheme and authority) is not accepted"
    if _AUTHORITY_FORM.fullmatch(target):
        return "authority-form request target (`host:port`) is not accepted"
    return "request target is not origin-form (it does not start with `/`)"


def _raw_path_problem(raw_path: str) -> str | None:
    """Checks on the path as received, before decoding, where raw and encoded still differ."""
    forbidden = _RAW_FORBIDDEN.search(raw_path)
    if forbidden is not None:
        return _describe_raw(forbidden.group())
    if "%" not in raw_path:
        return None
    malformed = _MALFORMED_ESCAPE.search(raw_path)
    if malformed is not None:
        return "malformed percent-escape in the path (`%` not followed by two hex digits)"
    encoded = _ENCODED_DELIMITER.search(raw_path)
    if encoded is not None:
        escape = encoded.group().upper()
        char = unquote_to_bytes(escape).decode("ascii")
        return f"encoded `{char}` ({escape}) in the path"
    return None


def _describe_raw(char: str) -> str:
    if char == " ":
        return "raw space in the path"
    if char in "\\;":
        return f"raw `{char}` in the path"
    if char < " " or char == "\x7f":
        return f"raw control character {ord(char):#04x} in the path"
    return "raw non-ascii character in the path (it must be percent-encoded)"


def _describe_decoded(char: str) -> str:
    """Describe a forbidden decoded character; raw ones were refused already, so it was encoded."""
    if char == " ":
        return "encoded space (%20) in the path"
    if char == ";":
        return "encoded `;` (%3B) in the path"
    if char < " " or "\x7f" <= char <= "\x9f":
        return f"encoded control character U+{ord(char):04X} in the path"
    return f"encoded whitespace U+{ord(char):04X} in the path"


def _segment_problem(segments: tuple[str, ...]) -> str | None:
    """Refuse what servers collapse or resolve differently: `//`, `.` and `..` (P03, P08, P09)."""
    for segment in segments:
        if segment == "":
            return "empty path segment (`//`) in the path"
        if segment in (".", ".."):
            return f"dot segment `{segment}` in the path"
    return None
