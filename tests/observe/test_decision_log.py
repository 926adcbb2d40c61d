"""Decision logs (production.md section 4): one JSON line per decision, from every integration
(the engine writes them), with the section's fields, and never a token, an Authorization or
Cookie header, or a query string. Tokens, cookies and queries are fed in on purpose."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from pathlib import Path

import pytest

import policyauth
from policyauth.identity import tokens

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))

from serve_servers import Policy, Server, get  # the serve tests' session server

FIELDS = {
    "time",
    "method",
    "path",
    "status",
    "reason",
    "route",
    "rule",
    "provider",
    "user",
    "cached",
    "duration_us",
}
COOKIE_SECRET = "session-cookie-secret-8841"
QUERY_SECRET = "query-secret-5520"


def policy_text(destination: str) -> str:
    return (
        f'settings {{\n  decision_log = "{destination}"\n}}\n\n'
        'tokens automation {\n  store = "automation.tokens"\n}\n\n'
        "route GET /public/** {\n  public\n}\n\n"
        'route GET /admin/** {\n  auth automation\n  allow if "staff" in groups\n}\n'
    )


def read(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def feed(engine: policyauth.Engine, staff: str, outsider: str) -> list[policyauth.Decision]:
    """Every kind of secret, in every place a request can carry one."""
    basic = base64.b64encode(f"alice:{staff}".encode()).decode()
    cookie = ("Cookie", f"session={COOKIE_SECRET}")
    return [
        engine.authorize_sync("GET", "/admin/a", [("Authorization", f"Bearer {staff}"), cookie]),
        engine.authorize_sync("GET", "/admin/a", [("Authorization", f"Basic {basic}")]),
        engine.authorize_sync("GET", "/admin/b", [("Authorization", f"Bearer {outsider}")]),
        engine.authorize_sync("GET", f"/admin/c?access_token={staff}&q={QUERY_SECRET}"),
        engine.authorize_sync("GET", f"/public/x?token={QUERY_SECRET}", [cookie]),
        engine.authorize_sync("GET", "/admin/d", [("Authorization", f"Bearer {staff}x")]),
        engine.authorize_sync("GET", f"/public/%2e%2e/admin?{QUERY_SECRET}"),
        asyncio.run(engine.authorize("GET", "/admin/e", [("Authorization", f"Bearer {staff}")])),
    ]


def test_every_decision_is_one_line_with_the_fields_and_no_secret(tmp_path: Path) -> None:
    (tmp_path / "p.policy").write_text(policy_text("decisions.jsonl"))
    staff, _ = tokens.create(tmp_path / "automation.tokens", "alice", ["staff"])
    outsider, _ = tokens.create(tmp_path / "automation.tokens", "bob", [])
    with policyauth.Engine(policyauth.load(tmp_path / "p.policy")) as engine:
        decisions = feed(engine, staff, outsider)
    text = (tmp_path / "decisions.jsonl").read_text()
    for secret in (staff, outsider, COOKIE_SECRET, QUERY_SECRET, "access_token", "Bearer", "?"):
        assert secret not in text
    lines = read(tmp_path / "decisions.jsonl")
    assert [set(line) for line in lines] == [FIELDS] * len(decisions)
    assert [(line["status"], line["reason"]) for line in lines] == [
        (d.status, str(d.reason)) for d in decisions
    ]
    first = lines[0]
    assert first["method"] == "GET"
    assert first["path"] == "/admin/a"
    assert first["user"] == "alice"
    assert first["provider"] == "automation"
    assert first["route"] == f"{tmp_path / 'p.policy'}:13"
    assert first["rule"] == f"{tmp_path / 'p.policy'}:15"
    assert isinstance(first["duration_us"], int)
    assert str(first["time"]).endswith("+00:00")
    assert lines[3]["path"] == "/admin/c"  # the query is gone, the path stays
    assert lines[4]["path"] == "/public/x"
    assert (lines[6]["path"], lines[6]["route"]) == (None, None)  # refused before routing
    assert (lines[2]["user"], lines[2]["reason"]) == ("bob", "not_allowed")


def test_decision_log_off_writes_nothing_and_stderr_writes_there(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p.policy").write_text(policy_text("stderr"))
    (tmp_path / "automation.tokens").write_text("[]\n")
    with policyauth.Engine(policyauth.load(tmp_path / "p.policy")) as engine:
        engine.authorize_sync("GET", f"/public/a?k={QUERY_SECRET}")
    err = capfd.readouterr().err
    assert '"path": "/public/a"' in err
    assert QUERY_SECRET not in err
    off = policyauth.loads(policy_text("off").replace('"off"', '"off"'), base_dir=tmp_path)
    assert off.settings.decision_log == "off"


def test_a_reload_that_changes_the_destination_moves_the_log(tmp_path: Path) -> None:
    file = tmp_path / "p.policy"
    file.write_text(policy_text("one.jsonl"))
    (tmp_path / "automation.tokens").write_text("[]\n")
    with policyauth.Engine(policyauth.load(file)) as engine:
        engine.authorize_sync("GET", "/public/1")
        file.write_text(policy_text("two.jsonl"))
        assert engine.reload() is True
        engine.authorize_sync("GET", "/public/2")
    assert [line["path"] for line in read(tmp_path / "one.jsonl")] == ["/public/1"]
    assert [line["path"] for line in read(tmp_path / "two.jsonl")] == ["/public/2"]


def test_the_serve_decision_log_has_no_secret(server: Server, policy: Policy) -> None:
    """The session's `policyauth serve` logs to decisions.jsonl beside its policy."""
    secrets = [("Authorization", f"Bearer {policy.staff}"), ("Cookie", f"sid={COOKIE_SECRET}")]
    headers = [("X-Original-Method", "GET"), ("X-Original-URI", f"/admin/users?q={QUERY_SECRET}")]
    assert get(server.port, "/auth", headers + secrets)[0] == 200
    # A token in the query beside the header: refused (A14), and logged without either.
    token_query = [("X-Original-Method", "GET"), ("X-Original-URI", "/admin/t?access_token=x")]
    assert get(server.port, "/auth", token_query + secrets)[0] == 403
    log = policy.path.parent / "decisions.jsonl"
    deadline = time.monotonic() + 10
    while "/admin/t" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    text = log.read_text()
    assert '"path": "/admin/t", "status": 400, "reason": "invalid_request"' in text
    assert '"path": "/admin/users"' in text
    for secret in (policy.staff, COOKIE_SECRET, QUERY_SECRET, "access_token"):
        assert secret not in text


@pytest.mark.parametrize(
    ("value", "code"), [("", "PA140"), ("bad\tname", "PA140"), ("stdout", "PA210"), ("-", "PA210")]
)
def test_decision_log_values_are_checked(value: str, code: str) -> None:
    _, diagnostics = policyauth.analyze(f'settings {{\n  decision_log = "{value}"\n}}\n')
    assert [d.code for d in diagnostics] == [code]
    assert (diagnostics[0].line, diagnostics[0].column) == (2, 18)
