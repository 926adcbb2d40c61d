"""One shape for every problem found in a policy, from the first syntax error to the last lint.

Every phase (parser, checker, lint rules, loader) reports through `Diagnostic`, so the CLI, the
editor integrations and `PolicyError` render them the same way: a one-line form
`file:line:col: CODE message` for logs and CI, and a full form with the source line, a caret
under the culprit and a `help:` line for people.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence

import attrs


class Severity(enum.Enum):
    """Errors stop a policy from loading; warnings are reported by `lint` but do not."""

    ERROR = "error"
    WARNING = "warning"


@attrs.frozen(order=True)
class Span:
    """Where a node came from: 1-based line and column of its first and last character.

    Spans never take part in equality of AST nodes (they are excluded there), so two texts
    that differ only in layout parse to equal trees; the formatter relies on that.
    """

    file: str
    line: int
    column: int
    end_line: int
    end_column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    def to(self, other: Span) -> Span:
        """The span that starts where this one starts and ends where `other` ends."""
        return Span(self.file, self.line, self.column, other.end_line, other.end_column)


@attrs.frozen
class Diagnostic:
    """A problem in a policy file, with a stable code and a location a person can jump to."""

    code: str
    severity: Severity
    message: str
    file: str
    line: int
    column: int
    end_line: int = 0
    end_column: int = 0
    help: str | None = None
    source_line: str = attrs.field(default="", eq=False, repr=False)

    @classmethod
    def at(
        cls,
        span: Span,
        code: str,
        message: str,
        *,
        help: str | None = None,
        severity: Severity = Severity.ERROR,
        source: str | None = None,
    ) -> Diagnostic:
        """A diagnostic located at `span`; `source` (the file's text) fills the source line."""
        return cls(
            code=code,
            severity=severity,
            message=message,
            file=span.file,
            line=span.line,
            column=span.column,
            end_line=span.end_line,
            end_column=span.end_column,
            help=help,
            source_line=line_of(source, span.line) if source is not None else "",
        )

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def one_line(self) -> str:
        """`file:line:col: CODE message`, the form editors and CI log scanners understand."""
        return f"{self.file}:{self.line}:{self.column}: {self.code} {self.message}"

    def render(self) -> str:
        """The full form: the one-line form, the source line with a caret, and the help line."""
        lines = [f"{self.one_line()}" if self.is_error else f"{self.one_line()} (warning)"]
        if self.source_line:
            gutter = f"{self.line} | "
            lines.append(gutter + self.source_line)
            width = 1
            if self.end_line == self.line and self.end_column > self.column:
                width = self.end_column - self.column
            lines.append(" " * (len(gutter) + self.column - 1) + "^" * width)
        if self.help:
            lines.append(f"help: {self.help}")
        return "\n".join(lines)


def line_of(source: str, line: int) -> str:
    """The text of 1-based `line` in `source`, without its line break ('' past the end)."""
    lines = source.splitlines()
    return lines[line - 1] if 0 < line <= len(lines) else ""


def sort_diagnostics(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """By file and location, so output is stable and reads top to bottom."""
    return sorted(diagnostics, key=lambda d: (d.file, d.line, d.column, d.code))


class PolicyError(Exception):
    """A policy could not be loaded; `diagnostics` says every reason, errors first by location."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics: list[Diagnostic] = sort_diagnostics(diagnostics)
        errors = [d for d in self.diagnostics if d.is_error] or self.diagnostics
        summary = errors[0].one_line() if errors else "invalid policy"
        more = len(errors) - 1
        super().__init__(summary + (f" (and {more} more)" if more > 0 else ""))

    def render(self) -> str:
        """Every diagnostic in its full form, separated by blank lines."""
        return "\n\n".join(d.render() for d in self.diagnostics)
