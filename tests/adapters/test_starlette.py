"""policyauth.starlette: Starlette's AuthenticationMiddleware with policyauth as its backend.

The contract runs against a real uvicorn serving apps/starlette_server.py; the rest pins what
the module's docstring promises about `on_error` and WebSockets, in process.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

import httpx
import pytest
from adapter_contract import AdapterContract
from adapter_servers import Deployment, Server, serving
from starlette.applications import Starlette
from starlette.authentication import AuthenticationError, BaseUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

import policyauth
import policyauth.starlette
from policyauth.starlette import PolicyAuthBackend, StarletteUser, on_error


@pytest.fixture(scope="module")
def server(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("starlette") / "uvicorn.log"
    with serving("uvicorn", "starlette_server:app", deployment.policy, log) as running:
        yield running


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        yield client


class TestStarletteUnderUvicorn(AdapterContract):
    def test_request_auth_holds_the_groups_as_scopes_and_the_decision(
        self, client: httpx.Client, deployment: Deployment
    ) -> None:
        response = client.get("/reports/q1", headers=deployment.bearer(deployment.contractor))
        body = response.json()
        assert body["scopes"] == ["contractors", "admins", "reporting"]
        assert body["groups"] == body["scopes"]
        text = deployment.policy.read_text(encoding="utf-8").splitlines()
        assert text[body["rule_line"] - 1].strip() == 'allow if "reporting" in groups'


def _app(deployment: Deployment, **options: Any) -> Starlette:
    seen: list[object] = []

    async def page(request: Request) -> PlainTextResponse:
        seen.append(request.user)
        return PlainTextResponse(request.user.display_name)

    async def socket(websocket: WebSocket) -> None:
        seen.append(websocket.user)
        await websocket.accept()
        await websocket.send_text(websocket.user.display_name)
        await websocket.close()

    backend = PolicyAuthBackend(policy=deployment.policy)
    app = Starlette(
        routes=[WebSocketRoute("/reports/ws", socket), Route("/reports/{rest:path}", page)],
        middleware=[Middleware(AuthenticationMiddleware, backend=backend, **options)],
    )
    app.state.seen = seen
    return app


def _client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test")


async def _websocket(app: Starlette, headers: dict[str, str]) -> list[dict[str, Any]]:
    """The messages `app` sends for one WebSocket handshake (then the client goes away)."""
    incoming: list[dict[str, Any]] = [
        {"type": "websocket.connect"},
        {"type": "websocket.disconnect", "code": 1000},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {
        "type": "websocket",
        "path": "/reports/ws",
        "raw_path": b"/reports/ws",
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "subprotocols": [],
    }
    await app(scope, receive, send)
    return sent


async def test_the_user_is_a_starlette_base_user(deployment: Deployment) -> None:
    app = _app(deployment, on_error=on_error)
    async with _client(app) as client:
        response = await client.get("/reports/q", headers=deployment.bearer(deployment.reporter))
    assert response.text == "ada"
    (user,) = app.state.seen
    assert isinstance(user, StarletteUser)
    assert isinstance(user, BaseUser)
    assert user.is_authenticated
    assert user.identity == "ada"


async def test_without_policyauths_on_error_every_denial_is_a_bare_400(
    deployment: Deployment,
) -> None:
    """Why the docstring insists on `on_error`: Starlette's default loses status and headers."""
    async with _client(_app(deployment)) as client:
        response = await client.get("/reports/q3")
    assert (response.status_code, response.text) == (400, "no_credentials")
    assert "www-authenticate" not in response.headers


def test_on_error_answers_other_authentication_errors_as_starlette_does() -> None:
    response = on_error(HTTPConnection({"type": "http", "headers": []}), AuthenticationError("x"))
    assert (response.status_code, response.body) == (400, b"x")


async def test_a_refused_websocket_is_closed_before_accept(deployment: Deployment) -> None:
    """Starlette's middleware closes with 1000 whatever the status (the ASGI middleware does
    better); what matters is that the handler never runs."""
    app = _app(deployment, on_error=on_error)
    assert await _websocket(app, {}) == [{"type": "websocket.close", "code": 1000}]
    assert app.state.seen == []


async def test_an_allowed_websocket_sees_the_user(deployment: Deployment) -> None:
    app = _app(deployment, on_error=on_error)
    sent = await _websocket(app, deployment.bearer(deployment.reporter))
    assert sent[0]["type"] == "websocket.accept"
    assert any(message.get("text") == "ada" for message in sent)
    assert len(app.state.seen) == 1


def test_middleware_needs_exactly_one_of_engine_and_policy(deployment: Deployment) -> None:
    engine = policyauth.Engine(policyauth.load(deployment.policy))
    with pytest.raises(TypeError):
        policyauth.starlette.middleware(engine, policy=deployment.policy)
    with pytest.raises(TypeError):
        policyauth.starlette.middleware()
