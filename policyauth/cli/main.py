"""`policyauth`: the entry point that parses arguments and hands them to one subcommand.

This module is the CLI's edge: whatever a subcommand lets escape (bad input, an unreadable
file, Ctrl-C, a closed pipe) ends here as one line on stderr and an exit code, never as a
traceback. Subcommands live in their own modules; to add one, write the module (with a
`COMMAND`) and add its name to `COMMANDS`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence
from importlib import metadata

from policyauth.cli import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Command,
    UsageError,
    err,
)
from policyauth.diagnostics import PolicyError

# Subcommands, in the order `policyauth --help` lists them: modules of this package.
COMMANDS: tuple[str, ...] = (
    "lint",
    "fmt",
    "test",
    "explain",
    "userinfo",
    "inspect",
    "token",
    "serve",
    "diff",
)


def load_command(name: str) -> Command:
    """The `COMMAND` of module `policyauth.cli.<name>`."""
    module = importlib.import_module(f"policyauth.cli.{name}")
    command = getattr(module, "COMMAND", None)
    if not isinstance(command, Command):
        raise TypeError(f"policyauth.cli.{name} does not define a COMMAND")
    return command


def build_parser() -> argparse.ArgumentParser:
    """The whole argument parser, one subparser per registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="policyauth",
        description="Authorize HTTP requests by policy: check policies and explain decisions.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"policyauth {_version()}")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        command = load_command(name)
        sub = subcommands.add_parser(
            command.name,
            help=command.help,
            description=command.description,
            allow_abbrev=False,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.configure(sub)
        sub.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `policyauth` with `argv` (default: the process arguments); returns the exit code."""
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # argparse: --help, --version, or a usage error
            return _exit_code(exc.code)
        code: int = args.run(args)
        return code
    except KeyboardInterrupt:
        err("policyauth: interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except UsageError as exc:
        err(f"policyauth: {exc}")
        return EXIT_USAGE
    except PolicyError as exc:
        err(f"policyauth: {exc}")
        return EXIT_USAGE
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename is not None else ""
        err(f"policyauth: {where}{exc.strerror or exc}")
        return EXIT_USAGE
    except (ValueError, RecursionError) as exc:
        err(f"policyauth: {exc}")
        return EXIT_USAGE


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    err(str(code))
    return EXIT_USAGE


def _silence_stdout() -> None:
    """After the reader of stdout went away, point stdout at /dev/null.

    Otherwise Python's final flush of stdout fails again and prints a traceback on exit.
    """
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _version() -> str:
    try:
        return metadata.version("policyauth")
    except metadata.PackageNotFoundError:
        return "(not installed)"


if __name__ == "__main__":
    sys.exit(main())
