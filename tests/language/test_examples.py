"""The examples of the language page (shared/design/language.md) are binding.

Each example is copied into examples/*.policy: the whole file of section 1, and the snippets of
sections 2 to 4 made into complete policies. Every one must parse, check, lint and compile with
no diagnostic at all, and mean what its comments say.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest

import policyauth
from policyauth.compiler import compile_policy
from policyauth.language import ast
from policyauth.language.checker import check
from policyauth.language.lints import lint
from policyauth.language.parser import parse

EXAMPLES = Path(__file__).parent / "examples"
ENV = {"GOOGLE_CLIENT_ID": "x"}
FILES = sorted(EXAMPLES.glob("*.policy"))
SECTION_1 = EXAMPLES / "confluence.policy"


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_every_example_is_here() -> None:
    assert [f.name for f in FILES] == [
        "confluence.policy",
        "providers.policy",
        "routes.policy",
        "settings.policy",
    ]


def test_section_1_is_copied_verbatim() -> None:
    """When the language page is beside the repo, the copy must not have drifted from it."""
    page = Path(__file__).resolve().parents[3] / "shared" / "design" / "language.md"
    if not page.is_file():
        pytest.skip("the language page is not beside this checkout")
    text = page.read_text(encoding="utf-8")
    section = text.split("## 1. A whole file", 1)[1].split("## 2.", 1)[0]
    block = re.search(r"```\n(.*?)```", section, re.S)
    assert block is not None
    assert read(SECTION_1) == block[1]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_example_parses(path: Path) -> None:
    tree = parse(read(path), path.name)
    assert isinstance(tree, ast.Policy)
    assert tree.declarations
    # Comments are kept for the formatter: every `#` comment of the file, in order.
    comment_lines = [n for n, line in enumerate(read(path).splitlines(), 1) if "#" in line]
    assert [c.span.line for c in tree.comments] == comment_lines


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_example_checks_lints_and_compiles_clean(path: Path) -> None:
    text = read(path)
    tree = parse(text, path.name)
    model, diagnostics = check(tree, source=text, env=ENV, base_dir=EXAMPLES)
    assert diagnostics == []
    assert model is not None
    assert lint(tree, model, source=text) == []
    compiled = compile_policy(model)
    assert len(compiled.routes) == sum(isinstance(d, ast.RouteDecl) for d in tree.declarations)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_example_loads_with_no_diagnostics(path: Path) -> None:
    policy, diagnostics = policyauth.analyze(read(path), path.name, env=ENV, base_dir=EXAMPLES)
    assert [d.one_line() for d in diagnostics] == []
    assert policy is not None
    assert policy.warnings == ()
    assert isinstance(policyauth.load(path, env=ENV), policyauth.Policy)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_example_layout_does_not_matter(path: Path) -> None:
    """Spans are not part of equality: the same declarations on one line parse equal."""
    text = read(path)
    one_line = " ".join(line.split("#", 1)[0].strip() for line in text.splitlines())
    assert "\n" not in one_line
    assert parse(one_line, "other").declarations == parse(text, path.name).declarations


# --- section 1 means what its comments say ------------------------------------------------------


def line_of(text: str) -> int:
    """The line of the section 1 example holding `text` (exactly one)."""
    lines = [n for n, line in enumerate(read(SECTION_1).splitlines(), 1) if text in line]
    assert len(lines) == 1, text
    return lines[0]


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode("ascii")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


IDENTITIES: dict[tuple[str, str], Any] = {
    # google: userinfo documents, as Google's userinfo endpoint answers them
    ("google", "ya29.alice"): {"email": "alice@example.com", "email_verified": True, "sub": "1"},
    ("google", "ya29.unverified"): {"email": "bob@example.com", "email_verified": False},
    ("google", "ya29.outsider"): {"email": "eve@gmail.com", "email_verified": True},
    ("google", "ya29.lookalike"): {"email": "eve@evilexample.com", "email_verified": True},
    # corp: a Keycloak-like userinfo document
    ("corp", "writer"): {
        "preferred_username": "wendy",
        "realm_access": {"roles": ["confluence-writers"]},
        "email": "wendy@example.com",
    },
    ("corp", "contractor"): {
        "preferred_username": "carl",
        "realm_access": {"roles": ["confluence-writers", "contractors"]},
    },
    ("corp", "reader"): {
        "preferred_username": "rita",
        "realm_access": {"roles": ["confluence-readers"]},
    },
    ("corp", "nogroups"): {"preferred_username": "nora"},
    # automation: API tokens from the store
    ("automation", "pa_ci"): {"username": "ci", "groups": ["confluence-readers"]},
    ("automation", "pa_bot"): {"username": "bot", "groups": []},
}


@pytest.fixture(scope="module")
def engine() -> policyauth.Engine:
    policy = policyauth.loads(read(SECTION_1), "confluence.policy", env=ENV, base_dir=EXAMPLES)
    source = policyauth.StaticIdentitySource(policy, IDENTITIES)
    return policyauth.Engine(policy, identities=source)


CONTENT = "/confluence/rest/api/content/12345"
DASHBOARD = "/rest/api/1.0/dashboard/pull-requests"
READERS_RULE = 'allow if "confluence-readers" in groups'
VERIFIED_RULE = 'allow if verified == true and username endswith "@example.com"'
WRITERS_RULE = 'allow if "confluence-writers" in groups'
CONTRACTORS_RULE = 'deny  if "contractors" in groups'
ANY_CALLER_RULE = "allow                                  # any authenticated caller"

# (note, method, target, headers, status, reason, the rule that decided: a text on its line)
DECISIONS: list[tuple[str, str, str, dict[str, str], int, str, str | None]] = [
    # route GET /confluence/rest/api/content/** { auth google, automation ... }
    ("verified google user of the domain", "GET", CONTENT, bearer("ya29.alice"), 200, "allowed",
     VERIFIED_RULE),
    ("HEAD goes through GET", "HEAD", CONTENT, bearer("ya29.alice"), 200, "allowed",
     VERIFIED_RULE),
    ("`**` matches zero segments", "GET", "/confluence/rest/api/content", bearer("ya29.alice"),
     200, "allowed", VERIFIED_RULE),
    ("query is not part of the path", "GET", CONTENT + "?expand=body", bearer("ya29.alice"),
     200, "allowed", VERIFIED_RULE),
    ("unverified email", "GET", CONTENT, bearer("ya29.unverified"), 403, "not_allowed", None),
    ("other domain", "GET", CONTENT, bearer("ya29.outsider"), 403, "not_allowed", None),
    ("endswith is anchored at `@`", "GET", CONTENT, bearer("ya29.lookalike"), 403,
     "not_allowed", None),
    ("API token of a reader", "GET", CONTENT, bearer("pa_ci"), 200, "allowed", READERS_RULE),
    ("API token as Basic", "GET", CONTENT, {"Authorization": basic("ci", "pa_ci")}, 200,
     "allowed", READERS_RULE),
    ("Basic with another user", "GET", CONTENT, {"Authorization": basic("bot", "pa_ci")}, 401,
     "invalid_token", None),
    ("API token without the group", "GET", CONTENT, bearer("pa_bot"), 403, "not_allowed", None),
    ("no credentials", "GET", CONTENT, {}, 401, "no_credentials", None),
    ("unknown google token", "GET", CONTENT, bearer("ya29.nobody"), 401, "invalid_token", None),
    ("corp is not on this route", "GET", CONTENT, bearer("writer"), 401, "invalid_token", None),
    # route POST, PUT, DELETE /confluence/rest/api/** { auth corp ... }
    ("writer may POST", "POST", CONTENT, bearer("writer"), 200, "allowed", WRITERS_RULE),
    ("writer may PUT", "PUT", CONTENT, bearer("writer"), 200, "allowed", WRITERS_RULE),
    ("writer may DELETE", "DELETE", "/confluence/rest/api/space/X", bearer("writer"), 200,
     "allowed", WRITERS_RULE),
    ("deny overrides allow", "POST", CONTENT, bearer("contractor"), 403, "denied",
     CONTRACTORS_RULE),
    ("reader may not write", "PUT", CONTENT, bearer("reader"), 403, "not_allowed", None),
    ("missing groups make the deny error, which denies", "POST", CONTENT, bearer("nogroups"),
     403, "denied", CONTRACTORS_RULE),
    ("API tokens are not accepted for writes", "POST", CONTENT, bearer("pa_ci"), 401,
     "invalid_token", None),
    ("PATCH is not listed", "PATCH", CONTENT, bearer("writer"), 403, "no_route", None),
    ("GET elsewhere under the API has no route", "GET", "/confluence/rest/api/space/X",
     bearer("writer"), 403, "no_route", None),
    # route GET /rest/api/1.0/dashboard/pull-requests { auth corp, automation; allow }
    ("any corp caller", "GET", DASHBOARD, bearer("nogroups"), 200, "allowed", ANY_CALLER_RULE),
    ("any API token", "GET", DASHBOARD, bearer("pa_bot"), 200, "allowed", ANY_CALLER_RULE),
    ("one trailing slash is ignored", "GET", DASHBOARD + "/", bearer("pa_bot"), 200, "allowed",
     ANY_CALLER_RULE),
    ("google is not on this route", "GET", DASHBOARD, bearer("ya29.alice"), 401,
     "invalid_token", None),
    ("still needs credentials", "GET", DASHBOARD, {}, 401, "no_credentials", None),
    ("matching is case-sensitive", "GET", DASHBOARD.upper(), bearer("pa_bot"), 403, "no_route",
     None),
    # route GET /status { public }
    ("public", "GET", "/status", {}, 200, "allowed", None),
    ("public: HEAD", "HEAD", "/status", {}, 200, "allowed", None),
    ("public: credentials are not examined", "GET", "/status",
     {"Authorization": "Bearer not a valid b64token"}, 200, "allowed", None),
    ("public: not below it", "GET", "/status/x", {}, 403, "no_route", None),
    ("public: GET only", "POST", "/status", {}, 403, "no_route", None),
    # before any route
    ("dot segments are rejected", "GET", "/confluence/rest/api/content/../x", bearer("ya29.alice"),
     400, "malformed_request", None),
    ("no route at all", "GET", "/", {}, 403, "no_route", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "target", "headers", "status", "reason", "rule"),
    [case[1:] for case in DECISIONS],
    ids=[case[0] for case in DECISIONS],
)
def test_section_1_decides_as_its_comments_say(
    engine: policyauth.Engine,
    method: str,
    target: str,
    headers: dict[str, str],
    status: int,
    reason: str,
    rule: str | None,
) -> None:
    decision = engine.authorize_sync(method, target, headers)
    assert (decision.status, decision.reason) == (status, reason), decision.message
    assert decision.allowed is (status == 200)
    if rule is None:
        assert decision.rule is None
    else:
        assert decision.rule is not None
        assert decision.rule.line == line_of(rule)
        assert decision.rule.file == "confluence.policy"


def test_section_1_realm_is_in_challenges(engine: policyauth.Engine) -> None:
    """`realm = "atlassian"  # realm in WWW-Authenticate challenges`."""
    decision = engine.authorize_sync("GET", CONTENT, {})
    assert decision.headers == (
        ("WWW-Authenticate", 'Bearer realm="atlassian"'),
        ("WWW-Authenticate", 'Basic realm="atlassian"'),  # automation is on the route
    )
    decision = engine.authorize_sync("POST", CONTENT, {})
    assert decision.headers == (("WWW-Authenticate", 'Bearer realm="atlassian"'),)
    decision = engine.authorize_sync("GET", CONTENT, bearer("ya29.nobody"))
    assert ("WWW-Authenticate", 'Bearer realm="atlassian", error="invalid_token"') in (
        decision.headers
    )


def test_section_1_settings_and_blocks() -> None:
    policy = policyauth.loads(read(SECTION_1), "confluence.policy", env=ENV, base_dir=EXAMPLES)
    assert policy.settings.realm == "atlassian"
    assert policy.settings.cache_ttl_ms == 5 * 60_000  # cache_ttl = 5m
    assert policy.settings.timeout_ms == 3_000  # timeout = 3s
    assert policy.settings.negative_ttl_ms == 30_000  # the default
    assert policy.settings.max_path == 8192  # the default
    google = policy.providers["google"].spec
    assert google.client_id == "x"  # client_id = env("GOOGLE_CLIENT_ID")
    assert google.userinfo is not None
    assert google.userinfo.startswith("https://")
    corp = policy.providers["corp"].spec
    assert corp.userinfo == "https://sso.example.com/realms/corp/protocol/openid-connect/userinfo"
    assert [name for name, _ in corp.claims] == ["username", "groups", "email"]
    # store = "automation.tokens", relative to the policy file
    assert Path(policy.tokens["automation"].store) == EXAMPLES / "automation.tokens"
    assert [r.text for r in policy.routes] == [
        "GET /confluence/rest/api/content/**",
        "POST, PUT, DELETE /confluence/rest/api/**",
        "GET /rest/api/1.0/dashboard/pull-requests",
        "GET /status",
    ]


def test_section_1_principal(engine: policyauth.Engine) -> None:
    decision = engine.authorize_sync("PUT", CONTENT, bearer("writer"))
    assert decision.principal is not None
    assert decision.principal.provider == "corp"
    assert decision.principal.username == "wendy"
    assert decision.principal.groups == ("confluence-writers",)
    assert decision.principal.claims["email"] == "wendy@example.com"
    assert decision.route is not None
    assert decision.route.line == line_of("route POST, PUT")


def test_section_1_missing_env_is_a_load_error() -> None:
    with pytest.raises(policyauth.PolicyError) as caught:
        policyauth.loads(read(SECTION_1), "confluence.policy", env={})
    [diagnostic] = caught.value.diagnostics
    assert diagnostic.code == "PA107"
    assert diagnostic.message == "environment variable `GOOGLE_CLIENT_ID` is not set"
    assert diagnostic.line == line_of('client_id = env("GOOGLE_CLIENT_ID")')


# --- the other examples mean what they say ------------------------------------------------------

ROUTES = EXAMPLES / "routes.policy"
CORP_USERS: dict[tuple[str, str], Any] = {
    ("corp", "alice"): {"preferred_username": "alice", "groups": ["staff"], "level": 1},
    ("corp", "admin"): {"preferred_username": "ann", "groups": ["admins"], "level": 0},
    ("corp", "root"): {"preferred_username": "root", "groups": ["admins"], "level": 9},
    ("corp", "reader"): {"preferred_username": "rob", "groups": ["readers"], "level": 3},
    ("corp", "svc"): {"preferred_username": "svc-build/ci", "groups": ["readers"]},
    ("corp", "level3"): {"preferred_username": "lee", "groups": ["staff"], "level": 3},
    ("corp", "blocked"): {"preferred_username": "alice", "groups": ["blocked"], "level": 3},
    ("corp", "half"): {"preferred_username": "hal", "groups": ["readers"], "level": 2.5},
}

ROUTE_DECISIONS: list[tuple[str, str, str, int, str]] = [
    ("GET", "/public", "", 200, "allowed"),  # `/public/**` matches `/public`
    ("GET", "/public/a/b", "", 200, "allowed"),
    ("GET", "/publicity", "", 403, "no_route"),  # never `/publicity`
    ("PUT", "/users/alice", "alice", 200, "allowed"),  # param.id == username
    ("PUT", "/users/bob", "alice", 403, "not_allowed"),
    ("PATCH", "/users/bob", "admin", 200, "allowed"),  # "admins" in groups
    ("DELETE", "/users/alice", "alice", 403, "denied"),  # not ("admins" in groups)
    ("DELETE", "/users/bob", "admin", 200, "allowed"),
    ("PUT", "/users/root", "root", 403, "denied"),  # username in ["root", "admin"]
    ("GET", "/users/alice/avatar", "alice", 200, "allowed"),  # `*` is one segment
    ("GET", "/users/alice", "alice", 403, "no_route"),
    ("POST", "/api/open/x", "alice", 200, "allowed"),  # path startswith "/api/open/"
    ("POST", "/api/x", "svc", 200, "allowed"),  # matches /svc-[a-z]+\/ci/, whole value
    ("GET", "/api/x", "level3", 200, "allowed"),  # "readers" not in groups and level == 3
    ("GET", "/api/x", "reader", 403, "not_allowed"),
    ("GET", "/api/x", "alice", 200, "allowed"),  # (alice or bob) and level != 0
    ("DELETE", "/api/open/x", "blocked", 403, "denied"),
    ("PUT", "/api/x", "half", 200, "allowed"),  # level == 2.5 and not (method == "DELETE")
    ("DELETE", "/api/x", "half", 403, "not_allowed"),
    ("OPTIONS", "/anything/at/all", "", 200, "allowed"),
    ("GET", "/anything", "", 403, "no_route"),
]


@pytest.mark.parametrize(("method", "target", "token", "status", "reason"), ROUTE_DECISIONS)
def test_routes_example_decides_as_its_comments_say(
    method: str, target: str, token: str, status: int, reason: str
) -> None:
    policy = policyauth.loads(read(ROUTES), "routes.policy")
    identities = policyauth.StaticIdentitySource(policy, CORP_USERS)
    engine = policyauth.Engine(policy, identities=identities)
    decision = engine.authorize_sync(method, target, bearer(token) if token else {})
    assert (decision.status, decision.reason) == (status, reason), decision.message


def test_providers_example_resolves_every_claim_path() -> None:
    policy = policyauth.loads(read(EXAMPLES / "providers.policy"), "providers.policy", env=ENV)
    corp = policy.providers["corp"]
    assert corp.spec.userinfo == "https://sso.example.com/userinfo"  # the env() default
    assert corp.spec.headers == (("Accept", "application/json"),)
    assert corp.spec.token_prefix == ("corp_", "c2_")
    document = {
        "preferred_username": "alice",
        "email": "alice@example.com",
        "realm_access": {"roles": ["r1", "r2"]},
        "data": {"teams": [{"slug": "core"}, {"slug": "web"}]},
        "cognito:groups": ["admins"],
        "https://example.com/roles": ["auditor"],
        "value": [{"id": 42}, {"id": 7}],
    }
    assert corp.claims_from(document) == {
        "username": "alice",
        "email": "alice@example.com",
        "groups": ["r1", "r2"],
        "teams": ["core", "web"],
        "cognito": ["admins"],
        "roles": ["auditor"],
        "first_id": 42,
    }
    kc = policy.providers["kc"].spec
    assert kc.userinfo == "https://sso.example.com/realms/corp/protocol/openid-connect/userinfo"
    slack = policy.providers["slack"]
    assert slack.accepts({"ok": True, "email": "a@example.com"})
    assert not slack.accepts({"ok": False})
    assert not slack.accepts({})


def test_providers_example_sends_each_token_to_one_provider() -> None:
    policy = policyauth.loads(read(EXAMPLES / "providers.policy"), "providers.policy", env=ENV)
    identities = {
        ("google", "ya29.g"): {"email": "g@example.com", "email_verified": True},
        ("slack", "xoxp-s"): {"ok": True, "email": "s@example.com", "email_verified": True},
        ("corp", "corp_c"): {"preferred_username": "c"},
        ("automation", "pa_t"): {"username": "t", "groups": []},
    }
    engine = policyauth.Engine(
        policy, identities=policyauth.StaticIdentitySource(policy, identities)
    )
    for token, provider in [
        ("ya29.g", "google"),
        ("xoxp-s", "slack"),
        ("corp_c", "corp"),
        ("pa_t", "automation"),
    ]:
        decision = engine.authorize_sync("GET", "/me", bearer(token))
        assert decision.status == 200, (token, decision.message)
        assert decision.principal is not None
        assert decision.principal.provider == provider
    # a bearer token that matches no provider's prefix is not sent anywhere
    assert engine.authorize_sync("GET", "/me", bearer("other")).reason == "invalid_token"


def test_settings_example() -> None:
    policy = policyauth.loads(read(EXAMPLES / "settings.policy"), "settings.policy")
    settings = policy.settings
    assert (settings.realm, settings.cache_ttl_ms, settings.negative_ttl_ms) == (
        "api",
        600_000,
        30_000,
    )
    assert (settings.timeout_ms, settings.max_path) == (1500, 4096)
