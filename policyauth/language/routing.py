"""Route patterns in a segment trie: the first matching route without scanning every route.

Each route is inserted once, in file order, under the path of its pattern's segments: literal
segments as named children, `*` and `{name}` as the one wildcard child, and `**` as an entry on
the node where it starts (it matches zero or more further segments). Entries keep route indices
in increasing order, so the first entry whose methods fit is the earliest route at that node,
and a lookup returns the smallest index over the few nodes a path can reach. The cost of a
lookup depends on the path's length and the wildcards on its way, not on the number of routes.

The checker asks the same structure which earlier route covers a new pattern, to report
duplicate and unreachable routes; the compiler keeps the finished index in the Plan.
"""

from __future__ import annotations

from collections.abc import Sequence

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


@attrs.define
class RouteIndex:
    """Built route by route in file order; read-only once the policy is compiled."""

    _root: _Node = attrs.field(factory=_Node)
    _methods: list[Methods] = attrs.field(factory=list)

    def add(self, segments: Sequence[PatternSegment], methods: Methods) -> int:
        """Insert the next route; returns its index."""
        index = len(self._methods)
        self._methods.append(methods)
        node = self._root
        for segment in segments:
            if segment.kind is Segment.REST:
                node.rest.append(index)
                return index
            if segment.kind is Segment.LITERAL:
                node = node.literal.setdefault(segment.text, _Node())
            else:
                if node.wild is None:
                    node.wild = _Node()
                node = node.wild
        node.end.append(index)
        return index

    def methods(self, index: int) -> Methods:
        return self._methods[index]

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

    def _first_covering(self, entries: list[int], methods: Methods, best: int | None) -> int | None:
        for index in entries:
            if best is not None and index >= best:
                return best
            if _covers(self._methods[index], methods):
                return index
        return best
