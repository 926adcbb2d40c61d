"""policyauth.fastapi: `install` with the policy in front of every path, its `guard_all=False`
opt-out, the `principal` and `require` dependencies, and OpenAPI.

The contract runs twice against a real uvicorn serving apps/fastapi_server.py: as `install`
leaves it by default (the ASGI middleware in front: every path is decided), and with the
opt-out (only endpoints that depend on policyauth are decided, before their body is read). The
rest runs in process: the OpenAPI document, the middleware's decision reaching the
dependencies, the README's snippet, and what happens when the app has neither a middleware nor
an engine.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from adapter_contract import AdapterContract
from adapter_servers import Deployment, Server, hits, serving
from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel

import policyauth
import policyauth.fastapi
from policyauth import Decision, Principal
from policyauth.asgi import PolicyAuthMiddleware
from policyauth.fastapi import BASIC_SCHEME, BEARER_SCHEME, PolicyAuthRoute, principal, require

BOTH: list[dict[str, list[str]]] = [{BEARER_SCHEME: []}, {BASIC_SCHEME: []}]
README = Path(__file__).resolve().parents[2] / "README.md"
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def server(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("fastapi") / "uvicorn.log"
    with serving("uvicorn", "fastapi_server:app", deployment.policy, log) as running:
        yield running


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        yield client


@pytest.fixture(scope="module")
def dependencies_only_server(
    deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("fastapi-dependencies-only") / "uvicorn.log"
    env = {"POLICYAUTH_GUARD_ALL": "0"}
    with serving("uvicorn", "fastapi_server:app", deployment.policy, log, env) as running:
        yield running


class FastAPIContract(AdapterContract):
    """What holds in both modes: the dependencies' demands, the principal, OpenAPI."""

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
        assert paths["/admin/items"]["post"]["security"] == BOTH
        for method in ("get", "post", "delete"):
            assert paths["/admin/{rest}"][method]["security"] == BOTH
        assert "security" not in paths["/health"]["get"]
        assert "security" not in paths["/admin/plain"]["get"]

    def test_an_anonymous_caller_with_a_bad_body_is_401_not_422(self, client: httpx.Client) -> None:
        """FastAPI parses the body before dependencies run: the policy must decide first."""
        before = hits(client)
        for body in (b"not json", b'{"name": 1}'):
            response = client.post("/admin/items", content=body, headers=JSON)
            self.assert_refused(response, 401, "no_credentials")
        assert hits(client) == before

    def test_a_caller_let_in_with_a_bad_body_gets_fastapis_422(
        self, client: httpx.Client, deployment: Deployment
    ) -> None:
        auth = {**JSON, **deployment.bearer(deployment.admin)}
        response = client.post("/admin/items", content=b"not json", headers=auth)
        assert response.status_code == 422
        assert response.json()["detail"][0]["type"] == "json_invalid"
        good = client.post("/admin/items", json={"name": "x", "count": 1}, headers=auth)
        assert (good.status_code, good.json()["user"], good.json()["item"]) == (200, "root", "x")


class TestFastAPIUnderUvicorn(FastAPIContract):
    """`install(app, ...)` as it is by default: the policy decides every path."""

    def test_an_endpoint_without_a_dependency_is_decided_by_the_policy(
        self, client: httpx.Client, deployment: Deployment
    ) -> None:
        before = hits(client)
        anonymous = client.get("/admin/plain")
        self.assert_refused(anonymous, 401, "no_credentials")
        assert self.challenges(anonymous) == ['Bearer realm="adapters"', 'Basic realm="adapters"']
        reporter = client.get("/admin/plain", headers=deployment.bearer(deployment.reporter))
        self.assert_refused(reporter, 403, "not_allowed")
        assert hits(client) == before
        admin = client.get("/admin/plain", headers=deployment.bearer(deployment.admin))
        assert (admin.status_code, admin.json()) == (200, {"plain": True})
        assert hits(client) == [*before, "/admin/plain"]

    def test_the_docs_are_denied_unless_the_policy_names_them(self, client: httpx.Client) -> None:
        self.assert_refused(client.get("/docs"), 403, "no_route")
        assert client.get("/openapi.json").status_code == 200  # adapters.policy opens it

    def test_a_hostile_target_no_endpoint_serves_is_400(
        self, client: httpx.Client, deployment: Deployment
    ) -> None:
        response = client.get(
            "/nowhere/%2e%2e/admin/users", headers=deployment.bearer(deployment.admin)
        )
        self.assert_refused(response, 400, "malformed_request")


class TestFastAPIDependenciesOnlyUnderUvicorn(FastAPIContract):
    """`install(app, ..., guard_all=False)`: only endpoints that depend on policyauth are
    decided; a path no endpoint serves is FastAPI's 404."""

    unknown_path = (404, None)

    @pytest.fixture
    def client(self, dependencies_only_server: Server) -> Iterator[httpx.Client]:
        with httpx.Client(base_url=dependencies_only_server.url, timeout=10.0) as client:
            yield client

    def test_an_endpoint_without_a_dependency_is_left_open(self, client: httpx.Client) -> None:
        response = client.get("/admin/plain")
        assert (response.status_code, response.json()) == (200, {"plain": True})
        assert client.get("/docs").status_code == 200

    def test_a_hostile_target_no_endpoint_serves_is_fastapis_404(
        self, client: httpx.Client
    ) -> None:
        assert client.get("/nowhere/%2e%2e/admin/users").status_code == 404


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

route GET /openapi.json { public }
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


async def test_install_puts_one_decision_in_front_and_the_dependencies_read_it(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No second decision and no second provider call: the engine decides once a request."""
    api = _api()
    engine = policyauth.fastapi.install(api, _engine(deployment))
    made: list[Decision] = []
    authorize = engine.authorize

    async def counted(*args: Any, **kwargs: Any) -> Decision:
        made.append(await authorize(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(engine, "authorize", counted)
    response = await _get(api, "/reports/q3", deployment.bearer(deployment.reporter))
    assert (response.status_code, response.json()["user"]) == (200, "ada")
    assert response.json()["decision"] == id(made[0])
    admin = await _get(api, "/admin/users", deployment.bearer(deployment.reporter))
    assert (admin.status_code, admin.json()) == (403, {"error": "not_allowed"})
    assert len(made) == 2


class Item(BaseModel):
    name: str


def _items(router: FastAPI | APIRouter) -> None:
    @router.post("/admin/items")
    async def create(
        item: Item, caller: Annotated[Principal | None, Depends(principal)]
    ) -> dict[str, Any]:
        return {"item": item.name}


async def _post(app: Any, target: str, body: bytes) -> httpx.Response:
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post(target, content=body, headers=JSON)


async def test_without_the_middleware_a_router_needs_policyauths_route_class(
    deployment: Deployment,
) -> None:
    """An APIRouter keeps its own route class: PolicyAuthRoute decides before the body."""
    guarded, plain = APIRouter(route_class=PolicyAuthRoute), APIRouter()
    _items(guarded)
    _items(plain)
    for router, status in ((guarded, 401), (plain, 422)):
        api = FastAPI()
        policyauth.fastapi.install(api, _engine(deployment), guard_all=False)
        api.include_router(router)
        response = await _post(api, "/admin/items", b"not json")
        assert response.status_code == status, response.text


async def test_the_opt_out_refuses_routes_that_could_not_decide_before_the_body(
    deployment: Deployment,
) -> None:
    early = FastAPI()
    _items(early)
    with pytest.raises(TypeError, match=r"before declaring .*: /admin/items$"):
        policyauth.fastapi.install(early, _engine(deployment), guard_all=False)

    class Custom(APIRoute):
        pass

    custom = FastAPI()
    custom.router.route_class = Custom
    with pytest.raises(TypeError, match=r"route_class .*Custom must derive from"):
        policyauth.fastapi.install(custom, _engine(deployment), guard_all=False)


API_POLICY = re.compile(r"## A policy in ten lines\n\n```\n(.*?)```", re.DOTALL)
FASTAPI_SNIPPET = re.compile(r"\nFastAPI[^\n]*\n(?:[^\n]+\n)*\n```python\n(.*?)```", re.DOTALL)


async def test_the_readmes_fastapi_snippet_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the README's own policy as policies/api.policy, the snippet builds an app that
    serves the policy's route to the caller it names and denies everything else."""
    readme = README.read_text(encoding="utf-8")
    policy, snippet = API_POLICY.search(readme), FASTAPI_SNIPPET.search(readme)
    assert policy is not None
    assert snippet is not None
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "api.policy").write_text(policy.group(1), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(snippet.group(1), "README.md", "exec"), namespace)
    app = namespace["app"]
    assert (await _get(app, "/api/reports/q3")).json() == {"error": "no_credentials"}
    assert (await _get(app, "/docs")).json() == {"error": "no_route"}
    assert (await _get(app, "/api/reports/%2e%2e/x")).status_code == 400
    # The policy has no tokens block: only Bearer is offered, on the snippet's one operation.
    paths = app.openapi()["paths"]
    assert list(paths) == ["/api/reports/{name}"]
    assert paths["/api/reports/{name}"]["get"]["security"] == [{BEARER_SCHEME: []}]
