"""The engine the test servers run: a decision-table file's policy and identities, from the env.

The server processes of tests/middleware import this (PYTHONPATH is set to this directory) and
build their engine from the same case file the tests replay, read by the same code as the
in-process decision table and `policyauth test` (`policyauth.testing`), with the same identity
source (a StaticIdentitySource behind a wrapper that can also be down), so that a request
decided over HTTP is decided on exactly the data the in-process table uses.

Environment:
- `PA_TEST_CASES`: the case file (tests/decisions/cases/*.json, or server.json here).
- `PA_TEST_LOG`: a file the handlers append one JSON line to per request they handle (and the
  lifespan events), so a test can prove that a denied request never reached the handler.
- `PA_TEST_RAISING_TOKEN`: optional; a bearer token for which the identity source raises.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from policyauth import Engine
from policyauth.request import BasicCredential, BearerCredential
from policyauth.testing import RecordingIdentitySource, load_case_file, load_policy


class RaisingIdentitySource:
    """Wraps an identity source; raises for one token, as a broken store or a bug would."""

    def __init__(self, inner: Any, token: str) -> None:
        self._inner = inner
        self._token = token

    def _check(self, credential: BearerCredential | BasicCredential) -> None:
        if isinstance(credential, BearerCredential) and credential.token == self._token:
            raise RuntimeError("identity source exploded (test)")

    async def identify(self, authenticator: str, credential: Any) -> Any:
        self._check(credential)
        return await self._inner.identify(authenticator, credential)

    def identify_sync(self, authenticator: str, credential: Any) -> Any:
        self._check(credential)
        return self._inner.identify_sync(authenticator, credential)


def engine_from_env() -> Engine:
    file = load_case_file(os.environ["PA_TEST_CASES"])
    policy = load_policy(file)
    source: Any = RecordingIdentitySource(policy, file.identities)
    raising = os.environ.get("PA_TEST_RAISING_TOKEN")
    if raising:
        source = RaisingIdentitySource(source, raising)
    return Engine(policy, identities=source)


_log_lock = threading.Lock()


def record(entry: dict[str, Any]) -> None:
    """Append one JSON line to the handler log (if one is configured)."""
    path = os.environ.get("PA_TEST_LOG")
    if not path:
        return
    with _log_lock, open(path, "a", encoding="utf-8") as log:
        log.write(json.dumps(entry) + "\n")


def decision_lines(decision: Any) -> dict[str, int | None]:
    """The route and rule lines of the decision the handler was given."""
    return {
        "route_line": decision.route.line if decision.route is not None else None,
        "rule_line": decision.rule.line if decision.rule is not None else None,
    }
