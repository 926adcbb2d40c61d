"""The language's regexes (`matches /re/`): RE2, full-match, compiled once.

RE2 runs in time linear in the input, so no policy regex can be turned into a denial of service
by a crafted claim value (security case L05: `^(a+)+$` takes about 0.4 s at 24 characters under
Python's `re`). A pattern RE2 cannot run (back-references, look-around) is a load error, never a
silent fallback to `re`. The only module that imports `re2`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import re2

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would print to stderr; the error becomes a diagnostic instead
_OPTIONS.never_nl = False


class RegexError(ValueError):
    """The pattern is not one RE2 can run; the message says why in RE2's words."""


@functools.lru_cache(maxsize=4096)
def compile_regex(pattern: str) -> Callable[[str], bool]:
    """A predicate that is true when the whole of its argument matches `pattern`."""
    try:
        compiled = re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid pattern"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise RegexError(str(reason)) from None

    def full_match(value: str) -> bool:
        return compiled.fullmatch(value) is not None

    return full_match
