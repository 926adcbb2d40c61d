"""Rule expressions to Python closures, built once at load time.

Each expression becomes a function of a facts object (claims, provider, method, path, params)
that returns True or False, or raises RuleError when the rule cannot be decided: a claim is
missing, or a value has a type the operator does not take. The evaluator turns RuleError into
"this allow does not allow" or "this deny denies", so every failure closes.

Values are compared with JSON's types and no conversions: `1 == "1"` is an error (a value of
the wrong type), `in` tests list membership with the same strictness (a list item of another
type is simply not a member) and never searches inside a string. `and`, `or` and `not` follow
three-valued logic, so an outcome does not depend on the order of the operands.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from policyauth.language import ast
from policyauth.language.claimpath import MISSING
from policyauth.language.regex import compile_regex

Getter = Callable[[Any], Any]
Test = Callable[[Any], bool]


class RuleError(Exception):
    """A rule could not be decided; the message says why, in policy terms, without values."""


class Refs(Protocol):
    """How an expression reads what is not a literal: claims and request facts for rules, the
    userinfo document for a provider's `success`."""

    def __call__(self, operand: ast.Operand) -> Getter: ...


def compile_expr(expr: ast.Expr, refs: Refs) -> Test:
    """A closure that decides `expr` for one set of facts."""
    if isinstance(expr, ast.Logical):
        parts = tuple([compile_expr(e, refs) for e in expr.operands])
        return _all(parts) if expr.op is ast.BoolOp.AND else _any(parts)
    if isinstance(expr, ast.Not):
        inner = compile_expr(expr.operand, refs)
        return lambda facts: not inner(facts)
    if isinstance(expr, ast.Truth):
        return _truth(operand_getter(expr.operand, refs), describe(expr.operand))
    if isinstance(expr, ast.Has):
        # `null` counts as absent, as it does when a claim path selects it.
        get = operand_getter(expr.operand, refs)
        return lambda facts: get(facts) not in (MISSING, None)
    if isinstance(expr, ast.Matches):
        return _matches(operand_getter(expr.subject, refs), expr.pattern, describe(expr.subject))
    return _compare(expr, refs)


def _all(parts: tuple[Test, ...]) -> Test:
    """`and` in three-valued logic: false if any part is false, whichever order they are in;
    else an error if any part errors; else true. A rule's outcome never depends on the order of
    its operands."""

    def test(facts: Any) -> bool:
        error: RuleError | None = None
        for part in parts:
            try:
                if not part(facts):
                    return False
            except RuleError as exc:
                error = error or exc
        if error is not None:
            raise error
        return True

    return test


def _any(parts: tuple[Test, ...]) -> Test:
    """`or` in three-valued logic: true if any part is true; else an error if any part errors."""

    def test(facts: Any) -> bool:
        error: RuleError | None = None
        for part in parts:
            try:
                if part(facts):
                    return True
            except RuleError as exc:
                error = error or exc
        if error is not None:
            raise error
        return False

    return test


def operand_getter(operand: ast.Operand, refs: Refs) -> Getter:
    if isinstance(operand, ast.Literal):
        value = operand.value
        return lambda facts: value
    if isinstance(operand, ast.ListLiteral):
        values = [item.value for item in operand.items]
        return lambda facts: values
    return refs(operand)


def describe(operand: ast.Operand) -> str:
    """How an operand is named in RuleError messages."""
    if isinstance(operand, ast.ClaimRef):
        return f"claim `{operand.name}`"
    if isinstance(operand, ast.ParamRef):
        return f"`param.{operand.name}`"
    if isinstance(operand, ast.BuiltinRef):
        return f"`{operand.builtin.value}`"
    if isinstance(operand, ast.JsonPathRef):
        return f"`{operand.text}`"
    return "a literal"


def json_type(value: Any) -> str:
    if value is MISSING:
        return "missing"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "null"


def strict_equal(left: Any, right: Any) -> bool:
    """Equality without JSON type conversions (Python says `True == 1`; JSON does not)."""
    kind = json_type(left)
    return kind == json_type(right) and kind in ("string", "number", "boolean") and left == right


def _scalar(value: Any, name: str) -> Any:
    kind = json_type(value)
    if kind not in ("string", "number", "boolean"):
        raise RuleError(
            f"{name} is a {kind}, not a single value" if kind != "missing" else f"{name} is missing"
        )
    return value


def _string(value: Any, name: str) -> str:
    if not isinstance(value, str):
        kind = json_type(value)
        raise RuleError(
            f"{name} is missing" if kind == "missing" else f"{name} is a {kind}, not a string"
        )
    return value


def _truth(get: Getter, name: str) -> Test:
    def test(facts: Any) -> bool:
        value = get(facts)
        if isinstance(value, bool):
            return value
        raise RuleError(
            f"{name} is missing"
            if value is MISSING
            else f"{name} is a {json_type(value)}, not true or false"
        )

    return test


def _matches(get: Getter, pattern: str, name: str) -> Test:
    full_match = compile_regex(pattern)

    def test(facts: Any) -> bool:
        value = _string(get(facts), name)
        try:
            return full_match(value)
        except UnicodeEncodeError:  # an unpaired surrogate (JSON `"\ud800"`): RE2 takes UTF-8
            raise RuleError(f"{name} is not valid unicode text") from None

    return test


def _compare(expr: ast.Compare, refs: Refs) -> Test:
    left = operand_getter(expr.left, refs)
    right = operand_getter(expr.right, refs)
    left_name, right_name = describe(expr.left), describe(expr.right)
    op = expr.op
    if op in (ast.CompareOp.EQ, ast.CompareOp.NE):
        negate = op is ast.CompareOp.NE

        def equal(facts: Any) -> bool:
            a = left(facts)
            b = right(facts)
            if type(a) is str and type(b) is str:  # the common case, without type dispatch
                return (a == b) != negate
            a = _scalar(a, left_name)
            b = _scalar(b, right_name)
            if json_type(a) != json_type(b):
                # `level == 0` against "0": a value of the wrong type is an error, not "not
                # equal", so that a deny with `==` or `!=` holds rather than silently passes.
                raise RuleError(
                    f"{left_name} is a {json_type(a)} and {right_name} is a {json_type(b)}"
                )
            return bool(a == b) != negate

        return equal
    if op in (ast.CompareOp.IN, ast.CompareOp.NOT_IN):
        negate = op is ast.CompareOp.NOT_IN

        def member(facts: Any) -> bool:
            item = left(facts)
            container = right(facts)
            if type(item) is str and type(container) is list:
                # Only a string equals a string, so plain membership is the strict one here.
                return (item in container) != negate
            item = _scalar(item, left_name)
            if not isinstance(container, list | tuple):
                kind = json_type(container)
                raise RuleError(
                    f"{right_name} is missing"
                    if kind == "missing"
                    else f"{right_name} is a {kind}, not a list"
                )
            return any(strict_equal(item, candidate) for candidate in container) != negate

        return member
    if op is ast.CompareOp.STARTSWITH:
        return lambda facts: _string(left(facts), left_name).startswith(
            _string(right(facts), right_name)
        )
    return lambda facts: _string(left(facts), left_name).endswith(_string(right(facts), right_name))
