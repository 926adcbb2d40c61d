"""`make demo` (examples/demo.py): a real server shows 401, 200, 403 and 400 with reasons and
rules, agrees with the engine in process, stops, and finishes well within its 20 seconds."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import policyauth
from policyauth.language.formatter import format_policy

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo.py"
POLICY_FILE = ROOT / "examples" / "demo.policy"


def test_the_demo_shows_each_answer_with_its_reason_and_rule() -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(DEMO)],
        cwd=ROOT,  # as `make demo` runs it
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert elapsed < 20, f"the demo took {elapsed:.1f} s"
    out = result.stdout
    assert "under uvicorn at http://127.0.0.1:" in out
    for answer in (
        '401 {"error": "no_credentials"}',
        '200 {"report": "q3", "for": "ada"}',
        '403 {"error": "denied"}',
        '400 {"error": "malformed_request"}',
    ):
        assert f"  server  {answer}" in out
    for decided in (
        "  engine  401 no_credentials",
        "  engine  200 allowed: an allow rule holds",
        "  engine  403 denied: a deny rule holds",
        "  engine  400 malformed_request",
    ):
        assert decided in out
    assert 'WWW-Authenticate: Bearer realm="demo"' in out
    assert '  rule    allow if "reporting" in groups  (demo.policy:' in out
    assert '  rule    deny if "contractors" in groups  (demo.policy:' in out
    assert "every answer as expected; the server is stopped" in out
    # The policy the demo ran is a file the user can open (issue 15), and the demo says where.
    assert out.startswith("policy examples/demo.policy (open it to see the rules below)")
    rules = POLICY_FILE.read_text(encoding="utf-8")
    assert 'allow if "reporting" in groups' in rules
    assert 'deny  if "contractors" in groups' in rules
    assert "MISMATCH" not in out
    assert result.stderr == ""


def test_the_demo_policy_lints_clean_and_is_formatted() -> None:
    """What the user opens is a model: no diagnostic, and `policyauth fmt` leaves it alone."""
    text = POLICY_FILE.read_text(encoding="utf-8")
    _, diagnostics = policyauth.analyze(text, str(POLICY_FILE), base_dir=POLICY_FILE.parent)
    assert [d.one_line() for d in diagnostics] == []
    assert format_policy(text, str(POLICY_FILE)) == text
