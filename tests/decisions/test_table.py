"""The decision table: every case file under cases/, replayed through the Engine, sync and async.

Each file names a policy, the identities its tokens stand for, and requests with the decision
each must get (the format is described in README.md next to this file; it is also the format of
`policyauth test` and of the integrations' replay tests). Nothing here knows about particular
cases: a failure names the file and the case, and shows the decision's message and rule trace.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

import policyauth
from policyauth import (
    Decision,
    Engine,
    Identity,
    Invalid,
    Policy,
    Reason,
    StaticIdentitySource,
    Unavailable,
)
from policyauth.request import BasicCredential, BearerCredential

HERE = Path(__file__).parent
CASES_DIR = HERE / "cases"

# Every reason belongs to exactly one status (language.md, section 5).
STATUS_OF = {
    Reason.ALLOWED: 200,
    Reason.MALFORMED_REQUEST: 400,
    Reason.INVALID_REQUEST: 400,
    Reason.NO_CREDENTIALS: 401,
    Reason.INVALID_TOKEN: 401,
    Reason.NO_ROUTE: 403,
    Reason.DENIED: 403,
    Reason.NOT_ALLOWED: 403,
    Reason.PROVIDER_UNAVAILABLE: 503,
}

_FILE_KEYS = {"policy", "env", "identities", "cases", "description"}
_IDENTITY_KEYS = {"authenticator", "token", "document", "unavailable", "note"}
_CASE_KEYS = {"name", "request", "expect", "note"}
_REQUEST_KEYS = {"method", "target", "headers"}
_EXPECT_REQUIRED = {"status", "reason"}
_EXPECT_KEYS = _EXPECT_REQUIRED | {
    "rule_line",
    "route_line",
    "headers",
    "username",
    "provider",
    "asked",
}


class TableError(Exception):
    """A case file that does not follow the format; never a silent skip."""


class TableIdentitySource:
    """A StaticIdentitySource that can also be down, and that records whom it was asked.

    Identity entries marked `"unavailable": true` answer Unavailable (a provider that timed
    out, say); every other entry is the document the real source would have received. `asked`
    lists the authenticators asked, in order, so a case can prove that a token went to one
    authenticator only, or to none.
    """

    def __init__(self, policy: Policy, identities: Sequence[Mapping[str, Any]]) -> None:
        documents: dict[tuple[str, str], Any] = {}
        self._down: set[tuple[str, str]] = set()
        for entry in identities:
            key = (entry["authenticator"], entry["token"])
            if entry.get("unavailable", False):
                self._down.add(key)
            else:
                documents[key] = entry["document"]
        self._static = StaticIdentitySource(policy, documents)
        self.asked: list[str] = []

    async def identify(
        self, authenticator: str, credential: BearerCredential | BasicCredential
    ) -> Identity | Invalid | Unavailable:
        return self.identify_sync(authenticator, credential)

    def identify_sync(
        self, authenticator: str, credential: BearerCredential | BasicCredential
    ) -> Identity | Invalid | Unavailable:
        self.asked.append(authenticator)
        secret = credential.token if isinstance(credential, BearerCredential) else credential.secret
        if (authenticator, secret) in self._down:
            return Unavailable(f"`{authenticator}` is down (decision table)")
        return self._static.identify_sync(authenticator, credential)


def _check_keys(where: str, value: object, allowed: set[str], required: set[str]) -> None:
    if not isinstance(value, dict):
        raise TableError(f"{where}: expected an object")
    unknown = set(value) - allowed
    missing = required - set(value)
    if unknown or missing:
        raise TableError(f"{where}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")


def read_table(path: Path) -> dict[str, Any]:
    """A case file, checked against the format so that a typo cannot skip an assertion."""
    table = json.loads(path.read_text(encoding="utf-8"))
    _check_keys(path.name, table, _FILE_KEYS, {"policy", "cases"})
    for number, entry in enumerate(table.get("identities", [])):
        _check_keys(
            f"{path.name}: identity {number}", entry, _IDENTITY_KEYS, {"authenticator", "token"}
        )
        if not entry.get("unavailable", False) and "document" not in entry:
            raise TableError(f"{path.name}: identity {number} needs `document` or `unavailable`")
    names = set()
    for case in table["cases"]:
        _check_keys(f"{path.name}: case", case, _CASE_KEYS, {"name", "request", "expect"})
        where = f"{path.name}::{case['name']}"
        if case["name"] in names:
            raise TableError(f"{where}: duplicate case name")
        names.add(case["name"])
        _check_keys(where + " request", case["request"], _REQUEST_KEYS, {"method", "target"})
        _check_keys(where + " expect", case["expect"], _EXPECT_KEYS, _EXPECT_REQUIRED)
        Reason(case["expect"]["reason"])  # raises for an unknown reason code
    return table  # type: ignore[no-any-return]


@functools.cache
def load_policy(path: Path) -> tuple[Policy, dict[str, Any]]:
    """The table and its policy, loaded once per file (the policy path is file-relative)."""
    table = read_table(path)
    policy = policyauth.load(path.parent / table["policy"], env=table.get("env", {}))
    return policy, table


def case_files() -> list[Path]:
    return sorted(CASES_DIR.glob("*.json"))


def all_cases() -> list[Any]:
    params = []
    for path in case_files():
        _, table = load_policy(path)
        for case in table["cases"]:
            params.append(pytest.param(path, case, id=f"{path.name}::{case['name']}"))
    return params


def describe(decision: Decision) -> str:
    lines = [f"{decision.status} {decision.reason.value}: {decision.message}"]
    if decision.route_text:
        lines.append(
            f"route {decision.route_text} (line {decision.route.line if decision.route else '?'})"
        )
    lines += [
        f"  {t.kind} line {t.span.line}: {t.text} -> {t.outcome.value} {t.detail}"
        for t in decision.trace
    ]
    return "\n".join(lines)


def check_decision(decision: Decision, expect: Mapping[str, Any], asked: list[str]) -> None:
    """Everything the case expects, plus what section 5 says holds for every decision."""
    shown = describe(decision)
    assert decision.status == expect["status"], shown
    assert decision.reason.value == expect["reason"], shown
    assert STATUS_OF[decision.reason] == decision.status, shown
    assert decision.allowed is (decision.status == 200), shown
    rule_line = decision.rule.line if decision.rule is not None else None
    assert rule_line == expect.get("rule_line"), shown
    if "route_line" in expect:
        route_line = decision.route.line if decision.route is not None else None
        assert route_line == expect["route_line"], shown
    if "headers" in expect:
        assert [list(h) for h in decision.headers] == expect["headers"], shown
    if "username" in expect:
        username = decision.principal.username if decision.principal is not None else None
        assert username == expect["username"], shown
    if "provider" in expect:
        assert decision.principal is not None, shown
        assert decision.principal.provider == expect["provider"], shown
    if "asked" in expect:
        assert asked == expect["asked"], shown

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


def _request(case: Mapping[str, Any]) -> tuple[str, str, list[tuple[str, str]]]:
    request = case["request"]
    headers = [(name, value) for name, value in request.get("headers", [])]
    return request["method"], request["target"], headers


@pytest.mark.parametrize(("path", "case"), all_cases())
async def test_case(path: Path, case: dict[str, Any]) -> None:
    policy, table = load_policy(path)
    method, target, headers = _request(case)
    identities = table.get("identities", [])

    sync_source = TableIdentitySource(policy, identities)
    sync_decision = Engine(policy, identities=sync_source).authorize_sync(method, target, headers)
    check_decision(sync_decision, case["expect"], sync_source.asked)

    async_source = TableIdentitySource(policy, identities)
    async_decision = await Engine(policy, identities=async_source).authorize(
        method, target, headers
    )
    check_decision(async_decision, case["expect"], async_source.asked)
    assert async_decision == sync_decision


class TestTheTableItself:
    """The table's own promises: size, and that every status and reason is exercised."""

    def test_at_least_160_cases(self) -> None:
        total = sum(len(load_policy(p)[1]["cases"]) for p in case_files())
        assert total >= 160

    def test_every_reason_is_covered(self) -> None:
        seen = {c["expect"]["reason"] for p in case_files() for c in load_policy(p)[1]["cases"]}
        assert seen == {r.value for r in Reason}

    def test_policies_lint_clean(self) -> None:
        for path in case_files():
            policy, _ = load_policy(path)
            assert policy.warnings == (), path.name
