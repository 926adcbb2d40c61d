"""Claim paths (`username = $.email`): JSONPath, parsed by jsonpath-ng, compiled once.

The one module that imports jsonpath_ng. A claim path that can select several values (`[*]`,
`..`, `.*`, filters, slices, unions) yields a list; one that selects exactly one value yields
that value; one that selects nothing, or only JSON `null`, leaves the claim missing, and a rule
that reads a missing claim fails closed.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import attrs
from jsonpath_ng.ext import parse as _parse_jsonpath  # type: ignore[attr-defined]

# Syntax that lets one path select several values.
_MULTI = re.compile(r"\[\s*\*\s*\]|\.\.|\.\*|\[\s*\?|\[[^\]'\"]*[:,][^\]'\"]*\]")


class ClaimPathError(ValueError):
    """The text is not a JSONPath jsonpath-ng can run."""


class _Missing:
    """The value of a claim whose path selected nothing."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@attrs.frozen
class ClaimPath:
    """A compiled claim path; `select(document)` gives the claim's value or MISSING."""

    text: str
    multi: bool
    _expr: Any = attrs.field(eq=False, repr=False)

    def select(self, document: object) -> Any:
        try:
            found = [m.value for m in self._expr.find(document) if m.value is not None]
        except (TypeError, ValueError, KeyError, AttributeError, IndexError, RecursionError):
            return MISSING
        if self.multi:
            return found if found else MISSING
        if not found:
            return MISSING
        return found[0] if len(found) == 1 else found


@functools.lru_cache(maxsize=4096)
def compile_claim_path(text: str) -> ClaimPath:
    """Parse `text` once per process; raises ClaimPathError with jsonpath-ng's reason."""
    if not text.startswith("$"):
        raise ClaimPathError("a claim path starts with `$`")
    try:
        expr = _parse_jsonpath(text)
    except Exception as exc:  # jsonpath-ng raises its own errors and, on odd input, others
        raise ClaimPathError(_reason(exc)) from None
    return ClaimPath(text, bool(_MULTI.search(text)), expr)


def _reason(exc: Exception) -> str:
    message = str(exc).strip() or "invalid JSONPath"
    return message.splitlines()[0][:200]
