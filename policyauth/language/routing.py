"""Route patterns in a segment trie: the first matching route without scanning every route.

Each route is inserted once, in file order, under the path of its pattern's segments: literal
segments as named children, `*` and `{name}` as the one wildcard child, and `**` as an entry on
the node where it starts (it matches zero or more further segments). Entries keep route indices
in increasing order, so the first entry whose methods fit is the earliest route at that node,
and a lookup returns the smallest index over the few nodes a path can reach. The cost of a
lookup depends on the path's length and the wildcards on its way, not on the number of routes.

The checker asks the same structure which earlier route covers a new pattern, to report
duplicate and unreachable routes; the compiler keeps the finished index in the Plan.

The second half is exact set algebra on patterns, shared by the checker, the linter and
anything that compares two policies: whether one pattern's set of paths contains another's,
whether two intersect, a concrete path in the intersection, and which methods two routes share.
`RouteIndex.overlapping` finds the earlier routes whose patterns intersect a new one by walking
the trie, so that a policy of thousands of routes is not compared pair by pair.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import attrs

from policyauth.language.ast import PatternSegment, Segment

Methods = frozenset[str] | None  # None: every method


def method_set(names: Sequence[str]) -> Methods:
    """The methods a route answers: `*` (no names) is all of them; GET brings HEAD along."""
    if not names:
        return None
    methods = set(names)
    if "GET" in methods:
        methods.add("HEAD")
    return frozenset(methods)


# In the order examples name them: the common methods first.
ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def shared_methods(first: Methods, second: Methods) -> Methods:
    """The methods both routes answer (None: every method), or an empty set when they share none.

    Both sides are `method_set` values, so GET has already brought HEAD along: a GET route and
    a HEAD route share HEAD.
    """
    if first is None:
        return second
    if second is None:
        return first
    return first & second


def example_method(methods: Methods) -> str:
    """One method of a non-empty method set, the most common first (GET for every method)."""
    if methods is None:
        return "GET"
    return next(m for m in (*ALL_METHODS, *sorted(methods)) if m in methods)


def _accepts(methods: Methods, method: str) -> bool:
    return methods is None or method in methods


def _covers(earlier: Methods, later: Methods) -> bool:
    if earlier is None:
        return True
    return later is not None and later <= earlier


@attrs.define
class _Node:
    literal: dict[str, _Node] = attrs.field(factory=dict)
    wild: _Node | None = None
    end: list[int] = attrs.field(factory=list)  # patterns that end here
    rest: list[int] = attrs.field(factory=list)  # patterns whose `**` starts here


def _collect(node: _Node, found: set[int]) -> None:
    """Every pattern in the subtree below `node`, including those that end at it."""
    stack = [node]
    while stack:
        current = stack.pop()
        found.update(current.end)
        found.update(current.rest)
        stack.extend(current.literal.values())
        if current.wild is not None:
            stack.append(current.wild)


@attrs.define
class RouteIndex:
    """Built route by route in file order; read-only once the policy is compiled."""

    _root: _Node = attrs.field(factory=_Node)
    _methods: list[Methods] = attrs.field(factory=list)
    _patterns: list[tuple[PatternSegment, ...]] = attrs.field(factory=list)

    def add(self, segments: Sequence[PatternSegment], methods: Methods) -> int:
        """Insert the next route; returns its index."""
        index = len(self._methods)
        self._methods.append(methods)
        self._patterns.append(tuple(segments))
        node = self._root
        for segment in segments:
            if segment.kind is Segment.REST:
                node.rest.append(index)
                return index
            if segment.kind is Segment.LITERAL:
                child = node.literal.get(segment.text)
                if child is None:  # not setdefault: that would build a node for every segment
                    child = node.literal[segment.text] = _Node()
                node = child
            else:
                if node.wild is None:
                    node.wild = _Node()
                node = node.wild
        node.end.append(index)
        return index

    def methods(self, index: int) -> Methods:
        return self._methods[index]

    @property
    def size(self) -> int:
        """How many routes have been added: the index the next one will get."""
        return len(self._methods)

    def lookup(self, segments: Sequence[str], method: str) -> int | None:
        """The index of the first route (file order) that matches the path and the method."""
        best: int | None = None
        stack = [(self._root, 0)]
        count = len(segments)
        while stack:
            node, depth = stack.pop()
            if node.rest:
                best = self._first(node.rest, method, best)
            if depth == count:
                if node.end:
                    best = self._first(node.end, method, best)
                continue
            segment = segments[depth]
            child = node.literal.get(segment)
            if child is not None:
                stack.append((child, depth + 1))
            if node.wild is not None and segment:
                stack.append((node.wild, depth + 1))
        return best

    def _first(self, entries: list[int], method: str, best: int | None) -> int | None:
        for index in entries:
            if best is not None and index >= best:
                return best
            if _accepts(self._methods[index], method):
                return index
        return best

    def first_covering(self, segments: Sequence[PatternSegment], methods: Methods) -> int | None:
        """The earliest route already added that matches every request `segments` would.

        A literal segment is covered by the same literal, a wildcard or an earlier `**`; a
        wildcard only by a wildcard or `**`; a `**` only by an earlier `**`.
        """
        best: int | None = None
        stack = [(self._root, 0)]
        while stack:
            node, depth = stack.pop()
            best = self._first_covering(node.rest, methods, best)
            if depth == len(segments):
                best = self._first_covering(node.end, methods, best)
                continue
            segment = segments[depth]
            if segment.kind is Segment.REST:
                continue
            if segment.kind is Segment.LITERAL and segment.text in node.literal:
                stack.append((node.literal[segment.text], depth + 1))
            if node.wild is not None:
                stack.append((node.wild, depth + 1))
        return best

    def overlapping(self, segments: Sequence[PatternSegment], methods: Methods) -> list[Overlap]:
        """Every route already added that shares a request with a new route, in file order.

        The trie walk visits only the nodes a path of the new pattern can reach (with a `**` in
        the new pattern, the whole subtree below it), so the cost follows the routes that do
        overlap rather than the size of the policy. `later` in each result is the index the
        new route will get from `add`.
        """
        found: set[int] = set()
        stack = [(self._root, 0)]
        while stack:
            node, depth = stack.pop()
            found.update(node.rest)  # an earlier `**` here matches any remaining segments
            if depth == len(segments):
                found.update(node.end)
                continue
            segment = segments[depth]
            if segment.kind is Segment.REST:
                _collect(node, found)
                continue
            if segment.kind is Segment.LITERAL:
                child = node.literal.get(segment.text)
                if child is not None:
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in node.literal.values())
            if node.wild is not None:
                stack.append((node.wild, depth + 1))
        later = self.size
        pattern = tuple(segments)
        overlaps = []
        for index in sorted(found):
            shared = shared_methods(self._methods[index], methods)
            if shared is not None and not shared:
                continue
            earlier = self._patterns[index]
            example = example_path(earlier, pattern)
            assert example is not None, "the trie walk found a pattern that does not intersect"
            taken_by = self.lookup(
                example[1:].split("/") if example != "/" else [], example_method(shared)
            )
            assert taken_by is not None, "the earlier route matches its own example"
            overlaps.append(
                Overlap(
                    index,
                    later,
                    shared,
                    contains(earlier, pattern),
                    contains(pattern, earlier),
                    example,
                    taken_by,
                )
            )
        return overlaps

    def _first_covering(self, entries: list[int], methods: Methods, best: int | None) -> int | None:
        for index in entries:
            if best is not None and index >= best:
                return best
            if _covers(self._methods[index], methods):
                return index
        return best


# --- set algebra on patterns ---------------------------------------------------------------------
#
# A pattern is a tuple of segments; the set of paths it matches is the set of segment lists a
# lookup accepts: a literal matches that text, `*` and `{name}` any one non-empty segment, and
# a final `**` any number of further segments, none included. All three functions below are
# exact (no sampling): each walks both patterns once, segment by segment.

_PLACEHOLDER = "x"  # the segment an example puts where both patterns take any segment


def contains(outer: Sequence[PatternSegment], inner: Sequence[PatternSegment]) -> bool:
    """Whether every path `inner` matches is matched by `outer` too.

    A literal contains only the same literal, a wildcard contains a literal or a wildcard, and
    a `**` contains any rest; nothing but a `**` contains a `**` (it matches zero segments and
    arbitrarily many).
    """
    for position, segment in enumerate(outer):
        if segment.kind is Segment.REST:
            return True
        if position >= len(inner):
            return False
        other = inner[position]
        if other.kind is Segment.REST:
            return False
        if segment.kind is Segment.LITERAL and not (
            other.kind is Segment.LITERAL and other.text == segment.text
        ):
            return False
    return len(inner) == len(outer)


def example_path(first: Sequence[PatternSegment], second: Sequence[PatternSegment]) -> str | None:
    """A canonical path both patterns match, or None when their path sets are disjoint.

    A literal on either side is kept, `x` stands where both take any segment; where one side
    reaches its `**`, the other side's remaining segments are written out (up to its own `**`,
    which then matches nothing more).
    """
    parts: list[str] = []
    for position in range(max(len(first), len(second))):
        a = first[position] if position < len(first) else None
        b = second[position] if position < len(second) else None
        if a is not None and a.kind is Segment.REST:
            parts.extend(_concrete(second[position:]))
            return _join(parts)
        if b is not None and b.kind is Segment.REST:
            parts.extend(_concrete(first[position:]))
            return _join(parts)
        if a is None or b is None:
            return None  # one pattern has ended, the other still needs a segment
        if a.kind is Segment.LITERAL and b.kind is Segment.LITERAL:
            if a.text != b.text:
                return None
            parts.append(a.text)
        elif a.kind is Segment.LITERAL:
            parts.append(a.text)
        elif b.kind is Segment.LITERAL:
            parts.append(b.text)
        else:
            parts.append(_PLACEHOLDER)
    return _join(parts)


def intersects(first: Sequence[PatternSegment], second: Sequence[PatternSegment]) -> bool:
    """Whether some path is matched by both patterns."""
    return example_path(first, second) is not None


def _concrete(segments: Sequence[PatternSegment]) -> Iterator[str]:
    for segment in segments:
        if segment.kind is Segment.REST:
            return
        yield segment.text if segment.kind is Segment.LITERAL else _PLACEHOLDER


def _join(parts: list[str]) -> str:
    return "/" + "/".join(parts)


@attrs.frozen
class Overlap:
    """How an earlier route and a later one share requests (both are route indices).

    `methods` are the methods both answer (None: every method); `earlier_contains` and
    `later_contains` say whether one pattern's paths include all of the other's (both: the
    same path set); `example` is a path both match, and `taken_by` the route that `request`
    reaches among those before the later one: the earlier route, unless a route before it
    takes that request first.
    """

    earlier: int
    later: int
    methods: Methods
    earlier_contains: bool
    later_contains: bool
    example: str
    taken_by: int

    @property
    def crosswise(self) -> bool:
        """Neither pattern contains the other: each takes some paths the other does not."""
        return not self.earlier_contains and not self.later_contains

    @property
    def request(self) -> str:
        """An example request both routes match, such as `GET /files/x`."""
        return f"{example_method(self.methods)} {self.example}"
