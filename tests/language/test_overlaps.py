"""Overlaps between route patterns (language/routing.py) and the findings built on them:
PA126 (an earlier public route makes part of a later protected route public) and PA204 (two
routes overlap crosswise). The set algebra is checked against brute force over a small
universe of paths, so "exact" is a tested claim rather than a promise."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest

import policyauth
from policyauth.language.ast import PatternSegment, Segment
from policyauth.language.routing import (
    RouteIndex,
    contains,
    example_method,
    example_path,
    intersects,
    method_set,
    shared_methods,
)


def pattern(text: str) -> tuple[PatternSegment, ...]:
    """`/a/*/{id}/**` as segments, the way the parser builds them."""
    segments = []
    for part in [] if text == "/" else text[1:].split("/"):
        if part == "**":
            segments.append(PatternSegment(Segment.REST, ""))
        elif part == "*":
            segments.append(PatternSegment(Segment.STAR, ""))
        elif part.startswith("{"):
            segments.append(PatternSegment(Segment.PARAM, part[1:-1]))
        else:
            segments.append(PatternSegment(Segment.LITERAL, part))
    return tuple(segments)


def matches(text: str, path: Sequence[str]) -> bool:
    """Whether pattern `text` matches `path`, by the route index itself (the reference)."""
    index = RouteIndex()
    index.add(pattern(text), None)
    return index.lookup(path, "GET") == 0


# --- the set algebra against brute force ----------------------------------------------------

PATTERNS = [
    "/", "/**", "/a", "/b", "/*", "/{id}", "/a/**", "/a/*", "/a/b", "/a/c", "/*/b", "/*/*",
    "/a/b/**", "/*/**", "/a/*/c", "/a/b/*", "/*/b/c", "/a/*/**", "/{x}/b/**",
]  # fmt: skip
# Every path of up to three segments over the literals above and one other segment: enough to
# tell any two of the patterns apart (each has at most three segments before its `**`).
PATHS = [
    list(p) for n in range(5) for p in itertools.product(["a", "b", "c", "z"], repeat=n)
]  # fmt: skip


@pytest.mark.parametrize(("outer", "inner"), list(itertools.product(PATTERNS, PATTERNS)))
def test_contains_and_intersects_agree_with_brute_force(outer: str, inner: str) -> None:
    in_outer = {tuple(p) for p in PATHS if matches(outer, p)}
    in_inner = {tuple(p) for p in PATHS if matches(inner, p)}
    assert contains(pattern(outer), pattern(inner)) is (in_inner <= in_outer)
    assert intersects(pattern(outer), pattern(inner)) is bool(in_outer & in_inner)
    example = example_path(pattern(outer), pattern(inner))
    if in_outer & in_inner:
        assert example is not None
        segments = [] if example == "/" else example[1:].split("/")
        assert matches(outer, segments), example
        assert matches(inner, segments), example
    else:
        assert example is None


@pytest.mark.parametrize(
    ("first", "second", "example"),
    [
        ("/files/{name}", "/files/{id}", "/files/x"),
        ("/files/{name}/raw", "/files/a/*", "/files/a/raw"),
        ("/a/**", "/*/b/c", "/a/b/c"),
        ("/**", "/", "/"),
        ("/a/**", "/a/**", "/a"),
        ("/a/b", "/a/c", None),
        ("/a/*", "/a", None),  # `*` is one non-empty segment, never none
    ],
)
def test_example_path(first: str, second: str, example: str | None) -> None:
    assert example_path(pattern(first), pattern(second)) == example
    assert example_path(pattern(second), pattern(first)) == example


@pytest.mark.parametrize(
    ("first", "second", "shared"),
    [
        (["GET"], ["GET", "DELETE"], {"GET", "HEAD"}),
        (["GET"], ["HEAD"], {"HEAD"}),  # GET brings HEAD along
        (["HEAD"], ["GET"], {"HEAD"}),
        (["POST"], ["GET"], set()),
        ([], ["PUT"], {"PUT"}),  # `*` is every method
        ([], [], None),
    ],
)
def test_shared_methods(first: list[str], second: list[str], shared: set[str] | None) -> None:
    result = shared_methods(method_set(first), method_set(second))
    assert result == (None if shared is None else frozenset(shared))


def test_example_method_prefers_the_common_methods() -> None:
    assert example_method(None) == "GET"
    assert example_method(frozenset({"DELETE", "HEAD", "GET"})) == "GET"
    assert example_method(frozenset({"PATCH", "DELETE"})) == "PATCH"


def test_overlapping_walks_the_trie_and_reports_each_pair() -> None:
    index = RouteIndex()
    routes = [(["GET"], "/a/b"), (["POST"], "/a/*"), (["GET"], "/z/**"), (["GET"], "/a/*/c")]
    for methods, text in routes:
        index.add(pattern(text), method_set(methods))
    found = index.overlapping(pattern("/a/{id}"), method_set(["GET", "POST"]))
    assert [
        (o.earlier, o.later, o.example, o.earlier_contains, o.later_contains) for o in found
    ] == [
        (0, 4, "/a/b", False, True),
        (1, 4, "/a/x", True, True),
    ]
    assert found[0].methods == frozenset({"GET", "HEAD"})
    assert found[1].request == "POST /a/x"
    everything = index.overlapping(pattern("/**"), None)
    assert [o.earlier for o in everything] == [0, 1, 2, 3]
    assert all(o.later_contains and not o.crosswise for o in everything)
    assert index.overlapping(pattern("/a/b"), method_set(["PUT"])) == []


# --- PA126 and PA204 ------------------------------------------------------------------------

TOKENS = 'tokens staff {\n  store = "staff.tokens"\n}\n\n'  # four lines: routes start on line 5


def policy(*routes: str) -> str:
    """TOKENS then the routes, each `METHODS PATTERN BODY` where BODY is `public` or `auth`."""
    blocks = []
    for text in routes:
        head, body = text.rsplit(" ", 1)
        inner = "  public\n" if body == "public" else "  auth staff\n  allow\n"
        blocks.append(f"route {head} {{\n{inner}}}\n")
    return TOKENS + "\n".join(blocks)


def findings(text: str) -> list[tuple[str, int, str]]:
    _, diagnostics = policyauth.analyze(text, "t.policy", env={})
    return [(d.code, d.line, d.message) for d in diagnostics]


def test_pa126_the_issue_example() -> None:
    text = policy("GET /files/{name} public", "GET, DELETE /files/{id} auth")
    assert findings(text) == [
        (
            "PA126",
            9,
            "`GET /files/x` is public: the public route at t.policy:5 (`GET /files/{name}`) "
            "matches every GET or HEAD request of the route at t.policy:9 "
            "(`GET, DELETE /files/{id}`), which comes later",
        )
    ]
    loaded, diagnostics = policyauth.analyze(text, "t.policy", env={})
    assert loaded is None  # an error: the policy does not load
    assert diagnostics[0].help == (
        "routes are tried in file order: move this route above the public one, or narrow the "
        "public route's pattern or methods"
    )


@pytest.mark.parametrize(
    ("earlier", "later", "example", "methods"),
    [
        ("GET /files/** public", "GET, DELETE /files/{id} auth", "GET /files/x", "GET or HEAD"),
        ("HEAD /files/* public", "GET /files/{id} auth", "HEAD /files/x", "HEAD"),
        ("POST, PUT /a/** public", "* /a/b auth", "POST /a/b", "POST or PUT"),
    ],
)
def test_pa126_part_of_a_protected_route_made_public(
    earlier: str, later: str, example: str, methods: str
) -> None:
    [(code, line, message)] = findings(policy(earlier, later))
    assert (code, line) == ("PA126", 9)
    assert message.startswith(f"`{example}` is public: the public route at t.policy:5 ")
    assert f"matches every {methods} request of the route at t.policy:9" in message


@pytest.mark.parametrize(
    "routes",
    [
        # a specific route before a general one: what file order is for
        ("GET /admin/api/users/{id} auth", "* /admin/api/** auth"),
        ("GET /status public", "GET /** auth"),
        ("GET /files/{id}/raw public", "GET, DELETE /files/** auth"),
        # a public route that shares no method with the protected one
        ("GET /files/{name} public", "DELETE /files/{id} auth"),
        # the protected route first: it is never made public
        ("GET, DELETE /files/{id} auth", "GET, POST /files/{name} public"),
        # two public routes that overlap crosswise: the answer is the same either way
        ("GET /d/{name}/raw public", "GET /d/a/* public"),
    ],
)
def test_no_finding_for_the_normal_layouts(routes: tuple[str, ...]) -> None:
    assert findings(policy(*routes)) == []


def test_wholly_shadowed_stays_pa114_alone() -> None:
    assert findings(policy("GET /files/{name} public", "GET /files/{id} auth")) == [
        ("PA113", 9, "duplicate route: line 5 has the same methods and pattern"),
    ]
    assert findings(policy("* /files/** public", "GET, DELETE /files/{id} auth")) == [
        (
            "PA114",
            9,
            "route is unreachable: the route at line 5 (`* /files/**`) matches every request "
            "it would",
        ),
    ]


def test_pa204_crosswise_overlap() -> None:
    text = policy("GET /docs/{name}/raw auth", "GET /docs/a/* public")
    assert findings(text) == [
        (
            "PA204",
            10,
            "`GET /docs/a/raw` matches both the route at t.policy:5 (`GET /docs/{name}/raw`) and "
            "the route at t.policy:10 (`GET /docs/a/*`), and neither pattern contains the other: "
            "the earlier one takes it",
        )
    ]
    loaded, _ = policyauth.analyze(text, "t.policy", env={})
    assert loaded is not None  # a warning: the policy loads


def test_pa204_can_be_silenced_on_the_later_route() -> None:
    text = policy("GET /docs/{name}/raw auth", "GET /docs/a/* public").replace(
        "route GET /docs/a/* {", "route GET /docs/a/* {  # policyauth: ignore[PA204]"
    )
    assert findings(text) == []


def test_pa204_across_a_rest_pattern() -> None:
    [(code, line, message)] = findings(policy("GET /a/** auth", "GET, POST /*/b/c auth"))
    assert (code, line) == ("PA204", 10)
    assert message.startswith("`GET /a/b/c` matches both the route at t.policy:5 (`GET /a/**`)")


def test_no_pa126_when_an_earlier_protected_route_takes_those_requests_first() -> None:
    """GET /files/x reaches the protected `/files/**` first: the later route is not made
    public, and saying so would be false."""
    text = policy(
        "GET /files/** auth", "GET, POST /files/{name} public", "GET, DELETE /files/{id} auth"
    )
    assert [(code, line) for code, line, _ in findings(text)] == []
    found = RouteIndex()
    for methods, text_ in ((["GET"], "/files/**"), (["GET", "POST"], "/files/{name}")):
        found.add(pattern(text_), method_set(methods))
    [first, second] = found.overlapping(pattern("/files/{id}"), method_set(["GET", "DELETE"]))
    assert (first.earlier, first.taken_by) == (0, 0)
    assert (second.earlier, second.taken_by) == (1, 0)


def test_an_unreachable_route_takes_part_in_no_overlap() -> None:
    """The second route is PA114; its crosswise overlap with the third is not reported (the
    first route's is)."""
    text = policy("GET /a/b/** auth", "GET /a/b/* public", "GET /a/*/c auth")
    found = findings(text)
    assert [(code, line) for code, line, _ in found] == [("PA114", 10), ("PA204", 14)]
    assert "the route at t.policy:5 (`GET /a/b/**`)" in found[1][2]
