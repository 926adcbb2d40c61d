"""The decision table (tests/decisions/cases/*.json) replayed through both real servers.

Every case of every case file is sent over loopback to a uvicorn process running the ASGI
middleware and to a waitress process running the WSGI middleware; each process builds its
engine from the same case file (its policy, env and identities, read by `policyauth.testing`,
as the in-process table and `policyauth test` read it). The server tests' own file,
apps/server.json, is replayed the same way. A case passes when the client sees what the
decision says:

- a denial: the status, the body `{"error": reason}` and nothing else, `cache-control: no-store`,
  the decision's headers where the case gives them, and no handler run (the handlers log every
  request they see);
- an allow: the handler ran once and saw the decision's reason, route and rule lines, the
  principal's username and provider, and the method.

What HTTP cannot show is not checked here: `asked` (the in-process table checks it), and the
rule line of a denial, which is deliberately not sent to the caller.

A few requests never reach the middleware: the server itself rejects them with its own 400
(SERVER_REJECTS). Each is listed per server, so that a server release that starts passing such
a request on is noticed here; the middleware must then reject it (the expected outcome is
always 400 `malformed_request`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from middleware_servers import ROOT, SERVER_CASES, Reply, ServerPool, expected_headers

from policyauth.testing import Case, Expectation, load_case_file, load_policy, run_file

CASES_DIR = ROOT / "tests" / "decisions" / "cases"
APPS = {"uvicorn": "asgi_app:app", "waitress": "wsgi_app:app"}

# (server, "file::case") -> a piece of the server's own error body.
SERVER_REJECTS = {
    # h11 takes only visible ASCII in the request target.
    ("uvicorn", "routing.json::raw non-ascii is malformed"): b"Invalid HTTP request",
    ("waitress", "routing.json::raw non-ascii is malformed"): b"Bad URI",
    # waitress rejects methods that are not upper case before the application runs.
    ("waitress", "routing.json::lower-case method"): b'Malformed HTTP method "get"',
}


def case_files() -> list[Path]:
    files = sorted(CASES_DIR.glob("*.json"))
    assert files, f"no case files in {CASES_DIR}"
    return [*files, SERVER_CASES]


def _params() -> list[Any]:
    params = []
    for kind in APPS:
        for path in case_files():
            for case in load_case_file(path).cases:
                case_id = f"{path.name}::{case.name}"
                params.append(pytest.param(kind, path, case, id=f"{kind}::{case_id}"))
    return params


@pytest.mark.parametrize(("kind", "path", "case"), _params())
def test_case_through_server(server_pool: ServerPool, kind: str, path: Path, case: Case) -> None:
    server = server_pool.get(kind, APPS[kind], path)
    request = case.request
    expect = case.expect
    before = len(server.handled())
    reply = server.request(request.method, request.target, request.headers)
    seen = server.handled()[before:]
    shown = f"{reply.status} {reply.headers} {reply.body[:300]!r}; handler saw {seen}"

    rejected_by_server = SERVER_REJECTS.get((kind, f"{path.name}::{case.name}"))
    if rejected_by_server is not None:
        assert (expect.status, expect.reason.value) == (400, "malformed_request")
        assert reply.status == 400, shown
        assert rejected_by_server in reply.body, shown
        assert seen == [], shown
        return

    assert reply.status == expect.status, shown
    if expect.status == 200:
        _check_allowed(reply, expect, request.method, seen, shown)
    else:
        _check_denied(reply, expect, request.method == "HEAD", seen, shown)
    if expect.headers is not None:
        assert reply.decision_headers() == expected_headers(expect.headers), shown


def _check_allowed(
    reply: Reply, expect: Expectation, method: str, seen: list[dict[str, Any]], shown: str
) -> None:
    assert len(seen) == 1, shown
    echo = reply.echo()
    assert echo == seen[0], shown
    assert echo["method"] == method, shown
    assert echo["reason"] == "allowed", shown
    assert echo["rule_line"] == expect.rule_line, shown
    if expect.states("route_line"):
        assert echo["route_line"] == expect.route_line, shown
    if expect.states("username"):
        if expect.username is None:
            assert (echo["authenticated"], echo["user"], echo["groups"]) == (False, "", []), shown
        else:
            assert (echo["authenticated"], echo["user"]) == (True, expect.username), shown
    if expect.states("provider"):
        assert echo["provider"] == expect.provider, shown


def _check_denied(
    reply: Reply, expect: Expectation, is_head: bool, seen: list[dict[str, Any]], shown: str
) -> None:
    assert seen == [], "a denied request reached the handler: " + shown
    assert reply.header("x-echo") is None, shown
    assert reply.header("content-type") == "application/json", shown
    assert reply.header("cache-control") == "no-store", shown
    if is_head:
        assert reply.body == b"", shown
    else:
        assert reply.json() == {"error": expect.reason.value}, shown


def test_every_server_rejection_names_a_case() -> None:
    """A renamed case must not leave a stale entry behind (it would then excuse nothing)."""
    known = {
        f"{path.name}::{case.name}" for path in case_files() for case in load_case_file(path).cases
    }
    assert {case_id for _, case_id in SERVER_REJECTS} <= known


def test_the_server_tests_own_table_holds_in_process() -> None:
    """apps/server.json, which the server tests rely on, also passes the in-process runner."""
    file = load_case_file(SERVER_CASES)
    results = run_file(load_policy(file), file)
    assert [r.case.name for r in results if not r.passed] == []
