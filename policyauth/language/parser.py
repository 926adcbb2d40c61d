"""Policy text to AST. The only module that imports Lark.

The grammar (grammar/policy.lark, shipped in the wheel as `policyauth/grammar/policy.lark`) is
built once per process into Lark's LALR parser. Its parse table and contextual lexers are then
walked by `_Tables.run`, one loop that builds each AST node as its rule is reduced: no parse
tree, no Lark Token per token, so a load costs a fraction of Lark's own parse (issue 13). Lark
parses only a text that loop rejected, so that syntax errors are described exactly as before.
Lark's exceptions never leave this module: they become diagnostics that name what was expected
in the words a policy author uses (`}`, `a string`), never Lark's terminal names.

Shapes the grammar accepts but the language does not (a lower-case method, `**` in the middle
of a pattern, a bad escape in a string) are collected as diagnostics while the tree is built,
so one run reports all of them.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import attrs
from lark import Lark
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from policyauth.diagnostics import Diagnostic, PolicyError, Span, line_of
from policyauth.language import ast
from policyauth.language.durations import parse_duration
from policyauth.language.sizes import looks_like_size, parse_size

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Characters a literal pattern segment may not hold: they are either pattern syntax or can never
# appear in a canonical request path (the canonicalizer rejects them with 400).
_FORBIDDEN_IN_SEGMENT = set("%;\\?#*{}") | {chr(c) for c in range(0x20)} | {"\x7f"}
# A segment that is plain text and passes every check of `_Builder._segment` (no wildcard,
# parameter, dot segment or forbidden character): most segments, taken without those checks.
_PLAIN_SEGMENT = re.compile(r"(?!\.\.?$)[A-Za-z0-9_.~-]+")
_COMPARE_OPS = {op.value: op for op in ast.CompareOp}
# `{name}` written inside a segment instead of as one (`/x{id}`, or `/x{public}` for `/x {public}`).
_GLUED_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

# What people call the terminals of the grammar, for "expected ..." messages.
_TERMINAL_NAMES = {
    "NAME": "a name",
    "PARAM": "`param.NAME`",
    "STRING": "a string",
    "NUMBER": "a number",
    "DURATION": "a duration",
    "SIZE": "a size",
    "PATH": "a path pattern `/...`",
    "REGEX": "a regex `/.../`",
    "JSONPATH": "a claim path `$...`",
    "STAR": "`*`",
    "$END": "the end of the file",
}
_HIDDEN_TERMINALS = {"BAD_DURATION"}


def _grammar_text() -> str:
    """The grammar shipped in the package; in a source checkout, the top-level grammar/ file."""
    resource = importlib.resources.files("policyauth").joinpath("grammar/policy.lark")
    if resource.is_file():
        return resource.read_text(encoding="utf-8")
    checkout = Path(__file__).resolve().parents[2] / "grammar" / "policy.lark"
    return checkout.read_text(encoding="utf-8")


def grammar_location() -> str:
    """Where the grammar in use was read from (for diagnostics of the installation itself)."""
    resource = importlib.resources.files("policyauth").joinpath("grammar/policy.lark")
    if resource.is_file():
        return str(resource)
    return str(Path(__file__).resolve().parents[2] / "grammar" / "policy.lark")


_T = TypeVar("_T", bound=attrs.AttrsInstance)


def _trusted(cls: type[_T]) -> Callable[..., _T]:
    """A constructor of the frozen attrs class `cls` that takes every field in order and sets
    the slots directly. attrs' own `__init__` of a frozen class goes through
    `object.__setattr__` by name, field by field; a load builds several hundred nodes and
    spans per ten routes, so that was a tenth of a parse (issue 13). Only for classes whose
    `__init__` would do nothing else (no validator, converter, default factory or
    `__attrs_post_init__`): the values the parser passes are already of their fields' types.
    The instance is the same as `cls(...)` makes (tests/language/test_fast_parser.py)."""
    fields = attrs.fields(cls)
    if (
        not attrs.has(cls)
        or "__attrs_post_init__" in vars(cls)
        or any(f.validator or f.converter or not f.init for f in fields)
    ):  # pragma: no cover - a class that gains one needs its own __init__
        raise AssertionError(f"{cls.__name__} needs its own __init__")
    new = object.__new__
    slots = vars(cls)
    sets = [slots[f.name].__set__ for f in fields]
    if len(sets) == 1:
        (a,) = sets

        def make1(x: Any) -> _T:
            o = new(cls)
            a(o, x)
            return o

        return make1
    if len(sets) == 2:
        a, b = sets

        def make2(x: Any, y: Any) -> _T:
            o = new(cls)
            a(o, x)
            b(o, y)
            return o

        return make2
    if len(sets) == 3:
        a, b, c = sets

        def make3(x: Any, y: Any, z: Any) -> _T:
            o = new(cls)
            a(o, x)
            b(o, y)
            c(o, z)
            return o

        return make3
    if len(sets) == 4:
        a, b, c, d = sets

        def make4(x: Any, y: Any, z: Any, w: Any) -> _T:
            o = new(cls)
            a(o, x)
            b(o, y)
            c(o, z)
            d(o, w)
            return o

        return make4
    if len(sets) == 5:
        a, b, c, d, e = sets

        def make5(x: Any, y: Any, z: Any, w: Any, v: Any) -> _T:
            o = new(cls)
            a(o, x)
            b(o, y)
            c(o, z)
            d(o, w)
            e(o, v)
            return o

        return make5
    raise AssertionError(f"{cls.__name__} has more fields than _trusted knows")  # pragma: no cover


_Span: Callable[[str, int, int, int, int], Span] = _trusted(Span)
# The AST nodes the builder makes, each through its own `_trusted` constructor.
_new_auth = _trusted(ast.Auth)
_new_bool_value = _trusted(ast.BoolValue)
_new_builtin_ref = _trusted(ast.BuiltinRef)
_new_claim_decl = _trusted(ast.ClaimDecl)
_new_claim_ref = _trusted(ast.ClaimRef)
_new_comment = _trusted(ast.Comment)
_new_compare = _trusted(ast.Compare)
_new_duration_value = _trusted(ast.DurationValue)
_new_env_value = _trusted(ast.EnvValue)
_new_has = _trusted(ast.Has)
_new_json_path_ref = _trusted(ast.JsonPathRef)
_new_json_path_value = _trusted(ast.JsonPathValue)
_new_list_literal = _trusted(ast.ListLiteral)
_new_list_value = _trusted(ast.ListValue)
_new_literal = _trusted(ast.Literal)
_new_logical = _trusted(ast.Logical)
_new_map_value = _trusted(ast.MapValue)
_new_matches = _trusted(ast.Matches)
_new_name = _trusted(ast.Name)
_new_not = _trusted(ast.Not)
_new_number_value = _trusted(ast.NumberValue)
_new_param_ref = _trusted(ast.ParamRef)
_new_path_pattern = _trusted(ast.PathPattern)
_new_pattern_segment = _trusted(ast.PatternSegment)
_new_policy = _trusted(ast.Policy)
_new_provider_decl = _trusted(ast.ProviderDecl)
_new_public = _trusted(ast.Public)
_new_route_decl = _trusted(ast.RouteDecl)
_new_rule = _trusted(ast.Rule)
_new_setting = _trusted(ast.Setting)
_new_settings_decl = _trusted(ast.SettingsDecl)
_new_size_value = _trusted(ast.SizeValue)
_new_string_value = _trusted(ast.StringValue)
_new_success_decl = _trusted(ast.SuccessDecl)
_new_tokens_decl = _trusted(ast.TokensDecl)
_new_truth = _trusted(ast.Truth)


class _Collector:
    """Shape problems seen while building the AST."""

    def __init__(self, file: str, source: str) -> None:
        self.file = file
        self.source = source
        self.problems: list[Diagnostic] = []

    def problem(self, span: Span, code: str, message: str, help: str | None = None) -> None:
        self.problems.append(Diagnostic.at(span, code, message, help=help, source=self.source))


@functools.cache
def _parser() -> Lark:
    """The LALR parser, built once per process. Its parse table and contextual lexer drive
    `_Tables` (every parse); Lark itself parses only a text `_Tables` rejected, to name the
    syntax error the way it always has."""
    return Lark(
        _grammar_text(),
        parser="lalr",
        lexer="contextual",
        maybe_placeholders=True,
    )


# A token as the parser hands it to the builders: its start and end (1-based line and column,
# the end exclusive, as Lark counts them), its text and its terminal name. A plain tuple: one
# is made for every token of the text, and a class would cost a call each.
_Tok = tuple[int, int, int, int, str, str]
# Where a subtree lies: (line, column, end_line, end_column), or None when it is empty; a
# token stands for its own position.
_Pos = tuple[int, int, int, int] | _Tok | None
# Nesting deeper than this (the parse stack of `(((...`, `[[[...`, `not not ...`) is PA009: the
# checker, the compiler and the formatter walk the tree recursively and would run out of stack.
_MAX_DEPTH = 500


class _Rejected(Exception):
    """The text is not in the language; Lark's own parse says where and why."""


class _TooDeep(Exception):
    """The parse stack grew past `_MAX_DEPTH`."""


# Aliased `?` rules whose builder, given one child, would return it: the parser passes the
# child on itself and skips the call (`(a)` and `a` alone are no `Logical`).
_LONE_CHILD_PASSES = frozenset({"or_expr", "and_expr"})

# What a reduction does with the values it pops (`_Rule.kind`).
_SPLICE, _PASS, _BUILD = 0, 1, 2
# How `_Tables.run` carries a reduction out (`_Rule.shape`). Most reductions of a policy are
# one of the first four, which change the top of the stack in place instead of popping and
# pushing it: a load reduces a rule about every other token (issue 13).
# _UNIT: one value in, the same value out, at the same position; only the state changes.
# _WRAP: one value in, a new list of it out (`_declaration: route_decl`, spliced later).
# _APPEND, _EXTEND: a list and (after a separator) one more value, or the items of another
#   list, out as that list, extended in place (`x*`, `x ("," x)*`).
# _GENERAL: anything else, through `_Rule.children`.
_UNIT, _WRAP, _APPEND, _EXTEND, _GENERAL = 0, 1, 2, 3, 4
# The action that is no reduction: take the token (`_Tables.actions`).
_SHIFT = 5


class _Rule:
    """How one grammar rule (after Lark's expansion of `*`, `?`, `[...]`) turns the values it
    reduces into its own value, the way Lark's tree builder shapes a tree with
    `maybe_placeholders` and `propagate_positions`: filtered-out tokens (`"{"`, keywords) are
    dropped, `_name` rules are spliced into their parent, `[x]` left out gives None, and a
    `?rule` with one child is that child."""

    __slots__ = (
        "build",
        "goto",
        "include",
        "kind",
        "name",
        "next",
        "pick",
        "plain",
        "shape",
        "size",
        "trailing_nones",
    )

    def __init__(self, rule: Any, choices: frozenset[str]) -> None:
        expansion = rule.expansion
        keep = rule.options.keep_all_tokens
        self.size = len(expansion)
        # Lark's names are its Tokens, whose __eq__ is slow: plain strings for dict keys.
        self.goto = str(rule.origin.name)
        self.name = str(rule.alias or rule.origin.name)
        empty = rule.options.empty_indices
        # Nones to insert before each symbol and after the last (Lark's ChildFilter).
        if empty:
            runs = "".join(str(int(b)) for b in empty).split("0")
            nones = [len(ones) for ones in runs]
        else:
            nones = [0] * (self.size + 1)
        include: list[tuple[int, bool, int]] = []
        pending = 0
        for i, symbol in enumerate(expansion):
            pending += nones[i]
            if keep or not (symbol.is_term and symbol.filter_out):
                splice = (
                    not symbol.is_term
                    and symbol.name.startswith("_")
                    and symbol.name not in choices
                )
                include.append((i, splice, pending))
                pending = 0
        self.include = tuple(include)
        self.trailing_nones = pending + nones[self.size]
        # The popped values are the children as they are.
        self.plain = self.trailing_nones == 0 and include == [
            (i, False, 0) for i in range(self.size)
        ]
        if self.goto in choices:
            self.kind = _PASS
        elif self.goto.startswith("_"):
            self.kind = _SPLICE
        elif rule.options.expand1 and (not rule.alias or self.name in _LONE_CHILD_PASSES):
            self.kind = _PASS
        else:
            self.kind = _BUILD
        self.shape = self._shape()
        # The two or three values the rule keeps of those it pops, when that is all it does
        # (`NAME "=" value`, `"route" methods PATH "{" body "}"`): taken without a call to
        # `children`.
        pick = [i for i, splice, nones in include if not splice and not nones]
        keeps = len(pick) == len(include) and not self.trailing_nones and not self.plain
        self.pick = tuple(pick) if keeps and len(pick) in (2, 3) else None
        self.build = _NODE_BUILDERS.get(self.name)
        # The state under the popped values -> the state after the reduction (filled in by
        # _Tables from the table's shifts on `goto`).
        self.next: dict[int, int] = {}
        lone = len(include) == 1 and self.trailing_nones == 0 and include[0][1:] == (False, 0)
        if self.build is None and self.kind != _SPLICE and not (self.kind == _PASS and lone):
            raise AssertionError(f"grammar rule without a builder: {self.name}")

    def _shape(self) -> int:
        """Which of the in-place reductions of `_Tables.run` this rule is, if any."""
        last = self.size - 1
        if self.trailing_nones:
            return _GENERAL
        if self.size == 1 and self.plain and self.kind == _PASS:
            return _UNIT
        if self.kind != _SPLICE:
            return _GENERAL
        if self.include == ((0, True, 0),):  # a list spliced into a list: that list
            return _UNIT
        if self.size == 1 and self.plain:
            return _WRAP
        if self.size > 1 and self.include == ((0, True, 0), (last, False, 0)):
            return _APPEND
        if self.size > 1 and self.include == ((0, True, 0), (last, True, 0)):
            return _EXTEND
        return _GENERAL

    def children(self, values: list[Any]) -> list[Any]:
        """The values the rule's node is built from, as Lark's ChildFilter passes them."""
        out: list[Any] = []
        for i, splice, nones in self.include:
            if nones:
                out += [None] * nones
            if splice:
                if out:
                    out += values[i]
                else:
                    # A spliced list belongs to the one stack slot it was popped from, so it
                    # is extended in place: `x*` is left-recursive, and copying the list at
                    # every step would make a long policy quadratic (Lark does the same).
                    out = values[i]
            else:
                out.append(values[i])
        if self.trailing_nones:
            out += [None] * self.trailing_nones
        return out


# One terminal of a contextual lexer, by the number of its group in the lexer's regex: its
# name, the keywords its text may be instead (`allow` read as NAME is ALLOW), whether its text
# may hold a line break, and whether the parser skips it (blanks, comments).
_Terminal = tuple[str, dict[str, str] | None, bool, bool]
# A contextual lexer: the regex of the terminals a state accepts, and those terminals by group
# (group 0, the whole match, is no terminal: an empty name).
_Lexer = tuple[re.Pattern[str], tuple[_Terminal, ...]]


class _Tables:
    """Lark's LALR table and contextual lexer, read once into plain dicts that `run` walks
    without Lark's per-token objects: the parse tree is never built, each rule's value is made
    as the rule is reduced (issue 13). Lark's own parse of the same grammar is the reference:
    tests/language/test_fast_parser.py checks that both accept the same texts and place the
    nodes alike."""

    def __init__(self, lark_parser: Lark) -> None:
        frontend: Any = lark_parser.parser
        table = frontend.parser._parse_table
        self.start_state: int = table.start_states["start"]
        self.end_state: int = table.end_states["start"]
        choices = _choice_rules(lark_parser.rules)
        rules: dict[Any, _Rule] = {}
        for row in table.states.values():
            for action, arg in row.values():
                if action.name != "Shift" and arg not in rules:
                    rules[arg] = _Rule(arg, choices)
        for state, row in table.states.items():
            for symbol, (action, arg) in row.items():
                if action.name == "Shift" and not symbol.isupper():
                    for rule in rules.values():
                        if rule.goto == symbol:
                            rule.next[state] = arg
        # state -> terminal or rule name -> (_SHIFT, next state), or a reduction: (its shape,
        # the rule's `next` table) for _UNIT and _WRAP, which need nothing else of the rule,
        # (its shape, the rule) for the others. The loop reads what it needs in one lookup.
        self.actions: dict[int, dict[str, tuple[int, Any]]] = {}
        for state, row in table.states.items():
            actions: dict[str, tuple[int, Any]] = {}
            for symbol, (action, arg) in row.items():
                if action.name == "Shift":
                    actions[str(symbol)] = (_SHIFT, arg)
                else:
                    rule = rules[arg]
                    in_place = rule.shape in (_UNIT, _WRAP)
                    actions[str(symbol)] = (rule.shape, rule.next if in_place else rule)
            self.actions[state] = actions
        # state -> (regex of the terminals the state accepts, keyword table, ignored types,
        # types whose text may hold a line break): Lark's contextual lexer, one per state.
        self.lexers: dict[int, _Lexer] = {}
        made: dict[int, _Lexer] = {}
        for state, lexer in frontend.lexer.lexers.items():
            if id(lexer) not in made:
                made[id(lexer)] = _lexer(lexer)
            self.lexers[state] = made[id(lexer)]

    def run(self, text: str, builder: _Builder) -> Any:
        """The value of the `start` rule for `text`, each node made by its builder method
        (`_node`) as its rule is reduced. Raises _Rejected where Lark would raise a syntax
        error, _TooDeep past `_MAX_DEPTH`."""
        actions = self.actions
        lexers = self.lexers
        end_state = self.end_state
        file = builder.c.file
        comments = builder.comments
        max_depth = _MAX_DEPTH
        state = self.start_state
        states = [state]
        values: list[Any] = []
        positions: list[_Pos] = []
        at: _Pos
        pos = 0
        line = 1
        line_start = 0
        size = len(text)
        while True:
            if pos < size:
                regex, terminals = lexers[state]
                match = regex.match(text, pos)
                if match is None:
                    raise _Rejected
                group: int = match.lastindex  # type: ignore[assignment]  # one always matches
                type_, words, multiline, skipped = terminals[group]
                start = match.start(group)
                end = match.end()  # the terminal's group ends the match
                # The blanks before the token, matched with it; one space (most tokens of a
                # line) holds no line break, and counting is a call.
                if start > pos + 1 or (start > pos and text[pos] == "\n"):
                    breaks = text.count("\n", pos, start)
                    if breaks:
                        line += breaks
                        line_start = text.rindex("\n", pos, start) + 1
                value = text[start:end]
                start_line = line
                start_column = start - line_start + 1
                if multiline:
                    breaks = value.count("\n")
                    if breaks:
                        line += breaks
                        line_start = start + value.rindex("\n") + 1
                pos = end
                if skipped:
                    if type_ == "COMMENT":
                        comments.append(
                            (start_line, start_column, line, pos - line_start + 1, value, type_)
                        )
                    continue
                if words is not None:
                    type_ = words.get(value, type_)
                token: _Tok = (start_line, start_column, line, pos - line_start + 1, value, type_)
            else:
                type_ = "$END"
            row = actions[state]
            while True:
                try:
                    shape, arg = row[type_]
                except KeyError:
                    raise _Rejected from None
                if shape == _SHIFT:
                    if len(states) > max_depth:
                        raise _TooDeep
                    state = arg
                    states.append(state)
                    values.append(token)
                    positions.append(token)  # its first four items are its position
                    break
                if shape == _UNIT:
                    state = arg[states[-2]]
                    states[-1] = state
                    row = actions[state]
                    continue
                if shape == _WRAP:
                    values[-1] = [values[-1]]
                    state = arg[states[-2]]
                    states[-1] = state
                    row = actions[state]
                    continue
                rule: _Rule = arg
                n = rule.size
                if shape != _GENERAL:  # _APPEND or _EXTEND: the list stays in its slot
                    first = positions[-n]
                    last = positions[-1]
                    if first is None or last is None:
                        at = _cover(positions[-n:])
                    else:
                        at = (first[0], first[1], last[2], last[3])
                    item = values[-1]
                    del states[1 - n :], values[1 - n :], positions[1 - n :]
                    if shape == _APPEND:
                        values[-1].append(item)
                    else:
                        values[-1] += item
                    positions[-1] = at
                    state = rule.next[states[-2]]
                    states[-1] = state
                    row = actions[state]
                    continue
                if n == 1:  # the value's slot will take the result
                    children = [values[-1]]
                    at = positions[-1]
                elif n:
                    children = values[-n:]
                    spans = positions[-n:]
                    del states[-n:], values[-n:], positions[-n:]
                    first = spans[0]
                    last = spans[-1]
                    if first is None or last is None:
                        at = _cover(spans)
                    else:
                        at = (first[0], first[1], last[2], last[3])
                else:
                    children = []
                    at = None
                if not rule.plain:
                    pick = rule.pick
                    if pick is None:
                        children = rule.children(children)
                    elif len(pick) == 2:
                        children = [children[pick[0]], children[pick[1]]]
                    else:
                        children = [children[pick[0]], children[pick[1]], children[pick[2]]]
                kind = rule.kind
                if kind == _SPLICE:
                    result: Any = children
                elif kind == _PASS and len(children) == 1:
                    result = children[0]
                else:
                    span = (
                        _Span(file, 1, 1, 1, 1)
                        if at is None
                        else _Span(file, at[0], at[1], at[2], at[3])
                    )
                    result = rule.build(builder, span, children)  # type: ignore[misc]
                if n == 1:
                    state = rule.next[states[-2]]
                    states[-1] = state
                    values[-1] = result
                else:
                    state = rule.next[states[-1]]
                    states.append(state)
                    values.append(result)
                    positions.append(at)
                if state == end_state and type_ == "$END":
                    return result
                row = actions[state]


def _choice_rules(rules: Any) -> frozenset[str]:
    """The inlined rules that only choose one symbol (`_declaration: settings_decl | ...`,
    `!_compare_op: "==" | ...`): Lark splices their one child into the parent, so the parser
    passes the child on as it is instead of making a list of it to splice (issue 13)."""
    by_origin: dict[str, list[Any]] = {}
    for rule in rules:
        by_origin.setdefault(str(rule.origin.name), []).append(rule)
    return frozenset(
        name
        for name, expansions in by_origin.items()
        if name.startswith("_")
        and not name.startswith("__")  # `__x_star_0`: the lists of `x*`, which do splice
        and all(
            len(r.expansion) == 1
            and not r.options.empty_indices
            and (
                r.options.keep_all_tokens
                or not (r.expansion[0].is_term and r.expansion[0].filter_out)
            )
            for r in expansions
        )
    )


def _cover(spans: list[_Pos]) -> _Pos:
    """The position from the first to the last placed value of `spans` (an empty `[x]` or
    spliced list has none), None when none is placed: Lark's `propagate_positions`."""
    placed = [p for p in spans if p is not None]
    if not placed:
        return None
    first, last = placed[0], placed[-1]
    return (first[0], first[1], last[2], last[3])


def _lexer(lexer: Any) -> _Lexer:
    """One of Lark's contextual lexers as `_Tables.run` reads it: the regex of its terminals,
    the keywords its NAME-like terminals turn into (Lark's UnlessCallback), the terminals it
    skips and those that may span lines."""
    scanner = lexer.scanner
    if len(scanner._mres) != 1:  # pragma: no cover - the grammar has few terminals
        raise AssertionError("the lexer needs more than one regex")
    keywords: dict[str, dict[str, str]] = {}
    for type_, callback in lexer.callback.items():
        words = getattr(callback, "scanner", None)
        if words is None:  # pragma: no cover - only keywords have callbacks
            raise AssertionError(f"unexpected lexer callback for {type_}")
        keywords[type_] = {}
        for terminal in words.terminals:
            if terminal.pattern.type != "str" or terminal.pattern.flags:  # pragma: no cover
                raise AssertionError(f"keyword {terminal.name} is not plain text")
            keywords[type_][terminal.pattern.value] = terminal.name
    regex = scanner._mres[0]
    if "WS" in lexer.ignore_types:
        # Blanks before a token are matched with it, which halves the matches; where no token
        # follows, the regex backs off to Lark's own WS terminal. `WS` is `[ \t\f\r\n]+`
        # (Lark's common.WS), and no other terminal starts with a blank.
        blank = lexer.terminals_by_name["WS"].pattern.to_regexp()
        if blank != "(?:[ \t\f\r\n])+":  # pragma: no cover - a new WS would need a look
            raise AssertionError(f"unexpected WS terminal {blank!r}")
        regex = re.compile(f"{blank[:-1]}*(?:{regex.pattern})", regex.flags)
    # Every group is a terminal's (`match.lastindex` names the terminal that matched).
    if regex.groups != len(regex.groupindex):  # pragma: no cover - Lark names every group
        raise AssertionError("a terminal of the grammar has a capturing group")
    terminals: list[_Terminal] = [("", None, False, False)] * (regex.groups + 1)
    for name, group in regex.groupindex.items():
        terminals[group] = (
            name,
            keywords.get(name),
            name in lexer.newline_types,
            name in lexer.ignore_types,
        )
    return regex, tuple(terminals)


@functools.cache
def _tables() -> _Tables:
    return _Tables(_parser())


def parse(text: str, file: str = "<policy>") -> ast.Policy:
    """Parse `text` into a Policy; raises PolicyError with every syntax and shape problem found.

    Parsing stops at the first syntax error (what follows it cannot be read reliably), but shape
    problems in a text that parses are all reported together.
    """
    collector = _Collector(file, text)
    builder = _Builder(collector)
    try:
        policy = _tables().run(text, builder)
    except _Rejected:
        raise PolicyError([_syntax_error(text, collector)]) from None
    except _TooDeep:
        _too_deep_or_syntax_error(text, collector)
    if collector.problems:
        raise PolicyError(collector.problems)
    assert isinstance(policy, ast.Policy)
    return policy


def _syntax_error(text: str, collector: _Collector) -> Diagnostic:
    """The diagnostic for a text `_Tables.run` rejected, from Lark's own parse of it."""
    try:
        _parser().parse(text)
    except UnexpectedInput as exc:
        return _syntax_diagnostic(exc, collector)
    # pragma: no cover - the two parsers read the same table
    raise AssertionError("the parser rejected a text that Lark accepts")


def _too_deep_or_syntax_error(text: str, collector: _Collector) -> NoReturn:
    """PA009 for a text nested too deeply, unless it also has a syntax error further on:
    that one is reported instead, as when Lark parsed the whole text before the tree was
    built."""
    try:
        _parser().parse(text)
    except UnexpectedInput as exc:
        try:
            diagnostic = _syntax_diagnostic(exc, collector)
        except RecursionError:  # Lark copies its (deep) stack to list what it expected
            _too_deep(collector)
        raise PolicyError([diagnostic]) from None
    _too_deep(collector)


def _too_deep(collector: _Collector) -> NoReturn:
    span = Span(collector.file, 1, 1, 1, 1)
    raise PolicyError(
        [
            Diagnostic.at(
                span,
                "PA009",
                "the policy is nested too deeply to read",
                help="split long expressions into several rules",
                source=collector.source,
            )
        ]
    ) from None


# --- the AST builder ----------------------------------------------------------------------------


_NodeBuilder = Callable[["_Builder", Span, list[Any]], Any]
_NODE_BUILDERS: dict[str, _NodeBuilder] = {}


def _node(method: _NodeBuilder) -> _NodeBuilder:
    """Register a builder method, taking (self, span, children), for the grammar rule of its
    name; `_Tables.run` calls it when it reduces that rule (through `_Builder.node`)."""
    _NODE_BUILDERS[method.__name__] = method
    return method


class _Builder:
    """Builds AST nodes bottom-up as the parser reduces rules; records shape problems as it
    goes."""

    def __init__(self, collector: _Collector) -> None:
        self.c = collector
        self.comments: list[_Tok] = []
        # The plain literal segments of this text's patterns, by their text: a policy's routes
        # repeat their prefixes (`api`, `v1`, a resource's name), and a segment is a frozen
        # value without a position, so each is checked and made once per parse.
        self.literal_segments: dict[str, ast.PatternSegment] = {}

    def _tok(self, token: _Tok) -> Span:
        return _Span(self.c.file, token[0], token[1], token[2], token[3])

    def _name(self, token: _Tok) -> ast.Name:
        return _new_name(token[4], self._tok(token))

    # values

    def _string(self, token: _Tok) -> ast.StringValue:
        return _new_string_value(self._unescape(token), self._tok(token))

    def _unescape(self, token: _Tok) -> str:
        raw = token[4][1:-1]
        if "\\" not in raw:
            return raw
        out: list[str] = []
        i = 0
        while i < len(raw):
            ch = raw[i]
            if ch != "\\":
                out.append(ch)
                i += 1
                continue
            nxt = raw[i + 1] if i + 1 < len(raw) else ""
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
            elif nxt == "u" and re.fullmatch(r"[0-9A-Fa-f]{4}", raw[i + 2 : i + 6]):
                out.append(chr(int(raw[i + 2 : i + 6], 16)))
                i += 6
            else:
                column = token[1] + 1 + i
                span = Span(self.c.file, token[0], column, token[0], column + 2)
                self.c.problem(
                    span,
                    "PA008",
                    f"unknown escape `\\{nxt}` in a string",
                    help='strings know `\\"`, `\\\\`, `\\n`, `\\t` and `\\uXXXX`',
                )
                i += 2
        return "".join(out)

    @_node
    def string(self, span: Span, children: list[_Tok]) -> ast.StringValue:
        # The node is its one token, so `span` is the token's own.
        return _new_string_value(self._unescape(children[0]), span)

    @_node
    def number(self, span: Span, children: list[_Tok]) -> ast.NumberValue:
        text = children[0][4]
        value: int | float = float(text) if "." in text else int(text)
        return _new_number_value(value, text, span)

    @_node
    def duration(self, span: Span, children: list[_Tok]) -> ast.DurationValue:
        text = children[0][4]
        milliseconds = parse_duration(text)
        assert milliseconds is not None  # the DURATION terminal guarantees the shape
        return _new_duration_value(milliseconds, text, span)

    @_node
    def size(self, span: Span, children: list[_Tok]) -> ast.SizeValue:
        text = children[0][4]
        size = parse_size(text)
        assert size is not None  # the SIZE terminal guarantees the shape
        return _new_size_value(size, text, span)

    @_node
    def bad_duration(self, span: Span, children: list[_Tok]) -> ast.DurationValue:
        text = children[0][4]
        if looks_like_size(text):
            self.c.problem(
                span,
                "PA170",
                f"invalid size `{text}`",
                help="a size is a whole number and KB, MB or GB (powers of 1024): `64MB`",
            )
            return _new_duration_value(0, text, span)
        self.c.problem(
            span,
            "PA006",
            f"invalid duration `{text}`",
            help="a duration is a whole number and one unit of ms, s, m, h or d: `30s`, `5m`",
        )
        return _new_duration_value(0, text, span)

    @_node
    def true(self, span: Span, children: list[_Tok]) -> ast.BoolValue:
        return _new_bool_value(True, span)

    @_node
    def false(self, span: Span, children: list[_Tok]) -> ast.BoolValue:
        return _new_bool_value(False, span)

    @_node
    def env(self, span: Span, children: list[_Tok | None]) -> ast.EnvValue:
        name_token, default_token = children
        assert name_token is not None
        default = self._string(default_token) if default_token is not None else None
        return _new_env_value(self._string(name_token), default, span)

    @_node
    def jsonpath(self, span: Span, children: list[_Tok]) -> ast.JsonPathValue:
        return _new_json_path_value(children[0][4], span)

    @_node
    def value_list(self, span: Span, children: list[ast.Value | None]) -> ast.ListValue:
        return _new_list_value(tuple([c for c in children if c is not None]), span)

    @_node
    def map(self, span: Span, children: list[tuple[ast.StringValue, ast.Value] | None]) -> Any:
        return _new_map_value(tuple([c for c in children if c is not None]), span)

    @_node
    def map_item(self, span: Span, children: list[Any]) -> tuple[ast.StringValue, ast.Value]:
        return (self._string(children[0]), children[1])

    # declarations

    @_node
    def setting(self, span: Span, children: list[Any]) -> ast.Setting:
        return _new_setting(self._name(children[0]), children[1], span)

    @_node
    def success_decl(self, span: Span, children: list[Any]) -> ast.SuccessDecl:
        return _new_success_decl(children[0], span)

    @_node
    def settings_decl(self, span: Span, children: list[ast.Setting]) -> ast.SettingsDecl:
        return _new_settings_decl(tuple(children), span)

    @_node
    def provider_decl(self, span: Span, children: list[Any]) -> ast.ProviderDecl:
        entries: list[ast.ProviderEntry] = []
        for entry in children[1:]:
            if isinstance(entry, ast.Setting) and isinstance(entry.value, ast.JsonPathValue):
                entries.append(_new_claim_decl(entry.key, entry.value, entry.span))
            else:
                entries.append(entry)
        return _new_provider_decl(self._name(children[0]), tuple(entries), span)

    @_node
    def tokens_decl(self, span: Span, children: list[Any]) -> ast.TokensDecl:
        return _new_tokens_decl(self._name(children[0]), tuple(children[1:]), span)

    @_node
    def any_method(self, span: Span, children: list[_Tok]) -> tuple[ast.Name, ...]:
        return ()

    @_node
    def method_list(self, span: Span, children: list[_Tok]) -> tuple[ast.Name, ...]:
        names = tuple([self._name(t) for t in children])
        for name in names:
            if name.text in METHODS:
                continue
            if name.text.upper() in METHODS:
                self.c.problem(
                    name.span,
                    "PA004",
                    f"method `{name.text}` must be written in upper case",
                    help=f"write `{name.text.upper()}`",
                )
            else:
                self.c.problem(
                    name.span,
                    "PA004",
                    f"unknown method `{name.text}`",
                    help="methods are " + ", ".join(METHODS) + ", or `*` for all of them",
                )
        return names

    @_node
    def route_decl(self, span: Span, children: list[Any]) -> ast.RouteDecl:
        methods, path_token, body = children
        return _new_route_decl(methods, self._pattern(path_token), body, span)

    def _pattern(self, token: _Tok) -> ast.PathPattern:
        text = token[4]
        span = self._tok(token)
        segments: list[ast.PatternSegment] = []
        parts = [] if text == "/" else text[1:].split("/")
        params: set[str] = set()
        column = span.column + 1
        known = self.literal_segments
        for index, part in enumerate(parts):
            segment = known.get(part)
            if segment is not None:
                segments.append(segment)
                column += len(part) + 1
                continue
            if _PLAIN_SEGMENT.fullmatch(part):
                segment = known[part] = _new_pattern_segment(ast.Segment.LITERAL, part)
                segments.append(segment)
                column += len(part) + 1
                continue
            segment = self._segment(part, index == len(parts) - 1, span, params, column)
            column += len(part) + 1
            if segment is not None:
                segments.append(segment)
        return _new_path_pattern(text, tuple(segments), span)

    def _segment(
        self, part: str, last: bool, span: Span, params: set[str], column: int
    ) -> ast.PatternSegment | None:
        """The segment `part`, which starts at `column` of the pattern's line; None (and a
        problem) when it is not one."""

        def bad(message: str, help: str) -> None:
            self.c.problem(span, "PA005", message, help=help)

        if part == "**":
            if not last:
                bad("`**` must be the last segment of a pattern", "use `*` for one segment")
            return _new_pattern_segment(ast.Segment.REST, "")
        if part == "*":
            return _new_pattern_segment(ast.Segment.STAR, "")
        if part.startswith("{") and part.endswith("}") and _PARAM_NAME.fullmatch(part[1:-1]):
            name = part[1:-1]
            if name in params:
                bad(f"parameter `{{{name}}}` appears twice", "give each parameter its own name")
            params.add(name)
            return _new_pattern_segment(ast.Segment.PARAM, name)
        if part == "":
            bad(
                "empty segment in the pattern",
                "remove the extra `/` (one trailing slash on a request is ignored anyway)",
            )
            return None
        if part in (".", ".."):
            bad(f"`{part}` segment in the pattern", "requests with dot segments are rejected")
            return None
        if part.startswith(":") and _PARAM_NAME.fullmatch(part[1:]):
            at = Span(span.file, span.line, column, span.line, column + max(len(part), 1))
            self.c.problem(
                at,
                "PA014",
                f"`{part}` is not a parameter in a policy pattern",
                f"parameters are written in braces, as a whole segment: `{{{part[1:]}}}`",
            )
            return None
        glued = _GLUED_PARAM.search(part)
        if glued:
            at = Span(span.file, span.line, column, span.line, column + max(len(part), 1))
            self.c.problem(
                at,
                "PA014",
                f"`{glued[0]}` inside the segment `{part}` is not a parameter",
                f"a parameter is a whole segment: `/{{{glued[1]}}}`"
                + ("; to open the route's block, put a space before `{`" if last else ""),
            )
            return None
        if "*" in part or "{" in part or "}" in part:
            bad(
                f"`{part}` mixes text with a wildcard",
                "`*`, `**` and `{name}` must each be a whole segment",
            )
            return None
        forbidden = sorted(set(part) & _FORBIDDEN_IN_SEGMENT)
        if forbidden:
            bad(
                f"character `{forbidden[0]}` cannot appear in a pattern",
                "patterns match decoded paths; write the character itself, not an escape",
            )
            return None
        return _new_pattern_segment(ast.Segment.LITERAL, part)

    @_node
    def public(self, span: Span, children: list[Any]) -> ast.Public:
        return _new_public(span)

    @_node
    def auth(self, span: Span, children: list[Any]) -> ast.Auth:
        names: list[ast.Name] = []
        rules: list[ast.Rule] = []
        for child in children:  # one pass, no generators: an `auth` per protected route
            if isinstance(child, tuple):
                names.append(self._name(child))
            elif isinstance(child, ast.Rule):
                rules.append(child)
        return _new_auth(tuple(names), tuple(rules), span)

    @_node
    def allow_rule(self, span: Span, children: list[Any]) -> ast.Rule:
        label, condition = children
        return _new_rule(ast.RuleKind.ALLOW, condition, span, self._label(label))

    @_node
    def deny_rule(self, span: Span, children: list[Any]) -> ast.Rule:
        label, condition = children
        return _new_rule(ast.RuleKind.DENY, condition, span, self._label(label))

    def _label(self, token: _Tok | None) -> ast.StringValue | None:
        return None if token is None else self._string(token)

    # expressions

    @_node
    def or_expr(self, span: Span, children: list[ast.Expr]) -> ast.Expr:
        return _new_logical(ast.BoolOp.OR, tuple(children), span)

    @_node
    def and_expr(self, span: Span, children: list[ast.Expr]) -> ast.Expr:
        return _new_logical(ast.BoolOp.AND, tuple(children), span)

    @_node
    def not_expr(self, span: Span, children: list[ast.Expr]) -> ast.Not:
        return _new_not(children[0], span)

    @_node
    def truth(self, span: Span, children: list[ast.Operand]) -> ast.Truth:
        return _new_truth(_operand(children[0]), span)

    @_node
    def has(self, span: Span, children: list[ast.Operand]) -> ast.Has:
        return _new_has(_operand(children[0]), span)

    @_node
    def compare(self, span: Span, children: list[Any]) -> ast.Compare:
        left, op, right = children
        return _new_compare(_COMPARE_OPS[op[4]], _operand(left), _operand(right), span)

    @_node
    def not_in(self, span: Span, children: list[Any]) -> ast.Compare:
        left, right = [_operand(c) for c in children]
        return _new_compare(ast.CompareOp.NOT_IN, left, right, span)

    @_node
    def matches(self, span: Span, children: list[Any]) -> ast.Matches:
        subject, token = children
        pattern = token[4][1:-1].replace("\\/", "/")
        return _new_matches(_operand(subject), pattern, span, self._tok(token))

    @_node
    def literal_list(self, span: Span, children: list[Any]) -> ast.ListLiteral:
        items = [_operand(c) for c in children if c is not None]
        return _new_list_literal(tuple([i for i in items if isinstance(i, ast.Literal)]), span)

    @_node
    def claim(self, span: Span, children: list[_Tok]) -> ast.ClaimRef:
        return _new_claim_ref(children[0][4], span)

    @_node
    def provider_ref(self, span: Span, children: list[_Tok]) -> ast.BuiltinRef:
        return _new_builtin_ref(ast.Builtin.PROVIDER, span)

    @_node
    def method_ref(self, span: Span, children: list[_Tok]) -> ast.BuiltinRef:
        return _new_builtin_ref(ast.Builtin.METHOD, span)

    @_node
    def path_ref(self, span: Span, children: list[_Tok]) -> ast.BuiltinRef:
        return _new_builtin_ref(ast.Builtin.PATH, span)

    @_node
    def param_ref(self, span: Span, children: list[_Tok]) -> ast.ParamRef:
        return _new_param_ref(children[0][4].removeprefix("param."), span)

    @_node
    def jsonpath_ref(self, span: Span, children: list[_Tok]) -> ast.JsonPathRef:
        return _new_json_path_ref(children[0][4], span)

    @_node
    def start(self, span: Span, children: list[ast.Declaration]) -> ast.Policy:
        comments = [_new_comment(c[4], self._tok(c)) for c in self.comments]
        return _new_policy(self.c.file, tuple(children), tuple(comments))


_LITERAL_VALUES = (ast.StringValue, ast.NumberValue, ast.BoolValue)


def _operand(node: Any) -> ast.Operand:
    """Operands as expression nodes: the `string`/`number`/`true`/`false` builders, shared with
    block values, give value nodes, which become `Literal`s here."""
    if isinstance(node, _LITERAL_VALUES):
        return _new_literal(node.value, node.span)
    return node  # type: ignore[no-any-return]


# --- syntax errors ------------------------------------------------------------------------------


def _describe_expected(expected: set[str], terminals: dict[str, str]) -> list[str]:
    names = set()
    for terminal in expected:
        if terminal in _HIDDEN_TERMINALS:
            continue
        if terminal in _TERMINAL_NAMES:
            names.add(_TERMINAL_NAMES[terminal])
        elif terminal in terminals:
            names.add(f"`{terminals[terminal]}`")
        else:
            names.add(f"`{terminal.lower()}`")
    return sorted(names)


def _expected_what(expected: set[str], terminals: dict[str, str]) -> str:
    """`expected ...` for a message: where a condition may start, just that, not its dozen
    possible first tokens."""
    if {"NOT", "LPAR"} <= expected:
        return "expected a condition"
    names = _describe_expected(expected, terminals)
    if {"IF", "STRING"} <= expected:  # right after `allow` or `deny`, a string is a label
        names = sorted(["a rule label" if n == "a string" else n for n in names])
    return _expected_text(names)


_CONDITION_HELP = 'a condition reads like `"admins" in groups` or `username == "alice"`'
_DECLARATIONS = ("provider", "route", "settings", "tokens")


def _expected_text(names: list[str]) -> str:
    if not names:
        return ""
    if len(names) == 1:
        return f"expected {names[0]}"
    return "expected one of " + ", ".join(names)


@functools.cache
def _literal_terminals() -> dict[str, str]:
    """Terminal name -> its literal text, for terminals that are fixed strings (`{`, `route`)."""
    out: dict[str, str] = {}
    for terminal in _parser().terminals:
        if terminal.pattern.type == "str":
            out[terminal.name] = terminal.pattern.value
    return out


def _expected_terminals(exc: UnexpectedInput, fallback: set[str]) -> set[str]:
    """The terminals the parser could take where the error is.

    Lark's own sets come from the contextual lexer, which reads keywords (`not`, `true`,
    `provider`) as names and so leaves them out; the interactive parser knows every one.
    """
    interactive = getattr(exc, "interactive_parser", None)
    if interactive is not None:
        try:
            accepted = interactive.accepts()
        except UnexpectedInput:  # pragma: no cover - accepts() catches what feeding raises
            accepted = set()
        if accepted:
            return {str(t) for t in accepted}
    return fallback


def _syntax_diagnostic(exc: UnexpectedInput, collector: _Collector) -> Diagnostic:
    terminals = _literal_terminals()
    line = exc.line if exc.line and exc.line > 0 else 1
    column = exc.column if exc.column and exc.column > 0 else 1
    if isinstance(exc, UnexpectedToken) and exc.token.type == "$END":
        line, column = _end_position(collector.source)
    span = Span(collector.file, line, column, line, column + 1)

    def make(code: str, message: str, help: str | None = None, width: int = 1) -> Diagnostic:
        wide = Span(collector.file, line, column, line, column + max(width, 1))
        return Diagnostic.at(wide, code, message, help=help, source=collector.source)

    if isinstance(exc, UnexpectedCharacters):
        expected = _expected_terminals(exc, set(exc.allowed or ()))
        char = exc.char
        if char == '"':
            return make(
                "PA007", "unterminated string", 'close the string with `"` on the same line'
            )
        if char == "/" and "REGEX" in expected:
            return make(
                "PA007",
                "unterminated regex literal",
                "a regex is written `/.../`; write `\\/` for a slash inside it",
            )
        if char == "/" and "PATH" not in expected and ("NAME" in expected or "STAR" in expected):
            return make(
                "PA002",
                "expected a method before the path",
                "write the methods first: `route GET /path { ... }`",
            )
        if char == "$":
            return make(
                "PA002",
                "invalid claim path",
                "claim paths look like `$.email`, `$.roles[*]` or `$['cognito:groups'][*]`",
            )
        if char == "=" and expected & {"STRING", "NAME", "NUMBER"}:
            return make("PA002", "unexpected `=`", "compare with `==`, assign with one `=`")
        foreign = _foreign_operator(line_of(collector.source, line)[column - 1 :])
        if foreign is not None:
            written, ours = foreign
            return make(
                "PA012",
                f"`{written}` is not an operator in a policy; write `{ours}`",
                _CONDITION_HELP.replace("a condition reads like", "conditions read like")
                + ", joined with `and`, `or` and negated with `not`",
                len(written),
            )
        if char == "'" and "STRING" in expected:
            return make(
                "PA001",
                "unexpected character `'`; strings are written in double quotes",
                'write `"..."`',
            )
        what = _expected_what(expected, terminals)
        return make(
            "PA001",
            f"unexpected character `{_printable(char)}`" + (f"; {what}" if what else ""),
            _CONDITION_HELP if what == "expected a condition" else None,
        )

    if isinstance(exc, UnexpectedToken):
        token = exc.token
        expected = _expected_terminals(exc, set(exc.expected or ()))
        what = _expected_what(expected, terminals)
        text = str(token)
        width = len(text) if "\n" not in text else 1
        glued = _glued_block(collector, line, column) if "LBRACE" in expected else None
        if glued is not None:
            return glued
        if token.type == "$END":
            help = "a block opened with `{` is not closed" if "RBRACE" in expected else None
            if what == "expected a condition":
                help = _CONDITION_HELP
            return Diagnostic.at(
                span, "PA003", f"unexpected end of file; {what}", help=help, source=collector.source
            )
        if token.type == "PATH" and "REGEX" in expected:
            return make(
                "PA007",
                "unterminated regex literal",
                "a regex is written `/.../`; write `\\/` for a slash inside it",
                width,
            )
        if token.type == "PATH" and "PATH" not in expected and expected & {"NAME", "STAR"}:
            return make(
                "PA002",
                "expected a method before the path",
                "write the methods first: `route GET /path { ... }`",
                width,
            )
        source_line = line_of(collector.source, line)
        before = source_line[: column - 1]
        claim_path = re.search(r"\$\S*$", before)
        if text in ("[", "]") and claim_path:
            start = claim_path.start() + 1
            written = claim_path[0] + (source_line[column - 1 :].split(None, 1) or [""])[0]
            return Diagnostic.at(
                Span(collector.file, line, start, line, start + len(written)),
                "PA002",
                f"invalid claim path `{_printable(written)}`",
                help="claim paths look like `$.email`, `$.roles[*]` or `$['cognito:groups'][*]`",
                source=collector.source,
            )
        worded = _worded_duration(collector, line, column) if "EQUAL" in expected else None
        if worded is not None:
            return worded
        labelled = re.search(r'\b(allow|deny)\s+("(?:[^"\\]|\\.)*")\s*$', before)
        if labelled and "IF" in expected:
            # `allow "admins" in groups`: the string reads as the rule's label.
            keyword, label = labelled[1], labelled[2]
            rest = source_line[column - 1 :].split("#", 1)[0].strip()
            return make(
                "PA002",
                f"unexpected `{_printable(text)}`; {what}",
                f"a string after `{keyword}` is the rule's label; a condition follows `if`: "
                f"`{keyword} if {_printable(label)} {_printable(rest)}`",
                width,
            )
        if token.type == "NAME" and text == "contains":
            operands = re.search(r'(\S+)\s+contains\s+("(?:[^"\\]|\\.)*"|[^\s()]+)', source_line)
            example = f"{operands[2]} in {operands[1]}" if operands else '"admins" in groups'
            return make(
                "PA012",
                "`contains` is not an operator in a policy; membership is `VALUE in LIST`",
                f"write `{example}`",
                width,
            )
        keyword = before.strip()
        if expected == {"EQUAL"} and keyword in _DECLARATIONS:
            # Inside a block a declaration keyword reads as a setting name: the block above
            # was not closed.
            start = before.index(keyword) + 1
            return Diagnostic.at(
                Span(collector.file, line, start, line, start + len(keyword)),
                "PA002",
                f"expected `}}` before `{keyword}`",
                help="the block above is not closed with `}`",
                source=collector.source,
            )
        if text == "=" and before.rstrip().endswith("==") and "DURATION" not in expected:
            return make("PA002", "`===` is not an operator; compare with `==`", "write `==`", width)
        if text == "=" and before.rstrip().endswith("="):
            return make("PA002", "`==` compares; a setting takes one `=`", "write `=`", width)
        if expected == {"AUTH", "PUBLIC"}:
            return make(
                "PA002",
                f"unexpected `{_printable(text)}`; {what}",
                "a route body is `public`, or `auth NAME, ...` followed by rules",
                width,
            )
        if text == "=" and any(terminals.get(t) == "==" for t in expected):
            return make("PA002", "`=` assigns; compare with `==`", "write `==`", width)
        if text == "==" and "EQUAL" in expected:
            return make("PA002", "`==` compares; assign a setting with `=`", "write `=`", width)
        if (
            token.type == "NAME"
            and expected & {"STRING", "NUMBER", "DURATION"}
            and "IF" not in expected
        ):
            # The whole unquoted word, `scripts.tokens` rather than the name `scripts` the
            # lexer stopped at, so the suggested string is the file name that was meant.
            word = re.match(r"[A-Za-z0-9_./-]+", source_line[column - 1 :])
            written = word[0] if word else text
            return make(
                "PA002",
                f"expected a value, found `{_printable(written)}`",
                f'strings are written in double quotes: `"{_printable(written)}"`',
                len(written),
            )
        if "RBRACE" in expected and token.type in {"ROUTE", "PROVIDER", "TOKENS", "SETTINGS"}:
            return make(
                "PA002",
                f"expected `}}` before `{text}`",
                "the block above is not closed with `}`",
                width,
            )
        if token.type == "LBRACE" and "IF" in expected:
            return make("PA002", "`deny` needs a condition", "write `deny if EXPR`", width)
        if "IF" in expected and token.type != "IF" and expected <= {"IF", "STRING"}:
            return make(
                "PA002",
                f"expected `if` after `deny`, found `{_printable(text)}`",
                "a deny rule needs a condition: `deny if EXPR`",
                width,
            )
        help = _CONDITION_HELP if what == "expected a condition" else None
        return make("PA002", f"unexpected `{_printable(text)}`; {what}", help, width)

    if isinstance(exc, UnexpectedEOF):  # pragma: no cover - LALR reports `$END` tokens instead
        return Diagnostic.at(span, "PA003", "unexpected end of file", source=collector.source)
    return Diagnostic.at(span, "PA002", "syntax error", source=collector.source)  # pragma: no cover


# Operators of other languages, as newcomers write them, and the policy's word for each.
_FOREIGN_OPERATORS = (("&&", "and"), ("||", "or"), ("!", "not"))


def _foreign_operator(rest: str) -> tuple[str, str] | None:
    """`(written, ours)` when `rest` (the line from the error on) starts with `&&`, `||` or a
    `!` that is not `!=`."""
    for written, ours in _FOREIGN_OPERATORS:
        if rest.startswith(written) and not rest.startswith("!="):
            return written, ours
    return None


_DURATION_WORDS = {
    "ms": "ms", "millisecond": "ms", "milliseconds": "ms", "msec": "ms",
    "s": "s", "sec": "s", "secs": "s", "second": "s", "seconds": "s",
    "m": "m", "min": "m", "mins": "m", "minute": "m", "minutes": "m",
    "h": "h", "hr": "h", "hrs": "h", "hour": "h", "hours": "h",
    "d": "d", "day": "d", "days": "d",
}  # fmt: skip


def _text_before(source: str, line: int, column: int) -> str:
    """The source text before 1-based (`line`, `column`), with its line breaks as `\\n`."""
    lines = source.splitlines()
    return "\n".join([*lines[: line - 1], line_of(source, line)[: column - 1]])


def _worded_duration(collector: _Collector, line: int, column: int) -> Diagnostic | None:
    """`cache_ttl = 5 minutes`: the parser reads `minutes` as the next setting's name and fails
    where that setting has no `=`, often a line later. Point at `5 minutes` instead."""
    before = _text_before(collector.source, line, column)
    found = re.search(r"=[ \t]*([0-9]+(?:\.[0-9]+)?)[ \t]+([A-Za-z]+)\s*$", before)
    if found is None:
        return None
    start = found.start(1)
    at_line = before.count("\n", 0, start) + 1
    at_column = start - (before.rfind("\n", 0, start) + 1) + 1
    written = f"{found[1]} {found[2]}"
    unit = _DURATION_WORDS.get(found[2].lower())
    help = (
        f"a duration is one word, a whole number and its unit: write `{found[1]}{unit}`"
        if unit is not None and "." not in found[1]
        else "a duration is a whole number and one unit of ms, s, m, h or d: `30s`, `5m`"
    )
    span = Span(collector.file, at_line, at_column, at_line, at_column + len(written))
    return Diagnostic.at(
        span,
        "PA013",
        f"`{written}` is not a duration",
        help=help,
        source=collector.source,
    )


def _glued_block(collector: _Collector, line: int, column: int) -> Diagnostic | None:
    """`route GET /x{public}`: the pattern took `{public}` as a parameter glued to `x`, and the
    route's own `{` is missing. Point at the glued braces, not at what follows."""
    before = _text_before(collector.source, line, column)
    found = re.search(r"/[^\s#]*?[^/\s{}#](\{[A-Za-z_][A-Za-z0-9_]*\})\s*$", before)
    if found is None:
        return None
    start = found.start(1)
    at_line = before.count("\n", 0, start) + 1
    at_column = start - (before.rfind("\n", 0, start) + 1) + 1
    span = Span(collector.file, at_line, at_column, at_line, at_column + len(found[1]))
    path = found[0].rstrip()[: -len(found[1])]
    return Diagnostic.at(
        span,
        "PA014",
        f"`{found[1]}` is glued to the path, so it reads as a parameter, not as the route's block",
        help=f"put a space before `{{` to open the route's block: `{path} {found[1]}`",
        source=collector.source,
    )


def _end_position(source: str) -> tuple[int, int]:
    """The line and column just after the last non-blank character of the text."""
    lines = source.rstrip().splitlines() or [""]
    return len(lines), len(lines[-1]) + 1


def _printable(text: str) -> str:
    """Invisible characters as escapes: `\\x01`, `\\ufeff`."""
    return "".join(
        c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"
        for c in text[:40]
    )
