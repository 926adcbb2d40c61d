"""Unit tests of the evaluator's small parts: principals, challenges, the chosen authenticator,
rule traces, and expressions that must fail closed instead of raising."""

from __future__ import annotations

from typing import Any

import pytest

import policyauth
from policyauth import Engine, Outcome, Reason, StaticIdentitySource
from policyauth.evaluator import choose_authenticator
from policyauth.identity.source import principal_from
from policyauth.request import BasicCredential, BearerCredential

POLICY_TEXT = """\
settings {
  realm = "unit"
}
provider corp {
  userinfo     = "https://sso.example.com/userinfo"
  token_prefix = "c-"
  username     = $.name
  groups       = $.groups[*]
  email        = $.email
}
provider other {
  userinfo     = "https://other.example.com/userinfo"
  token_prefix = ["o-", "oo-"]
  username     = $.login
}
provider lone {
  userinfo = "https://lone.example.com/userinfo"
  username = $.login
  success  = $.login matches /[a-z]+/
}
tokens automation {
  store = "automation.tokens"
}
route GET /both {
  auth corp, other, automation
  deny  if "blocked" in groups
  allow if email matches /[a-z]+@example\\.com/
  allow if "staff" in groups
}
route GET /corp {
  auth corp
  allow
}
route GET /lone {
  auth lone
  allow
}
route GET /store {
  auth automation
  allow
}
"""
POLICY = policyauth.loads(POLICY_TEXT, name="unit.policy")


def route(path: str) -> Any:
    found = POLICY.route_for("GET", tuple(path.strip("/").split("/")))
    assert found is not None
    return found


# --- principal_from -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "expected"),
    [
        ("ann", "ann"),
        (12345, "12345"),
        (0, "0"),
        (-7, "-7"),
        (2**70, str(2**70)),
    ],
)
def test_principal_username_string_or_integer(username: object, expected: str) -> None:
    principal = principal_from("corp", {"username": username})
    assert principal is not None
    assert principal.username == expected
    assert principal.provider == "corp"


@pytest.mark.parametrize("username", [True, False, 1.5, 3.0, "", None, ["ann"], {"n": "ann"}])
def test_principal_without_a_usable_username_is_none(username: object) -> None:
    assert principal_from("corp", {"username": username}) is None


def test_principal_without_username_is_none() -> None:
    assert principal_from("corp", {"groups": ["staff"]}) is None


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        (["a", "b"], ("a", "b")),
        ("admins", ("admins",)),
        (["a", 1, None, True, ["x"], "b"], ("a", "b")),
        ([], ()),
        (None, ()),
        (5, ()),
        ({"a": 1}, ()),
    ],
)
def test_principal_groups(groups: object, expected: tuple[str, ...]) -> None:
    claims = {"username": "ann"} if groups is None else {"username": "ann", "groups": groups}
    principal = principal_from("corp", claims)
    assert principal is not None
    assert principal.groups == expected


def test_principal_keeps_the_claims_as_given() -> None:
    claims = {"username": "ann", "groups": "admins", "email": "a@example.com"}
    principal = principal_from("corp", claims)
    assert principal is not None
    assert dict(principal.claims) == claims  # rules see JSON values, not the principal's view


def test_a_numeric_username_is_the_same_string_for_the_principal_and_its_rules() -> None:
    claims = {"username": 7, "groups": "admins", "email": "a@example.com"}
    principal = principal_from("corp", claims)
    assert principal is not None
    assert principal.username == "7"
    assert dict(principal.claims) == {"username": "7", "groups": "admins", "email": "a@example.com"}
    assert claims["username"] == 7  # the identity's own claims are not changed


# --- challenges -----------------------------------------------------------------------------------


def decide(path: str, headers: list[tuple[str, str]], documents: Any = None) -> Any:
    source = StaticIdentitySource(POLICY, documents or {})
    return Engine(POLICY, identities=source).authorize_sync("GET", path, headers)


def test_challenges_without_credentials() -> None:
    assert decide("/corp", []).headers == (("WWW-Authenticate", 'Bearer realm="unit"'),)
    assert decide("/both", []).headers == (
        ("WWW-Authenticate", 'Bearer realm="unit"'),
        ("WWW-Authenticate", 'Basic realm="unit"'),
    )
    assert decide("/store", []).headers == (
        ("WWW-Authenticate", 'Bearer realm="unit"'),
        ("WWW-Authenticate", 'Basic realm="unit"'),
    )


def test_challenges_for_an_invalid_token_carry_the_error_on_bearer_only() -> None:
    decision = decide("/both", [("Authorization", "Bearer c-unknown")])
    assert decision.reason is Reason.INVALID_TOKEN
    assert decision.headers == (
        ("WWW-Authenticate", 'Bearer realm="unit", error="invalid_token"'),
        ("WWW-Authenticate", 'Basic realm="unit"'),
    )


def test_challenges_for_an_invalid_request() -> None:
    decision = decide("/corp", [("Authorization", "Bearer a b")])
    assert decision.reason is Reason.INVALID_REQUEST
    assert decision.headers == (
        ("WWW-Authenticate", 'Bearer realm="unit", error="invalid_request"'),
    )


@pytest.mark.parametrize(
    ("path", "headers", "documents"),
    [
        ("/nowhere", [], {}),
        ("/corp", [("Authorization", "Bearer c-a")], {("corp", "c-a"): {"name": "a"}}),
        ("/corp", [("Authorization", "Bearer c-down")], {("corp", "c-down"): [1]}),
    ],
)
def test_no_challenges_outside_401(path: str, headers: Any, documents: Any) -> None:
    decision = decide(path, headers, documents)
    assert decision.status in (200, 403, 503)
    # A 503 carries Retry-After, and nothing else.
    assert decision.headers == ((("Retry-After", "5"),) if decision.status == 503 else ())


# --- choose_authenticator -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "credential", "expected"),
    [
        ("/both", BearerCredential("c-1"), "corp"),
        ("/both", BearerCredential("o-1"), "other"),
        ("/both", BearerCredential("oo-1"), "other"),
        ("/both", BearerCredential("pa_1"), "automation"),
        ("/both", BasicCredential("u", "c-1"), "automation"),
        ("/both", BearerCredential("x-1"), None),
        ("/both", BearerCredential("C-1"), None),
        ("/corp", BearerCredential("c-1"), "corp"),
        ("/corp", BearerCredential("o-1"), None),  # corp declares a prefix: not its token
        ("/corp", BearerCredential("pa_1"), None),
        ("/corp", BasicCredential("u", "p"), None),
        ("/lone", BearerCredential("anything"), "lone"),  # no prefix declared: it takes all
        ("/lone", BearerCredential("c-1"), "lone"),
        ("/lone", BearerCredential("pa_1"), None),
        ("/store", BearerCredential("pa_1"), "automation"),
        ("/store", BearerCredential("c-1"), None),
        ("/store", BasicCredential("u", "anything"), "automation"),
    ],
)
def test_choose_authenticator(path: str, credential: Any, expected: str | None) -> None:
    assert choose_authenticator(POLICY, route(path), credential) == expected


# --- rules: traces and failures that close --------------------------------------------------------

DOCS = {
    ("corp", "c-staff"): {"name": "s", "groups": ["staff"]},
    ("corp", "c-mail"): {"name": "m", "email": "m@example.com"},
    ("corp", "c-blocked"): {"name": "b", "groups": ["staff", "blocked"]},
    ("corp", "c-surrogate"): {"name": "x", "groups": ["staff"], "email": "\ud800@example.com"},
    ("corp", "c-surrogate-only"): {"name": "y", "groups": ["x"], "email": "\ud800@example.com"},
    ("lone", "l-surrogate"): {"login": "\udc00abc"},
    ("lone", "l-ok"): {"login": "abc"},
}


def test_trace_of_an_allow_after_an_erroring_allow() -> None:
    decision = decide("/both", [("Authorization", "Bearer c-staff")], DOCS)
    assert decision.reason is Reason.ALLOWED
    assert [(t.kind, t.outcome) for t in decision.trace] == [
        ("deny", Outcome.FALSE),
        ("allow", Outcome.ERROR),
        ("allow", Outcome.TRUE),
    ]
    assert decision.trace[1].detail == "claim `email` is missing"


def test_an_erroring_deny_stops_evaluation_and_says_why() -> None:
    decision = decide("/both", [("Authorization", "Bearer c-mail")], DOCS)
    assert (decision.status, decision.reason) == (403, Reason.DENIED)
    assert [(t.kind, t.outcome) for t in decision.trace] == [("deny", Outcome.ERROR)]
    assert decision.trace[0].detail == "claim `groups` is missing"


def test_deny_trace() -> None:
    decision = decide("/both", [("Authorization", "Bearer c-blocked")], DOCS)
    assert (decision.status, decision.reason) == (403, Reason.DENIED)
    assert [(t.kind, t.outcome) for t in decision.trace] == [("deny", Outcome.TRUE)]
    deny_line = POLICY_TEXT.splitlines().index('  deny  if "blocked" in groups') + 1
    assert decision.rule is not None
    assert decision.rule.line == deny_line
    assert decision.trace[0].text == 'deny if "blocked" in groups'


def test_unpaired_surrogate_in_a_claim_is_a_rule_error_not_an_exception() -> None:
    decision = decide("/both", [("Authorization", "Bearer c-surrogate")], DOCS)
    assert decision.reason is Reason.ALLOWED  # by the second allow
    assert decision.trace[1].outcome is Outcome.ERROR
    assert decision.trace[1].detail == "claim `email` is not valid unicode text"
    alone = decide("/both", [("Authorization", "Bearer c-surrogate-only")], DOCS)
    assert (alone.status, alone.reason) == (403, Reason.NOT_ALLOWED)


def test_unpaired_surrogate_in_success_is_an_invalid_token() -> None:
    decision = decide("/lone", [("Authorization", "Bearer l-surrogate")], DOCS)
    assert (decision.status, decision.reason) == (401, Reason.INVALID_TOKEN)
    ok = decide("/lone", [("Authorization", "Bearer l-ok")], DOCS)
    assert (ok.status, ok.reason) == (200, Reason.ALLOWED)


def test_token_record_that_is_not_an_object_is_unavailable() -> None:
    for document in (["ci"], "ci", 5, True):
        documents = {("automation", "pa_x"): document}
        for header in ("Bearer pa_x", "Basic Y2k6cGFfeA=="):  # ci:pa_x
            decision = decide("/store", [("Authorization", header)], documents)
            assert (decision.status, decision.reason) == (503, Reason.PROVIDER_UNAVAILABLE)


def test_the_engine_never_remembers_a_target_with_a_query() -> None:
    """Targets are remembered for speed, but a query may carry a token: those are not kept."""
    policy = policyauth.loads("route GET /public/** {\n  public\n}\n")
    engine = policyauth.Engine(policy, identities=policyauth.StaticIdentitySource(policy, {}))
    assert engine.authorize_sync("GET", "/public/a").status == 200
    decision = engine.authorize_sync("GET", "/public/a?access_token=secret-in-query")
    assert (decision.status, decision.reason) == (200, "allowed")  # public: not examined
    remembered = repr(engine._state._located)
    assert "/public/a" in remembered
    assert "secret-in-query" not in remembered
