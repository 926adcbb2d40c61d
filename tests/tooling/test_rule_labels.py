"""Rule labels (`allow "readers" if ...`): a policy test that names its rules by label keeps
passing after `policyauth fmt` moves them, while one that names them by line breaks; the
Decision, `explain` and the failure report show the label.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import policyauth

# Written as people write before running `fmt`: no blank line between blocks, a rule over two
# lines. `fmt` adds a blank line and joins the rule, so every rule below moves.
MESSY = """\
provider corp {
  userinfo = "https://sso.example.com/userinfo"
  username = $.preferred_username
  groups = $.roles[*]
}
route GET /reports/** {
  auth corp
  deny "contractors" if "contractors" in groups
  allow "readers"
     if "reporting" in groups
}
"""

IDENTITIES = [
    {"authenticator": "corp", "token": "t-ann", "document": {"preferred_username": "ann",
                                                             "roles": ["reporting"]}},
    {"authenticator": "corp", "token": "t-cody", "document": {"preferred_username": "cody",
                                                              "roles": ["reporting",
                                                                        "contractors"]}},
]  # fmt: skip


def case(name: str, token: str, expect: dict[str, object]) -> dict[str, object]:
    request = {
        "method": "GET",
        "target": "/reports/q3",
        "headers": [["Authorization", f"Bearer {token}"]],
    }
    return {"name": name, "request": request, "expect": expect}


BY_LABEL = [
    case("a reader reads", "t-ann", {"status": 200, "reason": "allowed", "rule": "readers"}),
    case("contractors never read", "t-cody", {"status": 403, "reason": "denied",
                                              "rule": "contractors"}),
]  # fmt: skip
BY_LINE = [
    case("a reader reads", "t-ann", {"status": 200, "reason": "allowed", "rule_line": 9}),
]


def write(folder: Path, cases: list[dict[str, object]]) -> Path:
    (folder / "reports.policy").write_text(MESSY, encoding="utf-8")
    path = folder / "reports.policytest.json"
    path.write_text(json.dumps({"identities": IDENTITIES, "cases": cases}, indent=2) + "\n")
    return path


def test_the_decision_carries_the_deciding_rules_label():
    policy = policyauth.loads(MESSY, "reports.policy")
    identities = policyauth.StaticIdentitySource(
        policy,
        {("corp", "t-cody"): {"preferred_username": "cody", "roles": ["contractors"]}},
    )
    engine = policyauth.Engine(policy, identities=identities)
    decision = engine.authorize_sync("GET", "/reports/q3", [("Authorization", "Bearer t-cody")])
    assert (decision.status, decision.reason.value, decision.rule_label) == (
        403,
        "denied",
        "contractors",
    )
    assert decision.rule is not None
    assert decision.rule.line == 8
    assert [t.text for t in decision.trace] == ['deny "contractors" if "contractors" in groups']


def test_fmt_keeps_tests_that_name_rules_by_label_passing(run, tmp_path):
    tests = write(tmp_path, BY_LABEL)
    assert run("test", str(tests)).code == 0
    assert run("fmt", str(tmp_path / "reports.policy")).code == 0
    formatted = (tmp_path / "reports.policy").read_text(encoding="utf-8")
    assert formatted != MESSY
    assert '  allow "readers" if "reporting" in groups\n' in formatted
    result = run("test", str(tests))
    assert (result.code, result.err) == (0, "2 passed, 0 failed\n")


def test_fmt_moves_the_line_a_rule_line_test_names(run, tmp_path):
    """The reason labels exist: the same case by line number fails once `fmt` ran."""
    tests = write(tmp_path, BY_LINE)
    assert run("test", str(tests)).code == 0
    run("fmt", str(tmp_path / "reports.policy"))
    result = run("test", str(tests))
    assert result.code == 1
    assert (
        "case `a reader reads`: expected 200 allowed (rule line 9), got 200 allowed (rule line 10)"
    ) in result.out + result.err


def test_a_wrong_label_fails_with_both_labels(run, tmp_path):
    wrong = case("a reader reads", "t-ann", {"status": 200, "reason": "allowed",
                                              "rule": "writers"})  # fmt: skip
    tests = write(tmp_path, [wrong])
    result = run("test", str(tests))
    assert result.code == 1
    assert (
        'case `a reader reads`: expected 200 allowed (rule "writers"), '
        'got 200 allowed (rule "readers")'
    ) in result.out + result.err


@pytest.mark.parametrize(
    ("expect", "shown"),
    [
        ({"status": 200, "reason": "allowed", "rule": None},
         '(no rule), got 200 allowed (rule "readers")'),
        ({"status": 200, "reason": "allowed", "rule": "readers", "rule_line": 2},
         '(rule "readers", rule line 2), got 200 allowed (rule "readers", rule line 9)'),
    ],
)  # fmt: skip
def test_null_and_rule_line_next_to_a_label_are_still_checked(run, tmp_path, expect, shown):
    tests = write(tmp_path, [case("a reader reads", "t-ann", expect)])
    result = run("test", str(tests))
    assert result.code == 1
    assert shown in result.out + result.err


def test_explain_shows_the_label(run, tmp_path):
    (tmp_path / "reports.policy").write_text(MESSY, encoding="utf-8")
    identity = tmp_path / "cody.json"
    identity.write_text(json.dumps({"preferred_username": "cody", "roles": ["contractors"]}))
    result = run(
        "explain", str(tmp_path / "reports.policy"), "--method", "GET", "--path", "/reports/q3",
        "--identity", str(identity), "--provider", "corp",
    )  # fmt: skip
    assert result.code == 1
    assert f'  rule:    rule "contractors" at {tmp_path}/reports.policy:8\n' in result.out
    assert '  true    deny "contractors" if "contractors" in groups' in result.out
