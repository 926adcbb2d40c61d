"""Every 503 carries Retry-After (issue 15): the provider's own hint where it gave one with a
429, 503 or rate-limiting 403, kept within 1 to 300 seconds; else 5 seconds."""

from __future__ import annotations

import email.utils

import pytest
from provider_server import (
    OKTA_USERINFO,
    Engines,
    ProviderApp,
    Reply,
    bearer,
    new_token,
    observe_decision,
)

from policyauth import Reason
from policyauth.identity.userinfo import MAX_RETRY_AFTER, Response, retry_after

NOW = 1_800_000_000.0
OKTA = "/oauth2/default/v1/userinfo"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "60"}, 60),
        ({"retry-after": "0"}, 1),
        ({"retry-after": email.utils.formatdate(NOW + 42, usegmt=True)}, 42),
        ({"retry-after": email.utils.formatdate(NOW - 42, usegmt=True)}, 1),
        ({"x-ratelimit-reset": str(int(NOW) + 17)}, 17),  # GitHub, GitLab
        ({"x-rate-limit-reset": str(int(NOW) + 9)}, 9),  # Okta
        ({"retry-after": "86400"}, MAX_RETRY_AFTER),  # a day is not a hint for our clients
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-5"}, None),
        ({}, None),
    ],
)
def test_the_provider_s_hint(headers: dict[str, str], expected: int | None) -> None:
    assert retry_after(Response(429, headers, b""), NOW) == expected


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply(429, b"", {"retry-after": "60", "x-rate-limit-remaining": "0"}), "60"),
        (Reply(503, b"", {"retry-after": "30"}), "30"),
        (Reply(403, b"", {"retry-after": "12"}), "12"),  # rate limiting, not a refusal
        (Reply(502, "<html>Bad Gateway</html>", {}), "5"),
        (Reply(200, b"not json", {}, content_type="application/json"), "5"),
    ],
    ids=["429", "503", "403-rate-limited", "502", "not-json"],
)
async def test_every_503_decision_says_when_to_retry(
    reply: Reply, expected: str, aengines: Engines, server: ProviderApp
) -> None:
    engine, _ = aengines("okta")
    token = new_token()
    server.grant(token, OKTA_USERINFO)
    server.script(token, reply, path=OKTA)
    decision = observe_decision(await engine.authorize("GET", "/okta", bearer(token)))
    assert (decision.status, decision.reason) == (503, Reason.PROVIDER_UNAVAILABLE)
    assert decision.headers == (("Retry-After", expected),)
