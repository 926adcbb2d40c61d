"""Properties over inputs nobody thought of: never raise, reject or reach a fixed point."""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st

from policyauth.request import (
    BasicCredential,
    BearerCredential,
    CanonicalRequest,
    NoCredentials,
    Rejection,
    canonicalize,
    encode_path,
    read_credentials,
)

FAST = settings(max_examples=400, deadline=None)

# Pieces that reach the interesting rules far more often than uniform random text does.
PIECES = [
    "/", "//", ".", "..", "a", "Z", "0", "-", "~", "+", "=", ":", "@", "%", "%2", "%2e", "%2E",
    "%2f", "%5c", "%25", "%3f", "%23", "%3b", "%00", "%0a", "%20", "%7f", "%c2%85", "%c2%a0",
    "%c3%a9", "%c3", "%c0%af", "%e2%82%ac", "%f0%9f%98%80", "%ed%a0%80", "%ff", "%61", "?", "#",
    ";", "\\", " ", "\t", "\x00", "\u00e9", "\u0130", "\"", "{", "[",
]  # fmt: skip

methods = st.one_of(st.sampled_from(["GET", "HEAD", "M-SEARCH", "get"]), st.text(max_size=24))
assembled_targets = st.lists(st.sampled_from(PIECES), max_size=16).map("".join)
text_targets = st.one_of(st.text(max_size=64), st.text(max_size=64).map(lambda t: "/" + t))
byte_targets = st.binary(max_size=64).map(lambda b: "/" + b.decode("latin-1"))
header_names = st.one_of(
    st.sampled_from(["authorization", "X_Real_IP", "x-http-method", "x_custom", "accept"]),
    st.text(max_size=24),
)
headers = st.lists(st.tuples(header_names, st.text(max_size=24)), max_size=3).map(tuple)


def assert_canonical(method: str, target: str, result: CanonicalRequest | Rejection) -> None:
    """A rejection is a well-formed 400; an acceptance is canonical and reads back unchanged."""
    if isinstance(result, Rejection):
        assert (result.status, result.reason) == (400, "malformed_request")
        assert result.detail
        assert result.detail.isprintable()
        assert result.detail.isascii()
        assert len(result.detail) < 400
        return
    assert result.method == method
    assert result.path.startswith("/")
    assert result.path == "/" or not result.path.endswith("/")
    assert result.segments == (() if result.path == "/" else tuple(result.path[1:].split("/")))
    assert all(segment not in ("", ".", "..") for segment in result.segments)
    assert not any(char in result.path for char in "%?#;\\ \x00\n")
    assert target.partition("?")[2] == result.query
    again = canonicalize(method, encode_path(result.path), ())
    assert isinstance(again, CanonicalRequest)
    assert (again.path, again.segments) == (result.path, result.segments)


@FAST
@given(methods, st.one_of(assembled_targets, assembled_targets.map(lambda t: "/" + t)), headers)
def test_assembled_targets(
    method: str, target: str, header_pairs: tuple[tuple[str, str], ...]
) -> None:
    assert_canonical(method, target, canonicalize(method, target, header_pairs))


@FAST
@given(methods, text_targets)
def test_text_targets(method: str, target: str) -> None:
    assert_canonical(method, target, canonicalize(method, target, ()))


@FAST
@given(byte_targets)
def test_byte_targets(target: str) -> None:
    assert_canonical("GET", target, canonicalize("GET", target, ()))


@FAST
@given(st.text(max_size=64).map(lambda t: "/" + t))
def test_decoded_paths_are_fixed_points(path: str) -> None:
    """Whatever text a path decodes to, if it is accepted, encoding it again gives it back."""
    result = canonicalize("GET", encode_path(path), ())
    assert_canonical("GET", encode_path(path), result)


SECRET = "zq9SECRET"
schemes = st.sampled_from(["Bearer", "bearer", "Basic", "BASIC", "Token", "", "Bear\u0435r"])
separators = st.sampled_from(["", " ", "   ", "\t", ", "])
credentials = st.one_of(
    st.sampled_from(["", " x", "  Bearer y", ", Bearer z", "=", "\u00e9"]),
    st.text(max_size=40),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
    st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode("ascii")),
)
queries = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["access_token=x", "a=1&access%5Ftoken", "access_token", "x=%zz&="]),
)


@FAST
@given(
    st.lists(st.tuples(schemes, separators, credentials), max_size=2),
    st.lists(st.tuples(header_names, st.text(max_size=24)), max_size=2),
    queries,
)
def test_read_credentials_never_raises_nor_leaks(
    authorizations: list[tuple[str, str, str]],
    others: list[tuple[str, str]],
    query: str,
) -> None:
    values = [scheme + separator + SECRET + value for scheme, separator, value in authorizations]
    header_pairs = tuple(("authorization", value) for value in values) + tuple(others)
    result = read_credentials(header_pairs, query)
    assert isinstance(result, NoCredentials | BearerCredential | BasicCredential | Rejection)
    assert SECRET not in repr(result)
    if isinstance(result, Rejection):
        assert (result.status, result.reason) == (400, "invalid_request")
        assert SECRET not in result.detail
        assert result.detail
        assert result.detail.isprintable()
        assert result.detail.isascii()


@FAST
@given(st.from_regex(r"[A-Za-z0-9\-._~+/]{1,200}=*", fullmatch=True))
def test_every_b64token_is_read_back(token: str) -> None:
    assert read_credentials((("authorization", f"Bearer {token}"),), "") == BearerCredential(token)


@FAST
@given(
    st.text(min_size=1).filter(
        lambda u: ":" not in u and not any(c < " " or "\x7f" <= c <= "\x9f" for c in u)
    ),
    st.text(min_size=1),
)
def test_every_basic_pair_is_read_back(user: str, secret: str) -> None:
    encoded = base64.b64encode(f"{user}:{secret}".encode()).decode()
    result = read_credentials((("authorization", f"Basic {encoded}"),), "")
    assert result == BasicCredential(user, secret)
