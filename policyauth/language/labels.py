"""Rule labels (`allow "readers" if ...`): the names policy tests and `explain` give a rule.

A label exists so that a test can point at a rule in a way that survives `policyauth fmt`
moving it to another line; that only works if the label picks out exactly one rule of its route,
and if it can be written in a test file and shown on one line.
"""

from __future__ import annotations

from collections.abc import Iterator

from policyauth.diagnostics import Span
from policyauth.language import ast

Finding = tuple[Span, str, str, str]  # span, code, message, help


def label_problems(route: ast.RouteDecl) -> Iterator[Finding]:
    """PA143 a label used twice in one route; PA144 a label that is empty or not one line."""
    if not isinstance(route.body, ast.Auth):
        return
    seen: dict[str, ast.StringValue] = {}
    for rule in route.body.rules:
        label = rule.label
        if label is None:
            continue
        if not label.value.strip() or not label.value.isprintable():
            yield (
                label.span,
                "PA144",
                "a rule label must be a non-empty line of printable text",
                'name the rule in a few words: `allow "readers" if ...`',
            )
            continue
        first = seen.get(label.value)
        if first is not None:
            yield (
                label.span,
                "PA143",
                f'the label "{label.value}" is already used at line {first.span.line} '
                "of this route",
                "a test names a rule by its label, so each label names one rule of its route",
            )
        else:
            seen[label.value] = label
