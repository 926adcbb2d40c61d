"""The `policyauth` command line: subcommands over the same public API a user has.

Each subcommand is one module in this package that defines `COMMAND`, a `Command` value, and is
named once in `policyauth.cli.main.COMMANDS`; nothing else has to change to add one.

Exit codes are shared by every subcommand: 0 success, 1 a negative answer (findings, a denied
request, a failed test), 2 a usage or input error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TextIO

import attrs

EXIT_OK = 0
EXIT_NEGATIVE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # what a shell reports for a process ended by SIGPIPE


class UsageError(Exception):
    """Bad input to the CLI itself (arguments, files, JSON): one line on stderr, exit 2.

    Raised by subcommands instead of printing and returning, so that every such message has
    the same `policyauth: ...` shape and no subcommand can forget the exit code.
    """


@attrs.frozen
class Command:
    """A subcommand: its name and help, how it declares its arguments, and how it runs.

    `run` returns the exit code; it writes results to stdout and problems to stderr.
    """

    name: str
    help: str
    description: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def out(text: str) -> None:
    """Write a line of results to stdout."""
    _write(sys.stdout, text)


def err(text: str) -> None:
    """Write a line of problems or summaries to stderr."""
    _write(sys.stderr, text)


def _write(stream: TextIO, text: str) -> None:
    """Write `text` so that it can always be encoded.

    File names and identity documents can hold what the terminal's encoding cannot (lone
    surrogates from undecodable file names, say); printing them must not end in a traceback.
    """
    encoding = getattr(stream, "encoding", None) or "utf-8"
    stream.write(text.encode(encoding, "backslashreplace").decode(encoding) + "\n")


__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_INTERRUPTED",
    "EXIT_NEGATIVE",
    "EXIT_OK",
    "EXIT_USAGE",
    "Command",
    "UsageError",
    "err",
    "out",
]
