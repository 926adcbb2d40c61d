"""policyauth.asgi.PolicyAuthMiddleware in a real uvicorn process, over loopback, with httpx.

The application (apps/asgi_app.py) is Starlette with catch-all HTTP and WebSocket routes that
echo what they see through `request.user`, `request.auth` and the scope; the policy is
apps/server.policy with the identities of apps/server.json.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
from middleware_servers import (
    BEARER,
    DENIALS,
    HOSTILE_TARGETS,
    RAISING_TOKEN,
    RETRY_AFTER,
    Server,
    assert_denial,
    bearer,
    no_handler_runs,
    one_handled,
    running,
)
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

ANN = bearer("t-ann")


def test_allowed_request_reaches_the_handler_with_the_principal(uvicorn_server: Server) -> None:
    before = len(uvicorn_server.handled())
    reply = uvicorn_server.request("GET", "/admin/x?page=2", ANN)
    assert reply.status == 200
    echo = reply.json()
    assert echo == one_handled(uvicorn_server, before)
    assert echo["path"] == "/admin/x"
    assert echo["query"] == "page=2"
    assert echo["authenticated"] is True
    assert echo["user"] == "ann"
    assert echo["groups"] == ["admins", "staff"]
    assert echo["provider"] == "corp"
    assert echo["scopes"] == ["admins", "staff"]  # request.auth.scopes
    assert echo["reason"] == "allowed"
    assert (echo["route_line"], echo["rule_line"]) == (22, 25)
    assert reply.decision_headers() == {}


def test_api_token_over_basic_is_the_principal(uvicorn_server: Server) -> None:
    reply = uvicorn_server.request("GET", "/me", [("Authorization", "Basic Y2k6cGFfY2k=")])
    assert reply.status == 200
    echo = reply.json()
    assert (echo["user"], echo["provider"], echo["groups"]) == ("ci", "automation", ["deploy"])


def test_public_route_has_an_anonymous_user(uvicorn_server: Server) -> None:
    reply = uvicorn_server.request("GET", "/public/a/b")
    assert reply.status == 200
    echo = reply.json()
    assert echo["path"] == "/public/a/b"
    assert (echo["authenticated"], echo["user"], echo["groups"]) == (False, "", [])
    assert echo["provider"] is None
    assert echo["scopes"] == []
    assert (echo["route_line"], echo["rule_line"]) == (18, None)


@pytest.mark.parametrize(
    ("method", "target", "headers", "status", "reason", "decision_headers"),
    [pytest.param(*denial[1:], id=denial[0]) for denial in DENIALS],
)
def test_denials_are_answered_by_the_middleware(
    uvicorn_server: Server,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    status: int,
    reason: str,
    decision_headers: dict[str, list[str]],
) -> None:
    with no_handler_runs(uvicorn_server):
        reply = uvicorn_server.request(method, target, headers)
    assert_denial(reply, status, reason, decision_headers)


def test_duplicate_authorization_headers_reach_asgi_as_a_list(uvicorn_server: Server) -> None:
    """ASGI keeps both headers (the engine refuses two); a public route shows what it got."""
    reply = uvicorn_server.request("GET", "/public/x", bearer("t-ann") + bearer("t-bob"))
    assert reply.status == 200
    assert reply.json()["authorization"] == ["Bearer t-ann", "Bearer t-bob"]


def test_identity_source_that_raises_is_503_and_logged(uvicorn_server: Server) -> None:
    with no_handler_runs(uvicorn_server):
        reply = uvicorn_server.request("GET", "/admin/x", bearer(RAISING_TOKEN))
    assert_denial(reply, 503, "provider_unavailable", RETRY_AFTER)
    assert "the identity source failed" in uvicorn_server.output()
    assert RAISING_TOKEN not in uvicorn_server.output()


@pytest.mark.parametrize("target", HOSTILE_TARGETS)
def test_hostile_paths_are_rejected_before_the_handler(uvicorn_server: Server, target: str) -> None:
    with no_handler_runs(uvicorn_server):
        reply = uvicorn_server.request("GET", target, ANN)
    assert_denial(reply, 400, "malformed_request", {})


def test_escaped_letters_get_the_rules_of_the_path_the_app_serves(uvicorn_server: Server) -> None:
    """P18: `/%61dmin` is `/admin` to the router, so it is protected as `/admin` is."""
    with no_handler_runs(uvicorn_server):
        reply = uvicorn_server.request("GET", "/%61dmin/x")
    assert_denial(reply, 401, "no_credentials", {"www-authenticate": [BEARER]})
    reply = uvicorn_server.request("GET", "/%61dmin/x", ANN)
    assert reply.status == 200
    assert (reply.json()["path"], reply.json()["user"]) == ("/admin/x", "ann")


def test_the_query_never_changes_the_route(uvicorn_server: Server) -> None:
    """P33: `/admin?/public` is `/admin`."""
    with no_handler_runs(uvicorn_server):
        reply = uvicorn_server.request("GET", "/admin/x?/public/x")
    assert_denial(reply, 401, "no_credentials")


def test_head_denial_has_no_body_and_the_connection_stays_usable(uvicorn_server: Server) -> None:
    with no_handler_runs(uvicorn_server):
        reply = uvicorn_server.request("HEAD", "/admin/x")
    assert reply.status == 401
    assert reply.body == b""
    assert reply.values("www-authenticate") == [BEARER]
    after = uvicorn_server.request("GET", "/public/x")  # same keep-alive connection
    assert after.status == 200
    assert after.json()["path"] == "/public/x"


# --- root_path: `uvicorn --root-path` and Starlette's Mount ----------------------------------


def test_root_path_rules_apply_to_the_app_relative_path(uvicorn_root_path_server: Server) -> None:
    server = uvicorn_root_path_server
    reply = server.request("GET", "/admin/x", ANN)
    assert reply.status == 200
    echo = reply.json()
    assert (echo["root_path"], echo["path"], echo["route_path"]) == (
        "/mount",
        "/mount/admin/x",
        "/admin/x",
    )
    assert (echo["user"], echo["route_line"], echo["rule_line"]) == ("ann", 22, 25)
    assert server.request("GET", "/public/x").json()["route_path"] == "/public/x"
    with no_handler_runs(server):
        assert_denial(server.request("GET", "/admin/x"), 401, "no_credentials")
        assert_denial(server.request("GET", "/public/../admin/x", ANN), 400, "malformed_request")


def test_starlette_mount_rules_apply_below_the_mount(uvicorn_mount_server: Server) -> None:
    server = uvicorn_mount_server
    reply = server.request("GET", "/mount/admin/x", ANN)
    assert reply.status == 200
    echo = reply.json()
    assert (echo["root_path"], echo["path"], echo["route_path"]) == (
        "/mount",
        "/mount/admin/x",
        "/admin/x",
    )
    assert (echo["user"], echo["groups"]) == ("ann", ["admins", "staff"])
    with no_handler_runs(server):
        assert_denial(server.request("GET", "/mount/admin/x"), 401, "no_credentials")
        assert_denial(server.request("GET", "/mount/x/../admin/x"), 400, "malformed_request")
        assert_denial(server.request("GET", "/mount%2Fadmin/x", ANN), 400, "malformed_request")
    # Outside the mount the middleware is not in the way (and sets no user).
    assert server.request("GET", "/outside").json() == {"outside": True, "has_user": False}


def test_mount_matched_through_an_escape_gets_the_rules_of_the_mounted_path(
    uvicorn_mount_server: Server,
) -> None:
    """Starlette matches `Mount("/mount")` on the decoded path, so `/m%6Funt/public/x` is
    `/public/x` to the mounted app: public; and `/m%6Funt/admin/x` is `/admin/x`: protected."""
    server = uvicorn_mount_server
    reply = server.request("GET", "/m%6Funt/public/x")
    assert reply.status == 200
    assert (reply.json()["route_path"], reply.json()["route_line"]) == ("/public/x", 18)
    with no_handler_runs(server):
        assert_denial(server.request("GET", "/m%6Funt/admin/x"), 401, "no_credentials")


# --- WebSockets ------------------------------------------------------------------------------


def test_websocket_handshake_allowed_with_the_principal(uvicorn_server: Server) -> None:
    before = len(uvicorn_server.handled())
    with connect(uvicorn_server.ws_url + "/ws/room?x=1", additional_headers=ANN) as websocket:
        echo: dict[str, Any] = json.loads(websocket.recv(timeout=5))
        websocket.send("hello")
        assert websocket.recv(timeout=5) == "echo:hello"
    assert echo == one_handled(uvicorn_server, before)
    assert (echo["type"], echo["path"], echo["query"]) == ("websocket", "/ws/room", "x=1")
    assert (echo["user"], echo["provider"], echo["scopes"]) == ("ann", "corp", ["admins", "staff"])
    assert (echo["route_line"], echo["rule_line"]) == (33, 35)


@pytest.mark.parametrize(
    ("path", "headers", "status", "reason", "decision_headers"),
    [
        ("/ws/room", [], 401, "no_credentials", {"www-authenticate": [BEARER]}),
        ("/ws/room", bearer("t-bob"), 403, "not_allowed", {}),
        ("/ws/room", bearer(RAISING_TOKEN), 503, "provider_unavailable", RETRY_AFTER),
        ("/ws/%2e%2e/admin/x", ANN, 400, "malformed_request", {}),
        ("/elsewhere", ANN, 403, "no_route", {}),
    ],
)
def test_websocket_handshake_denied_with_an_http_response(
    uvicorn_server: Server,
    path: str,
    headers: list[tuple[str, str]],
    status: int,
    reason: str,
    decision_headers: dict[str, list[str]],
) -> None:
    """uvicorn offers the `websocket.http.response` extension: the client sees the decision's
    status, headers and body, as for HTTP."""
    with no_handler_runs(uvicorn_server), pytest.raises(InvalidStatus) as refused:
        connect(uvicorn_server.ws_url + path, additional_headers=headers).close()
    response = refused.value.response
    assert response.status_code == status
    assert bytes(response.body or b"") == f'{{"error": "{reason}"}}'.encode()
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers.get_all("www-authenticate") == decision_headers.get(
        "www-authenticate", []
    )


# --- lifespan --------------------------------------------------------------------------------


def test_lifespan_startup_and_shutdown_reach_the_app(tmp_path: Path) -> None:
    with running("uvicorn", "asgi_app:app", tmp_path) as server:
        assert server.log() == [{"event": "startup"}]
        reply = server.request("GET", "/public/x")
        assert reply.status == 200
        assert reply.json()["started"] is True  # app.state set in the lifespan
        # uvicorn shuts down gracefully on SIGTERM, then re-raises it (exit status -15).
        assert server.stop() in (0, -signal.SIGTERM)
    assert [entry.get("event") for entry in server.log()] == ["startup", None, "shutdown"]
