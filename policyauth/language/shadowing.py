"""Routes that take part of a later route's requests: PA126 (error) and PA204 (warning).

PA114 reports a route that an earlier one shadows completely. Partial shadowing is quieter and
worse: `route GET /files/{name} { public }` above `route GET, DELETE /files/{id} { auth ... }`
loads, DELETE is protected, and GET is public without anyone having written so. Two findings,
both exact (they come from the set algebra of language/routing.py, not from a guess):

- PA126, an error: an earlier `public` route matches every path of a later protected route
  for some method the later route answers, so for that method the later route's rules never
  run and its requests are anonymous.
- PA204, a warning: two routes share some requests but neither pattern contains the other
  (`/files/{name}/raw` and `/files/a/*` both match `/files/a/raw`), so which one decides
  depends on their order in a way that is easy to miss.

Both name an example request that both routes match, and report only when that request
really reaches the earlier route (a route before both may take it first, and then the example
would say something false).

Never a finding: a specific route before a general one (`/admin/api/users/{id}` before
`/admin/api/**`), the layout routing in file order is meant for, nor anything about a route
PA113 or PA114 already reports as unreachable. Two public routes that overlap crosswise are not
reported either: whichever takes a request, the answer is the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import attrs

from policyauth.diagnostics import Span
from policyauth.language import ast
from policyauth.language.routing import ALL_METHODS, Methods, Overlap, RouteIndex, method_set

Finding = tuple[Span, str, str, str | None]  # span, code, message, help


@attrs.define
class OverlapCollector:
    """Gathers the overlaps of routes as they enter a RouteIndex, in file order.

    The checker builds the route index once, route by route; it hands each route here just
    before adding it, so the overlaps cost one trie walk per route and no second index. A
    route that an earlier one covers completely (PA113, PA114) takes part in no overlap.
    """

    overlaps: list[Overlap] = attrs.field(factory=list)
    _unreachable: set[int] = attrs.field(factory=set)

    def visit(
        self,
        index: RouteIndex,
        segments: Sequence[ast.PatternSegment],
        methods: Methods,
        *,
        covered: bool,
    ) -> None:
        """Record the next route's overlaps with those already in `index` (call before `add`)."""
        if covered:
            self._unreachable.add(index.size)
            return
        self.overlaps.extend(
            o for o in index.overlapping(segments, methods) if o.earlier not in self._unreachable
        )


def collect_overlaps(routes: Sequence[ast.RouteDecl]) -> tuple[Overlap, ...]:
    """Every pair of routes that share a request, neither of them unreachable, in file order."""
    index = RouteIndex()
    collector = OverlapCollector()
    for route in routes:
        methods = method_set([m.text for m in route.methods])
        segments = route.pattern.segments
        covered = index.first_covering(segments, methods) is not None
        collector.visit(index, segments, methods, covered=covered)
        index.add(segments, methods)
    return tuple(collector.overlaps)


def public_shadowing(
    routes: Sequence[ast.RouteDecl], overlaps: Iterable[Overlap]
) -> Iterator[Finding]:
    """PA126: a protected route that an earlier public route makes public for some method."""
    for overlap in overlaps:
        earlier, later = routes[overlap.earlier], routes[overlap.later]
        if not (
            isinstance(earlier.body, ast.Public)
            and isinstance(later.body, ast.Auth)
            and overlap.earlier_contains
            and overlap.taken_by == overlap.earlier
        ):
            continue
        methods = _method_words(overlap.methods)
        yield (
            later.pattern.span,
            "PA126",
            f"`{overlap.request}` is public: the public route at {_where(earlier)} "
            f"(`{_text(earlier)}`) matches every {methods}request of the route at "
            f"{_where(later)} (`{_text(later)}`), which comes later",
            "routes are tried in file order: move this route above the public one, or narrow "
            "the public route's pattern or methods",
        )


def crosswise_overlaps(
    routes: Sequence[ast.RouteDecl], overlaps: Iterable[Overlap]
) -> Iterator[Finding]:
    """PA204: two routes share requests, and neither pattern contains the other."""
    for overlap in overlaps:
        earlier, later = routes[overlap.earlier], routes[overlap.later]
        if (
            not overlap.crosswise
            or overlap.taken_by != overlap.earlier
            or (isinstance(earlier.body, ast.Public) and isinstance(later.body, ast.Public))
        ):
            continue
        yield (
            later.pattern.span,
            "PA204",
            f"`{overlap.request}` matches both the route at {_where(earlier)} "
            f"(`{_text(earlier)}`) and the route at {_where(later)} (`{_text(later)}`), and "
            "neither pattern contains the other: the earlier one takes it",
            "routes are tried in file order; make the patterns disjoint or put the one that "
            "should decide these requests first (if this is intended, add "
            "`# policyauth: ignore[PA204]` on this line)",
        )


def _method_words(methods: Methods) -> str:
    """`GET or HEAD ` for the shared methods; nothing where they share every method."""
    if methods is None:
        return ""
    names = [m for m in ALL_METHODS if m in methods] + sorted(set(methods) - set(ALL_METHODS))
    return (names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]) + " "


def _where(route: ast.RouteDecl) -> str:
    return f"{route.span.file}:{route.span.line}"


def _text(route: ast.RouteDecl) -> str:
    return (", ".join(m.text for m in route.methods) or "*") + " " + route.pattern.text
