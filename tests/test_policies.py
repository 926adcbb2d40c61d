"""The shipped example policies: they lint clean, load, and mean what their comments say."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import policyauth
from policyauth.cli.main import main

POLICIES = Path(__file__).resolve().parents[1] / "policies"
FILES = sorted(POLICIES.glob("*.policy"))

# confluence.policy is the language page's example verbatim; it reads its Google client id
# from the environment without a default, so the tests provide one.
ENV = {"GOOGLE_CLIENT_ID": "1234567890-atlassian.apps.googleusercontent.com"}


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


def test_the_policies_folder_holds_the_examples():
    names = {path.name for path in FILES}
    assert {
        "confluence.policy",
        "keycloak.policy",
        "github-ci.policy",
        "slack.policy",
        "mixed.policy",
    } <= names


def trailing_comments_padded_alike(text: str) -> str:
    """Two spaces before every comment that follows code: `policyauth fmt` writes them so, where
    the language page lines its trailing comments up in a column."""
    return re.sub(r"(?<=\S) {2,}#", "  #", text)


def as_on_the_page(text: str) -> str:
    """policies/confluence.policy less its one documented change: a placeholder default for
    GOOGLE_CLIENT_ID, and the two comment lines that say so (trailing comments padded alike)."""
    added = (
        "  # audience binding: the token must be issued to this client. The language page's "
        "example\n  # has no default; this copy has a placeholder so that it lints and loads "
        "anywhere.\n"
    )
    assert added in text
    return trailing_comments_padded_alike(
        text.replace(added, "").replace(
            'env("GOOGLE_CLIENT_ID", "1234567890-atlassian.apps.googleusercontent.com")',
            'env("GOOGLE_CLIENT_ID")  # audience binding: the token must be issued to this client',
        )
    )


def test_confluence_policy_is_the_language_page_example():
    """tests/language/examples/confluence.policy is the page's example verbatim (checked
    against the page there); this copy differs only by its documented placeholder."""
    example = Path(__file__).parent / "language" / "examples" / "confluence.policy"
    policy = (POLICIES / "confluence.policy").read_text(encoding="utf-8")
    page = example.read_text(encoding="utf-8")
    assert as_on_the_page(policy) == trailing_comments_padded_alike(page)


def test_lint_policies_exits_0(capsys: pytest.CaptureFixture[str]):
    code = main(["lint", str(POLICIES)])
    captured = capsys.readouterr()
    assert (code, captured.out) == (0, "")
    assert captured.err == f"{len(FILES)} files clean\n"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_policy_loads_without_warnings(path: Path):
    policy = policyauth.load(path)
    assert policy.warnings == ()
    assert policy.routes


GOOGLE = {"sub": "1048", "email": "ada@example.com", "email_verified": True}
ADMIN = {
    "sub": "ccd1",
    "preferred_username": "ada",
    "email_verified": True,
    "realm_access": {"roles": ["admin"]},
}
NO_ROLES = {**ADMIN, "realm_access": {"roles": []}}
UNVERIFIED = {**ADMIN, "email_verified": False}
CI = {"username": "ci-release", "groups": ["widgets"]}
OCTOCAT = {"login": "octocat", "id": 1}
MALLORY = {"login": "mallory", "id": 2}
ANN = {"username": "ann", "state": "active"}
BLOCKED = {"username": "scan-1", "state": "blocked"}
SLACK = {
    "ok": True,
    "email": "krane@example.com",
    "email_verified": True,
    "https://slack.com/team_id": "T0R7GR",
}
OTHER_TEAM = {**SLACK, "https://slack.com/team_id": "T0OTHER"}
NOT_OK = {**SLACK, "ok": False}
BOT = {"ok": True, "user_id": "U0BOT", "team_id": "T0R7GR", "bot_id": "B0DEPLOY1"}
SUPPORT = {"preferred_username": "sam", "realm_access": {"roles": ["support", "suspended"]}}
STAFF = {"preferred_username": "sam", "realm_access": {"roles": ["staff"]}}
STAFF_ADMIN = {"preferred_username": "sam", "realm_access": {"roles": ["admin"]}}

# A bearer token for each authenticator, with the prefix that routes it there.
TOKENS = {
    "google": "ya29.t",
    "keycloak": "t",
    "ci": "pa_t",
    "github": "gho_t",
    "gitlab": "glpat-t",
    "slack": "xoxp-t",
    "slackbot": "xoxb-t",
    "staff": "eyJt",
    "warehouse": "glpat-t",
}

# (file, request, authenticator, identity document, expected "status reason")
CASES: list[tuple[str, str, str | None, Any, str]] = [
    ("confluence", "GET /status", None, None, "200 allowed"),
    ("confluence", "GET /confluence/rest/api/content/1", "google", GOOGLE, "200 allowed"),
    ("confluence", "PUT /confluence/rest/api/content/1", None, None, "401 no_credentials"),
    ("keycloak", "GET /healthz", None, None, "200 allowed"),
    ("keycloak", "DELETE /admin/api/realms/master", "keycloak", ADMIN, "403 denied"),
    ("keycloak", "DELETE /admin/api/realms/sales", "keycloak", ADMIN, "403 not_allowed"),
    ("keycloak", "GET /admin/api/users/ccd1", "keycloak", NO_ROLES, "200 allowed"),
    ("keycloak", "GET /admin/api/users/other", "keycloak", NO_ROLES, "403 not_allowed"),
    ("keycloak", "PATCH /admin/api/users/ccd1", "keycloak", UNVERIFIED, "403 not_allowed"),
    ("github-ci", "PUT /api/artifacts/widgets/1.0/w.tgz", "ci", CI, "200 allowed"),
    ("github-ci", "PUT /api/artifacts/gadgets/1.0/g.tgz", "ci", CI, "403 not_allowed"),
    ("github-ci", "GET /api/artifacts/widgets/w.tgz", "github", OCTOCAT, "200 allowed"),
    ("github-ci", "GET /api/artifacts/widgets/w.tgz", "github", MALLORY, "403 not_allowed"),
    ("github-ci", "GET /api/artifacts/widgets/w.tgz", "gitlab", ANN, "200 allowed"),
    ("github-ci", "DELETE /api/artifacts/widgets/w.tgz", "github", OCTOCAT, "200 allowed"),
    ("github-ci", "DELETE /api/artifacts/widgets/w.tgz", "ci", CI, "401 invalid_token"),
    ("slack", "GET /chatops/deployments/web", "slack", SLACK, "200 allowed"),
    ("slack", "GET /chatops/deployments/web", "slack", OTHER_TEAM, "403 not_allowed"),
    ("slack", "GET /chatops/deployments/web", "slack", NOT_OK, "401 invalid_token"),
    ("slack", "GET /chatops/deployments/web", "slackbot", BOT, "200 allowed"),
    ("slack", "POST /chatops/deployments/web", "slackbot", BOT, "200 allowed"),
    ("slack", "POST /chatops/deployments/billing", "slackbot", BOT, "403 denied"),
    ("mixed", "GET /api/catalog/shoes/42", None, None, "200 allowed"),
    ("mixed", "GET /api/customers/1048/orders", "google", GOOGLE, "200 allowed"),
    ("mixed", "GET /api/customers/9999/orders", "google", GOOGLE, "403 not_allowed"),
    ("mixed", "GET /api/customers/1/orders", "staff", SUPPORT, "403 denied"),
    ("mixed", "GET /api/orders/12345678", "google", GOOGLE, "200 allowed"),
    ("mixed", "GET /api/orders/12", "google", GOOGLE, "403 denied"),
    ("mixed", "PATCH /api/orders/12345678", "warehouse", ANN, "200 allowed"),
    ("mixed", "DELETE /api/orders/12345678", "warehouse", ANN, "403 not_allowed"),
    ("mixed", "PATCH /api/orders/12345678", "warehouse", BLOCKED, "403 denied"),
    ("mixed", "GET /api/admin/internal/keys", "staff", STAFF_ADMIN, "403 denied"),
    ("mixed", "POST /api/admin/users", "staff", STAFF, "403 denied"),
    ("mixed", "GET /api/admin/users", "staff", STAFF, "200 allowed"),
]


def decide(name: str, request: str, authenticator: str | None, document: Any, token: str) -> str:
    """`status reason` for one request, the caller's identity known in advance."""
    policy = policyauth.load(POLICIES / f"{name}.policy")
    documents = {(authenticator, token): document} if authenticator else {}
    headers = [("Authorization", f"Bearer {token}")] if authenticator else []
    engine = policyauth.Engine(
        policy, identities=policyauth.StaticIdentitySource(policy, documents)
    )
    method, target = request.split(" ")
    decision = engine.authorize_sync(method, target, headers)
    return f"{decision.status} {decision.reason.value}"


@pytest.mark.parametrize(("name", "request_line", "authenticator", "document", "expected"), CASES)
def test_policies_decide_as_their_comments_say(
    name: str, request_line: str, authenticator: str | None, document: Any, expected: str
):
    token = TOKENS[authenticator] if authenticator else ""
    assert decide(name, request_line, authenticator, document, token) == expected


def test_a_token_that_no_providers_prefix_matches_is_refused():
    request = "GET /api/artifacts/widgets/w.tgz"
    assert decide("github-ci", request, "gitlab", ANN, "other-t") == "401 invalid_token"
