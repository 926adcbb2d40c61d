"""The behaviour every adapter shows under a real server, as a base class of tests.

Each test module subclasses `AdapterContract` (a `Test...` class), provides a `client` fixture
talking to its framework's app under a real server, and sets the few class attributes where a
framework differs by design. A refused request must never reach a handler: the tests compare
the app's record of served paths before and after.
"""

from __future__ import annotations

import httpx
import pytest
from adapter_servers import HOSTILE, Deployment, hits


class AdapterContract:
    # FastAPI's dependencies decide only for endpoints that use them: other paths are FastAPI's.
    unknown_path: tuple[int, str | None] = (403, "no_route")

    def challenges(self, response: httpx.Response) -> list[str]:
        """One header per challenge, in every integration (Django included)."""
        return response.headers.get_list("www-authenticate")

    def assert_refused(self, response: httpx.Response, status: int, reason: str) -> None:
        assert response.status_code == status, response.text
        assert response.json() == {"error": reason}
        assert response.headers["content-type"] == "application/json"
        assert response.headers["cache-control"] == "no-store"

    def test_a_public_route_needs_no_credentials(self, client: httpx.Client) -> None:
        response = client.get("/health")
        assert response.status_code == 200
        assert "hits" in response.json()

    def test_a_token_reaches_the_handler_with_its_principal(
        self, client: httpx.Client, deployment: Deployment
    ) -> None:
        before = hits(client)
        response = client.get("/reports/q3", headers=deployment.bearer(deployment.reporter))
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["user"], body["groups"]) == ("ada", ["reporting"])
        assert len(hits(client)) == len(before) + 1

    def test_basic_credentials_carry_an_api_token_too(
        self, client: httpx.Client, deployment: Deployment
    ) -> None:
        response = client.get("/reports/q4", headers=deployment.basic("ada", deployment.reporter))
        assert response.status_code == 200, response.text
        assert response.json()["user"] == "ada"

    def test_no_credentials_is_401_with_one_challenge_per_scheme(
        self, client: httpx.Client
    ) -> None:
        before = hits(client)
        response = client.get("/reports/q3")
        self.assert_refused(response, 401, "no_credentials")
        assert self.challenges(response) == ['Bearer realm="adapters"', 'Basic realm="adapters"']
        assert hits(client) == before

    def test_a_revoked_token_is_401_invalid_token(
        self, client: httpx.Client, deployment: Deployment
    ) -> None:
        response = client.get("/reports/q3", headers=deployment.bearer(deployment.revoked))
        self.assert_refused(response, 401, "invalid_token")
        assert self.challenges(response) == [
            'Bearer realm="adapters", error="invalid_token"',
            'Basic realm="adapters"',
        ]

    def test_a_deny_rule_is_403_denied(self, client: httpx.Client, deployment: Deployment) -> None:
        before = hits(client)
        response = client.get("/admin/users", headers=deployment.bearer(deployment.contractor))
        self.assert_refused(response, 403, "denied")
        assert "www-authenticate" not in response.headers
        assert hits(client) == before

    def test_no_allow_rule_holding_is_403_not_allowed(
        self, client: httpx.Client, deployment: Deployment
    ) -> None:
        response = client.get("/admin/users", headers=deployment.bearer(deployment.reporter))
        self.assert_refused(response, 403, "not_allowed")

    def test_an_allowed_write(self, client: httpx.Client, deployment: Deployment) -> None:
        response = client.post("/admin/jobs", headers=deployment.bearer(deployment.admin))
        assert response.status_code == 200, response.text
        assert response.json()["user"] == "root"

    def test_a_path_no_route_matches(self, client: httpx.Client, deployment: Deployment) -> None:
        response = client.get("/elsewhere", headers=deployment.bearer(deployment.admin))
        status, reason = self.unknown_path
        assert response.status_code == status, response.text
        if reason is not None:
            self.assert_refused(response, status, reason)

    @pytest.mark.parametrize("target", HOSTILE)
    def test_a_hostile_target_is_400_and_reaches_no_handler(
        self, client: httpx.Client, deployment: Deployment, target: str
    ) -> None:
        before = hits(client)
        response = client.get(target, headers=deployment.bearer(deployment.admin))
        self.assert_refused(response, 400, "malformed_request")
        assert hits(client) == before
