"""`policyauth fmt PATH...`: rewrite policy files in the one canonical layout, or check them.

The layout and its self-proof live in policyauth.language.formatter; this module only finds the
files (as `lint` does), decides what to print, and writes. A file is written only when its
content changes, and atomically (a temporary file in the same folder, then a rename), so an
interrupted run or a full disk never leaves half a policy behind. A file the formatter cannot
prove it formatted faithfully (PA901, PA902) is never written.
"""

from __future__ import annotations

import argparse
import difflib
import os
import tempfile
from pathlib import Path

from policyauth.cli import EXIT_NEGATIVE, EXIT_OK, EXIT_USAGE, Command, UsageError, err, out
from policyauth.cli.lint import PolicyFile, collect
from policyauth.diagnostics import PolicyError
from policyauth.language.formatter import FormatError, format_policy
from policyauth.loader import decode

DESCRIPTION = """\
Rewrite policy files in the canonical layout: two-space indentation, `=` aligned within a
block, one blank line between declarations, one entry or rule per line, every comment kept
next to the code it was next to. Every run proves itself: the result must parse to the same
policy with the same comments, and formatting it again must change nothing; otherwise the file
is left alone and an internal error (PA901, PA902) is reported.

A folder stands for every *.policy file below it, in sorted order; folders whose names start
with a dot are skipped.

--check and --diff write nothing: --check lists the files that would change (on stdout),
--diff prints what would change as a unified diff.

exit status: 0 nothing to do (or files rewritten), 1 with --check or --diff: some file would
change, 2 usage or I/O error, or a file that cannot be formatted (a syntax error, PA901, PA902)"""


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="a policy file, or a folder to search for *.policy files",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; list the files that would change and exit 1 if there are any",
    )
    parser.add_argument(
        "--diff",
        action="store_true",
        help="write nothing; print a unified diff of what would change and exit 1 if anything",
    )


def _run(args: argparse.Namespace) -> int:
    files = collect(args.paths)
    sources = [(file, _read(file)) for file in files]  # every file is readable before output
    dry_run = bool(args.check or args.diff)
    changed: list[PolicyFile] = []
    failed = 0
    for file, data in sources:
        formatted = _format(file, data)
        if formatted is None:
            failed += 1
            continue
        if formatted == data:
            continue
        changed.append(file)
        if args.diff:
            out(unified_diff(file.name, data.decode("utf-8-sig"), formatted.decode("utf-8")))
        elif args.check:
            out(file.name)
        else:
            try:
                write_atomically(file.path, formatted)
            except OSError as exc:
                err(f"policyauth: cannot write {file.name}: {exc.strerror or exc}")
                failed += 1
                changed.pop()
                continue
            err(f"reformatted {file.name}")
    err(summary(len(changed), len(files) - len(changed) - failed, failed, dry_run=dry_run))
    if failed:
        return EXIT_USAGE
    return EXIT_NEGATIVE if changed and dry_run else EXIT_OK


def _read(file: PolicyFile) -> bytes:
    try:
        return file.path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {file.name}: {exc.strerror or exc}") from None


def _format(file: PolicyFile, data: bytes) -> bytes | None:
    """The file's bytes in the canonical layout, in its own line endings; None (after saying
    why on stderr) when it cannot be formatted."""
    try:
        text = decode(data, file.name)
        formatted = format_policy(text, file.name)
    except PolicyError as exc:
        err(exc.render())
        return None
    except FormatError as exc:
        err(exc.diagnostic.render())
        return None
    # Keep Windows line endings where the file has them, so that a checkout with
    # `core.autocrlf` does not look unformatted.
    first_line = text.split("\n", 1)
    if len(first_line) == 2 and first_line[0].endswith("\r"):
        formatted = formatted.replace("\n", "\r\n")
    return formatted.encode("utf-8")


def unified_diff(name: str, before: str, after: str) -> str:
    """A unified diff from `before` to `after`, both labelled `name`, as `diff -u` and `patch`
    expect it (a missing final line break is marked, not glossed over)."""
    lines: list[str] = []
    for line in difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), name, name
    ):
        if line.endswith("\n"):
            lines.append(line)
        else:
            lines.append(line + "\n\\ No newline at end of file\n")
    return "".join(lines).removesuffix("\n")


def write_atomically(path: Path, data: bytes) -> None:
    """Replace the file at `path` (through symlinks) with `data`, keeping its permissions; a
    reader sees the old content or the new one, never a mix."""
    target = Path(os.path.realpath(path))
    mode = target.stat().st_mode & 0o7777
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def summary(changed: int, unchanged: int, failed: int, *, dry_run: bool) -> str:
    """`1 file reformatted, 4 files left unchanged`, or with --check and --diff `1 file would be
    reformatted, 4 files already formatted`; files that could not be formatted are counted."""
    if dry_run:
        verb = "would be reformatted"
        parts = [f"{_files(changed)} {verb}", f"{_files(unchanged)} already formatted"]
    else:
        parts = [f"{_files(changed)} reformatted", f"{_files(unchanged)} left unchanged"]
    if failed:
        parts.append(f"{_files(failed)} could not be formatted")
    return ", ".join(p for p in parts if not p.startswith("0 ")) or "no files"


def _files(count: int) -> str:
    return f"{count} file" if count == 1 else f"{count} files"


COMMAND = Command(
    name="fmt",
    help="rewrite policy files in the canonical layout, or check that they are",
    description=DESCRIPTION,
    configure=_configure,
    run=_run,
)
