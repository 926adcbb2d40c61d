"""The checker's part for the `decision_log` setting (production.md section 4).

Kept out of checker.py so the evidence settings grow here: `decision_log` is "off" (the
default), "stderr", or a file that decisions are appended to as JSON lines; a relative file
is relative to the policy's folder, as token stores are.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from policyauth.diagnostics import Severity, Span
from policyauth.language import ast

_STREAM_LOOKALIKES = ("stdout", "-", "/dev/stdout")


class _Reporter(Protocol):
    base_dir: Path | None

    def report(
        self,
        span: Span,
        code: str,
        message: str,
        help: str | None = None,
        severity: Severity = Severity.ERROR,
    ) -> None: ...


def decision_log(checker: _Reporter, entries: Mapping[str, ast.Setting], value: str) -> str:
    """The checked destination: "off", "stderr", or an absolute file path.

    PA140: empty, or a control character in the name (a typo or an env() gone wrong: the log
    would go nowhere anyone looks). PA210: a name that looks like standard output, which is
    where a server's responses or a CLI's results go, so it is a file of that name instead."""
    if value in ("off", "stderr"):
        return value
    span = entries["decision_log"].value.span
    if not value.strip() or not value.isprintable():
        checker.report(
            span,
            "PA140",
            '`decision_log` must be "off", "stderr" or a file name',
            'write decision_log = "stderr", or a path such as "decisions.jsonl"',
        )
        return "off"
    if value in _STREAM_LOOKALIKES:
        checker.report(
            span,
            "PA210",
            f'`decision_log = "{value}"` appends to a file named `{value}`',
            'decisions are written to "stderr" or to a file; standard output is not offered',
            severity=Severity.WARNING,
        )
    path = Path(value)
    if not path.is_absolute() and checker.base_dir is not None:
        path = checker.base_dir / path
    return str(path)
