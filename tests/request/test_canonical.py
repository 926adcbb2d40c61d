"""Canonicalization: the table in cases/canonical.json, then the rules a table cannot show."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from policyauth.request import (
    CanonicalRequest,
    Rejection,
    canonicalize,
    encode_path,
    normalize_headers,
)

CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "cases" / "canonical.json").read_text(encoding="utf-8")
)


def test_table_is_complete() -> None:
    """Every case names its expectation, and every rejection names the detail it expects."""
    assert len(CASES) >= 80
    for case in CASES:
        assert case["note"]
        assert (case["expect"] == "reject") == ("detail" in case), case


@pytest.mark.parametrize("case", CASES, ids=[f"{i:03d} {c['note']}" for i, c in enumerate(CASES)])
def test_case(case: dict[str, Any]) -> None:
    headers = tuple((name, value) for name, value in case.get("headers", []))
    result = canonicalize(case["method"], case["target"], headers)
    if case["expect"] == "reject":
        assert isinstance(result, Rejection), result
        assert (result.status, result.reason) == (400, "malformed_request")
        assert case["detail"] in result.detail
    else:
        assert isinstance(result, CanonicalRequest), result
        assert result.method == case["method"]
        assert result.path == case["expect"]
        path = case["expect"]
        assert result.segments == (() if path == "/" else tuple(path[1:].split("/")))
        if "query" in case:
            assert result.query == case["query"]
        assert canonicalize(case["method"], encode_path(result.path), ()) == CanonicalRequest(
            method=result.method, path=result.path, segments=result.segments, query=""
        )


def test_max_path_bounds_decoded_bytes() -> None:
    assert canonicalize("GET", "/" + "a" * 9, (), max_path=10) == CanonicalRequest(
        method="GET", path="/" + "a" * 9, segments=("a" * 9,), query=""
    )
    rejected = canonicalize("GET", "/" + "a" * 10, (), max_path=10)
    assert rejected == Rejection(400, "malformed_request", "path longer than 10 bytes")


def test_max_path_counts_bytes_not_escapes() -> None:
    """Three raw characters make one byte; a two-byte character counts two."""
    assert isinstance(canonicalize("GET", "/" + "%61" * 9, (), max_path=10), CanonicalRequest)
    rejected = canonicalize("GET", "/" + "%C3%A9" * 5, (), max_path=10)
    assert isinstance(rejected, Rejection)
    assert rejected.detail == "path longer than 10 bytes"


def test_overlong_target_is_refused_before_anything_else() -> None:
    """Even an invalid method is not looked at: the size bound comes first."""
    rejected = canonicalize("get", "/" + "a" * 40, (), max_path=10)
    assert rejected == Rejection(
        400, "malformed_request", "request target longer than 40 characters"
    )
    assert isinstance(canonicalize("GET", "/a?" + "q" * 37, (), max_path=10), CanonicalRequest)


def test_default_max_path() -> None:
    assert isinstance(canonicalize("GET", "/" + "a" * 8191, ()), CanonicalRequest)
    rejected = canonicalize("GET", "/" + "a" * 8192, ())
    assert isinstance(rejected, Rejection)
    assert rejected.detail == "path longer than 8192 bytes"


def test_detail_shows_at_most_64_characters_of_input() -> None:
    rejected = canonicalize("G" + "e" * 200, "/", ())
    assert isinstance(rejected, Rejection)
    assert rejected.detail == f"method `G{'e' * 63}...` is not an upper-case token"


def test_detail_escapes_control_characters_of_input() -> None:
    """A detail is logged: input must not start a new line or a terminal escape in it."""
    rejected = canonicalize("GET\r\nX-Injected: 1\x1b[0m", "/", ())
    assert isinstance(rejected, Rejection)
    assert rejected.detail == "method `GET\\r\\nX-Injected: 1\\x1b[0m` is not an upper-case token"


def test_query_is_kept_raw_and_out_of_the_repr() -> None:
    result = canonicalize("GET", "/a?token=s3cr3t&x=%2F", ())
    assert isinstance(result, CanonicalRequest)
    assert result.query == "token=s3cr3t&x=%2F"
    assert "s3cr3t" not in repr(result)


def test_override_header_is_found_in_unnormalized_headers() -> None:
    """Callers that skip normalize_headers must not open the override check."""
    rejected = canonicalize("POST", "/a", (("X-HTTP-Method-Override", "DELETE"),))
    assert isinstance(rejected, Rejection)
    assert "method override header `X-HTTP-Method-Override`" in rejected.detail


def test_encode_path_keeps_pchars_and_encodes_the_rest() -> None:
    assert encode_path("/a-b_c.d~e!$&'()*+,=:@") == "/a-b_c.d~e!$&'()*+,=:@"
    assert encode_path("/caf\u00e9 x") == "/caf%C3%A9%20x"
    assert encode_path('/"<>{}|^`[]') == "/%22%3C%3E%7B%7D%7C%5E%60%5B%5D"


class TestNormalizeHeaders:
    def test_bytes_pairs_are_decoded_latin1_and_names_lowered(self) -> None:
        raw = [(b"Authorization", b"Bearer a"), (b"X-Caf\xe9", b"\xff")]
        assert normalize_headers(raw) == (
            ("authorization", "Bearer a"),
            ("x-caf\xe9", "\xff"),
        )

    def test_duplicates_and_order_are_kept(self) -> None:
        pairs = [("B", "1"), ("a", "2"), ("b", "3")]
        assert normalize_headers(pairs) == (("b", "1"), ("a", "2"), ("b", "3"))

    def test_mapping(self) -> None:
        assert normalize_headers({"Content-Type": "Text/Plain "}) == (
            ("content-type", "Text/Plain "),
        )

    def test_only_ascii_is_lowered(self) -> None:
        """U+212A KELVIN SIGN lower-cases to `k` under Unicode rules; a header name must not."""
        assert normalize_headers([("X-\u212aEY", "v"), ("\u00c9", "v")]) == (
            ("x-\u212aey", "v"),
            ("\u00c9", "v"),
        )

    def test_empty(self) -> None:
        assert normalize_headers([]) == ()
        assert normalize_headers({}) == ()
