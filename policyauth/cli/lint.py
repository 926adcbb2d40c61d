"""`policyauth lint PATH...`: every error and warning in policy files, for people and for CI.

Lint runs exactly what loading runs (policyauth.analyze), so a file that lints clean loads, and
a file that fails to load says why here, with every problem at once rather than the first.
Findings go to stdout (text, JSON, SARIF or GitHub annotations); the one-line summary goes to
stderr, so that a pipe or a JSON consumer sees findings only.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs

from policyauth.analysis import openapi
from policyauth.analysis.diff import load_for_diff
from policyauth.cli import EXIT_NEGATIVE, EXIT_OK, Command, UsageError, err, out
from policyauth.cli.github import annotation
from policyauth.cli.sarif import to_sarif
from policyauth.diagnostics import Diagnostic, PolicyError, sort_diagnostics
from policyauth.loader import analyze, decode

SUFFIX = ".policy"

DESCRIPTION = """\
Check policy files and report every problem: syntax and semantic errors (the policy would not
load) and warnings (it loads but probably does not mean what it says).

A folder stands for every *.policy file below it, in sorted order; folders whose names start
with a dot are skipped. Token stores named by `store = "..."` resolve relative to the policy's
folder, and env() values come from the environment.

--format sarif writes a SARIF 2.1.0 log for GitHub code scanning (upload it with
github/codeql-action/upload-sarif); --format github writes workflow commands that GitHub
Actions shows as annotations on the lines they name.

exit status: 0 no findings, 1 any error or warning, 2 usage or I/O error"""


@attrs.frozen
class PolicyFile:
    """A file to lint: the name diagnostics show (as the user spelled it) and its path."""

    name: str
    path: Path


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="a policy file, or a folder to search for *.policy files",
    )
    parser.add_argument(
        "--format",
        choices=("text", "json", "sarif", "github"),
        default="text",
        help="text: each finding with its source line; json: one array of findings; "
        "sarif: a SARIF 2.1.0 log (GitHub code scanning); github: GitHub Actions annotations",
    )
    parser.add_argument(
        "--openapi",
        metavar="SPEC",
        help="also check the policies against an OpenAPI 3.0/3.1 description (JSON or YAML): "
        "operations no route takes, operations only a public route takes, routes no operation uses",
    )
    parser.add_argument(
        "--base-path",
        metavar="PATH",
        help="the path the API is mounted at (default: the path of the first servers[].url)",
    )


def _run(args: argparse.Namespace) -> int:
    files = collect(args.paths)
    sources = [(file, _read(file)) for file in files]  # every file is readable before output
    findings: list[Diagnostic] = []
    for file, data in sources:
        findings += lint_file(file, data)
    if args.openapi is not None:
        findings = sort_diagnostics(findings + _openapi(args, files, findings))
    if args.format == "json":
        out(json.dumps([to_json(d) for d in findings], indent=2))
    elif args.format == "sarif":
        out(json.dumps(to_sarif(findings), indent=2))
    elif args.format == "github":
        for finding in findings:
            out(annotation(finding))
        err(summary(findings, len(files)))
    else:
        if findings:
            out("\n\n".join(d.render() for d in findings))
        err(summary(findings, len(files)))
    return EXIT_NEGATIVE if findings else EXIT_OK


def _openapi(
    args: argparse.Namespace, files: Sequence[PolicyFile], findings: Sequence[Diagnostic]
) -> list[Diagnostic]:
    """The `--openapi` findings for each file that loads; info lines go to stderr."""
    try:
        spec = openapi.load_spec(args.openapi)
    except openapi.SpecError as exc:
        raise UsageError(str(exc)) from None
    base = args.base_path if args.base_path is not None else openapi.base_path(spec)
    ops = openapi.operations(spec, base)
    broken = {d.file for d in findings if d.is_error}
    extra: list[Diagnostic] = []
    for file in files:
        if file.name in broken:
            continue
        found, infos = openapi.check_coverage(load_for_diff(file.path).model, ops, args.openapi)
        extra += found
        for line in infos:
            err(line)
    return extra


def collect(paths: Sequence[str]) -> list[PolicyFile]:
    """The files named by `paths`, folders expanded, each file once, in the order given.

    A missing path or a folder without policies is a usage error: linting nothing and
    reporting success would hide a typo in a CI configuration.
    """
    files: list[PolicyFile] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        try:
            is_dir = stat.S_ISDIR(path.stat().st_mode)
        except OSError as exc:
            raise UsageError(f"cannot read {raw}: {exc.strerror or exc}") from None
        found = list(_policy_files(raw, path)) if is_dir else [PolicyFile(raw, path)]
        if not found:
            raise UsageError(f"no {SUFFIX} files in {raw}")
        for file in found:
            key = file.path.resolve()
            if key not in seen:
                seen.add(key)
                files.append(file)
    return files


def _policy_files(raw: str, folder: Path) -> Iterator[PolicyFile]:
    """Every `*.policy` file below `folder`, sorted by path; hidden folders are skipped."""

    def fail(exc: OSError) -> None:
        raise UsageError(f"cannot read {exc.filename}: {exc.strerror or exc}")

    found: list[Path] = []
    for root, dirs, names in os.walk(folder, onerror=fail):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(root, n) for n in names if n.endswith(SUFFIX)]
    for path in sorted(found, key=lambda p: p.relative_to(folder).parts):
        if path.is_file():
            yield PolicyFile(str(Path(raw) / path.relative_to(folder)), path)


def _read(file: PolicyFile) -> bytes:
    try:
        return file.path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {file.name}: {exc.strerror or exc}") from None


def lint_file(file: PolicyFile, data: bytes) -> list[Diagnostic]:
    """Every diagnostic for one file, by location; a file that is not UTF-8 is one finding."""
    try:
        text = decode(data, file.name)
    except PolicyError as exc:
        return exc.diagnostics
    _, diagnostics = analyze(text, file.name, base_dir=file.path.parent)
    return sort_diagnostics(diagnostics)


def to_json(diagnostic: Diagnostic) -> dict[str, Any]:
    """The JSON form of a finding: the fields editors and CI annotations need, nothing else."""
    return {
        "code": diagnostic.code,
        "severity": diagnostic.severity.value,
        "message": diagnostic.message,
        "file": diagnostic.file,
        "line": diagnostic.line,
        "column": diagnostic.column,
        "end_line": diagnostic.end_line,
        "end_column": diagnostic.end_column,
        "help": diagnostic.help,
    }


def summary(findings: Sequence[Diagnostic], files: int) -> str:
    """`2 errors, 1 warning in 3 files`, or `3 files clean`."""
    checked = _plural(files, "file")
    if not findings:
        return f"{checked} clean"
    errors = sum(1 for d in findings if d.is_error)
    counts = [
        _plural(n, word)
        for n, word in ((errors, "error"), (len(findings) - errors, "warning"))
        if n
    ]
    return f"{', '.join(counts)} in {checked}"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


COMMAND = Command(
    name="lint",
    help="check policy files and report every error and warning",
    description=DESCRIPTION,
    configure=_configure,
    run=_run,
)
