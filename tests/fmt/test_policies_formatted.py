"""The shipped policies are in the canonical layout: `policyauth fmt --check policies/` passes.

Only policies/ is held to it. tests/language/examples/confluence.policy is the language page's
example verbatim, which lines its trailing comments up in a column where `fmt` writes two
spaces, so tests/ is not checked.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from policyauth.cli.main import main

POLICIES = Path(__file__).resolve().parents[2] / "policies"


def test_fmt_check_policies_exits_0(capsys: pytest.CaptureFixture[str]):
    code = main(["fmt", "--check", str(POLICIES)])
    captured = capsys.readouterr()
    count = len(list(POLICIES.glob("*.policy")))
    assert (code, captured.out) == (0, ""), captured.out
    assert captured.err == f"{count} files already formatted\n"
