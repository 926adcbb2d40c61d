"""The ASGI middleware on uvicorn's fast stack: httptools + uvloop, what `uvicorn[standard]`
installs and most deployments run. The other uvicorn tests pin h11 (their expectations are
h11's, which hands odd targets on as they came); httptools parses the request line itself:
it answers some malformed requests with its own 400 and cuts a raw `#...` or an absolute-form
prefix off the target before the application sees it.

Whatever the parser does, the rule is the same as on h11: the path the handler sees is the
path policyauth decided on, so no hostile target reaches a protected handler.
"""

from __future__ import annotations

import pytest
from middleware_servers import (
    BEARER,
    HOSTILE_TARGETS,
    Server,
    assert_denial,
    bearer,
    no_handler_runs,
    one_handled,
)

ANN = bearer("t-ann")  # an admin
BOB = bearer("t-bob")  # staff, not an admin


def test_an_allowed_request_reaches_the_handler_with_the_principal(
    uvicorn_httptools_server: Server,
) -> None:
    server = uvicorn_httptools_server
    before = len(server.handled())
    reply = server.request("GET", "/admin/x?page=2", ANN)
    assert reply.status == 200
    echo = one_handled(server, before)
    assert (echo["path"], echo["query"], echo["user"]) == ("/admin/x", "page=2", "ann")
    assert (echo["route_line"], echo["rule_line"]) == (22, 25)


def test_denials_are_the_middlewares_own(uvicorn_httptools_server: Server) -> None:
    server = uvicorn_httptools_server
    with no_handler_runs(server):
        assert_denial(
            server.request("GET", "/admin/x"),
            401,
            "no_credentials",
            {"www-authenticate": [BEARER]},
        )
        assert_denial(server.request("GET", "/admin/x", BOB), 403, "not_allowed", {})
        assert_denial(server.request("GET", "/nowhere"), 403, "no_route", {})


@pytest.mark.parametrize("target", HOSTILE_TARGETS)
def test_no_hostile_target_reaches_a_protected_handler(
    uvicorn_httptools_server: Server, target: str
) -> None:
    """Without credentials, a hostile target is refused before any handler (by policyauth,
    or by httptools itself), or the handler runs on a public path that policyauth decided
    as public: never on /admin."""
    server = uvicorn_httptools_server
    before = len(server.handled())
    reply = server.request("GET", target)
    seen = server.handled()[before:]
    if reply.status == 200:
        [echo] = seen
        assert echo["path"].startswith("/public/"), echo
        assert (echo["authenticated"], echo["route_line"]) == (False, 18), echo
    else:
        assert seen == [], seen
        assert reply.status in (400, 401, 403), reply
