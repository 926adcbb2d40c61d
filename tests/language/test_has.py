"""`has NAME`, the presence test (issue 9, item 7), from the parser to the decision, and the
one `username` that the principal and the rules share."""

from __future__ import annotations

from typing import Any

import pytest

import policyauth
from policyauth.compiler.expressions import compile_expr
from policyauth.compiler.plan import Facts
from policyauth.diagnostics import Span
from policyauth.language import ast
from policyauth.language.claimpath import MISSING
from policyauth.language.parser import parse

PROVIDER = """\
provider corp {
  userinfo = "https://sso.example.com/userinfo"
  username = $.sub
  groups   = $.groups[*]
  team     = $.team
}

tokens bots {
  store = "bots.tokens"
}

"""  # eleven lines: a route written after it starts on line 12


HERE = Span("t.policy", 1, 1, 1, 1)


def route(rule: str, auth: str = "corp, bots") -> str:
    """A policy whose route starts on line 12 and whose rule is on line 14."""
    return PROVIDER + f"route GET /a/{{id}} {{\n  auth {auth}\n  {rule}\n}}\n"


def findings(text: str) -> list[tuple[str, int, int, str]]:
    _, diagnostics = policyauth.analyze(text, "t.policy", env={})
    return [(d.code, d.line, d.column, d.message) for d in diagnostics]


def test_has_parses_to_a_presence_test_of_a_claim() -> None:
    policy = parse(route("allow if not has groups"))
    rule = policy.declarations[-1].body.rules[0]  # type: ignore[union-attr]
    # Spans take no part in equality: any span stands for "wherever it was written".
    assert rule.condition == ast.Not(ast.Has(ast.ClaimRef("groups", HERE), HERE), HERE)


@pytest.mark.parametrize(
    "rule",
    [
        "allow if has groups",  # a list claim
        "allow if has team",  # declared by corp only: false for tokens, never an error
        'allow if has username and username == "ann"',
        'deny  if not has groups or "suspended" in groups',
    ],
)
def test_has_on_a_declared_claim_is_clean(rule: str) -> None:
    text = route(rule) if rule.startswith("allow") else route(rule + "\n  allow")
    assert findings(text) == []


@pytest.mark.parametrize(
    ("operand", "column", "shown"),
    [
        ("provider", 16, "`provider`"),
        ("method", 16, "`method`"),
        ("path", 16, "`path`"),
        ("param.id", 16, "`param.id`"),
        ('"groups"', 16, '`"groups"`'),
        ("true", 16, "`true`"),
        ('["a"]', 16, '`["a"]`'),
    ],
)
def test_pa127_has_needs_a_claim(operand: str, column: int, shown: str) -> None:
    assert findings(route(f"allow if has {operand}")) == [
        (
            "PA127",
            14,
            column,
            f"`has` tests whether the caller has a claim; {shown} is not a claim",
        )
    ]


def test_has_an_undeclared_claim_is_pa111() -> None:
    assert findings(route("allow if has grups")) == [
        ("PA111", 14, 16, "claim `grups` is not declared by `corp`, `bots`")
    ]


def test_has_in_success_is_pa123() -> None:
    text = (
        'provider corp {\n  userinfo = "https://sso.example.com/userinfo"\n'
        "  username = $.sub\n  success  = has ok\n}\n"
    )
    assert [code for code, *_ in findings(text)] == ["PA123"]


def _refs(operand: ast.Operand) -> Any:
    assert isinstance(operand, ast.ClaimRef)
    name = operand.name
    return lambda facts: facts.claims.get(name, MISSING)


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({"groups": []}, True),
        ({"groups": ["a"]}, True),
        ({"groups": ""}, True),
        ({"groups": False}, True),
        ({"groups": 0}, True),
        ({}, False),
        ({"groups": None}, False),  # a static document may hold a null: absent, as in a path
    ],
)
def test_has_is_true_or_false_and_never_an_error(claims: dict[str, Any], expected: bool) -> None:
    test = compile_expr(ast.Has(ast.ClaimRef("groups", HERE), HERE), _refs)
    assert test(Facts(claims, "corp", "GET", "/a", {})) is expected
    negated = compile_expr(ast.Not(ast.Has(ast.ClaimRef("groups", HERE), HERE), HERE), _refs)
    assert negated(Facts(claims, "corp", "GET", "/a", {})) is not expected


def test_a_numeric_literal_compared_with_username_is_a_type_error() -> None:
    """Rules see the username as the string the principal has, so `== 12345` never holds."""
    assert findings(route("allow if username == 12345")) == [
        (
            "PA112",
            14,
            12,
            "`username` is a string and `12345` is a number; they are never equal",
        )
    ]
