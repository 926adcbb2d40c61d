"""The decision table: every case file under cases/, replayed through the Engine, sync and async.

Each file names a policy, the identities its tokens stand for, and requests with the decision
each must get (the format is described in README.md next to this file; it is the format of
`policyauth test`, and is read and compared by the same code, `policyauth.testing`). Nothing
here knows about particular cases: a failure names the file, line and case, and shows the
decision's message and rule trace.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from policyauth import Decision, Engine, Policy, Reason
from policyauth import testing as policy_tests
from policyauth.testing import (
    STATUS_OF,
    Case,
    CaseFile,
    CaseResult,
    IdentityEntry,
    RecordingIdentitySource,
    compare,
    load_case_file,
    render_failure,
)

HERE = Path(__file__).parent
CASES_DIR = HERE / "cases"


@functools.cache
def load_table(path: Path) -> tuple[Policy, CaseFile]:
    """A case file, read strictly (a typo cannot skip an assertion), and its policy, once."""
    table = load_case_file(path, str(path.relative_to(HERE.parents[1])))
    return policy_tests.load_policy(table), table


def case_files() -> list[Path]:
    return sorted(CASES_DIR.glob("*.json"))


def all_cases() -> list[Any]:
    params = []
    for path in case_files():
        _, table = load_table(path)
        for index, case in enumerate(table.cases):
            params.append(pytest.param(path, index, id=f"{path.name}::{case.name}"))
    return params


def check_decision(table: CaseFile, case: Case, decision: Decision, asked: Sequence[str]) -> None:
    """Everything the case expects, plus what section 5 says holds for every decision."""
    result = CaseResult(table, case, decision, tuple(asked), compare(case.expect, decision, asked))
    shown = render_failure(result)
    assert result.passed, shown
    assert STATUS_OF[decision.reason] == decision.status, shown
    assert decision.allowed is (decision.status == 200), shown

    challenges = [v for n, v in decision.headers if n.lower() == "www-authenticate"]
    if decision.status == 401:
        assert challenges, "a 401 must carry WWW-Authenticate challenges\n" + shown
    if decision.reason is Reason.NO_CREDENTIALS:
        assert not any("error=" in c for c in challenges), shown
    if decision.reason is Reason.INVALID_TOKEN:
        assert 'error="invalid_token"' in challenges[0], shown
    if decision.status != 200 or decision.route is None:
        return
    if decision.rule is None:  # a public route: no principal, no rule
        assert decision.principal is None, shown


@pytest.mark.parametrize(("path", "index"), all_cases())
async def test_case(path: Path, index: int) -> None:
    policy, table = load_table(path)
    case = table.cases[index]
    request = case.request

    sync_source = RecordingIdentitySource(policy, table.identities)
    sync_decision = Engine(policy, identities=sync_source).authorize_sync(
        request.method, request.target, request.headers
    )
    check_decision(table, case, sync_decision, sync_source.asked)

    async_source = RecordingIdentitySource(policy, table.identities)
    async_decision = await Engine(policy, identities=async_source).authorize(
        request.method, request.target, request.headers
    )
    check_decision(table, case, async_decision, async_source.asked)
    assert async_decision == sync_decision


class TestTheTableItself:
    """The table's own promises: size, and that every status and reason is exercised."""

    def test_at_least_160_cases(self) -> None:
        total = sum(len(load_table(p)[1].cases) for p in case_files())
        assert total >= 160

    def test_every_reason_is_covered(self) -> None:
        seen = {c.expect.reason for p in case_files() for c in load_table(p)[1].cases}
        assert seen == set(Reason)

    def test_policies_lint_clean(self) -> None:
        for path in case_files():
            policy, _ = load_table(path)
            assert policy.warnings == (), path.name


# --- for the middleware servers -------------------------------------------------------------------
# tests/middleware/apps/table_engine.py loads this module and builds its servers' engine with
# these two names. They are thin wrappers over policyauth.testing, the one reader of the format;
# new code should use that package directly.


@functools.cache
def load_policy(path: Path) -> tuple[Policy, dict[str, Any]]:
    """The policy of a case file (which may list identities only) and the file's raw data."""
    table = load_case_file(path, require_cases=False)
    data = json.loads(path.read_text(encoding="utf-8"))
    return policy_tests.load_policy(table), data


class TableIdentitySource(RecordingIdentitySource):
    """RecordingIdentitySource over the raw `identities` entries of a case file."""

    def __init__(self, policy: Policy, identities: Sequence[Mapping[str, Any]]) -> None:
        super().__init__(
            policy,
            [
                IdentityEntry(
                    entry["authenticator"],
                    entry["token"],
                    entry.get("document"),
                    bool(entry.get("unavailable", False)),
                )
                for entry in identities
            ],
        )
