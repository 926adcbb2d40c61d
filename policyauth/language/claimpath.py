"""Claim paths (`username = $.email`): JSONPath, parsed by jsonpath-ng, compiled once.

The one module that imports jsonpath_ng. A claim path that can select several values (`[*]`,
`..`, `.*`, filters, slices, unions) always yields a list: the values it selects (JSON `null`s
left out), `[]` when the container it walks exists and selects nothing (`"groups": []`), and
a missing claim when that container is absent, `null`, or not an array or object (so
`"groups": "suspended"` is missing and a deny rule on it denies). An empty list is an answer,
not an absence: a user without groups has no groups, and `deny if "x" in groups` must not deny
them. Any other path yields the one value it selects, or leaves the claim missing when it
selects nothing or only `null`. A rule that reads a missing claim fails closed.

"The container it walks" is what the path selects before its first step that can select
several values: `$.realm_access.roles` for `$.realm_access.roles[*]`, `$.data.teams` for
`$.data.teams[*].slug`, the document itself for `$..roles`.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import attrs
from jsonpath_ng import jsonpath as _steps
from jsonpath_ng.ext import parse as _parse_jsonpath  # type: ignore[attr-defined]
from jsonpath_ng.ext.filter import Filter as _Filter

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
    # `$.a.b` and `$.a.b[*]`, by far the most common paths, are walked directly: the same
    # answers as jsonpath-ng (a test compares them), at a tenth of the cost per request.
    _keys: tuple[str, ...] | None = attrs.field(default=None, eq=False, repr=False)
    # For a path that selects several values: the path to the container it walks (module
    # docstring); None where the path's shape gives no single container, and then an empty
    # selection is a missing claim, the closed answer.
    _container: Any = attrs.field(default=None, eq=False, repr=False)

    def select(self, document: object) -> Any:
        if self._keys is not None:
            return self._select_plain(self._keys, document)
        try:
            found = [m.value for m in self._expr.find(document) if m.value is not None]
            if self.multi and not found and self._container is not None:
                walked = [m.value for m in self._container.find(document)]
                if len(walked) == 1 and isinstance(walked[0], dict | list):
                    return found  # an existing container that gives nothing: []
        except Exception:  # jsonpath-ng on odd documents, or `re.error` from a `=~` filter
            return MISSING
        if self.multi:
            return found if found else MISSING
        if not found:
            return MISSING
        return found[0] if len(found) == 1 else found

    def _select_plain(self, keys: tuple[str, ...], document: object) -> Any:
        node = document
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                return MISSING
            node = node[key]
        if not self.multi:
            return MISSING if node is None else node
        if isinstance(node, dict):
            return [item for item in node.values() if item is not None]
        if isinstance(node, list):
            return [item for item in node if item is not None]
        return MISSING  # absent, null, or not a container: no list to speak of


_PLAIN = re.compile(r"\$((?:\.[A-Za-z_][A-Za-z0-9_]*)+)(\[\*\])?")


@functools.lru_cache(maxsize=4096)
def compile_claim_path(text: str) -> ClaimPath:
    """Parse `text` once per process; raises ClaimPathError with jsonpath-ng's reason."""
    if not text.startswith("$"):
        raise ClaimPathError("a claim path starts with `$`")
    if "=~" in text:
        # jsonpath-ng runs `=~` with Python's backtracking `re` on values the provider sends:
        # the linear-time promise for policy regexes would not hold.
        raise ClaimPathError("regex filters (`=~`) are not allowed; test the claim with `matches`")
    try:
        expr = _parse_jsonpath(text)
    except Exception as exc:  # jsonpath-ng raises its own errors and, on odd input, others
        raise ClaimPathError(_reason(exc)) from None
    plain = _PLAIN.fullmatch(text)
    keys = tuple(plain[1][1:].split(".")) if plain else None
    multi = bool(_MULTI.search(text))
    return ClaimPath(text, multi, expr, keys, _container_of(expr) if multi else None)


def _container_of(expr: Any) -> Any:
    """The path before the first step of `expr` that can select several values, or None when
    `expr` is not a chain of steps this function knows (then no container is assumed)."""
    if isinstance(expr, _steps.Child):
        inner = _container_of(expr.left)
        if inner is not None:
            return inner
        return expr.left if _selects_many(expr.right) else None
    if isinstance(expr, _steps.Descendants):
        inner = _container_of(expr.left)
        return inner if inner is not None else expr.left
    return None


def _selects_many(step: Any) -> bool:
    if isinstance(step, _steps.Wildcard | _steps.Slice | _Filter | _steps.Descendants):
        return True
    if isinstance(step, _steps.Index):
        return len(step.indices) > 1
    if isinstance(step, _steps.Fields):
        return len(step.fields) > 1 or "*" in step.fields
    return False


def _reason(exc: Exception) -> str:
    """jsonpath-ng's complaint in the words of a policy author, without its token names."""
    message = (str(exc).strip() or "invalid JSONPath").splitlines()[0]
    at = re.match(r"Parse error at \d+:(\d+) near token (.*?) \(.*\)$", message)
    if at:
        return f"unexpected `{at[2]}` at character {int(at[1]) + 1}"
    char = re.match(r"Error on line \d+, col (\d+): Unexpected character: (.*)$", message)
    if char:
        return f"unexpected character `{char[2]}` at character {int(char[1]) + 1}"
    if message.startswith("Parse error near the end of string"):
        return "the path ends too early"
    return message[:200]


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def path_to(steps: list[str | int]) -> str:
    """The claim path text for a list of keys and indices, bracketed where a key needs it."""
    text = "$"
    for step in steps:
        if isinstance(step, int):
            text += f"[{step}]"
        elif _PLAIN_KEY.fullmatch(step):
            text += f".{step}"
        else:
            text += "['" + step.replace("\\", "\\\\").replace("'", "\\'") + "']"
    return text


def string_paths(document: object, limit: int = 500) -> list[tuple[str, object]]:
    """Every path to a string in `document`, and every path to a list of strings (as `[*]`),
    in document order: the candidates for `username = ...` and `groups = ...` lines."""
    found: list[tuple[str, object]] = []
    stack: list[tuple[object, list[str | int]]] = [(document, [])]
    while stack and len(found) < limit:
        node, steps = stack.pop()
        if isinstance(node, str):
            found.append((path_to(steps), node))
        elif isinstance(node, dict):
            stack.extend((value, [*steps, key]) for key, value in reversed(list(node.items())))
        elif isinstance(node, list):
            if node and all(isinstance(item, str) for item in node):
                found.append((path_to(steps) + "[*]", node))
            else:
                stack.extend((item, [*steps, i]) for i, item in reversed(list(enumerate(node))))
    return found
