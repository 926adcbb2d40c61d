"""The policy as the parser read it: frozen values, one class per construct, spans on every node.

This is the bottom of the pipeline; nothing here knows about Lark, HTTP or identity providers.
Spans are excluded from equality so that two layouts of the same policy compare equal, which is
what the formatter's self-check (`parse(fmt(x)) == parse(x)`) needs.
"""

from __future__ import annotations

import enum
from typing import TypeAlias

import attrs

from policyauth.diagnostics import Span


def _span() -> Span:
    return attrs.field(eq=False, repr=False)  # type: ignore[no-any-return]


# --- names and values ---------------------------------------------------------------------------


@attrs.frozen
class Name:
    """An identifier as written, with its place (for `duplicate name` and `unknown name` errors)."""

    text: str
    span: Span = _span()


@attrs.frozen
class StringValue:
    value: str
    span: Span = _span()


@attrs.frozen
class NumberValue:
    value: int | float
    text: str
    span: Span = _span()


@attrs.frozen
class BoolValue:
    value: bool
    span: Span = _span()


@attrs.frozen
class DurationValue:
    """A duration literal such as `5m`; `milliseconds` is exact, `text` is what was written."""

    milliseconds: int
    text: str
    span: Span = _span()


@attrs.frozen
class SizeValue:
    """A size literal such as `64MB` (powers of 1024); `bytes` is exact, `text` as written."""

    bytes: int
    text: str
    span: Span = _span()


@attrs.frozen
class EnvValue:
    """`env("NAME")` or `env("NAME", "default")`, resolved when the policy is loaded."""

    name: StringValue
    default: StringValue | None
    span: Span = _span()


@attrs.frozen
class JsonPathValue:
    """A claim path such as `$.realm_access.roles[*]`, kept as text until the compiler parses it."""

    text: str
    span: Span = _span()


@attrs.frozen
class ListValue:
    items: tuple[Value, ...]
    span: Span = _span()


@attrs.frozen
class MapValue:
    """`{ "Accept": "application/json" }`: string keys, in source order."""

    items: tuple[tuple[StringValue, Value], ...]
    span: Span = _span()


Value: TypeAlias = (
    StringValue
    | NumberValue
    | BoolValue
    | DurationValue
    | SizeValue
    | EnvValue
    | JsonPathValue
    | ListValue
    | MapValue
)


# --- expressions --------------------------------------------------------------------------------


@attrs.frozen
class Literal:
    """A string, number or boolean operand."""

    value: str | int | float | bool
    span: Span = _span()


@attrs.frozen
class ListLiteral:
    items: tuple[Literal, ...]
    span: Span = _span()


@attrs.frozen
class ClaimRef:
    """A claim by name (`groups`), declared by a provider or tokens block of the route."""

    name: str
    span: Span = _span()


class Builtin(enum.Enum):
    """The request facts an expression can read besides claims."""

    PROVIDER = "provider"
    METHOD = "method"
    PATH = "path"


@attrs.frozen
class BuiltinRef:
    builtin: Builtin
    span: Span = _span()


@attrs.frozen
class ParamRef:
    """`param.NAME`: the path segment captured by `{NAME}` in the route pattern."""

    name: str
    span: Span = _span()


@attrs.frozen
class JsonPathRef:
    """A JSONPath into the userinfo response; only valid inside a provider's `success`."""

    text: str
    span: Span = _span()


class CompareOp(enum.Enum):
    EQ = "=="
    NE = "!="
    IN = "in"
    NOT_IN = "not in"
    STARTSWITH = "startswith"
    ENDSWITH = "endswith"


@attrs.frozen
class Compare:
    op: CompareOp
    left: Operand
    right: Operand
    span: Span = _span()


@attrs.frozen
class Matches:
    """`subject matches /re/`: a full match of the whole value, run by a linear-time engine."""

    subject: Operand
    pattern: str
    span: Span = _span()
    pattern_span: Span = _span()


@attrs.frozen
class Not:
    operand: Expr
    span: Span = _span()


class BoolOp(enum.Enum):
    AND = "and"
    OR = "or"


@attrs.frozen
class Logical:
    """`a and b and c` (or `or`): operands kept flat, in source order."""

    op: BoolOp
    operands: tuple[Expr, ...]
    span: Span = _span()


@attrs.frozen
class Truth:
    """A bare operand used as a condition (`allow if verified`): it must be the boolean `true`."""

    operand: Operand
    span: Span = _span()


@attrs.frozen
class Has:
    """`has NAME`: whether the caller has the claim (Cedar's `principal has attr`).

    True or false, never an error: the presence test is how a rule tells "no groups" (`[]`)
    from "groups not sent" before reading the claim. The checker requires a claim operand.
    """

    operand: Operand
    span: Span = _span()


Operand: TypeAlias = Literal | ListLiteral | ClaimRef | BuiltinRef | ParamRef | JsonPathRef
Expr: TypeAlias = Compare | Matches | Not | Logical | Truth | Has


# --- declarations -------------------------------------------------------------------------------


@attrs.frozen
class Setting:
    """`key = value` inside a block."""

    key: Name
    value: Value
    span: Span = _span()


@attrs.frozen
class ClaimDecl:
    """`name = $path` inside a provider block: declares claim `name`."""

    name: Name
    path: JsonPathValue
    span: Span = _span()


@attrs.frozen
class SuccessDecl:
    """`success = EXPR`: what a successful userinfo response looks like (Slack's `$.ok`)."""

    condition: Expr
    span: Span = _span()


ProviderEntry: TypeAlias = Setting | ClaimDecl | SuccessDecl


@attrs.frozen
class SettingsDecl:
    entries: tuple[Setting, ...]
    span: Span = _span()


@attrs.frozen
class ProviderDecl:
    name: Name
    entries: tuple[ProviderEntry, ...]
    span: Span = _span()


@attrs.frozen
class TokensDecl:
    name: Name
    entries: tuple[Setting, ...]
    span: Span = _span()


class Segment(enum.Enum):
    """The kinds of path pattern segment."""

    LITERAL = "literal"
    STAR = "*"
    PARAM = "{}"
    REST = "**"


@attrs.frozen
class PatternSegment:
    kind: Segment
    text: str  # the literal text, or the parameter name; '' for `*` and `**`


@attrs.frozen
class PathPattern:
    text: str
    segments: tuple[PatternSegment, ...]
    span: Span = _span()


class RuleKind(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"


@attrs.frozen
class Rule:
    kind: RuleKind
    condition: Expr | None  # None: a bare `allow`
    span: Span = _span()
    # `allow "readers" if ...`: the name tests and `explain` use, which outlives line numbers.
    label: StringValue | None = None


@attrs.frozen
class Public:
    span: Span = _span()


@attrs.frozen
class Auth:
    authenticators: tuple[Name, ...]
    rules: tuple[Rule, ...]
    span: Span = _span()


@attrs.frozen
class RouteDecl:
    methods: tuple[Name, ...]  # empty tuple: `*`, every method
    pattern: PathPattern
    body: Public | Auth
    span: Span = _span()


Declaration: TypeAlias = SettingsDecl | ProviderDecl | TokensDecl | RouteDecl


@attrs.frozen
class Comment:
    """A `#` comment; kept so that the formatter can put it back where it belongs."""

    text: str
    span: Span = _span()


@attrs.frozen
class Policy:
    file: str = attrs.field(eq=False)
    declarations: tuple[Declaration, ...]
    comments: tuple[Comment, ...] = ()
