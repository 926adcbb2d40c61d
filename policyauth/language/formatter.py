"""The canonical layout of a policy file, printed from the AST and its comments.

`format_policy` never edits the text it was given: it parses it, prints the AST in one layout,
and puts every comment back next to the node it belongs to. Printing from the tree is what makes
the layout canonical (two texts with equal trees format alike); placing comments is what makes
it safe to run on files people wrote. Because a formatter that loses a rule or a comment would do
silent damage, it proves itself on every run, as Black does: the output must parse to the same
AST and the same comments (PA901 otherwise), and formatting the output again must change
nothing (PA902 otherwise). Either failure is a bug in this module, reported as a `FormatError`
so that the caller leaves the file alone.

The layout (docs/language.md, "Formatting"):

- declarations start in column 1, one blank line between them; blocks are indented by two
  spaces, one entry, `auth` line or rule per line; an empty block is `settings {}`;
- `=` aligned within a block; `deny  if` padded so that its `if` lines up with `allow if`;
- `GET, POST` methods; `[a, b]` lists; `{ "k": v }` maps; `env("NAME", "default")`;
- expressions on one line, with only the parentheses the tree needs (plus the ones after `not`
  when it negates a comparison, which the parser drops but readers want);
- strings re-encoded canonically (`\\"`, `\\\\`, `\\n`, `\\t`, `\\uXXXX` for what cannot be seen);
  numbers, durations, claim paths, patterns and regexes exactly as written;
- a comment stays on its own line above the node after it, or two spaces after the code of its
  line. An entry, rule or header that spanned several lines is printed on one: the last comment
  inside it trails that line, the others move above it. Blank lines between entries (and
  between comments) are kept, at most one.
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Iterator, Sequence

import attrs

from policyauth.diagnostics import Diagnostic, PolicyError, Span
from policyauth.language import ast
from policyauth.language.parser import parse

INDENT = "  "

# Internal errors: the formatter's own proof failed, so the file must not be touched.
CHANGED_MEANING = "PA901"
NOT_IDEMPOTENT = "PA902"

_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_REPORT = "the file was left unchanged; please report this as a bug, with the file"


class FormatError(Exception):
    """The formatter failed its own check (PA901, PA902); `diagnostic` says where.

    Distinct from `PolicyError` (the input does not parse) because the remedy differs: a
    `PolicyError` is the author's to fix, a `FormatError` is ours.
    """

    def __init__(self, diagnostic: Diagnostic) -> None:
        self.diagnostic = diagnostic
        super().__init__(diagnostic.one_line())


def format_policy(text: str, file: str = "<policy>") -> str:
    """`text` in the canonical layout; raises PolicyError if it does not parse, FormatError if
    the formatter cannot prove that its output means the same and is stable."""
    text = text.removeprefix("\ufeff")
    policy = parse(text, file)
    try:
        formatted = render(policy, text)
        _prove(policy, text, formatted, file)
    except RecursionError:
        # Printing and comparing trees recurse like parsing does; a tree the parser could
        # just build may still be too deep for them.
        span = Span(file, 1, 1, 1, 1)
        raise PolicyError(
            [
                Diagnostic.at(
                    span,
                    "PA009",
                    "the policy is nested too deeply to format",
                    help="split long expressions into several rules",
                    source=text,
                )
            ]
        ) from None
    return formatted


def render(policy: ast.Policy, source: str) -> str:
    """Print `policy` in the canonical layout. `source` is the text it was parsed from: comment
    placement and blank lines depend on where things were, and number literals in expressions
    keep their spelling, which the expression tree does not hold."""
    return _Printer(policy, source).text()


# --- the proof ----------------------------------------------------------------------------------


def _prove(policy: ast.Policy, text: str, formatted: str, file: str) -> None:
    """Raise FormatError unless `formatted` parses to `policy` and is a fixed point."""
    try:
        again = parse(formatted, file)
    except PolicyError as exc:
        first = exc.diagnostics[0]
        raise FormatError(
            _internal(
                Span(file, 1, 1, 1, 1),
                CHANGED_MEANING,
                "formatter changed the meaning: its output does not parse "
                f"({first.code} at line {first.line} of the output: {first.message})",
                text,
            )
        ) from None
    where = _first_difference(policy, again)
    if where is not None:
        raise FormatError(_internal(where[0], CHANGED_MEANING, where[1], text))
    twice = render(again, formatted)
    if twice != formatted:
        line = _first_different_line(formatted, twice)
        raise FormatError(
            _internal(
                Span(file, 1, 1, 1, 1),
                NOT_IDEMPOTENT,
                "formatter is not idempotent: formatting its output again changes "
                f"line {line} of it",
                text,
            )
        )


def _internal(span: Span, code: str, message: str, source: str) -> Diagnostic:
    return Diagnostic.at(span, code, message, help=_REPORT, source=source)


def _first_difference(before: ast.Policy, after: ast.Policy) -> tuple[Span, str] | None:
    """Where the two trees first differ (spans aside), in the original, with a message; None if
    they are equal. Comments compare by text, less trailing whitespace (which the layout drops)."""
    for index, declaration in enumerate(before.declarations):
        if index >= len(after.declarations) or after.declarations[index] != declaration:
            return declaration.span, "formatter changed the meaning of this declaration"
    if len(after.declarations) > len(before.declarations):
        extra = after.declarations[len(before.declarations)]
        span = before.declarations[-1].span if before.declarations else extra.span
        return span, "formatter changed the meaning: its output has more declarations"
    old = [c.text.rstrip() for c in before.comments]
    new = [c.text.rstrip() for c in after.comments]
    for index, comment in enumerate(before.comments):
        if index >= len(new) or new[index] != old[index]:
            return comment.span, "formatter changed the meaning: it lost or moved this comment"
    if len(new) > len(old):
        return Span(before.file, 1, 1, 1, 1), "formatter changed the meaning: it added a comment"
    return None


def _first_different_line(a: str, b: str) -> int:
    for number, (x, y) in enumerate(zip(a.split("\n"), b.split("\n"), strict=False), start=1):
        if x != y:
            return number
    return min(a.count("\n"), b.count("\n")) + 1


# --- layout -------------------------------------------------------------------------------------

_Pos = tuple[int, int]  # (line, column), 1-based, as in spans


def _start(span: Span) -> _Pos:
    return (span.line, span.column)


def _end(span: Span) -> _Pos:
    """Just after the node's last character (span ends are exclusive)."""
    return (span.end_line, span.end_column)


@attrs.define
class _Line:
    """One printed line of code (an entry, the `auth` line, a rule, a block's header or its `}`):
    where its node was, and the comments that go with it."""

    text: str
    start: _Pos
    end: _Pos
    leading: list[ast.Comment] = attrs.field(factory=list)  # own lines above it, in order
    inner: list[ast.Comment] = attrs.field(factory=list)  # were inside it: see _place
    trailing: ast.Comment | None = None  # two spaces after it


@attrs.define
class _Block:
    header: _Line  # `route GET /x`, without the brace
    items: list[_Line]
    close: _Line  # `}`; its leading comments are the ones at the end of the block


class _Printer:
    """Lays out one policy: builds the lines, hands each comment to one of them, prints."""

    def __init__(self, policy: ast.Policy, source: str) -> None:
        self.source_lines = source.split("\n")
        self.blocks = [self._block(d) for d in policy.declarations]
        self.end_of_file: list[ast.Comment] = []
        self._place(policy.comments)
        self.out: list[str] = []

    # building lines

    def _block(self, declaration: ast.Declaration) -> _Block:
        span = declaration.span
        close = _Line("}", (span.end_line, max(span.end_column - 1, 1)), _end(span))
        if isinstance(declaration, ast.SettingsDecl):
            header_end = (span.line, span.column + len("settings"))
            return _Block(
                _Line("settings", _start(span), header_end),
                self._entries(declaration.entries),
                close,
            )
        if isinstance(declaration, ast.ProviderDecl | ast.TokensDecl):
            keyword = "provider" if isinstance(declaration, ast.ProviderDecl) else "tokens"
            header = _Line(
                f"{keyword} {declaration.name.text}", _start(span), _end(declaration.name.span)
            )
            return _Block(header, self._entries(declaration.entries), close)
        methods = ", ".join(m.text for m in declaration.methods) or "*"
        header = _Line(
            f"route {methods} {declaration.pattern.text}",
            _start(span),
            _end(declaration.pattern.span),
        )
        body = declaration.body
        if isinstance(body, ast.Public):
            items = [_Line("public", _start(body.span), _end(body.span))]
        else:
            names = body.authenticators
            auth = "auth " + ", ".join(n.text for n in names)
            auth_end = _end(names[-1].span) if names else _end(body.span)
            items = [_Line(auth, _start(body.span), auth_end)]
            items += [_Line(self._rule(r), _start(r.span), _end(r.span)) for r in body.rules]
        return _Block(header, items, close)

    def _entries(self, entries: Sequence[ast.ProviderEntry]) -> list[_Line]:
        """`key = value` lines with the `=` aligned, as the language page writes them."""
        keys = [_key(e) for e in entries]
        width = max((len(k) for k in keys), default=0)
        return [
            _Line(f"{key.ljust(width)} = {self._entry_value(e)}", _start(e.span), _end(e.span))
            for key, e in zip(keys, entries, strict=True)
        ]

    def _entry_value(self, entry: ast.ProviderEntry) -> str:
        if isinstance(entry, ast.SuccessDecl):
            return self._expr(entry.condition)
        if isinstance(entry, ast.ClaimDecl):
            return entry.path.text
        return _value(entry.value)

    def _rule(self, rule: ast.Rule) -> str:
        label = f" {_value(rule.label)}" if rule.label is not None else ""
        if rule.condition is None:
            return rule.kind.value + label
        # `deny  if` lines its `if` up with `allow if`, as the language page does.
        keyword = rule.kind.value.ljust(len("allow"))
        return f"{keyword}{label} if {self._expr(rule.condition)}"

    # expressions

    def _expr(self, expr: ast.Expr) -> str:
        if isinstance(expr, ast.Logical):
            parts = [self._logical_operand(expr.op, e) for e in expr.operands]
            return f" {expr.op.value} ".join(parts)
        if isinstance(expr, ast.Not):
            inner = expr.operand
            if isinstance(inner, ast.Logical | ast.Compare | ast.Matches):
                return f"not ({self._expr(inner)})"
            return f"not {self._expr(inner)}"
        if isinstance(expr, ast.Compare):
            left, right = self._operand(expr.left), self._operand(expr.right)
            return f"{left} {expr.op.value} {right}"
        if isinstance(expr, ast.Matches):
            pattern = expr.pattern.replace("/", "\\/")
            return f"{self._operand(expr.subject)} matches /{pattern}/"
        if isinstance(expr, ast.Has):
            return f"has {self._operand(expr.operand)}"
        return self._operand(expr.operand)

    def _logical_operand(self, op: ast.BoolOp, expr: ast.Expr) -> str:
        """Parentheses where the tree needs them: `and` binds tighter than `or`, and a nested
        group of the same operator was a parenthesized group (the parser flattens the rest)."""
        text = self._expr(expr)
        if isinstance(expr, ast.Logical) and (op is ast.BoolOp.AND or expr.op is op):
            return f"({text})"
        return text

    def _operand(self, operand: ast.Operand) -> str:
        if isinstance(operand, ast.Literal):
            return self._literal(operand)
        if isinstance(operand, ast.ListLiteral):
            return "[" + ", ".join(self._literal(i) for i in operand.items) + "]"
        if isinstance(operand, ast.ClaimRef):
            return operand.name
        if isinstance(operand, ast.BuiltinRef):
            return operand.builtin.value
        if isinstance(operand, ast.ParamRef):
            return f"param.{operand.name}"
        return operand.text

    def _literal(self, literal: ast.Literal) -> str:
        value = literal.value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return quote(value)
        written = self._written(literal.span)
        if _NUMBER.fullmatch(written) and _number_value(written) == value:
            return written
        return _number_text(value)

    def _written(self, span: Span) -> str:
        """The text of a one-line span of the source ('' if it is not one line)."""
        if span.line != span.end_line or not 0 < span.line <= len(self.source_lines):
            return ""
        return self.source_lines[span.line - 1][span.column - 1 : span.end_column - 1]

    # comments

    def _lines(self) -> Iterator[_Line]:
        for block in self.blocks:
            yield block.header
            yield from block.items
            yield block.close

    def _place(self, comments: Sequence[ast.Comment]) -> None:
        """Give each comment to one line: the line whose node holds it, else the line whose code
        ends before it on the same source line (it trails), else the next line (it stays above
        it), else the end of the file."""
        lines = list(self._lines())
        for comment in comments:
            at = _start(comment.span)
            owner = next((x for x in lines if x.start < at < x.end), None)
            if owner is not None:
                owner.inner.append(comment)
                continue
            before = [x for x in lines if x.end[0] == at[0] and x.end <= at]
            if before and before[-1].trailing is None:
                before[-1].trailing = comment
                continue
            following = next((x for x in lines if x.start > at), None)
            if following is not None:
                following.leading.append(comment)
            else:
                self.end_of_file.append(comment)
        for line in lines:
            # A node that spanned several lines is printed on one: the last comment inside it
            # trails that line (so an ignore comment keeps applying to the node, and comments
            # keep their order); the others move above it.
            if line.trailing is None and line.inner:
                line.trailing = line.inner.pop()

    # printing

    def text(self) -> str:
        previous: int | None = None  # source line where the last top-level element ended
        after_block = False
        for block in self.blocks:
            for comment, line in self._above(block.header):
                self._blank_if(after_block or self._gap(previous, line))
                self._emit(0, _comment(comment))
                previous, after_block = line, False
            self._blank_if(after_block or self._gap(previous, block.header.start[0]))
            self._print_block(block)
            previous, after_block = block.close.end[0], True
        for comment in self.end_of_file:
            self._blank_if(after_block or self._gap(previous, comment.span.line))
            self._emit(0, _comment(comment))
            previous, after_block = comment.span.line, False
        return "\n".join(self.out) + "\n" if self.out else ""

    def _print_block(self, block: _Block) -> None:
        header, close = block.header, block.close
        if not block.items and not close.leading and not (header.trailing and close.trailing):
            self._emit(0, f"{header.text} {{}}", header.trailing or close.trailing)
            return
        self._emit(0, f"{header.text} {{", header.trailing)
        previous: int | None = None  # the first line in a block follows `{` without a gap
        for item in [*block.items, close]:
            for comment, line in self._above(item):
                self._blank_if(self._gap(previous, line))
                self._emit(1, _comment(comment))
                previous = line
            if item is not close:
                self._blank_if(self._gap(previous, item.start[0]))
                self._emit(1, item.text, item.trailing)
                previous = item.end[0]
        self._emit(0, "}", close.trailing)

    def _above(self, line: _Line) -> Iterator[tuple[ast.Comment, int]]:
        """The comments printed above `line`, each with the source line that counts for blank
        lines: its own, or for a comment that was inside the node, where the node started."""
        for comment in line.leading:
            yield comment, comment.span.line
        for comment in line.inner:
            yield comment, line.start[0]

    def _gap(self, previous: int | None, line: int) -> bool:
        """Whether the source has a blank line between line `previous` and line `line`."""
        if previous is None:
            return False
        return any(not self.source_lines[n - 1].strip() for n in range(previous + 1, line))

    def _blank_if(self, condition: bool) -> None:
        if condition and self.out:
            self.out.append("")

    def _emit(self, depth: int, text: str, trailing: ast.Comment | None = None) -> None:
        line = INDENT * depth + text
        if trailing is not None:
            line += "  " + _comment(trailing)
        self.out.append(line)


def _key(entry: ast.ProviderEntry) -> str:
    if isinstance(entry, ast.SuccessDecl):
        return "success"
    if isinstance(entry, ast.ClaimDecl):
        return entry.name.text
    return entry.key.text


def _comment(comment: ast.Comment) -> str:
    return comment.text.rstrip()


# --- values -------------------------------------------------------------------------------------


def _value(value: ast.Value) -> str:
    if isinstance(value, ast.StringValue):
        return quote(value.value)
    if isinstance(value, ast.NumberValue | ast.DurationValue | ast.SizeValue):
        return value.text
    if isinstance(value, ast.BoolValue):
        return "true" if value.value else "false"
    if isinstance(value, ast.EnvValue):
        default = f", {quote(value.default.value)}" if value.default is not None else ""
        return f"env({quote(value.name.value)}{default})"
    if isinstance(value, ast.JsonPathValue):
        return value.text
    if isinstance(value, ast.ListValue):
        return "[" + ", ".join(_value(v) for v in value.items) + "]"
    if not value.items:
        return "{}"
    items = ", ".join(f"{quote(k.value)}: {_value(v)}" for k, v in value.items)
    return "{ " + items + " }"


_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t"}


def quote(text: str) -> str:
    """`text` as a policy string literal: the short escapes where they apply, `\\uXXXX` for
    characters that cannot be seen (controls, format characters, unusual spaces, lone
    surrogates), everything else as itself. Characters beyond U+FFFF have no escape in the
    language, so they stay themselves even when invisible."""
    out = ['"']
    for char in text:
        if char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif char.isprintable() or ord(char) > 0xFFFF:
            out.append(char)
        else:
            out.append(f"\\u{ord(char):04x}")
    out.append('"')
    return "".join(out)


def _number_value(text: str) -> int | float:
    return float(text) if "." in text else int(text)


def _number_text(value: int | float) -> str:
    """A number the grammar reads back as `value`: digits, a point for floats, no exponent."""
    if isinstance(value, int):
        return str(value)
    text = repr(value)
    if "e" in text:
        text = format(decimal.Decimal(text), "f")
    return text if "." in text else text + ".0"


__all__ = ["CHANGED_MEANING", "NOT_IDEMPOTENT", "FormatError", "format_policy", "quote", "render"]
