"""The route index on its own: first match in file order, wildcards, HEAD via GET, coverage."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from policyauth.language.ast import PatternSegment, Segment
from policyauth.language.routing import RouteIndex, method_set


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


def path(text: str) -> list[str]:
    """A canonical path as the segments the evaluator looks up (`/` is no segment)."""
    return [] if text == "/" else text[1:].split("/")


def index_of(*routes: tuple[Sequence[str], str]) -> RouteIndex:
    index = RouteIndex()
    for position, (methods, text) in enumerate(routes):
        assert index.add(pattern(text), method_set(list(methods))) == position
    return index


# --- method_set ---------------------------------------------------------------------------------


def test_method_set_star_is_every_method() -> None:
    assert method_set([]) is None


def test_method_set_get_brings_head() -> None:
    assert method_set(["GET"]) == frozenset({"GET", "HEAD"})
    assert method_set(["GET", "POST"]) == frozenset({"GET", "HEAD", "POST"})


def test_method_set_others_stay_as_written() -> None:
    assert method_set(["POST", "DELETE"]) == frozenset({"POST", "DELETE"})
    assert method_set(["HEAD"]) == frozenset({"HEAD"})


# --- lookup -------------------------------------------------------------------------------------


def test_first_match_in_file_order() -> None:
    index = index_of(
        (["GET"], "/a/*"),
        (["GET"], "/a/b"),
        (["GET"], "/a/**"),
    )
    assert index.lookup(path("/a/b"), "GET") == 0
    assert index.lookup(path("/a/c"), "GET") == 0
    assert index.lookup(path("/a/b/c"), "GET") == 2


def test_later_literal_does_not_win_over_earlier_rest() -> None:
    index = index_of((["GET"], "/a/**"), (["GET"], "/a/b/c"))
    assert index.lookup(path("/a/b/c"), "GET") == 0


def test_earlier_literal_wins_over_later_wildcard() -> None:
    index = index_of((["GET"], "/a/b"), (["GET"], "/a/{id}"), (["GET"], "/**"))
    assert index.lookup(path("/a/b"), "GET") == 0
    assert index.lookup(path("/a/x"), "GET") == 1
    assert index.lookup(path("/z"), "GET") == 2


def test_method_decides_between_routes_on_one_pattern() -> None:
    index = index_of((["POST"], "/a"), (["GET"], "/a"), ([], "/a"))
    assert index.lookup(path("/a"), "POST") == 0
    assert index.lookup(path("/a"), "GET") == 1
    assert index.lookup(path("/a"), "DELETE") == 2


def test_head_matches_through_get() -> None:
    index = index_of((["GET"], "/a"), (["HEAD"], "/b"))
    assert index.lookup(path("/a"), "HEAD") == 0
    assert index.lookup(path("/b"), "HEAD") == 1
    assert index.lookup(path("/b"), "GET") is None


def test_star_method_matches_every_method() -> None:
    index = index_of(([], "/a"))
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        assert index.lookup(path("/a"), method) == 0


def test_no_route() -> None:
    index = index_of((["GET"], "/a"))
    assert index.lookup(path("/b"), "GET") is None
    assert index.lookup(path("/a"), "POST") is None
    assert index.lookup(path("/a/b"), "GET") is None
    assert index.lookup(path("/"), "GET") is None
    assert RouteIndex().lookup(path("/a"), "GET") is None


@pytest.mark.parametrize(
    ("request_path", "expected"),
    [
        ("/public", 0),  # `**` matches zero segments
        ("/public/a", 0),
        ("/public/a/b/c", 0),
        ("/publicity", None),  # never a prefix of a segment
        ("/", None),
        ("/other/public", None),
    ],
)
def test_rest_matches_zero_or_more_segments(request_path: str, expected: int | None) -> None:
    index = index_of((["GET"], "/public/**"))
    assert index.lookup(path(request_path), "GET") == expected


def test_root_rest_matches_everything_including_the_root() -> None:
    index = index_of(([], "/**"))
    assert index.lookup(path("/"), "GET") == 0
    assert index.lookup(path("/a/b/c"), "PUT") == 0


def test_root_pattern_matches_only_the_root() -> None:
    index = index_of((["GET"], "/"))
    assert index.lookup(path("/"), "GET") == 0
    assert index.lookup(path("/a"), "GET") is None


@pytest.mark.parametrize("wildcard", ["*", "{id}"])
def test_wildcard_matches_exactly_one_non_empty_segment(wildcard: str) -> None:
    index = index_of((["GET"], f"/a/{wildcard}"))
    assert index.lookup(path("/a/x"), "GET") == 0
    assert index.lookup(["a", ""], "GET") is None  # an empty segment is never a match
    assert index.lookup(path("/a"), "GET") is None
    assert index.lookup(path("/a/x/y"), "GET") is None


def test_wildcard_then_literal() -> None:
    index = index_of((["GET"], "/users/*/avatar"), (["GET"], "/users/{id}"))
    assert index.lookup(path("/users/7/avatar"), "GET") == 0
    assert index.lookup(path("/users/7"), "GET") == 1
    assert index.lookup(path("/users/7/other"), "GET") is None


def test_literal_matching_is_case_sensitive() -> None:
    index = index_of((["GET"], "/Admin"))
    assert index.lookup(path("/Admin"), "GET") == 0
    assert index.lookup(path("/admin"), "GET") is None


def test_smallest_index_over_every_reachable_node() -> None:
    """A later, more specific route never beats an earlier one reached through a wildcard."""
    index = index_of(
        (["POST"], "/a/b/c"),
        (["GET"], "/a/*/c"),
        (["GET"], "/a/b/c"),
        (["GET"], "/a/**"),
    )
    assert index.lookup(path("/a/b/c"), "GET") == 1
    assert index.lookup(path("/a/b/c"), "POST") == 0
    assert index.lookup(path("/a/b/c"), "PUT") is None
    assert index.lookup(path("/a/b/d"), "GET") == 3


def test_methods_are_kept_per_route() -> None:
    index = index_of((["GET"], "/a"), ([], "/b"))
    assert index.methods(0) == frozenset({"GET", "HEAD"})
    assert index.methods(1) is None


def test_many_routes() -> None:
    index = index_of(*((["GET"], f"/r{i}/{{id}}") for i in range(500)))
    assert index.lookup(path("/r0/x"), "GET") == 0
    assert index.lookup(path("/r499/x"), "GET") == 499
    assert index.lookup(path("/r500/x"), "GET") is None


# --- first_covering -----------------------------------------------------------------------------


def covering(
    routes: Sequence[tuple[Sequence[str], str]], methods: Sequence[str], text: str
) -> int | None:
    index = index_of(*routes)
    return index.first_covering(pattern(text), method_set(list(methods)))


@pytest.mark.parametrize(
    ("earlier", "later", "expected"),
    [
        ("/a/b", "/a/b", 0),  # the same pattern
        ("/a/*", "/a/b", 0),  # a wildcard covers a literal
        ("/a/{x}", "/a/{y}", 0),  # parameter names do not matter
        ("/a/*", "/a/{id}", 0),
        ("/a/**", "/a", 0),  # `**` covers zero segments
        ("/a/**", "/a/b/c", 0),
        ("/a/**", "/a/*/c/**", 0),
        ("/**", "/", 0),
        ("/a/b", "/a/*", None),  # a literal never covers a wildcard
        ("/a/*", "/a/**", None),  # one segment never covers any number
        ("/a/*", "/a", None),
        ("/a/*", "/a/b/c", None),
        ("/a/b/**", "/a/**", None),
        ("/a/b", "/a/c", None),
    ],
)
def test_first_covering_patterns(earlier: str, later: str, expected: int | None) -> None:
    assert covering([(["GET"], earlier)], ["GET"], later) == expected


@pytest.mark.parametrize(
    ("earlier", "later", "expected"),
    [
        (["GET"], ["GET"], 0),
        (["GET", "POST"], ["POST"], 0),
        (["GET"], ["HEAD"], 0),  # GET brings HEAD along
        ([], ["DELETE"], 0),  # `*` covers every method
        ([], [], 0),
        (["GET"], [], None),  # a list never covers `*`
        (["POST"], ["GET"], None),
        (["GET"], ["GET", "POST"], None),  # only part of the later route is covered
        (["HEAD"], ["GET"], None),
    ],
)
def test_first_covering_methods(earlier: list[str], later: list[str], expected: int | None) -> None:
    assert covering([(earlier, "/a")], later, "/a") == expected


def test_first_covering_is_the_earliest() -> None:
    routes = [(["POST"], "/a/**"), (["GET"], "/a/*"), (["GET"], "/a/b"), ([], "/**")]
    assert covering(routes, ["GET"], "/a/b") == 1
    assert covering(routes, ["POST"], "/a/b") == 0
    assert covering(routes, ["PUT"], "/a/b") == 3
    assert covering(routes, ["GET"], "/x") == 3
    assert covering(routes[:3], ["PUT"], "/a/b") is None


def test_first_covering_of_an_empty_index() -> None:
    assert RouteIndex().first_covering(pattern("/a"), method_set(["GET"])) is None
