"""Lint findings as GitHub Actions workflow commands, which GitHub shows as annotations.

`::error file=F,line=L,col=C,endLine=L2,endColumn=C2,title=CODE::message`, one per finding, is
what `@actions/core`'s `error()` and `warning()` print, escaped the same way: `%`, CR and LF in
the message, and additionally `:` and `,` in property values, where they would otherwise end a
value or the property list. Without that, a message with a newline would be cut short and a
file name with a comma would send the annotation to the wrong file.
"""

from __future__ import annotations

from policyauth.cli.sarif import artifact_path
from policyauth.diagnostics import Diagnostic

__all__ = ["annotation", "escape_data", "escape_property"]


def escape_data(text: str) -> str:
    """A message as `@actions/core` escapes it (`escapeData`)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A property value as `@actions/core` escapes it (`escapeProperty`)."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation(diagnostic: Diagnostic) -> str:
    """The workflow command for one finding: `::error ...` or `::warning ...`."""
    properties = [
        ("file", artifact_path(diagnostic.file)),
        ("line", str(diagnostic.line)),
        ("col", str(diagnostic.column)),
    ]
    if diagnostic.end_line >= diagnostic.line:
        properties.append(("endLine", str(diagnostic.end_line)))
        if diagnostic.end_line == diagnostic.line and diagnostic.end_column > diagnostic.column:
            properties.append(("endColumn", str(diagnostic.end_column)))
    properties.append(("title", diagnostic.code))
    command = "error" if diagnostic.is_error else "warning"
    listed = ",".join(f"{name}={escape_property(value)}" for name, value in properties)
    message = diagnostic.message
    if diagnostic.help:
        message += f"\nhelp: {diagnostic.help}"
    return f"::{command} {listed}::{escape_data(message)}"
