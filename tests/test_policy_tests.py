"""The shipped policies are tested by their own policy tests: every file in policies/ has a
NAME.policytest.json beside it, `policyauth test policies/` passes, and no route or rule of them
goes unexercised."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policyauth.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ROOT / "policies"
FILES = sorted(POLICIES.glob("*.policy"))


def test_every_policy_has_a_test_file_beside_it():
    missing = [p.name for p in FILES if not p.with_name(p.stem + ".policytest.json").is_file()]
    assert missing == []
    orphans = [
        p.name
        for p in POLICIES.glob("*.policytest.json")
        if not p.with_name(p.name.removesuffix(".policytest.json") + ".policy").is_file()
    ]
    assert orphans == []


def test_policyauth_test_policies_passes(capsys: pytest.CaptureFixture[str]):
    code = main(["test", str(POLICIES)])
    captured = capsys.readouterr()
    cases = sum(
        len(json.loads(p.read_text(encoding="utf-8"))["cases"])
        for p in POLICIES.glob("*.policytest.json")
    )
    assert (code, captured.out) == (0, ""), captured.out
    assert captured.err == f"{cases} passed, 0 failed\n"


def test_every_route_and_rule_of_the_policies_decides_some_case(
    capsys: pytest.CaptureFixture[str],
):
    assert main(["test", "--coverage", str(POLICIES)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if not line.startswith("coverage: ")] == []
    assert len(lines) == len(FILES)
