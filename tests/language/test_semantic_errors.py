"""Semantic errors (PA1xx) and lint warnings (PA2xx, PA3xx): one case at least per code.

Each case states every diagnostic the text gets, so a case also proves that one mistake is
reported once, not echoed by other checks.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest

import policyauth

PROVIDER = """\
provider corp {
  userinfo = "https://sso.example.com/userinfo"
  username = $.sub
  groups   = $.groups[*]
}

"""  # six lines: a route written after it starts on line 7


def route(rule: str, head: str = "route GET /a") -> str:
    """A policy whose route starts on line 7 and whose first rule is on line 9."""
    return PROVIDER + f"{head} {{\n  auth corp\n  {rule}\n}}\n"


def provider(*lines: str, name: str = "corp") -> str:
    """A provider block with the given lines, from line 2 on."""
    return f"provider {name} {{\n" + "".join(f"  {line}\n" for line in lines) + "}\n"


USERINFO = 'userinfo = "https://sso.example.com/userinfo"'

Found = tuple[str, int, int, str]  # code, line, column, message


class Case(NamedTuple):
    id: str
    text: str
    expected: list[Found]


CASES = [
    # --- PA101 duplicate name ----------------------------------------------------------------
    Case("PA101 provider declared twice", PROVIDER + PROVIDER, [
        ("PA101", 7, 10, "`corp` is already declared at line 1"),
    ]),
    Case("PA101 tokens block named like a provider",
         PROVIDER + 'tokens corp {\n  store = "corp.tokens"\n}\n', [
        ("PA101", 7, 8, "`corp` is already declared at line 1"),
    ]),
    # --- PA102 unknown key -------------------------------------------------------------------
    Case("PA102 in settings", 'settings {\n  realm  = "api"\n  timout = 3s\n}\n', [
        ("PA102", 3, 3, "unknown key `timout` in `settings`"),
    ]),
    Case("PA102 in a provider", provider(USERINFO, "username = $.sub", 'scope    = "openid"'), [
        ("PA102", 4, 3, "unknown key `scope` in provider `corp`"),
    ]),
    Case("PA102 parameter of another preset",
         provider('preset    = "google"', 'client_id = "x"', 'realm     = "corp"', name="g"), [
        ("PA102", 4, 3, "unknown key `realm` in provider `g`"),
    ]),
    Case("PA102 in a tokens block", 'tokens ci {\n  store = "ci.tokens"\n  ttl   = 5m\n}\n', [
        ("PA102", 3, 3, "unknown key `ttl` in tokens `ci`"),
    ]),
    # --- PA103 missing required key ----------------------------------------------------------
    Case("PA103 tokens without store", "tokens ci {\n}\n", [
        ("PA103", 1, 8, "tokens `ci` needs a `store`"),
    ]),
    Case("PA103 provider without preset or userinfo", provider("username = $.sub"), [
        ("PA103", 1, 10, "provider `corp` needs `preset` or `userinfo`"),
    ]),
    # --- PA104 wrong value type --------------------------------------------------------------
    Case("PA104 string for a duration", 'settings {\n  timeout = "3s"\n}\n', [
        ("PA104", 2, 13, "`timeout` takes a duration such as `30s`, not a string"),
    ]),
    Case("PA104 zero timeout", "settings {\n  timeout = 0s\n}\n", [
        ("PA104", 2, 13, "`timeout` must be longer than zero"),
    ]),
    Case("PA104 fractional max_path", "settings {\n  max_path = 1.5\n}\n", [
        ("PA104", 2, 14, "`max_path` takes a whole number above zero, not 1.5"),
    ]),
    Case("PA104 realm with a quote", 'settings {\n  realm = "a\\"b"\n}\n', [
        ("PA104", 2, 11, "`realm` cannot hold quotes, backslashes or control characters "
                         "(it is sent in a header)"),
    ]),
    Case("PA104 env() value that is not a duration",
         'settings {\n  timeout = env("TIMEOUT", "5min")\n}\n', [
        ("PA104", 2, 13, "`timeout` takes a duration; environment value `5min` is not one"),
    ]),
    Case("PA104 quoted claim path", provider(USERINFO, 'username = "$.sub"'), [
        ("PA104", 3, 14, "claim `username` takes a claim path, not a string"),
    ]),
    Case("PA104 claim given a string", provider(USERINFO, 'username = "bob"'), [
        ("PA104", 3, 14, "claim `username` takes a claim path, not a string"),
    ]),
    Case("PA104 setting given a claim path",
         provider('preset    = "google"', "client_id = $.aud", name="g"), [
        ("PA104", 3, 15, "`client_id` is a setting, not a claim: it takes a string"),
    ]),
    Case("PA104 reserved header",
         provider(USERINFO, "username = $.sub", 'headers  = { "Authorization": "Basic x" }'), [
        ("PA104", 4, 16, "`headers` cannot set `Authorization`"),
    ]),
    Case("PA104 headers that are not a map",
         provider(USERINFO, "username = $.sub", 'headers  = "Accept: */*"'), [
        ("PA104", 4, 14, '`headers` takes a map such as `{ "Accept": "application/json" }`, '
                         "not a string"),
    ]),
    Case("PA104 token_prefix of API tokens",
         provider(USERINFO, "username = $.sub", 'token_prefix = "pa_corp"'), [
        ("PA104", 4, 18, "`token_prefix` cannot be `pa_corp`"),
    ]),
    # --- PA105 unknown preset, PA106 missing preset parameter --------------------------------
    Case("PA105 unknown preset", provider('preset = "gogle"', name="g"), [
        ("PA105", 2, 12, "unknown preset `gogle`"),
    ]),
    Case("PA106 missing preset parameter",
         provider('preset = "keycloak"', 'realm  = "corp"', name="kc"), [
        ("PA106", 1, 10, "preset `keycloak` needs `base_url` in provider `kc`"),
    ]),
    # --- PA107 environment variable missing --------------------------------------------------
    Case("PA107 env() without default", provider('userinfo = env("CORP_USERINFO")',
                                                 "username = $.sub"), [
        ("PA107", 2, 14, "environment variable `CORP_USERINFO` is not set"),
    ]),
    Case("PA107 not with a default",
         provider('userinfo = env("CORP_USERINFO", "https://sso.example.com/u")',
                  "username = $.sub"), []),
    # --- PA108 invalid JSONPath, PA109 invalid regex -----------------------------------------
    Case("PA108 empty brackets", provider(USERINFO, "username = $[]"), [
        ("PA108", 3, 14, "invalid claim path `$[]`: unexpected `]` at character 3"),
    ]),
    Case("PA108 broken filter", provider(USERINFO, "username = $.users[?(@.id ==)].name"), [
        ("PA108", 3, 14,
         "invalid claim path `$.users[?(@.id ==)].name`: unexpected `)` at character 18"),
    ]),
    Case("PA109 unbalanced group", route("allow if username matches /(admin/"), [
        ("PA109", 9, 29, "invalid regex `/(admin/`: missing ): (admin"),
    ]),
    Case("PA109 back-reference (RE2)", route("allow if username matches /(a)\\1/"), [
        ("PA109", 9, 29, "invalid regex `/(a)\\1/`: invalid escape sequence: \\1"),
    ]),
    # --- PA110 unknown auth name -------------------------------------------------------------
    Case("PA110 typo", PROVIDER + "route GET /a {\n  auth crop\n  allow\n}\n", [
        ("PA110", 8, 8, "unknown provider or tokens block `crop`"),
    ]),
    Case("PA110 rule keyword read as a name", PROVIDER + "route GET /a {\n  auth\n  allow\n}\n", [
        ("PA117", 7, 1, "route `GET /a` has no `allow` rule, so nothing can pass"),
        ("PA110", 9, 3, "unknown provider or tokens block `allow`"),
    ]),
    # --- PA111 undeclared claim --------------------------------------------------------------
    Case("PA111 undeclared claim", route('allow if emial == "a@example.com"'), [
        ("PA111", 9, 12, "claim `emial` is not declared by `corp`"),
    ]),
    # --- PA112 type errors -------------------------------------------------------------------
    Case("PA112 list claim == string", route('allow if groups == "admins"'), [
        ("PA112", 9, 12, "`groups` is a list and is never `==` a single value"),
    ]),
    Case("PA112 `in` a string claim", route('allow if "adm" in username'), [
        ("PA112", 9, 12, "`in` needs a list on the right; `username` is a string"),
    ]),
    Case("PA112 list on the left of `in`", route('allow if groups in ["a"]'), [
        ("PA112", 9, 12, "the left side of `in` must be a single value; `groups` is a list"),
    ]),
    Case("PA112 types never equal", route('allow if 1 == "1"'), [
        ("PA112", 9, 12, '`1` is a number and `"1"` is a string; they are never equal'),
    ]),
    Case("PA112 provider not on the route", route('allow if provider == "google"'), [
        ("PA112", 9, 24, "`provider` is never `google` on this route"),
    ]),
    Case("PA112 `matches` a list", route("allow if groups matches /a/"), [
        ("PA112", 9, 12, "`matches` needs a string on the left; `groups` is a list"),
    ]),
    Case("PA112 `startswith` a number", route("allow if username startswith 1"), [
        ("PA112", 9, 12, "`startswith` needs a string on the right; `1` is a number"),
    ]),
    Case("PA112 a string as a condition", route('allow if "yes"'), [
        ("PA112", 9, 12, 'a condition must be true or false; `"yes"` is a string'),
    ]),
    # --- PA113 duplicate route, PA114 unreachable route --------------------------------------
    Case("PA113 duplicate route",
         PROVIDER + "route GET /a/{id} {\n  auth corp\n  allow\n}\n\n"
         "route GET /a/{name} {\n  public\n}\n", [
        ("PA113", 12, 11, "duplicate route: line 7 has the same methods and pattern"),
    ]),
    Case("PA114 unreachable by pattern",
         PROVIDER + "route GET /a/** {\n  auth corp\n  allow\n}\n\n"
         "route GET /a/b {\n  public\n}\n", [
        ("PA114", 12, 11, "route is unreachable: the route at line 7 (`GET /a/**`) matches "
                          "every request it would"),
    ]),
    Case("PA114 unreachable by methods",
         PROVIDER + "route * /a/* {\n  auth corp\n  allow\n}\n\n"
         "route POST /a/b {\n  public\n}\n", [
        ("PA114", 12, 12, "route is unreachable: the route at line 7 (`* /a/*`) matches "
                          "every request it would"),
    ]),
    # --- PA115 non-https URL, PA122 invalid URL ----------------------------------------------
    Case("PA115 http to a remote host",
         provider('userinfo = "http://sso.example.com/userinfo"', "username = $.sub"), [
        ("PA115", 2, 14, "`userinfo` must use https: `http://sso.example.com/userinfo`"),
    ]),
    Case("PA115 http base_url of a preset",
         provider('preset   = "gitlab"', 'base_url = "http://gitlab.example.com"',
                  'client_id = "x"', name="gl"), [
        ("PA115", 3, 14, "`base_url` must use https: `http://gitlab.example.com`"),
    ]),
    Case("PA122 no scheme",
         provider('userinfo = "sso.example.com/userinfo"', "username = $.sub"), [
        ("PA122", 2, 14, "`userinfo` is not a valid URL: `sso.example.com/userinfo`"),
    ]),
    Case("PA122 other scheme",
         provider('userinfo = "ftp://sso.example.com/userinfo"', "username = $.sub"), [
        ("PA122", 2, 14, "`userinfo` is not a valid URL: `ftp://sso.example.com/userinfo`"),
    ]),
    # --- PA116 missing username, PA117 auth without allow ------------------------------------
    Case("PA116 no username", provider(USERINFO, "email    = $.email"), [
        ("PA116", 1, 10, "provider `corp` declares no `username` claim"),
    ]),
    Case("PA117 only deny rules", route('deny if "contractors" in groups'), [
        ("PA117", 7, 1, "route `GET /a` has no `allow` rule, so nothing can pass"),
    ]),
    # --- PA118 indistinguishable providers ---------------------------------------------------
    Case("PA118 no prefixes",
         PROVIDER + provider(USERINFO, "username = $.sub", name="corp2")
         + "route GET /a {\n  auth corp, corp2\n  allow\n}\n", [
        ("PA118", 12, 3, "providers `corp` and `corp2` on this route cannot be told apart by "
                         "token prefix"),
    ]),
    Case("PA118 overlapping prefixes",
         provider(USERINFO, "username = $.sub", 'token_prefix = "c_"', name="a")
         + provider(USERINFO, "username = $.sub", 'token_prefix = ["x_", "c_x"]', name="b")
         + "route GET /a {\n  auth a, b\n  allow\n}\n", [
        ("PA118", 12, 3, "providers `a` and `b` on this route cannot be told apart by "
                         "token prefix"),
    ]),
    Case("PA118 not with distinct prefixes",
         provider(USERINFO, "username = $.sub", 'token_prefix = "c_"', name="a")
         + provider(USERINFO, "username = $.sub", 'token_prefix = ["x_", "d_"]', name="b")
         + "route GET /a {\n  auth a, b\n  allow\n}\n", []),
    # --- PA119 two settings blocks, PA120 key set twice, PA121 name listed twice -------------
    Case("PA119 two settings blocks",
         'settings {\n  realm = "a"\n}\n\nsettings {\n  timeout = 1s\n}\n', [
        ("PA119", 5, 1, "a policy has at most one `settings` block"),
    ]),
    Case("PA120 setting twice", 'settings {\n  realm = "a"\n  realm = "b"\n}\n', [
        ("PA120", 3, 3, "`realm` is set twice in `settings`"),
    ]),
    Case("PA120 claim twice", provider(USERINFO, "username = $.sub", "username = $.email"), [
        ("PA120", 4, 3, "`username` is set twice in provider `corp`"),
    ]),
    Case("PA120 success twice",
         provider(USERINFO, "username = $.sub", "success  = $.ok == true",
                  "success  = $.active == true"), [
        ("PA120", 5, 3, "`success` is set twice in provider `corp`"),
    ]),
    Case("PA121 name listed twice", PROVIDER + "route GET /a {\n  auth corp, corp\n  allow\n}\n", [
        ("PA121", 8, 14, "`corp` is listed twice in `auth`"),
    ]),
    # --- PA123 claim paths and claims in the wrong place, PA124 unknown param ----------------
    Case("PA123 claim path in a rule", route('allow if $.sub == "1"'), [
        ("PA123", 9, 12, "claim paths can only be used in a provider's `success`"),
    ]),
    Case("PA123 claim in success",
         provider(USERINFO, "username = $.sub", 'success  = username == "x"'), [
        ("PA123", 4, 14, "`success` reads the userinfo response; `username` is not available "
                         "there"),
    ]),
    Case("PA124 no parameter in the pattern", route("allow if param.id == username"), [
        ("PA124", 9, 12, "`param.id` is not captured by this route's pattern"),
    ]),
    Case("PA124 another parameter in the pattern",
         route("allow if param.id == username", head="route GET /a/{name}"), [
        ("PA124", 9, 12, "`param.id` is not captured by this route's pattern"),
    ]),
    # --- PA143, PA144 rule labels ------------------------------------------------------------
    Case("PA143 a label used twice in a route",
         route('deny "staff" if "x" in groups\n  allow "staff" if "staff" in groups'), [
        ("PA143", 10, 9, 'the label "staff" is already used at line 9 of this route'),
    ]),
    Case("PA143 not across routes",
         route('allow "staff" if "staff" in groups')
         + 'route GET /b {\n  auth corp\n  allow "staff" if "staff" in groups\n}\n', []),
    Case("PA144 an empty label", route('allow "" if "staff" in groups'), [
        ("PA144", 9, 9, "a rule label must be a non-empty line of printable text"),
    ]),
    Case("PA144 a label over two lines", route('allow "a\\nb" if "staff" in groups'), [
        ("PA144", 9, 9, "a rule label must be a non-empty line of printable text"),
    ]),
    # --- warnings ----------------------------------------------------------------------------
    Case("PA201 http on 127.0.0.1",
         provider('userinfo = "http://127.0.0.1:8080/userinfo"', "username = $.sub"), [
        ("PA201", 2, 14, "`userinfo` uses http on a loopback address"),
    ]),
    Case("PA201 http on localhost",
         provider('userinfo = "http://localhost/userinfo"', "username = $.sub"), [
        ("PA201", 2, 14, "`userinfo` uses http on a loopback address"),
    ]),
    Case("PA201 http on ::1",
         provider('userinfo = "http://[::1]:9000/userinfo"', "username = $.sub"), [
        ("PA201", 2, 14, "`userinfo` uses http on a loopback address"),
    ]),
    Case("PA202 google without client_id", provider('preset = "google"', name="g"), [
        ("PA202", 1, 10, "provider `g` accepts tokens issued to any google client"),
    ]),
    Case("PA202 a preset with no audience check", provider('preset = "slack"', name="s"), [
        ("PA202", 1, 10, "provider `s` cannot check that tokens were issued to your client"),
    ]),
    Case("PA202 not with client_id", provider('preset = "google"', 'client_id = "x"'), []),
    Case("PA203 endswith a bare domain", route('allow if username endswith "example.com"'), [
        ("PA203", 9, 30, '`endswith "example.com"` also matches `evilexample.com`'),
    ]),
    Case("PA203 not when anchored", route('allow if username endswith "@example.com"'), []),
    Case("PA301 anchors", route("allow if username matches /^admin$/"), [
        ("PA301", 9, 29, "`matches` already tests the whole value; `^` and `$` are not needed"),
    ]),
    Case("PA301 not for an escaped dollar", route("allow if username matches /admin\\$/"), []),
]  # fmt: skip


def found(text: str) -> tuple[policyauth.Policy | None, list[policyauth.Diagnostic]]:
    return policyauth.analyze(text, "t.policy", env={})


def as_tuples(diagnostics: list[policyauth.Diagnostic]) -> list[Found]:
    return [(d.code, d.line, d.column, d.message) for d in diagnostics]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_diagnostics(case: Case) -> None:
    policy, diagnostics = found(case.text)
    assert as_tuples(diagnostics) == case.expected
    for diagnostic in diagnostics:
        assert diagnostic.file == "t.policy"
        assert diagnostic.is_error is diagnostic.code.startswith("PA1")
        assert diagnostic.help is None or diagnostic.help
        assert "\n" not in diagnostic.message
    errors = [d for d in diagnostics if d.is_error]
    assert (policy is None) is bool(errors)
    if policy is not None:
        assert list(policy.warnings) == diagnostics


SEMANTIC_CODES = [f"PA1{n:02d}" for n in range(1, 25)]
WARNING_CODES = ["PA201", "PA202", "PA203", "PA301"]


def test_every_code_has_a_case() -> None:
    covered = {code for case in CASES for code, *_ in case.expected}
    assert set(SEMANTIC_CODES) | set(WARNING_CODES) <= covered


# Section 6 of the language page: "Semantic errors include at least ..."
SECTION_6 = {
    "unknown provider or tokens name in `auth`": "PA110",
    "duplicate names": "PA101",
    "unknown keys": "PA102",
    "unknown preset": "PA105",
    "missing preset parameter": "PA106",
    "invalid JSONPath": "PA108",
    "invalid regex": "PA109",
    "claim used but not declared": "PA111",
    "type errors in expressions": "PA112",
    "duplicate route (same methods and pattern)": "PA113",
    "a route made unreachable by an earlier one": "PA114",
    "non-https URL": "PA115",
    "missing `username`": "PA116",
    "route with `auth` but no `allow`": "PA117",
    "providers on one route that cannot be told apart": "PA118",
}


@pytest.mark.parametrize(("item", "code"), SECTION_6.items(), ids=list(SECTION_6))
def test_section_6_item_is_a_load_error(item: str, code: str) -> None:
    cases = [case for case in CASES if case.expected and case.expected[0][0] == code]
    assert cases, item
    for case in cases:
        with pytest.raises(policyauth.PolicyError) as caught:
            policyauth.loads(case.text, "t.policy", env={})
        assert code in [d.code for d in caught.value.diagnostics]
        rendered = caught.value.render()
        assert f"t.policy:{case.expected[0][1]}:{case.expected[0][2]}: {code} " in rendered
        assert "^" in rendered  # the source line with a caret


# --- several errors at once ---------------------------------------------------------------------

SEVERAL = """\
settings {
  realm   = "api"
  timeout = "3s"
}

provider corp {
  userinfo = "http://sso.example.com/userinfo"
  username = $.sub
  groups   = $.groups[*]
}

provider corp {
  preset = "gogle"
}

tokens ci {
  store = "ci.tokens"
}

route GET /a/** {
  auth corp, crop
  allow if "admins" in groups
}

route GET /a/b {
  auth ci
  deny if groups == "x" or emial == "y"
}

settings {
}
"""


def test_several_errors_are_all_reported_sorted_by_location() -> None:
    with pytest.raises(policyauth.PolicyError) as caught:
        policyauth.loads(SEVERAL, "t.policy")
    expected = [
        ("PA104", 3, 13, "`timeout` takes a duration such as `30s`, not a string"),
        ("PA115", 7, 14, "`userinfo` must use https: `http://sso.example.com/userinfo`"),
        ("PA101", 12, 10, "`corp` is already declared at line 6"),
        ("PA110", 21, 14, "unknown provider or tokens block `crop`"),
        ("PA117", 25, 1, "route `GET /a/b` has no `allow` rule, so nothing can pass"),
        ("PA114", 25, 11, "route is unreachable: the route at line 20 (`GET /a/**`) matches "
                          "every request it would"),
        ("PA112", 27, 11, "`groups` is a list and is never `==` a single value"),
        ("PA111", 27, 28, "claim `emial` is not declared by `ci`"),
        ("PA119", 30, 1, "a policy has at most one `settings` block"),
    ]  # fmt: skip
    assert as_tuples(caught.value.diagnostics) == expected
    assert str(caught.value) == (
        "t.policy:3:13: PA104 `timeout` takes a duration such as `30s`, not a string (and 8 more)"
    )
    assert as_tuples(found(SEVERAL)[1]) == expected


def test_warnings_are_sorted_with_errors() -> None:
    text = route('allow if username endswith "example.com" and groups == "x"')
    policy, diagnostics = found(text)
    assert policy is None
    assert [(d.code, d.line, d.column) for d in diagnostics] == [
        ("PA203", 9, 30),
        ("PA112", 9, 48),
    ]
    with pytest.raises(policyauth.PolicyError) as caught:
        policyauth.loads(text, "t.policy")
    assert [(d.code, d.column) for d in caught.value.diagnostics] == [("PA203", 30), ("PA112", 48)]
    # The summary names the first error, not the warning before it.
    assert str(caught.value) == (
        "t.policy:9:48: PA112 `groups` is a list and is never `==` a single value"
    )


# --- suppressing warnings -----------------------------------------------------------------------

SLACK = 'provider s {{  # policyauth: ignore[{codes}]\n  preset = "slack"\n}}\n'


@pytest.mark.parametrize("codes", ["PA202", "PA301, PA202", "PA202,PA203"])
def test_ignore_comment_silences_a_warning_on_its_line(codes: str) -> None:
    policy, diagnostics = found(SLACK.format(codes=codes))
    assert diagnostics == []
    assert policy is not None


def test_ignore_comment_of_another_code_does_not() -> None:
    _, diagnostics = found(SLACK.format(codes="PA203"))
    assert as_tuples(diagnostics) == [
        ("PA202", 1, 10, "provider `s` cannot check that tokens were issued to your client"),
    ]


def test_ignore_comment_on_another_line_does_not() -> None:
    _, diagnostics = found('# policyauth: ignore[PA202]\nprovider s {\n  preset = "slack"\n}\n')
    assert [(d.code, d.line) for d in diagnostics] == [("PA202", 2)]


def test_ignore_comment_silences_lint_in_a_rule() -> None:
    text = route('allow if username endswith "example.com"  # policyauth: ignore[PA203]')
    assert found(text) == (found(text)[0], [])


def test_errors_cannot_be_ignored() -> None:
    text = PROVIDER + "route GET /a {\n  auth crop  # policyauth: ignore[PA110]\n  allow\n}\n"
    policy, diagnostics = found(text)
    assert policy is None
    assert as_tuples(diagnostics) == [
        ("PA110", 8, 8, "unknown provider or tokens block `crop`"),
    ]


def test_help_lines() -> None:
    """Help says what to do; a few that matter most, in full."""
    cases = {
        provider(USERINFO, 'username = "$.sub"'): (
            "claim paths are written without quotes: `username = $.sub`"
        ),
        PROVIDER + "route GET /a {\n  auth crop\n  allow\n}\n": "did you mean `corp`?",
        route('allow if group == "a"'): "did you mean `groups`?",
        route('allow if groups == "admins"'): 'test membership instead: `"admins" in groups`',
        provider('preset = "gogle"', name="g"): "did you mean `google`?",
        provider('preset = "google"', name="g"): (
            'set `client_id = env("...")` so tokens are checked against your client'
        ),
        "settings {\n  timout = 3s\n}\n": "did you mean `timeout`?",
    }
    for text, help in cases.items():
        _, diagnostics = found(text)
        assert [d.help for d in diagnostics] == [help], text


# --- what is not an error -----------------------------------------------------------------------


def test_claim_declared_by_only_some_authenticators_is_fine() -> None:
    text = (
        provider(USERINFO, "username = $.sub", "email    = $.email", 'token_prefix = "a_"',
                 name="a")
        + provider(USERINFO, "username = $.sub", 'token_prefix = "b_"', name="b")
        + 'tokens t {\n  store = "t.tokens"\n}\n'
        + 'route GET /x {\n  auth a, b, t\n  allow if email endswith "@example.com"\n'
        + '  allow if "ops" in groups\n}\n'
    )  # fmt: skip
    assert found(text)[1] == []


def test_one_error_in_a_provider_does_not_echo_in_its_routes() -> None:
    """A provider that fails its own checks does not make every claim of its routes unknown."""
    text = (
        provider('userinfo = env("CORP_USERINFO")', "username = $.sub", "groups = $.g[*]")
        + 'route GET /a {\n  auth corp\n  allow if "x" in groups and nickname == "y"\n}\n'
    )
    assert [d.code for d in found(text)[1]] == ["PA107"]


def test_unknown_preset_does_not_report_missing_username() -> None:
    assert [d.code for d in found(provider('preset = "zzz"', name="g"))[1]] == ["PA105"]


def test_pa112_on_a_list_path_without_items_suggests_the_items_not_another_operator():
    """`groups = $.groups` selects the list as one value; `"x" in groups` then fails, and the
    fix is `[*]` on the path (issue 15), not `==`."""
    text = PROVIDER.replace("$.groups[*]", "$.groups") + "route GET /a {\n  auth corp\n"
    text += '  allow if "admins" in groups\n}\n'
    with pytest.raises(policyauth.PolicyError) as caught:
        policyauth.loads(text, "t.policy")
    [found] = caught.value.diagnostics
    assert (found.code, found.line, found.column, found.message) == (
        "PA112",
        9,
        12,
        "`in` needs a list on the right; `groups` is a single value",
    )
    assert found.help == (
        "`groups` is declared `$.groups`, which selects one value; if it holds a list, select "
        "its items: `groups = $.groups[*]`"
    )
