"""Durations as the language writes them (`30s`, `5m`): one definition for the parser, the
checker (env() values) and the CLI (`--expires 90d`)."""

from __future__ import annotations

import re

UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"([0-9]+)(ms|s|m|h|d)")


def parse_duration(text: str) -> int | None:
    """Milliseconds for a duration such as `90d`; None if `text` is not one."""
    match = _DURATION.fullmatch(text)
    if match is None or not match[1].isascii():
        return None
    return int(match[1]) * UNITS[match[2]]
