"""The parser walks Lark's LALR table itself and builds the AST as it reduces (issue 13).

Lark's own parser of the same grammar stays the reference: both must accept exactly the same
texts (a text the fast loop rejects is handed to Lark, whose exception becomes the syntax
diagnostic), and nodes must keep the positions Lark's tree builder gave them, including
the rule that a node starts at the first token of what it was reduced from (`(` for a
parenthesised operand). Diagnostics themselves are pinned by the golden tests.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import attrs
import pytest

from policyauth.diagnostics import PolicyError, Span
from policyauth.language import ast
from policyauth.language.parser import (
    _MAX_DEPTH,
    _Builder,
    _Collector,
    _parser,
    _Rejected,
    _tables,
    _TooDeep,
    parse,
)

ROOT = Path(__file__).resolve().parents[2]
CORPUS = sorted(
    p for p in ROOT.glob("**/*.policy") if ".venv" not in p.parts and "node_modules" not in p.parts
)


def where(span: Span) -> tuple[int, int, int, int]:
    return (span.line, span.column, span.end_line, span.end_column)


def fast_accepts(text: str) -> bool:
    """Whether the table-walking loop reads `text` through to the end (shape problems such as
    a lower-case method are not syntax errors and do not count)."""
    try:
        _tables().run(text, _Builder(_Collector("t.policy", text)))
    except (_Rejected, _TooDeep):
        return False
    return True


def lark_accepts(text: str) -> bool:
    error: Exception | None = None
    try:
        _parser().parse(text)
    except Exception as exc:  # Lark's UnexpectedInput; this module does not import Lark
        error = exc
    if error is None:
        return True
    assert type(error).__name__.startswith("Unexpected"), error
    return False


def mutations(text: str, count: int, seed: int) -> list[str]:
    """`count` variants of `text` with one character deleted, doubled or replaced by a
    character that matters to the grammar."""
    rng = random.Random(seed)
    alphabet = ['"', "{", "}", "(", ")", "[", "]", ",", "=", "/", "$", "#", "\n", " ", "a", "1"]
    out = []
    for _ in range(count):
        i = rng.randrange(len(text) + 1)
        kind = rng.randrange(3)
        if kind == 0:
            out.append(text[:i] + text[i + 1 :])
        elif kind == 1:
            out.append(text[:i] + text[i : i + 1] * 2 + text[i + 1 :])
        else:
            out.append(text[:i] + rng.choice(alphabet) + text[i + 1 :])
    return out


def test_the_corpus_is_there() -> None:
    assert len(CORPUS) >= 20


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: str(p.relative_to(ROOT)))
def test_accepts_exactly_what_lark_accepts(path: Path) -> None:
    text = path.read_text(encoding="utf-8", errors="replace")
    for variant in [text, *mutations(text, 40, seed=len(text))]:
        assert fast_accepts(variant) == lark_accepts(variant), variant


def test_positions_follow_lark_tree_builder() -> None:
    text = (
        "route GET /a/{id} {  # the route\n"
        "  auth corp\n"
        '  allow "x" if (username == "a" or "b" in groups) and not has email\n'
        "}\n"
    )
    policy = parse(text, "t.policy")
    [route] = policy.declarations
    assert isinstance(route, ast.RouteDecl)
    assert where(route.span) == (1, 1, 4, 2)
    assert where(route.pattern.span) == (1, 11, 1, 18)
    assert isinstance(route.body, ast.Auth)
    [rule] = route.body.rules
    assert where(rule.span) == (3, 3, 3, 68)
    assert rule.label is not None
    assert where(rule.label.span) == (3, 9, 3, 12)
    both = rule.condition
    assert isinstance(both, ast.Logical)
    assert both.op is ast.BoolOp.AND
    # The `and` starts at the `(` of its first operand, which itself starts inside it
    # (values checked against the Lark tree builder with propagate_positions).
    assert where(both.span) == (3, 16, 3, 68)
    either, negated = both.operands
    assert isinstance(either, ast.Logical)
    assert either.op is ast.BoolOp.OR
    assert where(either.span) == (3, 17, 3, 49)
    assert isinstance(negated, ast.Not)
    assert where(negated.span) == (3, 55, 3, 68)
    [comment] = policy.comments
    assert (comment.text, where(comment.span)) == ("# the route", (1, 22, 1, 33))


def test_positions_count_lines_across_blanks_and_comments() -> None:
    text = '\n\n# one\r\n  # two\n\ttokens t {\n\n   store = "a\\nb"  }'
    policy = parse(text, "t.policy")
    [tokens] = policy.declarations
    assert isinstance(tokens, ast.TokensDecl)
    assert where(tokens.span) == (5, 2, 7, 21)
    [setting] = tokens.entries
    assert where(setting.span) == (7, 4, 7, 18)
    assert isinstance(setting.value, ast.StringValue)
    assert setting.value.value == "a\nb"
    assert [(c.text, where(c.span)) for c in policy.comments] == [
        ("# one", (3, 1, 3, 6)),
        ("# two", (4, 3, 4, 8)),
    ]


def test_plain_segments_and_checked_segments_read_alike() -> None:
    policy = parse("route GET /a.b/.../x~y-z_1/{id}/* { public }", "t.policy")
    [route] = policy.declarations
    assert isinstance(route, ast.RouteDecl)
    assert [(s.kind, s.text) for s in route.pattern.segments] == [
        (ast.Segment.LITERAL, "a.b"),
        (ast.Segment.LITERAL, "..."),
        (ast.Segment.LITERAL, "x~y-z_1"),
        (ast.Segment.PARAM, "id"),
        (ast.Segment.STAR, ""),
    ]
    with pytest.raises(PolicyError) as caught:
        parse("route GET /a/../b { public }", "t.policy")
    assert [(d.code, d.message) for d in caught.value.diagnostics] == [
        ("PA005", "`..` segment in the pattern")
    ]


def test_nesting_past_the_limit_is_pa009_and_below_it_loads() -> None:
    shallow = "(" * 100 + '"a" in groups' + ")" * 100
    policy = parse(f"route GET /a {{ auth corp allow if {shallow} }}", "t.policy")
    [route] = policy.declarations
    assert isinstance(route, ast.RouteDecl)
    assert isinstance(route.body, ast.Auth)
    assert isinstance(route.body.rules[0].condition, ast.Compare)
    deep = "(" * (_MAX_DEPTH + 10) + '"a" in groups' + ")" * (_MAX_DEPTH + 10)
    with pytest.raises(PolicyError) as caught:
        parse(f"route GET /a {{ auth corp allow if {deep} }}", "t.policy")
    assert [(d.code, d.line, d.column, d.message) for d in caught.value.diagnostics] == [
        ("PA009", 1, 1, "the policy is nested too deeply to read")
    ]


def test_a_rejected_text_gets_lark_diagnostic_and_no_shape_problems() -> None:
    # `get` is a shape problem (PA004) the builder records before the syntax error is met;
    # a syntax error reports only itself, as when Lark parsed first and built afterwards.
    with pytest.raises(PolicyError) as caught:
        parse("route get /a { public }\nroute GET /b { public", "t.policy")
    assert [(d.code, d.line) for d in caught.value.diagnostics] == [("PA003", 2)]


def test_a_syntax_error_after_deep_nesting_is_reported_rather_than_pa009() -> None:
    deep = "(" * (_MAX_DEPTH + 100) + "x" + ")" * (_MAX_DEPTH + 100)
    with pytest.raises(PolicyError) as caught:
        parse(f"route GET /a {{ auth corp allow if {deep} }} }}", "t.policy")
    [diagnostic] = caught.value.diagnostics
    assert (diagnostic.code, diagnostic.line, diagnostic.column) == ("PA002", 1, 1239)
    assert diagnostic.message.startswith("unexpected `}`; expected one of `provider`, `route`")


def _nodes(value: object) -> list[Any]:
    """Every attrs instance in a parsed tree (nodes, spans, pattern segments)."""
    found: list[Any] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, tuple | list):
            stack.extend(item)
        elif attrs.has(type(item)):
            found.append(item)
            stack.extend(getattr(item, f.name) for f in attrs.fields(type(item)))
    return found


def test_nodes_built_without_attrs_init_are_what_attrs_init_builds() -> None:
    """The parser sets the slots of its nodes and spans directly (`_trusted`); each must be
    the instance the class's own `__init__` makes from the same fields: equal with its span,
    same hash and repr, and still frozen."""
    policy = parse(
        'settings {\n  realm = "r"\n  timeout = 3s\n  cache_size = 64MB\n}\n'
        'provider corp {\n  userinfo = env("U", "https://sso.example.com/u")\n'
        '  groups = $.roles[*]\n  success = $.ok == true\n  headers = {"A": "b"}\n'
        '  scopes = ["a", 1]\n}\n'
        'tokens t {\n  store = "t.tokens"\n}\n'
        "route GET, PUT /a/{id}/*/** {  # c\n  auth corp, t\n"
        '  deny "d" if not (has email or "x" in groups) and param.id matches /[a-z]+/\n'
        '  allow if provider == "corp" and method != "PUT" and path startswith "/a"\n'
        "  allow if [1, 2.5, false] == groups\n}\n"
        "route * /b {\n  public\n}\n",
        "t.policy",
    )
    nodes = _nodes(policy)
    kinds = {type(n) for n in nodes}
    assert {Span, ast.Name, ast.Compare, ast.Matches, ast.Has, ast.EnvValue, ast.MapValue} <= kinds
    for node in nodes:
        rebuilt = attrs.evolve(node)  # through the class's own __init__
        assert type(rebuilt) is type(node)
        assert rebuilt == node
        assert attrs.asdict(rebuilt, recurse=False) == attrs.asdict(node, recurse=False)
        assert hash(rebuilt) == hash(node)
        assert repr(rebuilt) == repr(node)
        field = attrs.fields(type(node))[0].name
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            setattr(node, field, None)
