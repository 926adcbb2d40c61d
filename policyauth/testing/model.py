"""What a policy test file says, as values: requests, the identities behind them, expectations.

The file format (docs/language.md, "Testing policies"; tests/decisions/README.md) is JSON, read
strictly by `policyauth.testing.load`; these classes are what it yields, already checked, so the
runner and the reports never look at raw JSON. They carry the line of each case, because a
failure that does not say where the case is written cannot be fixed quickly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from policyauth.decision import Reason


@attrs.frozen
class IdentityEntry:
    """What one credential stands for: the document its authenticator would have answered.

    `document` is the userinfo JSON for a provider (any JSON value, as a live answer could be),
    or `{"username": ..., "groups": [...]}` for a tokens block. `unavailable` makes the
    authenticator fail for this token instead (a provider that timed out: 503).
    """

    authenticator: str
    token: str = attrs.field(repr=False)
    document: Any = attrs.field(default=None, repr=False)
    unavailable: bool = False
    note: str = ""
    line: int = attrs.field(default=0, eq=False)  # where the entry is written; 0: unknown


@attrs.frozen
class CaseRequest:
    """A request exactly as a server would receive it: nothing is normalised before the engine."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class Expectation:
    """The decision a case expects.

    `status`, `reason` and `rule_line` are always checked (`rule_line` None: no rule decided),
    unless the case names the deciding rule by its label (`rule`), which survives `policyauth
    fmt` moving the rule; then `rule_line` is checked only if stated too. The other fields are
    checked only when the file states them; `stated` holds the keys it states, because for
    `route_line`, `username` and `provider` an explicit `null` is an assertion ("no route",
    "no principal") and must not be confused with leaving them out.
    """

    status: int
    reason: Reason
    rule_line: int | None = None
    rule: str | None = None  # the deciding rule's label, when the case names it (`null`: no rule)
    route_line: int | None = None
    headers: tuple[tuple[str, str], ...] | None = None
    username: str | None = None
    provider: str | None = None
    asked: tuple[str, ...] | None = None
    stated: frozenset[str] = frozenset()

    def states(self, key: str) -> bool:
        return key in self.stated


@attrs.frozen
class Case:
    """One request and the decision it must get; `line` is where the case is written."""

    name: str
    line: int
    request: CaseRequest
    expect: Expectation
    note: str = ""


@attrs.frozen
class CaseFile:
    """A whole test file: the policy it tests, the identities its cases use, and the cases.

    `name` is the file as the user spelled it (what messages show); `policy_name` likewise for
    the policy, and `policy_path` is where that policy is read from. `env` replaces the process
    environment for `env("NAME")` in the policy, so that a test means the same on every machine.
    """

    name: str
    policy_name: str
    policy_path: str
    policy_line: int
    env: Mapping[str, str]
    identities: tuple[IdentityEntry, ...]
    cases: tuple[Case, ...]
    description: str = ""
