"""CORS and the docs under the ASGI middleware, against a real uvicorn (docs/python.md, "CORS").

With Starlette's CORSMiddleware outside policyauth's, a browser's preflight is answered by
CORS (it carries no credentials, so the policy would refuse it), and policyauth's own 401 and
403 answers carry the CORS headers, so the page's code can read the status and the challenge.
The other order refuses the preflight. `/docs` and `/openapi.json` are served once the policy
makes them public.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from adapter_servers import Deployment, serving

ORIGIN = "https://app.example.com"
PREFLIGHT = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "GET",
    "Access-Control-Request-Headers": "authorization",
}
DOCS_ROUTES = "\nroute GET /docs {\n  public\n}\n"  # /openapi.json is public there already


@pytest.fixture(scope="module")
def policy(deployment: Deployment) -> Path:
    """adapters.policy, with the docs made public as docs/python.md shows."""
    with deployment.policy.open("a", encoding="utf-8") as stream:
        stream.write(DOCS_ROUTES)
    return deployment.policy


@pytest.fixture(scope="module")
def client(policy: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    log = tmp_path_factory.mktemp("cors") / "uvicorn.log"
    with (
        serving("uvicorn", "cors_server:app", policy, log) as server,
        httpx.Client(base_url=server.url, timeout=10.0) as client,
    ):
        yield client


def test_a_preflight_is_answered_by_cors_and_reaches_no_handler(client: httpx.Client):
    response = client.options("/reports/q3", headers=PREFLIGHT)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in response.headers["access-control-allow-headers"].lower()
    assert client.get("/health").json()["hits"] == []


def test_a_401_carries_the_cors_headers_and_its_challenge(client: httpx.Client):
    response = client.get("/reports/q3", headers={"Origin": ORIGIN})
    assert response.status_code == 401
    assert response.json() == {"error": "no_credentials"}
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["access-control-expose-headers"] == "WWW-Authenticate"
    assert response.headers.get_list("www-authenticate") == [
        'Bearer realm="adapters"',
        'Basic realm="adapters"',
    ]


def test_a_403_and_an_allowed_request_carry_them_too(client: httpx.Client, deployment: Deployment):
    outsider = {"Origin": ORIGIN, **deployment.bearer(deployment.admin)}
    refused = client.get("/reports/q3", headers=outsider)
    assert (refused.status_code, refused.json()) == (403, {"error": "not_allowed"})
    assert refused.headers["access-control-allow-origin"] == ORIGIN
    reader = {"Origin": ORIGIN, **deployment.bearer(deployment.reporter)}
    allowed = client.get("/reports/q3", headers=reader)
    assert (allowed.status_code, allowed.json()) == (200, {"report": "q3", "user": "ada"})
    assert allowed.headers["access-control-allow-origin"] == ORIGIN


def test_docs_and_openapi_are_served_under_the_middleware(client: httpx.Client):
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text
    schema = client.get("/openapi.json")
    assert schema.status_code == 200
    assert set(schema.json()["components"]["securitySchemes"]) == {
        "PolicyAuthBearer",
        "PolicyAuthBasic",
    }
    # Only what the policy makes public: the docs' other paths stay behind it.
    assert client.get("/redoc").status_code == 403


def test_the_other_order_refuses_the_preflight(
    policy: Path, tmp_path_factory: pytest.TempPathFactory
):
    log = tmp_path_factory.mktemp("cors-wrong") / "uvicorn.log"
    with serving("uvicorn", "cors_server:wrong", policy, log) as server:
        response = httpx.options(f"{server.url}/reports/q3", headers=PREFLIGHT, timeout=10.0)
    assert (response.status_code, response.json()) == (403, {"error": "no_route"})
    assert "access-control-allow-origin" not in response.headers
