"""`policyauth inspect` and `policyauth explain --token` for jwt and introspection providers,
against a real HTTP server on loopback (discovery, JWKS, introspection). The token, and the
signature part of a JWT, are never printed."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "identity"))

from jwt_issuer import Issuer

from policyauth.cli.main import main

OPAQUE = "opaque-token-4711-abcdef"


class _Server(BaseHTTPRequestHandler):
    issuer: Issuer

    def _reply(self, status: int, document: Any) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        base = self.issuer.issuer
        if self.path == "/.well-known/openid-configuration":
            self._reply(
                200,
                {
                    "issuer": base,
                    "jwks_uri": f"{base}/jwks",
                    "introspection_endpoint": f"{base}/introspect",
                },
            )
        elif self.path == "/jwks":
            self._reply(200, self.issuer.jwks())
        else:
            self._reply(404, {})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        form = parse_qs(self.rfile.read(length).decode())
        if form.get("token") == [OPAQUE]:
            self._reply(200, {"active": True, "username": "bob", "aud": "reports-api"})
        else:
            self._reply(200, {"active": False})

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    made = Issuer(issuer=f"http://127.0.0.1:{httpd.server_address[1]}")
    made.add("k1")
    _Server.issuer = made
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield made
    finally:
        httpd.shutdown()


@pytest.fixture
def policy(issuer: Issuer, tmp_path: Path) -> str:
    path = tmp_path / "api.policy"
    path.write_text(
        "provider corp {  # policyauth: ignore[PA201]\n"
        '  validate   = "jwt"\n'
        f'  issuer     = "{issuer.issuer}"\n'
        '  audience   = "reports-api"\n'
        '  token_type = "at+jwt"\n'
        "  username   = $.preferred_username\n"
        "  groups     = $.realm_access.roles[*]\n"
        "}\n\n"
        "provider legacy {  # policyauth: ignore[PA201]\n"
        '  validate      = "introspection"\n'
        f'  issuer        = "{issuer.issuer}"\n'
        '  client_id     = "reports-api"\n'
        '  client_secret = "s3cret"\n'
        '  audience      = "reports-api"\n'
        "  username      = $.username\n"
        "}\n\n"
        "route GET /reports {\n"
        "  auth corp\n"
        '  allow if "reporting" in groups\n'
        "}\n\n"
        "route GET /legacy {\n"
        "  auth legacy\n"
        '  allow if username == "bob"\n'
        "}\n"
    )
    return str(path)


def never_printed(token: str, text: str) -> None:
    assert token not in text
    assert token.rsplit(".", 1)[-1] not in text


def test_inspect_a_jwt_shows_the_verified_header_and_claims(
    issuer: Issuer, policy: str, capsys: pytest.CaptureFixture[str]
) -> None:
    token = issuer.token()
    code = main(["inspect", policy, "--provider", "corp", "--token", token])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert lines[:2] == [
        'provider: corp (validate = "jwt")',
        "result:   valid: the signature and claims verify for the token",
    ]
    header = out[out.index("header:\n") + 8 : out.index("\n\nclaims:")]
    assert json.loads(header) == {"alg": "RS256", "kid": "k1", "typ": "at+jwt"}
    assert '  $.preferred_username = "ada"    <- username?' in lines
    assert '  username = $.preferred_username  ->  "ada"' in lines
    assert '  groups = $.realm_access.roles[*]  ->  ["reporting"]' in lines
    never_printed(token, out)


def test_inspect_a_jwt_that_does_not_verify_shows_nothing_of_it(
    issuer: Issuer, policy: str, capsys: pytest.CaptureFixture[str]
) -> None:
    token = issuer.token(aud="other-api")
    code = main(["inspect", policy, "--provider", "corp", "--token", token])
    out = capsys.readouterr().out
    assert code == 1
    assert out.splitlines() == [
        'provider: corp (validate = "jwt")',
        "result:   invalid: the token was issued for another audience",
    ]
    never_printed(token, out)


def test_inspect_json(issuer: Issuer, policy: str, capsys: pytest.CaptureFixture[str]) -> None:
    token = issuer.token()
    code = main(["inspect", policy, "--provider", "corp", "--token", token, "--format", "json"])
    out = capsys.readouterr().out
    report = json.loads(out)
    assert code == 0
    assert (report["provider"], report["validate"], report["valid"]) == ("corp", "jwt", True)
    assert report["header"]["kid"] == "k1"
    assert report["document"]["preferred_username"] == "ada"
    assert report["claims"]["username"] == {"path": "$.preferred_username", "value": "ada"}
    never_printed(token, out)


def test_inspect_an_introspected_token(policy: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["inspect", policy, "--provider", "legacy", "--token", OPAQUE])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == 'provider: legacy (validate = "introspection")'
    assert lines[1].startswith("endpoint: http://127.0.0.1:")
    assert lines[1].endswith("/introspect")
    assert '  username = $.username  ->  "bob"' in lines
    assert OPAQUE not in out


def test_userinfo_still_works_for_jwt_providers_as_inspect_does(
    issuer: Issuer, policy: str, capsys: pytest.CaptureFixture[str]
) -> None:
    token = issuer.token()
    assert main(["userinfo", policy, "--provider", "corp", "--token", token]) == 0
    out = capsys.readouterr().out
    assert '  username = $.preferred_username  ->  "ada"' in out.splitlines()
    never_printed(token, out)


def test_explain_token_with_a_jwt_provider(
    issuer: Issuer, policy: str, capsys: pytest.CaptureFixture[str]
) -> None:
    token = issuer.token()
    args = ["explain", policy, "--method", "GET", "--path", "/reports", "--token", token]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "decision:  200 allowed: an allow rule holds" in out.splitlines()
    never_printed(token, out)
    expired = issuer.token(exp=1)
    assert main([*args[:-1], expired]) == 1
    out = capsys.readouterr().out
    assert "decision:  401 invalid_token: the token has expired" in out.splitlines()
    never_printed(expired, out)


def test_explain_token_with_an_introspection_provider(
    policy: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["explain", policy, "--method", "GET", "--path", "/legacy", "--token", OPAQUE]
    assert main(args) == 0
    assert "decision:  200 allowed: an allow rule holds" in capsys.readouterr().out.splitlines()
    assert main([*args[:-1], "another-opaque-token"]) == 1
    out = capsys.readouterr().out
    assert "decision:  401 invalid_token: the token is not active" in out.splitlines()
