"""The one switch for seeing decisions: `policyauth.decisions` at INFO logs every decision,
allowed or denied, in one line: the method once, the canonical path, the user when known, the
status and reason, the deciding rule, the message; never a token, never the query."""

from __future__ import annotations

import logging

import httpx
import pytest

import policyauth
from policyauth.asgi import PolicyAuthMiddleware

POLICY = """\
provider corp {
  userinfo = "https://sso.example.com/userinfo"
  username = $.preferred_username
  groups   = $.roles[*]
}

route GET /reports/{name} {
  auth corp
  deny  "contractors" if "contractors" in groups
  allow if "reporting" in groups
}

route GET /health {
  public
}
"""
TOKEN = "tok-ann-0123456789"
CODY = "tok-cody-9876543210"


@pytest.fixture
def engine() -> policyauth.Engine:
    policy = policyauth.loads(POLICY, "reports.policy")
    identities = policyauth.StaticIdentitySource(
        policy,
        {
            ("corp", TOKEN): {"preferred_username": "ann", "roles": ["reporting"]},
            ("corp", CODY): {"preferred_username": "cody", "roles": ["reporting", "contractors"]},
        },
    )
    return policyauth.Engine(policy, identities=identities)


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "policyauth.decisions"]


def bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


def test_nothing_is_logged_unless_the_switch_is_on(engine, caplog):
    caplog.set_level(logging.WARNING, logger="policyauth.decisions")
    engine.authorize_sync("GET", "/reports/q3", bearer(TOKEN))
    assert lines(caplog) == []


def test_allowed_and_denied_requests_each_get_one_line(engine, caplog):
    caplog.set_level(logging.INFO, logger="policyauth.decisions")
    engine.authorize_sync("GET", "/reports/q3", bearer(TOKEN))
    engine.authorize_sync("GET", "/reports/q3/", bearer(CODY))  # canonical: no slash
    engine.authorize_sync("GET", "/reports/q3", [])
    engine.authorize_sync("GET", "/health")
    engine.authorize_sync("DELETE", "/reports/q3", bearer(TOKEN))
    assert lines(caplog) == [
        "GET /reports/q3 -> 200 allowed user=ann rule=reports.policy:10: an allow rule holds",
        'GET /reports/q3 -> 403 denied user=cody rule="contractors" reports.policy:9: '
        "a deny rule holds",
        "GET /reports/q3 -> 401 no_credentials: the request has no credentials",
        "GET /health -> 200 allowed: public route",
        "DELETE /reports/q3 -> 403 no_route: no route matches DELETE /reports/q3",
    ]
    assert all(r.levelno == logging.INFO for r in caplog.records)


def test_never_a_token_nor_the_query(engine, caplog):
    caplog.set_level(logging.INFO, logger="policyauth.decisions")
    engine.authorize_sync("GET", f"/reports/q3?access_token={TOKEN}&x=1")
    engine.authorize_sync("GET", f"/reports/%2e%2e/admin?access_token={TOKEN}")
    engine.authorize_sync("GET", "/reports/q3", bearer("tok-unknown-5555"))
    logged = lines(caplog)
    assert len(logged) == 3
    assert logged[0].startswith("GET /reports/q3 -> 400 invalid_request: ")
    assert logged[1].startswith("GET /reports/%2e%2e/admin -> 400 malformed_request: ")
    assert logged[2].startswith("GET /reports/q3 -> 401 invalid_token: ")
    for line in logged:
        assert TOKEN not in line
        assert "tok-unknown" not in line
        assert "access_token=" not in line
        assert "?" not in line


async def test_the_switch_works_through_an_integration(engine, caplog):
    caplog.set_level(logging.INFO, logger="policyauth.decisions")

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    transport = httpx.ASGITransport(app=PolicyAuthMiddleware(app, engine=engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/reports/q3", headers=dict(bearer(TOKEN)))).status_code == 200
        assert (await client.get("/reports/q3", headers=dict(bearer(CODY)))).status_code == 403
    assert lines(caplog) == [
        "GET /reports/q3 -> 200 allowed user=ann rule=reports.policy:10: an allow rule holds",
        'GET /reports/q3 -> 403 denied user=cody rule="contractors" reports.policy:9: '
        "a deny rule holds",
    ]
