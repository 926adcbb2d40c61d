"""Which routes and rules of a policy no test case exercised.

A route counts as exercised when some case's request matched it; a rule when it decided some
case (a deny that denied, an allow that allowed). A rule that was only evaluated to false has
not shown that it does its job: a deny that never denies could be deleted without a test
noticing, so it is listed.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from policyauth.compiler import Policy
from policyauth.diagnostics import Span
from policyauth.testing.run import CaseResult

__all__ = ["Coverage", "Uncovered", "coverage"]


@attrs.frozen
class Uncovered:
    """A route (`kind` "route") or rule ("rule") that no case exercised; `text` as written."""

    kind: str
    text: str
    span: Span

    def one_line(self) -> str:
        what = "no case matches it" if self.kind == "route" else "it decides no case"
        return f"{self.span.file}:{self.span.line}: {self.kind} `{self.text}`: {what}"


@attrs.frozen
class Coverage:
    """The coverage of one policy by every case run against it."""

    policy: str
    routes: int
    rules: int
    uncovered: tuple[Uncovered, ...]

    @property
    def complete(self) -> bool:
        return not self.uncovered

    def one_line(self) -> str:
        """`policies/api.policy: 4 of 4 routes, 6 of 7 rules exercised`."""
        routes = self.routes - sum(1 for u in self.uncovered if u.kind == "route")
        rules = self.rules - sum(1 for u in self.uncovered if u.kind == "rule")
        return (
            f"{self.policy}: {routes} of {self.routes} routes, "
            f"{rules} of {self.rules} rules exercised"
        )


def coverage(policy: Policy, results: Iterable[CaseResult]) -> Coverage:
    """What `results` (cases run against `policy`) left unexercised, in file order."""
    matched: set[Span] = set()
    decided: set[Span] = set()
    for result in results:
        decision = result.decision
        if decision is None:
            continue
        if decision.route is not None:
            matched.add(decision.route)
        if decision.rule is not None:
            decided.add(decision.rule)
    uncovered: list[Uncovered] = []
    rules = 0
    for route in policy.routes:
        if route.span not in matched:
            uncovered.append(Uncovered("route", route.text, route.span))
        for rule in route.rules:
            rules += 1
            if rule.span not in decided:
                uncovered.append(Uncovered("rule", rule.text, rule.span))
    uncovered.sort(key=lambda u: (u.span.line, u.span.column))
    return Coverage(policy.file, len(policy.routes), rules, tuple(uncovered))
