"""policyauth.fastapi: the `principal` and `require` dependencies, `install`, and OpenAPI.

The contract runs against a real uvicorn serving apps/fastapi_server.py, whose endpoints decide
for themselves (no middleware). The rest runs in process: the OpenAPI document, the middleware
mode, and what happens when the app has neither a middleware nor an engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import pytest
from adapter_contract import AdapterContract
from adapter_servers import Deployment, Server, serving
from fastapi import Depends, FastAPI

import policyauth
import policyauth.fastapi
from policyauth import Decision, Principal
from policyauth.asgi import PolicyAuthMiddleware
from policyauth.fastapi import BASIC_SCHEME, BEARER_SCHEME, principal, require

BOTH: list[dict[str, list[str]]] = [{BEARER_SCHEME: []}, {BASIC_SCHEME: []}]


@pytest.fixture(scope="module")
def server(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("fastapi") / "uvicorn.log"
    with serving("uvicorn", "fastapi_server:app", deployment.policy, log) as running:
        yield running


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        yield client


class TestFastAPIUnderUvicorn(AdapterContract):
    # Without the ASGI middleware only endpoints that depend on policyauth are decided; a path
    # no endpoint serves is FastAPI's 404 (the module's docstring says so).
    unknown_path = (404, None)

    def test_require_group_refuses_a_caller_the_policy_let_in(
        self, client: httpx.Client, deployment: Deployment
    ) -> None:
        response = client.get("/reports/vip", headers=deployment.bearer(deployment.reporter))
        self.assert_refused(response, 403, "not_allowed")

    def test_require_rule_decides_by_the_principal(
        self, client: httpx.Client, deployment: Deployment
    ) -> None:
        ada = client.get("/reports/by-a", headers=deployment.bearer(deployment.reporter))
        assert (ada.status_code, ada.json()["user"]) == (200, "ada")
        cole = client.get("/reports/by-a", headers=deployment.bearer(deployment.contractor))
        self.assert_refused(cole, 403, "not_allowed")

    def test_the_principal_names_its_authenticator(
        self, client: httpx.Client, deployment: Deployment
    ) -> None:
        response = client.get("/reports/q", headers=deployment.bearer(deployment.reporter))
        assert response.json()["provider"] == "staff"

    def test_openapi_json_lists_the_schemes_and_each_operations_security(
        self, client: httpx.Client
    ) -> None:
        response = client.get("/openapi.json")
        assert response.status_code == 200
        document = response.json()
        schemes = document["components"]["securitySchemes"]
        assert schemes[BEARER_SCHEME]["type"] == "http"
        assert schemes[BEARER_SCHEME]["scheme"] == "bearer"
        assert schemes[BASIC_SCHEME]["type"] == "http"
        assert schemes[BASIC_SCHEME]["scheme"] == "basic"
        paths = document["paths"]
        assert paths["/reports/{rest}"]["get"]["security"] == BOTH
        assert paths["/reports/vip"]["get"]["security"] == BOTH
        for method in ("get", "post", "delete"):
            assert paths["/admin/{rest}"][method]["security"] == BOTH
        assert "security" not in paths["/health"]["get"]


def _documents(deployment: Deployment) -> dict[tuple[str, str], Any]:
    return {("staff", deployment.reporter): {"username": "ada", "groups": ["reporting"]}}


def _engine(deployment: Deployment) -> policyauth.Engine:
    policy = policyauth.load(deployment.policy)
    identities = policyauth.StaticIdentitySource(policy, _documents(deployment))
    return policyauth.Engine(policy, identities=identities)


def _api() -> FastAPI:
    app = FastAPI()

    @app.get("/reports/{rest:path}")
    async def reports(
        rest: str,
        caller: Annotated[Principal | None, Depends(principal)],
        decision: Annotated[Decision, Depends(policyauth.fastapi.decision)],
    ) -> dict[str, Any]:
        return {
            "user": caller.username if caller else None,
            "rule": decision.rule.line if decision.rule else None,
            "decision": id(decision),
        }

    @app.get("/admin/{rest:path}")
    async def admin(
        rest: str, caller: Annotated[Principal, Depends(require(group="admins"))]
    ) -> dict[str, Any]:
        return {"user": caller.username}

    return app


async def _get(app: Any, target: str, headers: dict[str, str] | None = None) -> httpx.Response:
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(target, headers=headers)


async def test_under_the_asgi_middleware_the_dependencies_use_its_decision(
    deployment: Deployment,
) -> None:
    seen: list[Decision] = []
    api = _api()
    wrapped = PolicyAuthMiddleware(api, engine=_engine(deployment))

    async def spy(scope: Any, receive: Any, send: Any) -> None:
        await wrapped(scope, receive, send)
        if "policyauth.decision" in scope:
            seen.append(scope["policyauth.decision"])

    response = await _get(spy, "/reports/q3", deployment.bearer(deployment.reporter))
    assert response.status_code == 200, response.text
    assert response.json()["user"] == "ada"
    assert response.json()["decision"] == id(seen[0])  # the middleware's, not a second one
    lines = deployment.policy.read_text(encoding="utf-8").splitlines()
    assert lines[response.json()["rule"] - 1].strip() == 'allow if "reporting" in groups'


async def test_under_the_middleware_without_install_require_answers_fastapis_way(
    deployment: Deployment,
) -> None:
    app = PolicyAuthMiddleware(_api(), engine=_engine(deployment))
    response = await _get(app, "/admin/users", deployment.bearer(deployment.reporter))
    # The policy refuses ada on /admin first, with the middleware's own answer.
    assert (response.status_code, response.json()) == (403, {"error": "not_allowed"})


async def test_without_install_a_denial_is_an_http_exception_with_joined_challenges(
    deployment: Deployment,
) -> None:
    api = _api()
    setattr(api.state, policyauth.fastapi.STATE_ATTRIBUTE, _engine(deployment))
    response = await _get(api, "/reports/q3")
    assert (response.status_code, response.json()) == (401, {"detail": "no_credentials"})
    assert response.headers.get_list("www-authenticate") == [
        'Bearer realm="adapters", Basic realm="adapters"'
    ]
    assert response.headers["cache-control"] == "no-store"


async def test_with_neither_middleware_nor_engine_the_request_fails_closed() -> None:
    response = await _get(_api(), "/reports/q3")
    assert response.status_code == 500


async def test_install_answers_denials_as_the_middleware_does(deployment: Deployment) -> None:
    api = _api()
    policyauth.fastapi.install(api, _engine(deployment))
    response = await _get(api, "/reports/q3")
    assert (response.status_code, response.json()) == (401, {"error": "no_credentials"})
    assert response.headers.get_list("www-authenticate") == [
        'Bearer realm="adapters"',
        'Basic realm="adapters"',
    ]
    allowed = await _get(api, "/reports/q3", deployment.bearer(deployment.reporter))
    assert allowed.json()["user"] == "ada"
    hostile = await _get(api, "/reports/%2e%2e/admin")
    assert (hostile.status_code, hostile.json()) == (400, {"error": "malformed_request"})


PROVIDER_ONLY = """
provider corp {
  userinfo = "https://sso.example.com/userinfo"
  username = $.sub
}

route GET /reports/** {
  auth corp
  allow
}
"""


async def test_install_drops_basic_from_openapi_when_the_policy_takes_no_api_token() -> None:
    api = _api()
    policyauth.fastapi.install(api, policy=policyauth.loads(PROVIDER_ONLY, "corp.policy"))
    document = (await _get(api, "/openapi.json")).json()
    assert list(document["components"]["securitySchemes"]) == [BEARER_SCHEME]
    assert document["paths"]["/reports/{rest}"]["get"]["security"] == [{BEARER_SCHEME: []}]
    assert (await _get(api, "/openapi.json")).json() == document


async def test_a_rule_that_raises_refuses(deployment: Deployment) -> None:
    def broken(caller: Principal) -> bool:
        raise KeyError("boom")

    api = FastAPI()
    policyauth.fastapi.install(api, _engine(deployment))

    # A default, not Annotated: the annotation would be evaluated where `broken` is unknown.
    @api.get("/reports/x")
    async def report(caller: Principal = Depends(require(rule=broken))) -> str:  # noqa: B008
        return caller.username

    response = await _get(api, "/reports/x", deployment.bearer(deployment.reporter))
    assert (response.status_code, response.json()) == (403, {"error": "not_allowed"})


async def test_on_a_public_route_principal_is_none_and_require_refuses(
    deployment: Deployment,
) -> None:
    demanding, open_ = FastAPI(), FastAPI()
    for api in (demanding, open_):
        policyauth.fastapi.install(api, _engine(deployment))

    @demanding.get("/health")
    async def health(caller: Annotated[Principal, Depends(require())]) -> str:
        return caller.username

    @open_.get("/health")
    async def open_health(caller: Annotated[Principal | None, Depends(principal)]) -> Any:
        return caller

    credentials = deployment.bearer(deployment.reporter)
    response = await _get(demanding, "/health", credentials)
    assert (response.status_code, response.json()) == (403, {"error": "not_allowed"})
    response = await _get(open_, "/health", credentials)
    assert (response.status_code, response.json()) == (200, None)
