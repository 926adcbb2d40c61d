"""`policyauth test`: failures that say where and why, coverage, exit codes, and bad input.

A deliberately wrong expectation must be reported with the case's file and line, the expected
and the actual status, and the rule that decided; a file that is not in the format must be a
one-line usage error with its location, never a traceback.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policyauth.engine import Engine
from policyauth.testing import CaseFileError, parse

ROOT = Path(__file__).resolve().parents[2]
CONFLUENCE = (ROOT / "policies" / "confluence.policy").read_text(encoding="utf-8")

IDENTITIES = [
    {
        "authenticator": "corp",
        "token": "kc-wes",
        "document": {
            "preferred_username": "wes",
            "realm_access": {"roles": ["confluence-writers"]},
        },
    },
    {
        "authenticator": "corp",
        "token": "kc-cody",
        "document": {
            "preferred_username": "cody",
            "realm_access": {"roles": ["confluence-writers", "contractors"]},
        },
    },
]

WRITER_EDITS = {
    "name": "writer edits a page",
    "request": {
        "method": "PUT",
        "target": "/confluence/rest/api/content/7",
        "headers": [["Authorization", "Bearer kc-wes"]],
    },
    "expect": {"status": 200, "reason": "allowed", "rule_line": 38},
}
STATUS = {
    "name": "status is public",
    "request": {"method": "GET", "target": "/status"},
    "expect": {"status": 200, "reason": "allowed"},
}


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding policies/confluence.policy."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "confluence.policy").write_text(CONFLUENCE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_tests(folder: Path, cases: list[dict[str, object]], **top: object) -> str:
    """policies/confluence.policytest.json with `cases`, one key per line as people write it."""
    document = {"identities": IDENTITIES, **top, "cases": cases}
    path = folder / "policies" / "confluence.policytest.json"
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return "policies/confluence.policytest.json"


def line_of(path: str, text: str, occurrence: int = 1) -> int:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    found = [number for number, line in enumerate(lines, 1) if text in line]
    return found[occurrence - 1]


# --- failures -------------------------------------------------------------------------------------


def test_a_wrong_expectation_names_file_line_statuses_and_the_deciding_rule(run, folder):
    wrong = {
        "name": "writer is denied",
        "request": WRITER_EDITS["request"],
        "expect": {"status": 403, "reason": "denied", "rule_line": 37},
    }
    name = write_tests(folder, [STATUS, wrong])
    result = run("test", name)
    assert result.code == 1
    line = line_of(name, '"name": "writer is denied"')
    lines = result.out.splitlines()
    assert lines[0] == (
        f"policies/confluence.policytest.json:{line}: case `writer is denied`: "
        "expected 403 denied (rule line 37), got 200 allowed (rule line 38)"
    )
    assert lines[1:] == [
        "  request:   PUT /confluence/rest/api/content/7",
        "  route:     POST, PUT, DELETE /confluence/rest/api/**  (policies/confluence.policy:35)",
        "  rules:",
        '    false   deny if "contractors" in groups  (policies/confluence.policy:37)',
        '    true    allow if "confluence-writers" in groups  (policies/confluence.policy:38)',
        "  principal: wes via corp (confluence-writers)",
        "  decision:  200 allowed: an allow rule holds",
    ]
    assert result.err == "1 passed, 1 failed\n"


def test_passing_cases_print_nothing_but_the_summary(run, folder):
    name = write_tests(folder, [STATUS, WRITER_EDITS])
    result = run("test", name)
    assert (result.code, result.out, result.err) == (0, "", "2 passed, 0 failed\n")


def test_a_rule_line_is_always_checked_and_its_absence_means_no_rule(run, folder):
    no_rule = {**WRITER_EDITS, "expect": {"status": 200, "reason": "allowed"}}
    name = write_tests(folder, [no_rule])
    result = run("test", name)
    assert result.code == 1
    assert result.out.splitlines()[0].endswith(
        "expected 200 allowed (no rule), got 200 allowed (rule line 38)"
    )


def test_only_the_stated_keys_that_differ_are_added_to_the_verdict(run, folder):
    case = {
        **WRITER_EDITS,
        "expect": {
            **WRITER_EDITS["expect"],
            "username": "cody",
            "provider": "corp",
            "asked": ["corp", "corp"],
            "route_line": 35,
        },
    }
    name = write_tests(folder, [case])
    result = run("test", name)
    assert result.out.splitlines()[0].endswith(
        "expected 200 allowed (rule line 38, username `cody`, asked corp, corp), "
        "got 200 allowed (rule line 38, username `wes`, asked corp)"
    )


def test_null_username_asserts_that_there_is_no_principal(run, folder):
    case = {**WRITER_EDITS, "expect": {**WRITER_EDITS["expect"], "username": None}}
    name = write_tests(folder, [case])
    first = run("test", name).out.splitlines()[0]
    assert first.endswith(
        "(rule line 38, no principal), got 200 allowed (rule line 38, username `wes`)"
    )


def test_headers_are_compared_exactly(run, folder):
    case = {
        "name": "no credentials",
        "request": {"method": "PUT", "target": "/confluence/rest/api/content/7"},
        "expect": {"status": 401, "reason": "no_credentials", "headers": []},
    }
    name = write_tests(folder, [case])
    first = run("test", name).out.splitlines()[0]
    assert first.endswith(
        "expected 401 no_credentials (no rule, no headers), got 401 no_credentials "
        '(no rule, headers WWW-Authenticate: Bearer realm="atlassian")'
    )


def test_an_engine_that_raises_fails_the_case_without_a_traceback(run, folder, monkeypatch):
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(Engine, "authorize_sync", broken)
    name = write_tests(folder, [STATUS])
    result = run("test", name)
    assert result.code == 1
    line = line_of(name, '"name": "status is public"')
    assert result.out == (
        f"{name}:{line}: case `status is public`: the engine raised RuntimeError: boom\n"
    )


def test_control_characters_in_names_are_escaped(run, folder):
    case = {**STATUS, "name": "bell\x07", "expect": {"status": 403, "reason": "no_route"}}
    name = write_tests(folder, [case])
    assert "case `bell\\x07`" in run("test", name).out


# --- coverage -------------------------------------------------------------------------------------


def test_coverage_lists_routes_no_case_matched_and_rules_that_decided_nothing(run, folder):
    name = write_tests(folder, [STATUS, WRITER_EDITS])
    result = run("test", "--coverage", name)
    assert result.code == 0
    assert result.out.splitlines() == [
        "policies/confluence.policy:29: route `GET /confluence/rest/api/content/**`: "
        "no case matches it",
        "policies/confluence.policy:31: rule `allow if verified == true and username endswith "
        '"@example.com"`: it decides no case',
        'policies/confluence.policy:32: rule `allow if "confluence-readers" in groups`: '
        "it decides no case",
        'policies/confluence.policy:37: rule `deny if "contractors" in groups`: it decides no case',
        "policies/confluence.policy:41: route `GET /rest/api/1.0/dashboard/pull-requests`: "
        "no case matches it",
        "policies/confluence.policy:43: rule `allow`: it decides no case",
        "coverage: policies/confluence.policy: 2 of 4 routes, 1 of 5 rules exercised",
    ]


def test_coverage_adds_up_every_test_file_of_a_policy(run, folder):
    write_tests(folder, [STATUS, WRITER_EDITS])
    denied = {
        "name": "contractor is denied",
        "request": {**WRITER_EDITS["request"], "headers": [["Authorization", "Bearer kc-cody"]]},
        "expect": {"status": 403, "reason": "denied", "rule_line": 37},
    }
    more = {"policy": "../policies/confluence.policy", "identities": IDENTITIES, "cases": [denied]}
    (folder / "more").mkdir()
    (folder / "more" / "writes.policytest.json").write_text(json.dumps(more), encoding="utf-8")
    result = run("test", "--coverage", ".")
    assert result.code == 0
    assert "rule `deny if" not in result.out
    assert result.out.splitlines()[-1] == (
        "coverage: policies/confluence.policy: 2 of 4 routes, 2 of 5 rules exercised"
    )
    assert result.err == "3 passed, 0 failed\n"


def test_coverage_follows_the_failures(run, folder):
    wrong = {**STATUS, "expect": {"status": 403, "reason": "no_route"}}
    name = write_tests(folder, [wrong])
    result = run("test", "--coverage", name)
    assert result.code == 1
    failure, coverage = result.out.split("\n\n")
    assert failure.startswith(f"{name}:")
    assert coverage.splitlines()[-1].startswith("coverage: policies/confluence.policy: 1 of 4")


# --- finding files -------------------------------------------------------------------------------


def test_a_folder_stands_for_its_test_files_in_order_hidden_folders_skipped(run, folder):
    write_tests(folder, [STATUS])
    (folder / "policies" / "b").mkdir()
    (folder / "policies" / "b" / "b.policy").write_text(CONFLUENCE, encoding="utf-8")
    (folder / "policies" / "b" / "b.policytest.json").write_text(
        json.dumps({"cases": [{**STATUS, "expect": {"status": 403, "reason": "no_route"}}]}),
        encoding="utf-8",
    )
    (folder / "policies" / ".hidden").mkdir()
    (folder / "policies" / ".hidden" / "x.policytest.json").write_text("{", encoding="utf-8")
    result = run("test", "policies")
    assert result.code == 1
    assert result.out.startswith("policies/b/b.policytest.json:")
    assert result.err == "1 passed, 1 failed\n"


def test_a_file_of_any_name_runs_when_it_names_its_policy(run, folder):
    cases = {"policy": "policies/confluence.policy", "cases": [STATUS]}
    (folder / "table.json").write_text(json.dumps(cases), encoding="utf-8")
    assert run("test", "table.json").code == 0


def test_the_decision_tables_run_from_the_command_line(run, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = run("test", *sorted(str(p) for p in Path("tests/decisions/cases").glob("*.json")))
    assert result.code == 0, result.out
    assert result.err.endswith(" passed, 0 failed\n")


# --- usage errors (exit 2) -----------------------------------------------------------------------


def test_a_missing_path_or_a_folder_without_tests_is_a_usage_error(run, folder):
    assert (
        run("test", "nothing").err == "policyauth: cannot read nothing: No such file or directory\n"
    )
    (folder / "empty").mkdir()
    result = run("test", "empty")
    assert (result.code, result.err) == (2, "policyauth: no *.policytest.json files in empty\n")
    assert run("test").code == 2


def bad(run: Callable[..., Any], folder: Path, text: str | bytes) -> str:
    path = folder / "policies" / "confluence.policytest.json"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    result = run("test", "policies")
    assert result.code == 2
    assert result.out == ""
    assert result.err.count("\n") == 1, result.err  # one line per problem
    message: str = result.err
    return message


CASE_TEXT = """\
{
  "cases": [
    {
      "name": "status",
      "request": {"method": "GET", "target": "/status"},
      "expect": {"status": 200, "reason": "allowed"%s}
    }
  ]
}
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{\n  "cases": [\n', ":3: invalid JSON: Expecting value"),
        (CASE_TEXT % ', "stauts": 200', ":6: cases[0].expect.stauts: unknown key"),
        (
            CASE_TEXT % ', "rule_line": "38"',
            ":6: cases[0].expect.rule_line: expected an integer, found a string",
        ),
        (CASE_TEXT % ', "reason": "ok"', ":6: duplicate key `reason`"),
        (
            CASE_TEXT.replace('"allowed"', '"allow"') % "",
            ":6: cases[0].expect.reason: unknown reason `allow` (one of allowed, ",
        ),
        (
            CASE_TEXT.replace("200", "403") % "",
            ":6: cases[0].expect.status: reason `allowed` comes with status 200, not 403",
        ),
        (
            CASE_TEXT % ', "headers": null',
            ":6: cases[0].expect.headers: expected a list, found null",
        ),
        (CASE_TEXT.replace('"request"', '"requets"') % "", ":5: cases[0].requets: unknown key"),
        ('{"cases": []}', ":1: `cases` is empty: a test file must test something"),
        ("[]", ":1: expected an object, found a list"),
        ('{"cases": [], "x": NaN}', ": invalid JSON: `NaN` is not a JSON number"),
        ("[" * 100_000, ":1: the file is nested too deeply to read"),
        (b'{"cases": "\xff"}', ":1: the file is not valid UTF-8"),
    ],
)
def test_a_file_not_in_the_format_is_one_located_line(run, folder, text, message):
    err = bad(run, folder, text)
    assert err.startswith("policyauth: policies/confluence.policytest.json")
    assert message in err


def test_duplicate_case_names_point_at_both(run, folder):
    name = write_tests(folder, [STATUS, STATUS])
    err = run("test", name).err
    first, second = line_of(name, '"name": "status', 1), line_of(name, '"name": "status', 2)
    assert err == (
        f"policyauth: {name}:{second}: cases[1].name: duplicate case name `status is public` "
        f"(first at line {first})\n"
    )


def test_a_request_header_must_be_a_pair(run, folder):
    case = {**STATUS, "request": {**STATUS["request"], "headers": [["Authorization"]]}}
    name = write_tests(folder, [case])
    assert "cases[0].request.headers[0]: expected a [name, value] pair" in run("test", name).err


def test_identities_need_a_document_and_a_known_authenticator(run, folder):
    name = write_tests(folder, [STATUS], identities=[{"authenticator": "corp", "token": "t"}])
    assert "identities[0]: needs a `document`, or `unavailable: true`" in run("test", name).err
    identities = [{"authenticator": "crop", "token": "t", "document": {}}]
    name = write_tests(folder, [STATUS], identities=identities)
    err = run("test", name).err
    assert err == (
        f"policyauth: {name}:{line_of(name, 'crop')}: identities[0].authenticator: `crop` is not "
        "a provider or tokens block of `policies/confluence.policy` (declared: automation, "
        "corp, google)\n"
    )


def test_a_token_listed_twice_for_one_authenticator_is_refused(run, folder):
    twice = [IDENTITIES[0], {**IDENTITIES[1], "token": "kc-wes"}]
    name = write_tests(folder, [STATUS], identities=twice)
    assert "identities[1]: this token is already listed for `corp` (identities[0])" in (
        run("test", name).err
    )


def test_a_file_with_another_name_must_name_its_policy(run, folder):
    (folder / "table.json").write_text(json.dumps({"cases": [STATUS]}), encoding="utf-8")
    err = run("test", "table.json").err
    assert err.startswith("policyauth: table.json:1: `policy` is missing")


def test_a_policy_that_does_not_load_is_named_with_its_first_error(run, folder):
    name = write_tests(folder, [STATUS], policy="broken.policy")
    (folder / "policies" / "broken.policy").write_text("route GET /a {\n  auth corp\n  allow\n}\n")
    err = run("test", name).err
    assert err == (
        f"policyauth: {name}:{line_of(name, 'broken.policy')}: policy "
        "`policies/broken.policy` does not load: policies/broken.policy:2:8: PA110 unknown "
        "provider or tokens block `corp`\n"
    )
    name = write_tests(folder, [STATUS], policy="missing.policy")
    assert "cannot read policy `policies/missing.policy`: No such file or directory" in (
        run("test", name).err
    )


def test_env_comes_from_the_file_never_from_the_process(run, folder, monkeypatch):
    policy = 'settings {\n  realm = env("TEST_REALM")\n}\n\nroute GET /status {\n  public\n}\n'
    (folder / "policies" / "confluence.policy").write_text(policy, encoding="utf-8")
    monkeypatch.setenv("TEST_REALM", "from-the-process")
    name = write_tests(folder, [STATUS], identities=[])
    assert "PA107 environment variable `TEST_REALM` is not set" in run("test", name).err
    name = write_tests(folder, [STATUS], identities=[], env={"TEST_REALM": "tests"})
    assert run("test", name).code == 0


def test_every_broken_file_is_reported_before_anything_runs(run, folder):
    write_tests(folder, [STATUS])
    (folder / "a.policytest.json").write_text("{", encoding="utf-8")
    (folder / "b.policytest.json").write_text('{"cases": []}', encoding="utf-8")
    result = run("test", ".")
    assert result.code == 2
    assert [line.split(":")[1] for line in result.err.splitlines()] == [
        " a.policytest.json",
        " b.policytest.json",
    ]


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=5),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(
                    st.sampled_from(["cases", "name", "request", "expect", "status", "x"]), inner
                )
            ),
        ).map(json.dumps),
    )
)
def test_no_text_makes_the_loader_raise_anything_but_a_located_error(text: str):
    error: CaseFileError | None = None
    try:
        parse(text, "fuzz.policytest.json")
    except CaseFileError as exc:
        error = exc
    if error is not None:
        assert str(error).startswith("fuzz.policytest.json")
        assert error.line is None or 1 <= error.line <= text.count("\n") + 1


def test_the_console_script_reports_a_failure_without_a_traceback(folder):
    wrong = {**STATUS, "expect": {"status": 401, "reason": "no_credentials"}}
    name = write_tests(folder, [wrong])
    script = Path(sys.executable).with_name("policyauth")
    completed = subprocess.run(
        [str(script), "test", name],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    assert completed.returncode == 1
    assert "expected 401 no_credentials (no rule), got 200 allowed (no rule)" in completed.stdout
    assert completed.stderr == "0 passed, 1 failed\n"


# --- the language reference ---------------------------------------------------------------------


def reference_blocks() -> list[tuple[str, str]]:
    """The fenced blocks (language, text) of the reference's "Testing policies" section."""
    text = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    section = text.split("\n## Testing policies\n", 1)[1].split("\n## ", 1)[0]
    return [
        (match.group(1), match.group(2))
        for match in re.finditer(r"^```(\w*)\n(.*?)^```$", section, re.M | re.S)
    ]


def test_the_reference_example_runs_and_reports_as_the_page_shows(run, folder):
    example, failure, coverage = reference_blocks()
    assert example[0] == "json"
    name = "policies/confluence.policytest.json"
    Path(name).write_text(example[1], encoding="utf-8")

    command, *expected = coverage[1].splitlines()
    assert command == "$ policyauth test --coverage policies/"
    result = run("test", "--coverage", "policies/")
    assert result.code == 0
    assert (result.out + result.err).splitlines() == expected

    wrong = example[1].replace(
        '"status": 403, "reason": "denied", "rule_line": 37',
        '"status": 200, "reason": "allowed", "rule_line": 38',
    )
    assert wrong != example[1]
    Path(name).write_text(wrong, encoding="utf-8")
    command, *expected = failure[1].splitlines()
    assert command == "$ policyauth test policies/"
    result = run("test", "policies/")
    assert result.code == 1
    assert (result.out + result.err).splitlines() == expected


def test_identities_are_checked_for_every_file_of_a_policy_loaded_once(run, folder):
    write_tests(folder, [STATUS])
    more = {
        "policy": "../policies/confluence.policy",
        "identities": [{"authenticator": "crop", "token": "t", "document": {}}],
        "cases": [STATUS],
    }
    (folder / "more").mkdir()
    (folder / "more" / "x.policytest.json").write_text(json.dumps(more), encoding="utf-8")
    result = run("test", "policies", "more")
    assert result.code == 2
    assert result.err.startswith(
        "policyauth: more/x.policytest.json:1: identities[0].authenticator"
    )
