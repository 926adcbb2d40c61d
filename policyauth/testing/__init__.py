"""Policy tests: files of requests and the decisions they must get, read, run and reported.

`policyauth test` is built on this package, and so are the project's own decision tables
(tests/decisions): one format, one loader, one runner. The format is described in
docs/language.md ("Testing policies").
"""

from policyauth.testing.coverage import Coverage, Uncovered, coverage
from policyauth.testing.load import (
    STATUS_OF,
    SUFFIX,
    CaseFileError,
    check_identities,
    implied_policy,
    load_case_file,
    load_policy,
    parse,
)
from policyauth.testing.model import Case, CaseFile, CaseRequest, Expectation, IdentityEntry
from policyauth.testing.report import render_failure, summary
from policyauth.testing.run import (
    CaseResult,
    Mismatch,
    RecordingIdentitySource,
    compare,
    run_case,
    run_case_async,
    run_file,
)

__all__ = [
    "STATUS_OF",
    "SUFFIX",
    "Case",
    "CaseFile",
    "CaseFileError",
    "CaseRequest",
    "CaseResult",
    "Coverage",
    "Expectation",
    "IdentityEntry",
    "Mismatch",
    "RecordingIdentitySource",
    "Uncovered",
    "check_identities",
    "compare",
    "coverage",
    "implied_policy",
    "load_case_file",
    "load_policy",
    "parse",
    "render_failure",
    "run_case",
    "run_case_async",
    "run_file",
    "summary",
]
