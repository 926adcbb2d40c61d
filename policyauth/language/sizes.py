"""Sizes as the language writes them (`64MB`): one definition for the parser and the checker
(env() values). Powers of 1024, as memory is counted; upper case only, like the methods, so
that `64mb` and `64Mb` are diagnosed rather than guessed at."""

from __future__ import annotations

import re

UNITS = {"KB": 1024, "MB": 1024**2, "GB": 1024**3}
_SIZE = re.compile(r"([0-9]+)(KB|MB|GB)")
# What reads as an attempt at a size: a number and a unit of bytes in any case (`64mb`, `1kib`,
# `512B`), which the lexer takes for a bad duration; the parser says PA170 instead of PA006.
LOOKS_LIKE_SIZE = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[kmgt]i?b?|b)", re.IGNORECASE)
_DURATION_UNITS = {"ms", "s", "m", "h", "d"}


def parse_size(text: str) -> int | None:
    """Bytes for a size such as `64MB`; None if `text` is not one."""
    match = _SIZE.fullmatch(text)
    if match is None or not match[1].isascii():
        return None
    return int(match[1]) * UNITS[match[2]]


def looks_like_size(text: str) -> bool:
    """Whether a malformed literal was meant as a size (`64mb`, `1.5GB`, `512B`), not a
    duration (`5min`, `1.5s`)."""
    unit = text.lstrip("0123456789.")
    return unit.lower() not in _DURATION_UNITS and LOOKS_LIKE_SIZE.fullmatch(text) is not None
