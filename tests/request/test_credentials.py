"""Reading the Authorization header: one table of header values and queries to outcomes."""

from __future__ import annotations

import base64

import pytest

from policyauth.request import (
    BasicCredential,
    BearerCredential,
    Credential,
    NoCredentials,
    Rejection,
    read_credentials,
)
from policyauth.request.headers import Headers


def basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode("ascii")


def auth(*values: str) -> Headers:
    return tuple(("authorization", value) for value in values)


JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"

# (note, headers, query, expected credential or the substring of a 400 invalid_request detail)
CASES: list[tuple[str, Headers, str, Credential | str]] = [
    ("no header, no query", (), "", NoCredentials()),
    ("other headers only", (("accept", "*/*"), ("cookie", "a=b")), "x=1&y", NoCredentials()),
    ("bearer", auth("Bearer abc123"), "", BearerCredential("abc123")),
    ("bearer jwt", auth(f"Bearer {JWT}"), "", BearerCredential(JWT)),
    ("lower-case scheme", auth("bearer abc"), "", BearerCredential("abc")),
    ("upper-case scheme", auth("BEARER abc"), "", BearerCredential("abc")),
    ("1*SP between scheme and token", auth("Bearer    abc"), "", BearerCredential("abc")),
    ("surrounding OWS dropped", auth(" \tBearer abc \t"), "", BearerCredential("abc")),
    ("b64token alphabet", auth("Bearer aZ09-._~+/=="), "", BearerCredential("aZ09-._~+/==")),
    ("header name in any case", (("Authorization", "Bearer abc"),), "", BearerCredential("abc")),
    ("query without access_token", auth("Bearer abc"), "a=1&token=2", BearerCredential("abc")),
    ("padding only at the end", auth("Bearer ab=c"), "", "b64token"),
    ("only padding", auth("Bearer ==="), "", "b64token"),
    ("A09 non-ASCII token", auth("Bearer t\u00f6ken"), "", "b64token"),
    ("A09 non-latin-1 token", auth("Bearer \u0442\u043e\u043a\u0435\u043d"), "", "b64token"),
    ("A09 NUL in token", auth("Bearer abc\x00def"), "", "b64token"),
    ("space inside token", auth("Bearer abc def"), "", "b64token"),
    ("quoted token", auth('Bearer "abc"'), "", "b64token"),
    ("tab as separator", auth("Bearer\tabc"), "", "malformed authorization header"),
    ("token at max_token", auth("Bearer " + "a" * 8192), "", BearerCredential("a" * 8192)),
    ("token over max_token", auth("Bearer " + "a" * 8193), "", "longer than 8192 characters"),
    ("empty bearer", auth("Bearer"), "", "empty credentials after the `bearer` scheme"),
    ("bearer and spaces", auth("Bearer   "), "", "empty credentials after the `bearer` scheme"),
    ("empty header", auth(""), "", "empty authorization header"),
    ("bare token", auth("abc123"), "", "malformed authorization header"),
    ("bare token and more", auth("abc123 x"), "", "unsupported authorization scheme"),
    ("known scheme alone", auth("Negotiate"), "", "unsupported authorization scheme `Negotiate`"),
    ("unknown scheme Digest", auth('Digest username="a", realm="b"'), "", "scheme `Digest`"),
    ("unknown scheme Token", auth("Token abc"), "", "unsupported authorization scheme `Token`"),
    ("Unicode lookalike scheme", auth("Ba\u017fic YTpi"), "", "unsupported authorization"),
    ("A12 two headers", auth("Bearer a", "Bearer b"), "", "more than one authorization header"),
    ("A12 same header twice", auth("Bearer a", "Bearer a"), "", "more than one authorization"),
    ("A12 bearer and basic", auth("Bearer a", basic(b"u:p")), "", "more than one"),
    (
        "A12 two headers, any case",
        (("Authorization", "Bearer a"), ("AUTHORIZATION", "Bearer b")),
        "",
        "more than one authorization header",
    ),
    ("A13 WSGI-joined bearer", auth("Bearer a, Bearer b"), "", "several credentials"),
    ("A13 WSGI-joined basic", auth(basic(b"u:p") + ", Bearer b"), "", "several credentials"),
    ("A13 joined with unknown first", auth("Token a, Bearer b"), "", "scheme `Token`"),
    ("A14 query token alone", (), "access_token=abc", "tokens in the query string"),
    ("A14 header plus query token", auth("Bearer abc"), "access_token=abc", "query string"),
    ("A14 query token without value", (), "a=1&access_token", "query string"),
    ("A14 query token, empty value", (), "access_token=&a=1", "query string"),
    ("A14 percent-encoded name", (), "access%5Ftoken=abc", "query string"),
    ("A14 plus-decoded name is not it", (), "access+token=abc", NoCredentials()),
    ("name containing access_token", (), "my_access_token=abc", NoCredentials()),
    ("basic", auth(basic(b"alice:s3cret")), "", BasicCredential("alice", "s3cret")),
    ("basic lower-case scheme", auth("basic " + basic(b"u:p")[6:]), "", BasicCredential("u", "p")),
    ("basic colon in secret", auth(basic(b"u:a:b")), "", BasicCredential("u", "a:b")),
    (
        "basic UTF-8",
        auth(basic("j\u00fcrgen:p\u00e4ss".encode())),
        "",
        BasicCredential("j\u00fcrgen", "p\u00e4ss"),
    ),
    ("basic one padding char", auth("Basic YTpiYw=="), "", BasicCredential("a", "bc")),
    ("basic missing padding", auth("Basic YTpiYw"), "", "not valid base64"),
    ("basic short padding", auth("Basic YTpiYw="), "", "not valid base64"),
    ("basic extra padding", auth("Basic YTpi===="), "", "not canonical base64"),
    ("basic padding after a full quantum", auth("Basic YTpi="), "", "not canonical base64"),
    ("basic non-zero padding bits", auth("Basic YTpiYx=="), "", "not canonical base64"),
    ("basic url-safe alphabet", auth("Basic -_-_"), "", "not valid base64"),
    ("basic non-ASCII", auth("Basic YTpi\u00e9"), "", "not valid base64"),
    ("basic without colon", auth(basic(b"alice")), "", "no `:` between user and secret"),
    ("basic empty user", auth(basic(b":secret")), "", "empty user"),
    ("basic empty secret", auth(basic(b"alice:")), "", "empty secret"),
    ("basic control char in user", auth(basic(b"al\nice:p")), "", "control character in the user"),
    ("basic C1 control in user", auth(basic("al\u0085ice:p".encode())), "", "control character"),
    ("basic invalid UTF-8", auth(basic(b"\xc0\xaf:p")), "", "not valid utf-8"),
    ("basic latin-1", auth(basic(b"j\xfcrgen:p")), "", "not valid utf-8"),
    ("basic over max_token", auth(basic(b"u:" + b"p" * 6200)), "", "longer than 8192"),
    ("empty basic", auth("Basic "), "", "empty credentials after the `basic` scheme"),
]


@pytest.mark.parametrize(
    ("headers", "query", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_case(headers: Headers, query: str, expected: Credential | str) -> None:
    result = read_credentials(headers, query)
    if isinstance(expected, str):
        assert isinstance(result, Rejection), result
        assert (result.status, result.reason) == (400, "invalid_request")
        assert expected in result.detail
    else:
        assert result == expected


def test_max_token_is_configurable() -> None:
    assert read_credentials(auth("Bearer abcd"), "", max_token=4) == BearerCredential("abcd")
    assert read_credentials(auth("Bearer abcde"), "", max_token=4) == Rejection(
        400, "invalid_request", "credentials longer than 4 characters"
    )


SECRET = "zq9SECRETzq9"


@pytest.mark.parametrize(
    "value",
    [
        f"Bearer {SECRET}",
        f"Bearer {SECRET}\u00e9",
        f"Bearer {SECRET}, Bearer {SECRET}",
        f"Token {SECRET}",
        SECRET,
        f"{SECRET} x",
        f"{SECRET}  {SECRET}",
        f"Bearer {SECRET * 400}",
        basic(f"{SECRET}".encode()),
        basic(f"user:{SECRET}".encode()),
        basic(f"user:{SECRET}".encode()) + "=",
    ],
)
def test_secrets_stay_out_of_details_and_reprs(value: str) -> None:
    result = read_credentials(auth(value), "")
    assert SECRET not in repr(result)
    if isinstance(result, Rejection):
        assert SECRET not in result.detail


def test_secrets_stay_out_of_query_rejection() -> None:
    result = read_credentials((), f"access_token={SECRET}")
    assert isinstance(result, Rejection)
    assert SECRET not in result.detail


def test_reprs_hide_token_and_secret() -> None:
    assert repr(BearerCredential(SECRET)) == "BearerCredential()"
    assert repr(BasicCredential("alice", SECRET)) == "BasicCredential(user='alice')"
