"""Running test cases: each request through a real Engine, its decision compared with the case.

Nothing here prints or exits: results are values, so the CLI, the decision-table tests and any
other runner report them as they like. Cases go through `Engine`, the object every
integration uses, with identities from the test file instead of live providers, so a case
that passes here is decided the same way in production, given the same identity documents.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from policyauth.compiler import Policy
from policyauth.decision import Decision
from policyauth.diagnostics import Span
from policyauth.engine import Engine
from policyauth.identity.source import (
    Credential,
    IdentityResult,
    StaticIdentitySource,
    Unavailable,
)
from policyauth.request import BearerCredential
from policyauth.testing.model import Case, CaseFile, Expectation, IdentityEntry

__all__ = [
    "CaseResult",
    "Mismatch",
    "RecordingIdentitySource",
    "compare",
    "label_text",
    "route_text",
    "rule_text",
    "run_case",
    "run_case_async",
    "run_file",
]


class RecordingIdentitySource:
    """The identities of a test file, answering as the real sources would, and noting who is asked.

    Entries marked `unavailable` answer Unavailable (a provider that timed out, say); the others
    go through StaticIdentitySource, which applies claim paths and `success` exactly as for a
    live answer. `asked` lists the authenticators asked, in order, so a case can prove that a
    token went to one authenticator only, or to none.
    """

    def __init__(self, policy: Policy, identities: Sequence[IdentityEntry]) -> None:
        documents: dict[tuple[str, str], Any] = {}
        self._down: set[tuple[str, str]] = set()
        for entry in identities:
            key = (entry.authenticator, entry.token)
            if entry.unavailable:
                self._down.add(key)
            else:
                documents[key] = entry.document
        self._static = StaticIdentitySource(policy, documents)
        self.asked: list[str] = []

    async def identify(self, authenticator: str, credential: Credential) -> IdentityResult:
        return self.identify_sync(authenticator, credential)

    def identify_sync(self, authenticator: str, credential: Credential) -> IdentityResult:
        self.asked.append(authenticator)
        secret = credential.token if isinstance(credential, BearerCredential) else credential.secret
        if (authenticator, secret) in self._down:
            return Unavailable(f"`{authenticator}` is unavailable (test identity)")
        return self._static.identify_sync(authenticator, credential)


@attrs.frozen
class Mismatch:
    """One stated expectation the decision does not meet: the key and both values, as shown."""

    key: str
    expected: str
    actual: str


@attrs.frozen
class CaseResult:
    """A case and what came of it. `decision` is None only when the engine raised (`error`)."""

    file: CaseFile
    case: Case
    decision: Decision | None
    asked: tuple[str, ...]
    mismatches: tuple[Mismatch, ...]
    error: str | None = None

    @property
    def passed(self) -> bool:
        return not self.mismatches and self.error is None


def run_case(policy: Policy, file: CaseFile, case: Case) -> CaseResult:
    """Decide `case` with `Engine.authorize_sync` and compare; an engine that raises fails it."""
    source = RecordingIdentitySource(policy, file.identities)
    request = case.request
    try:
        decision = Engine(policy, identities=source).authorize_sync(
            request.method, request.target, request.headers
        )
    except Exception as exc:  # an engine bug must fail the case, not end the run
        return _raised(file, case, source, exc)
    return _result(file, case, decision, source)


async def run_case_async(policy: Policy, file: CaseFile, case: Case) -> CaseResult:
    """The same as `run_case` through `await Engine.authorize` (the ASGI path)."""
    source = RecordingIdentitySource(policy, file.identities)
    request = case.request
    try:
        decision = await Engine(policy, identities=source).authorize(
            request.method, request.target, request.headers
        )
    except Exception as exc:
        return _raised(file, case, source, exc)
    return _result(file, case, decision, source)


def run_file(policy: Policy, file: CaseFile) -> list[CaseResult]:
    """Every case of `file`, in file order, against `policy` (the file's policy, loaded)."""
    return [run_case(policy, file, case) for case in file.cases]


def _result(
    file: CaseFile, case: Case, decision: Decision, source: RecordingIdentitySource
) -> CaseResult:
    asked = tuple(source.asked)
    return CaseResult(file, case, decision, asked, compare(case.expect, decision, asked))


def _raised(
    file: CaseFile, case: Case, source: RecordingIdentitySource, exc: Exception
) -> CaseResult:
    error = f"the engine raised {type(exc).__name__}: {exc}"
    return CaseResult(file, case, None, tuple(source.asked), (), error)


def compare(expect: Expectation, decision: Decision, asked: Sequence[str]) -> tuple[Mismatch, ...]:
    """Every way `decision` differs from `expect`, in the order the format lists the keys.

    `status`, `reason` and `rule_line` are always compared (no `rule_line`: no rule decided);
    the other keys only when the case states them.
    """
    found: list[Mismatch] = []

    def check(key: str, expected: str, actual: str) -> None:
        if expected != actual:
            found.append(Mismatch(key, expected, actual))

    check("status", str(expect.status), str(decision.status))
    check("reason", expect.reason.value, decision.reason.value)
    if expect.states("rule"):
        check("rule", label_text(expect.rule), label_text(decision.rule_label, decision.rule))
    if expect.states("rule_line") or not expect.states("rule"):
        check("rule_line", rule_text(expect.rule_line), rule_text(_line(decision.rule)))
    if expect.states("route_line"):
        check("route_line", route_text(expect.route_line), route_text(_line(decision.route)))
    if expect.states("headers") and expect.headers is not None:
        check("headers", _headers_text(expect.headers), _headers_text(decision.headers))
    principal = decision.principal
    if expect.states("username"):
        check(
            "username",
            _principal_text("username", expect.username),
            _principal_text("username", principal.username if principal else None),
        )
    if expect.states("provider"):
        check(
            "provider",
            _principal_text("provider", expect.provider),
            _principal_text("provider", principal.provider if principal else None),
        )
    if expect.states("asked") and expect.asked is not None:
        check("asked", _asked_text(expect.asked), _asked_text(asked))
    return tuple(found)


def _line(span: Span | None) -> int | None:
    return None if span is None else span.line


def label_text(label: str | None, rule: Span | None = None) -> str:
    """`rule "readers"`, `an unlabelled rule` or `no rule`: how failures show a rule named by
    its label (`rule` is the deciding rule's place, to tell an unlabelled rule from none)."""
    if label is not None:
        return f'rule "{label}"'
    return "an unlabelled rule" if rule is not None else "no rule"


def rule_text(line: int | None) -> str:
    """`rule line 12`, or `no rule`: how failures show the deciding rule."""
    return "no rule" if line is None else f"rule line {line}"


def route_text(line: int | None) -> str:
    """`route line 3`, or `no route`."""
    return "no route" if line is None else f"route line {line}"


def _principal_text(key: str, value: str | None) -> str:
    return "no principal" if value is None else f"{key} `{value}`"


def _headers_text(headers: Sequence[tuple[str, str]]) -> str:
    if not headers:
        return "no headers"
    return "headers " + "; ".join(f"{name}: {value}" for name, value in headers)


def _asked_text(asked: Sequence[str]) -> str:
    return "asked nobody" if not asked else "asked " + ", ".join(asked)
