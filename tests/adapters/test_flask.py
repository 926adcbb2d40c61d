"""policyauth.flask: the PolicyAuth extension.

The contract runs against a real waitress serving apps/flask_server.py; the rest checks the
extension's configuration and `g` in process, with httpx's WSGI transport.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from adapter_contract import AdapterContract
from adapter_servers import Deployment, Server, serving
from flask import Flask, g

import policyauth
from policyauth.flask import PolicyAuth


@pytest.fixture(scope="module")
def server(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("flask") / "waitress.log"
    with serving("waitress", "flask_server:app", deployment.policy, log) as running:
        yield running


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        yield client


class TestFlaskUnderWaitress(AdapterContract):
    def test_the_principal_is_in_g_and_remote_user(
        self, client: httpx.Client, deployment: Deployment
    ) -> None:
        body = client.get("/reports/q", headers=deployment.bearer(deployment.reporter)).json()
        assert (body["principal"], body["remote_user"]) == ("ada", "ada")

    def test_the_app_s_own_before_request_runs_only_after_the_policy_allowed(
        self, client: httpx.Client, deployment: Deployment
    ) -> None:
        client.get("/reports/refused-before")
        client.get("/reports/allowed-before", headers=deployment.bearer(deployment.reporter))
        seen_before = client.get("/health").json()["before"]
        assert "/reports/allowed-before" in seen_before
        assert "/reports/refused-before" not in seen_before


def _app(**options: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(options.pop("config", {}))
    PolicyAuth(app, **options)

    @app.get("/reports/<path:rest>")
    def report(rest: str) -> dict[str, Any]:
        return {"user": g.policyauth_user.username, "rule": g.policyauth_decision.rule.line}

    return app


def _get(app: Flask, target: str, headers: dict[str, str] | None = None) -> httpx.Response:
    with httpx.Client(transport=httpx.WSGITransport(app), base_url="http://test") as client:
        return client.get(target, headers=headers)


def test_the_policy_can_come_from_app_config(deployment: Deployment) -> None:
    app = _app(config={"POLICYAUTH_POLICY": str(deployment.policy)})
    assert _get(app, "/reports/q").status_code == 401
    allowed = _get(app, "/reports/q", deployment.bearer(deployment.reporter))
    assert allowed.json()["user"] == "ada"


def test_init_app_later_and_for_several_apps(deployment: Deployment) -> None:
    extension = PolicyAuth(policy=deployment.policy)
    first, second = Flask("first"), Flask("second")
    for app in (first, second):
        extension.init_app(app)
        extension.init_app(app)  # twice changes nothing
        assert app.before_request_funcs[None].count(app.before_request_funcs[None][0]) == 1

        @app.get("/reports/x")
        def report() -> str:
            return str(g.principal.username)

    assert extension.engine(first) is not extension.engine(second)
    assert _get(second, "/reports/x", deployment.bearer(deployment.reporter)).text == "ada"


def test_without_engine_policy_or_config_init_fails() -> None:
    with pytest.raises(RuntimeError, match="POLICYAUTH_POLICY"):
        PolicyAuth(Flask(__name__))


def test_engine_and_policy_together_are_refused(deployment: Deployment) -> None:
    engine = policyauth.Engine(policyauth.load(deployment.policy))
    with pytest.raises(TypeError):
        PolicyAuth(engine=engine, policy=deployment.policy)


def test_an_engine_that_raises_fails_closed(deployment: Deployment) -> None:
    class Broken(policyauth.Engine):
        def authorize_sync(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("boom")

    app = _app(engine=Broken(policyauth.load(deployment.policy)))
    response = _get(app, "/reports/q", deployment.bearer(deployment.reporter))
    assert (response.status_code, response.json()) == (500, {"error": "internal_error"})
