"""`policyauth userinfo` against a real HTTP server on loopback: the response, the candidate
claim paths, the declared claims, exit codes, and the token never printed."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from policyauth.cli.main import main

GOOD = "good-token-4711"
BAD = "bad-token-0815"
DOCUMENT = {
    "sub": "f1e2",
    "preferred_username": "ann",
    "email": "ann@example.com",
    "realm_access": {"roles": ["readers", "writers"]},
    "cognito:groups": ["ops"],
}


class _Userinfo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.headers.get("Authorization") == f"Bearer {GOOD}":
            body = json.dumps(DOCUMENT).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
        else:
            body = b""
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Bearer error="invalid_token"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Userinfo)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/userinfo"
    finally:
        httpd.shutdown()


@pytest.fixture
def policy(server: str, tmp_path: Path) -> str:
    path = tmp_path / "corp.policy"
    path.write_text(
        "provider corp {\n"
        f'  userinfo = "{server}"\n'
        "  username = $.preferred_username\n"
        "  groups   = $.realm_access.roles[*]\n"
        "  team     = $.team\n"
        "}\n"
    )
    return str(path)


def test_valid_token_shows_document_paths_and_claims(
    policy: str, server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["userinfo", policy, "--provider", "corp", "--token", GOOD])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert lines[:3] == [
        f"endpoint: {server}",
        "status:   200",
        "result:   valid: the provider accepted the token",
    ]
    assert '  $.preferred_username = "ann"    <- username?' in lines
    assert '  $.email = "ann@example.com"    <- email?' in lines
    assert '  $.realm_access.roles[*] = ["readers", "writers"]    <- groups?' in lines
    assert "  $['cognito:groups'][*] = [\"ops\"]    <- groups?" in lines
    assert '  username = $.preferred_username  ->  "ann"' in lines
    assert '  groups = $.realm_access.roles[*]  ->  ["readers", "writers"]' in lines
    assert "  team = $.team  ->  (missing)" in lines
    assert GOOD not in out


def test_invalid_token_exits_1(policy: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["userinfo", policy, "--provider", "corp", "--token", BAD])
    out = capsys.readouterr().out
    assert code == 1
    assert "result:   invalid: the provider answered 401" in out.splitlines()
    assert BAD not in out


def test_token_from_environment_and_json(
    policy: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CORP_TOKEN", GOOD)
    code = main(
        ["userinfo", policy, "--provider", "corp", "--token-env", "CORP_TOKEN", "--format", "json"]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["valid"] is True
    assert report["document"] == DOCUMENT
    assert report["claims"]["username"] == {"path": "$.preferred_username", "value": "ann"}
    assert report["claims"]["team"] == {"path": "$.team", "value": None}
    assert {"path": "$.email", "value": "ann@example.com", "hint": "email?"} in report["paths"]


def test_token_from_stdin(
    policy: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(GOOD + "\n"))
    assert main(["userinfo", policy, "--provider", "corp", "--token", "-"]) == 0
    assert "result:   valid: the provider accepted the token" in capsys.readouterr().out


def test_unknown_provider_and_empty_env_are_usage_errors(
    policy: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["userinfo", policy, "--provider", "nope", "--token", GOOD]) == 2
    assert "the policy has no provider `nope` (providers: `corp`)" in capsys.readouterr().err
    monkeypatch.delenv("EMPTY_TOKEN", raising=False)
    assert main(["userinfo", policy, "--provider", "corp", "--token-env", "EMPTY_TOKEN"]) == 2
    assert "environment variable `EMPTY_TOKEN` is empty or not set" in capsys.readouterr().err


def test_unreachable_provider_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "down.policy"
    path.write_text(
        'settings { timeout = 1s }\nprovider corp {\n  userinfo = "http://127.0.0.1:9/u"\n'
        "  username = $.sub\n}\n"
    )
    assert main(["userinfo", str(path), "--provider", "corp", "--token", GOOD]) == 1
    out = capsys.readouterr().out
    assert "result:   unavailable: connection refused by 127.0.0.1:9" in out


def test_explain_with_a_real_token(policy: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`explain --token` asks the provider for real: a good token is allowed by its rule, a bad
    one is 401, and neither token is ever printed."""
    path = Path(policy)
    path.write_text(
        path.read_text() + 'route GET /docs/** {\n  auth corp\n  allow if "readers" in groups\n}\n'
    )
    code = main(["explain", policy, "--method", "GET", "--path", "/docs/a", "--token", GOOD])
    out = capsys.readouterr().out
    assert code == 0
    assert "200 allowed" in out
    assert 'allow if "readers" in groups' in out
    assert GOOD not in out
    code = main(
        [
            "explain",
            policy,
            "--method",
            "GET",
            "--path",
            "/docs/a",
            "--token",
            BAD,
            "--format",
            "json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 1
    assert (report["decision"]["status"], report["decision"]["reason"]) == (401, "invalid_token")
    assert BAD not in json.dumps(report)


def test_explain_token_conflicts_are_usage_errors(
    policy: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["explain", policy, "--method", "GET", "--path", "/docs/a", "--token", GOOD]
    assert main([*argv, "--header", "Authorization: Bearer x"]) == 2
    assert "--token sets the Authorization header" in capsys.readouterr().err


def test_a_username_path_that_selects_nothing_is_not_valid(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The provider accepts the token, but the engine refuses an identity without a username
    (401): `userinfo` says so, exits 1 and points at the claim path (issue 15)."""
    path = tmp_path / "typo.policy"
    path.write_text(
        f'provider corp {{\n  userinfo = "{server}"\n  username = $.preferred_name\n}}\n'
    )
    code = main(["userinfo", str(path), "--provider", "corp", "--token", GOOD])
    lines = capsys.readouterr().out.splitlines()
    assert code == 1
    assert lines[2] == (
        "result:   invalid: the provider accepted the token, but the engine would refuse it "
        "(401 invalid_token): `username = $.preferred_name` selects nothing"
    )
    assert lines[3] == (
        f"help:     `username` of provider `corp` ({path}:1) must select a non-empty string or "
        "a number; pick one of the paths to strings below (those marked `username?` or `email?`)"
    )
    assert '  $.preferred_username = "ann"    <- username?' in lines
    path.write_text(path.read_text().replace("$.preferred_name", "$.realm_access"))
    code = main(["userinfo", str(path), "--provider", "corp", "--token", GOOD, "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    assert (code, report["valid"]) == (1, False)
    assert report["result"].endswith("`username = $.realm_access` selects an object")


def test_a_failing_success_condition_is_named_with_its_place(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "slackish.policy"
    path.write_text(
        f'provider corp {{\n  userinfo = "{server}"\n  username = $.preferred_username\n'
        "  success  = $.ok == true\n}\n"
    )
    code = main(["userinfo", str(path), "--provider", "corp", "--token", GOOD])
    lines = capsys.readouterr().out.splitlines()
    assert code == 1
    assert lines[2:4] == [
        "result:   invalid: the response does not meet the provider's `success` condition",
        f"help:     `success = $.ok == true` of provider `corp` ({path}:1) does not hold for "
        "the response below",
    ]
