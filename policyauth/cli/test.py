"""`policyauth test PATH...`: run policy test files and report every case that fails.

A test file (NAME.policytest.json beside NAME.policy; format in docs/language.md, "Testing
policies") lists requests, the identities behind their tokens, and the decision each must get.
Every case goes through the real Engine with those identities, so nothing is called over the
network. Failures go to stdout, one located line each with the decision's rule trace under it;
the `N passed, N failed` summary goes to stderr, as lint's summary does.

Every file is read and its policy loaded before any case runs: a broken file is a usage error
(exit 2) that names the file and line, never a half-run suite.
"""

from __future__ import annotations

import argparse
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs

from policyauth.cli import EXIT_NEGATIVE, EXIT_OK, EXIT_USAGE, Command, UsageError, err, out
from policyauth.compiler import Policy
from policyauth.testing import (
    SUFFIX,
    CaseFile,
    CaseFileError,
    CaseResult,
    check_identities,
    coverage,
    load_case_file,
    load_policy,
    render_failure,
    run_file,
    summary,
)

DESCRIPTION = """\
Run policy test files: each case is a request, the identity behind its credentials, and the
decision it must get (status, reason, and the rule that decided). Identities are given in the
file, so no provider is called.

A folder stands for every *.policytest.json file below it, in sorted order; folders whose
names start with a dot are skipped. NAME.policytest.json tests NAME.policy beside it, unless
it names its policy with "policy". The process environment is not read: env() values come
from the file's "env".

exit status: 0 every case passed, 1 any case failed, 2 usage error or a file that cannot be
used"""


@attrs.frozen
class _Suite:
    """One test file, read and with its policy loaded, ready to run."""

    file: CaseFile
    policy: Policy


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help=f"a test file, or a folder to search for *{SUFFIX} files",
    )
    parser.add_argument(
        "--coverage",
        action="store_true",
        help="also list the routes no case matched and the rules that decided no case",
    )


def _run(args: argparse.Namespace) -> int:
    suites, problems = _load(collect(args.paths))
    if problems:
        for problem in problems:
            err(f"policyauth: {problem}")
        return EXIT_USAGE
    results: list[CaseResult] = []
    by_policy: dict[int, tuple[Policy, list[CaseResult]]] = {}  # one entry per policy loaded
    for suite in suites:
        ran = run_file(suite.policy, suite.file)
        results += ran
        by_policy.setdefault(id(suite.policy), (suite.policy, []))[1].extend(ran)
    failures = [render_failure(result) for result in results if not result.passed]
    if failures:
        out("\n\n".join(failures))
    if args.coverage:
        if failures:
            out("")
        out(_coverage_report(by_policy))
    err(summary(results))
    return EXIT_NEGATIVE if failures else EXIT_OK


def _load(names: Sequence[tuple[str, Path]]) -> tuple[list[_Suite], list[str]]:
    """Every file read and its policy loaded, or every problem found, so one run shows them all.

    Policies are loaded once per policy file and environment: several test files may test one.
    """
    suites: list[_Suite] = []
    problems: list[str] = []
    loaded: dict[tuple[str, tuple[tuple[str, str], ...]], Policy] = {}
    for name, path in names:
        try:
            file = load_case_file(path, name)
        except CaseFileError as exc:
            problems.append(str(exc))
            continue
        key = (os.path.realpath(file.policy_path), tuple(sorted(file.env.items())))
        try:
            policy = loaded.get(key)
            if policy is None:
                policy = loaded[key] = load_policy(file)
            else:
                check_identities(file, policy)
        except CaseFileError as exc:
            problems.append(str(exc))
            continue
        suites.append(_Suite(file, policy))
    return suites, problems


def _coverage_report(by_policy: dict[int, tuple[Policy, list[CaseResult]]]) -> str:
    """For each policy tested, by name: what no case exercised, then a one-line count."""
    lines: list[str] = []
    for policy, results in sorted(by_policy.values(), key=lambda entry: entry[0].file):
        report = coverage(policy, results)
        lines += [item.one_line() for item in report.uncovered]
        lines.append(f"coverage: {report.one_line()}")
    return "\n".join(lines)


def collect(paths: Sequence[str]) -> list[tuple[str, Path]]:
    """The test files named by `paths` (name as spelled, path), folders expanded, each once.

    A missing path or a folder without test files is a usage error: running nothing and
    reporting success would hide a typo in a CI configuration.
    """
    files: list[tuple[str, Path]] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        try:
            is_dir = stat.S_ISDIR(path.stat().st_mode)
        except OSError as exc:
            raise UsageError(f"cannot read {raw}: {exc.strerror or exc}") from None
        found = list(_test_files(raw, path)) if is_dir else [(raw, path)]
        if not found:
            raise UsageError(f"no *{SUFFIX} files in {raw}")
        for name, file in found:
            key = file.resolve()
            if key not in seen:
                seen.add(key)
                files.append((name, file))
    return files


def _test_files(raw: str, folder: Path) -> Iterator[tuple[str, Path]]:
    """Every test file below `folder`, sorted by path; hidden folders are skipped."""

    def fail(exc: OSError) -> None:
        raise UsageError(f"cannot read {exc.filename}: {exc.strerror or exc}")

    found: list[Path] = []
    for root, dirs, names in os.walk(folder, onerror=fail):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(root, n) for n in names if n.endswith(SUFFIX)]
    for path in sorted(found, key=lambda p: p.relative_to(folder).parts):
        if path.is_file():
            yield str(Path(raw) / path.relative_to(folder)), path


COMMAND = Command(
    name="test",
    help="run policy test files: requests and the decisions they must get",
    description=DESCRIPTION,
    configure=_configure,
    run=_run,
)
