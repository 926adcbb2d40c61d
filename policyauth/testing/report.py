"""Test results as text: one located line per failed case with the rule trace under it, and a
summary line, in the shape pytest made familiar.

The first line of a failure is complete on its own (`file:line: case NAME: expected ..., got
...`) so that editors and CI logs can jump to the case; the indented lines under it are the
decision as the engine saw it, which is usually enough to tell a wrong policy from a wrong case.
"""

from __future__ import annotations

from collections.abc import Sequence

from policyauth.decision import Decision
from policyauth.diagnostics import Span
from policyauth.testing.run import CaseResult, label_text, rule_text

__all__ = ["render_failure", "shown", "summary"]

# Keys added in the parentheses after the status and reason, in this order, when they differ.
_DETAIL_KEYS = ("route_line", "username", "provider", "headers", "asked")


def summary(results: Sequence[CaseResult]) -> str:
    """`12 passed, 1 failed`: both counts always, so the line reads the same to people and CI."""
    failed = sum(1 for result in results if not result.passed)
    return f"{len(results) - failed} passed, {failed} failed"


def render_failure(result: CaseResult) -> str:
    """A failed case: the located one-line verdict, then the decision and its rule trace."""
    case = result.case
    head = f"{result.file.name}:{case.line}: case `{shown(case.name)}`: "
    expect = case.expect
    decision = result.decision
    if decision is None:
        return head + (result.error or "the case could not be run")
    # The rule always (it is always checked), then only the other keys that differ, so that
    # the line stays short and shows what to look at.
    if expect.states("rule"):  # named by its label: the label is what the case checks
        expected = [label_text(expect.rule)]
        actual = [label_text(decision.rule_label, decision.rule)]
    else:
        expected = [rule_text(expect.rule_line)]
        actual = [rule_text(_line(decision.rule))]
    details = {mismatch.key: mismatch for mismatch in result.mismatches}
    for key in ("rule_line", *_DETAIL_KEYS) if expect.states("rule") else _DETAIL_KEYS:
        mismatch = details.get(key)
        if mismatch is not None:
            expected.append(shown(mismatch.expected))
            actual.append(shown(mismatch.actual))
    verdict = (
        f"expected {expect.status} {expect.reason.value} ({', '.join(expected)}), "
        f"got {decision.status} {decision.reason.value} ({', '.join(actual)})"
    )
    return "\n".join([head + verdict, *_trace(decision, result)])


def _trace(decision: Decision, result: CaseResult) -> list[str]:
    request = result.case.request
    lines = [f"  request:   {shown(request.method)} {shown(request.target)}"]
    if decision.route is None:
        lines.append("  route:     none")
    else:
        lines.append(f"  route:     {decision.route_text}  ({_at(decision.route)})")
    if decision.trace:
        lines.append("  rules:")
    for trace in decision.trace:
        detail = f": {shown(trace.detail)}" if trace.detail else ""
        lines.append(f"    {trace.outcome.value:<8}{trace.text}  ({_at(trace.span)}){detail}")
    principal = decision.principal
    if principal is not None:
        groups = ", ".join(shown(group) for group in principal.groups) or "no groups"
        who = f"{shown(principal.username)} via {principal.provider}"
        lines.append(f"  principal: {who} ({groups})")
    lines.append(
        f"  decision:  {decision.status} {decision.reason.value}: {shown(decision.message)}"
    )
    if result.case.note:
        lines.append(f"  note:      {shown(result.case.note)}")
    return lines


def _line(span: Span | None) -> int | None:
    return None if span is None else span.line


def _at(span: Span) -> str:
    return f"{span.file}:{span.line}"


def shown(text: str) -> str:
    """`text` with control characters escaped: names and claims come from files, not from us."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
