"""`make demo` (examples/demo.py): a real server shows 401, 200, 403 and 400 with reasons and
rules, agrees with the engine in process, stops, and finishes well within its 20 seconds."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.py"


def test_the_demo_shows_each_answer_with_its_reason_and_rule() -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(DEMO)], capture_output=True, text=True, timeout=60, check=False
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
    assert "MISMATCH" not in out
    assert result.stderr == ""
