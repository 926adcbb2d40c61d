"""policyauth.wsgi.PolicyAuthMiddleware in a real waitress process, over loopback, with httpx.

The application (apps/wsgi_app.py) echoes PATH_INFO, SCRIPT_NAME, REMOTE_USER and the principal
the middleware put in the environ; the policy is apps/server.policy with the identities of
apps/server.json.
"""

from __future__ import annotations

import socket

import pytest
from middleware_servers import (
    BEARER,
    DENIALS,
    HOST,
    HOSTILE_TARGETS,
    RAISING_TOKEN,
    RETRY_AFTER,
    Server,
    assert_denial,
    bearer,
    no_handler_runs,
    one_handled,
)

ANN = bearer("t-ann")


def test_allowed_request_reaches_the_handler_with_the_principal(waitress_server: Server) -> None:
    before = len(waitress_server.handled())
    reply = waitress_server.request("POST", "/admin/x?page=2", ANN)
    assert reply.status == 200
    echo = reply.json()
    assert echo == one_handled(waitress_server, before)
    assert (echo["method"], echo["path"], echo["script_name"], echo["query"]) == (
        "POST",
        "/admin/x",
        "",
        "page=2",
    )
    assert echo["remote_user"] == "ann"
    assert (echo["authenticated"], echo["user"], echo["provider"]) == (True, "ann", "corp")
    assert echo["groups"] == ["admins", "staff"]
    assert echo["scopes"] == ["admins", "staff"]
    assert (echo["reason"], echo["route_line"], echo["rule_line"]) == ("allowed", 22, 25)


def test_api_token_over_basic_is_the_remote_user(waitress_server: Server) -> None:
    reply = waitress_server.request("GET", "/me", [("Authorization", "Basic Y2k6cGFfY2k=")])
    assert reply.status == 200
    echo = reply.json()
    assert (echo["remote_user"], echo["provider"], echo["groups"]) == (
        "ci",
        "automation",
        ["deploy"],
    )


def test_public_route_has_an_anonymous_user_and_no_remote_user(waitress_server: Server) -> None:
    reply = waitress_server.request("GET", "/public/a/b")
    assert reply.status == 200
    echo = reply.json()
    assert echo["path"] == "/public/a/b"
    assert echo["remote_user"] is None
    assert (echo["has_user"], echo["authenticated"], echo["user"]) == (True, False, "")
    assert (echo["groups"], echo["scopes"], echo["provider"]) == ([], [], None)
    assert (echo["route_line"], echo["rule_line"]) == (18, None)


@pytest.mark.parametrize(
    ("method", "target", "headers", "status", "reason", "decision_headers"),
    [pytest.param(*denial[1:], id=denial[0]) for denial in DENIALS],
)
def test_denials_are_answered_by_the_middleware(
    waitress_server: Server,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    status: int,
    reason: str,
    decision_headers: dict[str, list[str]],
) -> None:
    with no_handler_runs(waitress_server):
        reply = waitress_server.request(method, target, headers)
    assert_denial(reply, status, reason, decision_headers)


def test_waitress_joins_duplicate_authorization_headers_with_a_comma(
    waitress_server: Server,
) -> None:
    """What the rejection relies on (A12/A13): WSGI has one value per header, and waitress
    joins repeated headers with ", ". A public route shows the joined value; on a protected
    route the joined value is refused as 400 invalid_request, never taken as either token."""
    reply = waitress_server.request("GET", "/public/x", bearer("t-ann") + bearer("t-bob"))
    assert reply.status == 200
    assert reply.json()["authorization"] == "Bearer t-ann, Bearer t-bob"
    for second in ("t-bob", "t-ann", "t-nope"):
        with no_handler_runs(waitress_server):
            reply = waitress_server.request("GET", "/admin/x", ANN + bearer(second))
        assert_denial(
            reply,
            400,
            "invalid_request",
            {"www-authenticate": [BEARER + ', error="invalid_request"']},
        )
    with no_handler_runs(waitress_server):
        basic = [("Authorization", "Basic Y2k6cGFfY2k=")]
        reply = waitress_server.request("GET", "/me", basic + basic)
    assert_denial(reply, 400, "invalid_request")


def test_identity_source_that_raises_is_503_and_logged(waitress_server: Server) -> None:
    with no_handler_runs(waitress_server):
        reply = waitress_server.request("GET", "/admin/x", bearer(RAISING_TOKEN))
    assert_denial(reply, 503, "provider_unavailable", RETRY_AFTER)
    assert "the identity source failed" in waitress_server.output()
    assert RAISING_TOKEN not in waitress_server.output()


@pytest.mark.parametrize("target", HOSTILE_TARGETS)
def test_hostile_paths_are_rejected_before_the_handler(
    waitress_server: Server, target: str
) -> None:
    with no_handler_runs(waitress_server):
        reply = waitress_server.request("GET", target, ANN)
    assert_denial(reply, 400, "malformed_request", {})


def test_escaped_letters_get_the_rules_of_the_path_the_app_serves(waitress_server: Server) -> None:
    with no_handler_runs(waitress_server):
        reply = waitress_server.request("GET", "/%61dmin/x")
    assert_denial(reply, 401, "no_credentials", {"www-authenticate": [BEARER]})
    reply = waitress_server.request("GET", "/%61dmin/x", ANN)
    assert reply.status == 200
    assert (reply.json()["path"], reply.json()["remote_user"]) == ("/admin/x", "ann")


def test_head_denial_sends_no_body_so_keep_alive_stays_in_step(waitress_server: Server) -> None:
    """waitress sends whatever body a WSGI app returns, even for HEAD: a denial body there
    would be read by the client as the start of the next response on the connection."""
    request = (
        f"HEAD /admin/x HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
        f"GET /public/x HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
    ).encode()
    before = len(waitress_server.handled())
    with socket.create_connection((HOST, waitress_server.port), timeout=10) as connection:
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 "), received
    assert b'\r\nWww-Authenticate: Bearer realm="middleware"' in head  # waitress's casing
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n"), received  # nothing between the two
    assert one_handled(waitress_server, before)["path"] == "/public/x"


# --- SCRIPT_NAME: waitress --url-prefix -------------------------------------------------------


def test_script_name_rules_apply_below_the_prefix(waitress_prefix_server: Server) -> None:
    server = waitress_prefix_server
    reply = server.request("GET", "/mount/admin/x", ANN)
    assert reply.status == 200
    echo = reply.json()
    assert (echo["script_name"], echo["path"], echo["remote_user"]) == ("/mount", "/admin/x", "ann")
    assert (echo["route_line"], echo["rule_line"]) == (22, 25)
    assert server.request("GET", "/mount/public/x").json()["path"] == "/public/x"
    with no_handler_runs(server):
        assert_denial(server.request("GET", "/mount/admin/x"), 401, "no_credentials")
        assert_denial(server.request("GET", "/mount/x/../admin/x", ANN), 400, "malformed_request")
        assert_denial(server.request("GET", "/mount%2Fadmin/x", ANN), 400, "malformed_request")
        # waitress strips leading slashes from PATH_INFO; the raw target keeps them.
        assert_denial(server.request("GET", "//mount/admin/x", ANN), 400, "malformed_request")
        # The prefix itself is the application's `/`, which no route covers.
        assert_denial(server.request("GET", "/mount", ANN), 403, "no_route")


def test_prefix_matched_through_an_escape_gets_the_rules_of_path_info(
    waitress_prefix_server: Server,
) -> None:
    """waitress strips the prefix from the decoded path, so `/m%6Funt/admin/x` is PATH_INFO
    `/admin/x`: the rules of `/admin/**` apply, not those of `/mount/admin/x`."""
    server = waitress_prefix_server
    reply = server.request("GET", "/m%6Funt/public/x")
    assert reply.status == 200
    assert (reply.json()["path"], reply.json()["route_line"]) == ("/public/x", 18)
    with no_handler_runs(server):
        assert_denial(server.request("GET", "/m%6Funt/admin/x"), 401, "no_credentials")


def test_path_outside_the_prefix_is_decided_as_the_app_sees_it(
    waitress_prefix_server: Server,
) -> None:
    """waitress passes a path outside its prefix on whole (SCRIPT_NAME is still the prefix):
    the decision is made on the same PATH_INFO the application serves."""
    server = waitress_prefix_server
    reply = server.request("GET", "/admin/x", ANN)
    assert reply.status == 200
    assert (reply.json()["script_name"], reply.json()["path"]) == ("/mount", "/admin/x")
    with no_handler_runs(server):
        assert_denial(server.request("GET", "/admin/x"), 401, "no_credentials")
