"""`policyauth explain`: the decision for one request, laid out, with exit codes 0, 1 and 2."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from policyauth.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
KEYCLOAK = str(ROOT / "policies" / "keycloak.policy")
GITHUB_CI = str(ROOT / "policies" / "github-ci.policy")
MIXED = str(ROOT / "policies" / "mixed.policy")

ADA = {
    "sub": "ccd1ab6c-0c54-4f27-82a9-092376a66cf4",
    "email_verified": True,
    "preferred_username": "ada",
    "email": "ada@example.com",
    "realm_access": {"roles": ["offline_access", "admin"]},
}


def line(policy: str, text: str) -> int:
    """The line of `policy` that holds `text` (so tests survive edits to its comments)."""
    lines = Path(policy).read_text(encoding="utf-8").splitlines()
    return next(number for number, line in enumerate(lines, 1) if text in line)


HEALTHZ = line(KEYCLOAK, "route GET /healthz")
USER_ROUTE = line(KEYCLOAK, "route GET /admin/api/users/{id}")
OWN_RECORD = line(KEYCLOAK, "allow if param.id == sub")
HELPDESK = line(KEYCLOAK, '"helpdesk"')
MASTER = line(KEYCLOAK, '"master"')
SUSPENDED = line(KEYCLOAK, '"suspended"')


@attrs.frozen
class Result:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run `policyauth explain ARGS...` in-process; the exit code and what it printed."""

    def invoke(*argv: str) -> Result:
        code = main(["explain", *argv])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


@pytest.fixture
def identity(tmp_path: Path) -> Callable[[Any], str]:
    """Write a JSON identity document to a file; its path."""
    counter = iter(range(1000))

    def write(document: Any) -> str:
        path = tmp_path / f"identity-{next(counter)}.json"
        path.write_text(json.dumps(document), encoding="utf-8")
        return str(path)

    return write


# --- decisions ------------------------------------------------------------------------------------


def test_a_public_route_is_allowed_and_exits_0(run):
    result = run(KEYCLOAK, "--method", "GET", "--path", "/healthz?probe=1")
    assert result.code == 0
    assert result.lines == [
        "request:   GET /healthz",
        f"route:     GET /healthz  ({KEYCLOAK}:{HEALTHZ})",
        "principal: none",
        "decision:  200 allowed: public route",
    ]


def test_an_identity_without_authorization_header_gets_a_stand_in_token(run, identity):
    ada = identity(ADA)
    result = run(
        KEYCLOAK, "--method", "GET", "--path", "/admin/api/users/42",
        "--identity", ada, "--provider", "keycloak",
    )  # fmt: skip
    assert result.code == 0
    assert result.lines[:6] == [
        "request:   GET /admin/api/users/42",
        "note:      the request has no Authorization header; added "
        f"`Authorization: Bearer explain-token` to carry the identity from {ada}",
        f"route:     GET /admin/api/users/{{id}}  ({KEYCLOAK}:{USER_ROUTE})",
        "rules:",
        f"  false   allow if param.id == sub  ({KEYCLOAK}:{OWN_RECORD})",
        f'  true    allow if "admin" in groups or "helpdesk" in groups  ({KEYCLOAK}:{HELPDESK})',
    ]
    assert "principal: ada (via keycloak)" in result.lines
    assert "  groups:  offline_access, admin" in result.lines
    assert '  claim:   email = "ada@example.com"' in result.lines
    assert result.lines[-2:] == [
        "decision:  200 allowed: an allow rule holds",
        f"  rule:    {KEYCLOAK}:{HELPDESK}",
    ]


def test_deny_overrides_allow_and_exits_1(run, identity):
    result = run(
        KEYCLOAK, "--method", "DELETE", "--path", "/admin/api/realms/master",
        "--identity", identity(ADA), "--provider", "keycloak", "--format", "json",
    )  # fmt: skip
    assert result.code == 1
    report = result.json()
    assert [(r["kind"], r["outcome"]) for r in report["rules"]] == [
        ("deny", "true"),
        ("allow", "skipped"),
    ]
    assert report["decision"] == {
        "status": 403,
        "allowed": False,
        "reason": "denied",
        "message": "a deny rule holds",
        "rule": {"file": KEYCLOAK, "line": MASTER, "column": 3},
        "rule_label": None,
        "headers": [],
    }


def test_an_erroring_rule_shows_why(run, identity):
    no_roles = {k: v for k, v in ADA.items() if k != "realm_access"}
    result = run(
        KEYCLOAK, "--method", "POST", "--path", "/admin/api/users",
        "--identity", identity(no_roles), "--provider", "keycloak",
    )  # fmt: skip
    assert result.code == 1
    rule = f'deny if "suspended" in groups  ({KEYCLOAK}:{SUSPENDED})'
    assert f"  error   {rule}: claim `groups` is missing" in result.lines
    assert "decision:  403 denied: a deny rule errored: claim `groups` is missing" in result.lines


def test_the_stand_in_token_carries_the_providers_prefix(run, identity):
    scanner = identity({"id": 7, "username": "scanner-7", "state": "active"})
    result = run(
        MIXED, "--method", "PATCH", "--path", "/api/orders/1234567",
        "--identity", scanner, "--provider", "warehouse", "--format", "json",
    )  # fmt: skip
    assert result.code == 0
    report = result.json()
    assert "`Authorization: Bearer glpat-explain-token`" in report["notes"][0]
    assert report["principal"] == {
        "provider": "warehouse",
        "username": "scanner-7",
        "groups": [],
        "claims": {"username": "scanner-7", "state": "active"},
    }


def test_an_api_token_record_for_a_tokens_block(run, identity):
    record = identity({"username": "ci-release", "groups": ["widgets"]})
    args = ["--method", "PUT", "--identity", record, "--provider", "ci"]
    allowed = run(GITHUB_CI, *args, "--path", "/api/artifacts/widgets/1.0/w.tgz")
    assert allowed.code == 0
    assert allowed.lines[1] == (
        "note:      the request has no Authorization header; added "
        f"`Authorization: Bearer pa_explain` to carry the identity from {record}"
    )
    refused = run(GITHUB_CI, *args, "--path", "/api/artifacts/gadgets/1.0/g.tgz")
    assert refused.code == 1
    assert refused.lines[-1] == "decision:  403 not_allowed: no allow rule holds"


def test_the_identity_is_bound_to_the_requests_own_token(run, identity):
    record = identity({"username": "ci-release", "groups": ["widgets"]})
    basic = base64.b64encode(b"ci-release:pa_0123456789").decode()
    result = run(
        GITHUB_CI, "--method", "PUT", "--path", "/api/artifacts/widgets/w.tgz",
        "--identity", record, "--provider", "ci", "--header", f"Authorization: Basic {basic}",
    )  # fmt: skip
    assert result.code == 0
    assert not any(line.startswith("note:") for line in result.lines)
    assert "principal: ci-release (via ci)" in result.lines


def test_a_token_sent_to_another_authenticator_is_not_the_identitys(run, identity):
    result = run(
        MIXED, "--method", "GET", "--path", "/api/orders/1234567",
        "--identity", identity(ADA), "--provider", "staff",
        "--header", "Authorization: Bearer ya29.a-google-token",
    )  # fmt: skip
    assert result.code == 1
    assert result.lines[-2] == "decision:  401 invalid_token: unknown token"
    assert (
        result.lines[-1]
        == '  header:  WWW-Authenticate: Bearer realm="shop", error="invalid_token"'
    )


def test_no_credentials_is_401_with_challenges(run):
    result = run(GITHUB_CI, "--method", "GET", "--path", "/api/artifacts/x", "--format", "json")
    assert result.code == 1
    decision = result.json()["decision"]
    assert (decision["status"], decision["reason"]) == (401, "no_credentials")
    assert decision["headers"] == [
        {"name": "WWW-Authenticate", "value": 'Bearer realm="artifacts"'},
        {"name": "WWW-Authenticate", "value": 'Basic realm="artifacts"'},
    ]


def test_without_identity_a_credential_cannot_be_validated(run):
    result = run(
        KEYCLOAK, "--method", "GET", "--path", "/admin/api/users/1",
        "--header", "Authorization: Bearer some-token",
    )  # fmt: skip
    assert result.code == 1
    assert result.lines[-2:] == [
        "decision:  503 provider_unavailable: explain does not call `keycloak`; give the "
        "caller's identity with --identity FILE --provider keycloak",
        "  header:  Retry-After: 5",  # every 503 says when to come back
    ]


def test_a_malformed_request_shows_the_400_reason(run):
    result = run(KEYCLOAK, "--method", "GET", "--path", "/admin/api/users/%2e%2e")
    assert result.code == 1
    assert result.lines == [
        "request:   rejected: dot segment `..` in the path",
        "route:     none",
        "principal: none",
        "decision:  400 malformed_request: dot segment `..` in the path",
    ]


def test_no_route(run):
    result = run(KEYCLOAK, "--method", "GET", "--path", "/elsewhere", "--format", "json")
    assert result.code == 1
    report = result.json()
    assert report["route"] is None
    assert report["request"] == {
        "method": "GET",
        "target": "/elsewhere",
        "path": "/elsewhere",
        "rejected": None,
    }
    assert report["decision"]["reason"] == "no_route"


def test_json_has_every_section(run, identity):
    result = run(
        KEYCLOAK, "--method", "GET", "--path", "/admin/api/users/42?expand=1",
        "--identity", identity(ADA), "--provider", "keycloak", "--format", "json",
    )  # fmt: skip
    report = result.json()
    assert set(report) == {"request", "notes", "route", "rules", "principal", "decision"}
    assert report["request"]["target"] == "/admin/api/users/42?expand=1"
    assert report["route"] == {
        "text": "GET /admin/api/users/{id}",
        "file": KEYCLOAK,
        "line": USER_ROUTE,
        "column": 1,
    }
    assert report["rules"][0] == {
        "kind": "allow",
        "text": "allow if param.id == sub",
        "file": KEYCLOAK,
        "line": OWN_RECORD,
        "column": 3,
        "outcome": "false",
        "detail": "",
    }
    assert report["principal"]["groups"] == ["offline_access", "admin"]


# --- usage errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["NoColon", "Bad Name: x", ": value"])
def test_a_header_without_name_and_colon_is_a_usage_error(run, header):
    result = run(KEYCLOAK, "--method", "GET", "--path", "/healthz", "--header", header)
    assert result.code == 2
    assert result.out == ""
    assert (
        result.err
        == f'policyauth: invalid --header {json.dumps(header)}: write it as "Name: value"\n'
    )


def test_an_unreadable_identity_file_is_a_usage_error(run, tmp_path):
    missing = tmp_path / "nobody.json"
    result = run(
        KEYCLOAK, "--method", "GET", "--path", "/healthz",
        "--identity", str(missing), "--provider", "keycloak",
    )  # fmt: skip
    assert result.code == 2
    assert result.err == f"policyauth: cannot read {missing}: No such file or directory\n"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"a": ', "is not valid JSON: Expecting value (line 1, column 7)"),
        ('{"a": 1, "a": 2}', 'is not valid JSON: duplicate key "a"'),
        ('{"a": NaN}', "is not valid JSON: NaN is not a JSON number"),
        ("[" * 100_000, "is nested too deeply to read"),
        ("1" * 5000, "is not valid JSON: a number has more than 1000 digits"),
    ],
)
def test_invalid_json_is_a_usage_error(run, tmp_path, text, problem):
    path = tmp_path / "identity.json"
    path.write_text(text, encoding="utf-8")
    result = run(
        KEYCLOAK, "--method", "GET", "--path", "/healthz",
        "--identity", str(path), "--provider", "keycloak",
    )  # fmt: skip
    assert result.code == 2
    assert result.err == f"policyauth: {path} {problem}\n"


def test_an_identity_file_that_is_not_utf8_is_a_usage_error(run, tmp_path):
    path = tmp_path / "identity.json"
    path.write_bytes(b'{"a": "\xff"}')
    result = run(
        KEYCLOAK, "--method", "GET", "--path", "/healthz",
        "--identity", str(path), "--provider", "keycloak",
    )  # fmt: skip
    assert (result.code, result.err) == (2, f"policyauth: {path} is not UTF-8 text\n")


def test_identity_and_provider_go_together(run, identity):
    result = run(KEYCLOAK, "--method", "GET", "--path", "/x", "--identity", identity(ADA))
    assert (result.code, result.err) == (2, "policyauth: --identity and --provider go together\n")


def test_an_unknown_provider_is_a_usage_error(run, identity):
    result = run(
        MIXED, "--method", "GET", "--path", "/x", "--identity", identity(ADA), "--provider", "okta"
    )
    assert result.code == 2
    assert result.err == (
        "policyauth: --provider okta: no provider or tokens block of that name "
        "(declared: google, staff, warehouse)\n"
    )


def test_an_api_token_record_must_be_an_object(run, identity):
    result = run(
        GITHUB_CI, "--method", "GET", "--path", "/x", "--identity", identity(["ci"]),
        "--provider", "ci",
    )  # fmt: skip
    assert result.code == 2
    assert result.err.startswith("policyauth: ")


def test_a_policy_with_errors_is_printed_and_exits_2(run, tmp_path):
    path = tmp_path / "broken.policy"
    path.write_text("route GET /a {\n  auth nobody\n  allow\n}\n", encoding="utf-8")
    result = run(str(path), "--method", "GET", "--path", "/a")
    assert result.code == 2
    assert result.out == ""
    assert result.err.splitlines()[0] == (
        f"{path}:2:8: PA110 unknown provider or tokens block `nobody`"
    )


def test_a_missing_policy_exits_2(run, tmp_path):
    path = tmp_path / "nope.policy"
    result = run(str(path), "--method", "GET", "--path", "/a")
    assert result.code == 2
    assert result.err.splitlines()[0] == (
        f"{path}:1:1: PA010 cannot read the file: No such file or directory"
    )


def test_method_and_path_are_required(run):
    assert run(KEYCLOAK, "--method", "GET").code == 2
    assert run(KEYCLOAK, "--path", "/").code == 2


def test_input_that_cannot_be_printed_is_escaped_not_a_crash(run, identity):
    result = run(KEYCLOAK, "--method", "G\udcffT", "--path", "/healthz")
    assert result.code == 1
    assert result.lines[0] == "request:   rejected: method `G\\udcffT` is not an upper-case token"
    evil = dict(ADA, preferred_username="ada\x1b[2J")
    result = run(
        KEYCLOAK, "--method", "GET", "--path", "/admin/api/users/1",
        "--identity", identity(evil), "--provider", "keycloak",
    )  # fmt: skip
    assert "principal: ada\\x1b[2J (via keycloak)" in result.lines
