"""`policyauth lint --format github`: workflow commands that GitHub Actions turns into
annotations, escaped exactly as the toolkit escapes them.

@actions/core (packages/core/src/command.ts) writes `::name key=value,key=value::message` and
escapes the message with `escapeData` (`%` -> `%25`, CR -> `%0D`, LF -> `%0A`) and each property
value with `escapeProperty` (the same, then `:` -> `%3A`, `,` -> `%2C`), `%` first so that the
escapes themselves survive. The runner splits and unescapes in the opposite order; `parse` below
does what it does, so the round trip proves that no value can end early or leak into another.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policyauth.cli.github import annotation, escape_data, escape_property
from policyauth.diagnostics import Diagnostic, Severity

BROKEN = """\
provider corp {
  userinfo = "https://sso.example.com/userinfo"
  username = $.preferred_username
}

route GET /a {
  auth corp
  allow if username endswith "example.com"
  allow if "admins" in groupz
}
"""


# --- the toolkit's escaping -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "data", "property_"),
    [
        ("plain", "plain", "plain"),
        ("100%", "100%25", "100%25"),
        ("a\rb", "a%0Db", "a%0Db"),
        ("a\nb", "a%0Ab", "a%0Ab"),
        ("a\r\nb", "a%0D%0Ab", "a%0D%0Ab"),
        ("k: v", "k: v", "k%3A v"),
        ("a, b", "a, b", "a%2C b"),
        ("%0A", "%250A", "%250A"),  # an escape sequence in the text is escaped, not kept
        ("::error::", "::error::", "%3A%3Aerror%3A%3A"),
        ("%:,\r\n", "%25:,%0D%0A", "%25%3A%2C%0D%0A"),
    ],
)
def test_escaping_matches_actions_core(text: str, data: str, property_: str):
    assert escape_data(text) == data
    assert escape_property(text) == property_


def _unescape_data(text: str) -> str:
    return text.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")


def _unescape_property(text: str) -> str:
    return _unescape_data(text.replace("%3A", ":").replace("%2C", ","))


def parse(line: str) -> tuple[str, dict[str, str], str]:
    """A workflow command as the Actions runner reads it: command, properties, message."""
    match = re.fullmatch(r"::(\S+?)(?: (.*?))?::(.*)", line, re.S)
    assert match is not None, line
    command, listed, message = match.groups()
    properties: dict[str, str] = {}
    for item in (listed or "").split(","):
        key, _, value = item.partition("=")
        properties[key] = _unescape_property(value)
    return command, properties, _unescape_data(message)


def _diagnostic(**changes: object) -> Diagnostic:
    fields: dict[str, object] = {
        "code": "PA111",
        "severity": Severity.ERROR,
        "message": "claim `groupz` is not declared by `corp`",
        "file": "policies/api.policy",
        "line": 9,
        "column": 24,
        "end_line": 9,
        "end_column": 30,
        "help": None,
    }
    fields.update(changes)
    return Diagnostic(**fields)  # type: ignore[arg-type]


def test_an_error_becomes_one_error_command_with_its_location_and_code():
    assert annotation(_diagnostic()) == (
        "::error file=policies/api.policy,line=9,col=24,endLine=9,endColumn=30,title=PA111"
        "::claim `groupz` is not declared by `corp`"
    )


def test_a_warning_becomes_a_warning_command_and_help_a_second_line():
    line = annotation(_diagnostic(severity=Severity.WARNING, code="PA203", help="say `@x`"))
    assert line.startswith("::warning ")
    assert line.endswith("::claim `groupz` is not declared by `corp`%0Ahelp: say `@x`")
    assert "\n" not in line


def test_a_region_over_several_lines_has_no_end_column_and_an_unknown_end_none():
    several = annotation(_diagnostic(end_line=11, end_column=2))
    assert "endLine=11" in several
    assert "endColumn" not in several
    unknown = annotation(_diagnostic(end_line=0, end_column=0))
    assert "endLine" not in unknown
    assert "endColumn" not in unknown


def test_a_file_name_with_separators_cannot_break_the_property_list():
    line = annotation(_diagnostic(file="odd, name: 100%.policy", message="a\r\nb, c: 5%"))
    assert line.startswith("::error file=odd%2C name%3A 100%25.policy,line=9,")
    assert line.endswith("::a%0D%0Ab, c: 5%25")
    _, properties, message = parse(line)
    assert properties["file"] == "odd, name: 100%.policy"
    assert message == "a\r\nb, c: 5%"


@given(
    file=st.text(min_size=1).filter(lambda f: not f.startswith("/")),
    message=st.text(),
    help_=st.none() | st.text(),
    warning=st.booleans(),
)
def test_every_value_survives_the_runners_parsing(
    file: str, message: str, help_: str | None, warning: bool
):
    severity = Severity.WARNING if warning else Severity.ERROR
    diagnostic = _diagnostic(file=file, message=message, help=help_, severity=severity)
    line = annotation(diagnostic)
    assert "\n" not in line
    assert "\r" not in line
    command, properties, shown = parse(line)
    assert command == ("warning" if warning else "error")
    assert properties["title"] == "PA111"
    assert (properties["line"], properties["col"]) == ("9", "24")
    expected = message + (f"\nhelp: {help_}" if help_ else "")
    assert shown == expected


# --- the command -------------------------------------------------------------------------------


def test_lint_format_github_prints_one_command_per_finding(run, tmp_path, monkeypatch):
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "api.policy").write_text(BROKEN, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = run("lint", "--format", "github", "policies")
    assert result.code == 1
    assert result.out.splitlines() == [
        "::warning file=policies/api.policy,line=8,col=30,endLine=8,endColumn=43,title=PA203"
        '::`endswith "example.com"` also matches `evilexample.com`%0Ahelp: anchor it at a '
        'boundary: `endswith "@example.com"` or `endswith ".example.com"`',
        "::error file=policies/api.policy,line=9,col=24,endLine=9,endColumn=30,title=PA111"
        "::claim `groupz` is not declared by `corp`%0Ahelp: declare it in a provider block "
        '(`groupz = $.path`), or write a string in quotes: `"groupz"`',
    ]
    assert result.err == "1 error, 1 warning in 1 file\n"


def test_absolute_paths_inside_the_working_directory_are_made_relative(run, tmp_path, monkeypatch):
    path = tmp_path / "api.policy"
    path.write_text(BROKEN, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = run("lint", "--format", "github", str(path))
    assert all(line.split(",")[0].endswith("file=api.policy") for line in result.out.splitlines())


def test_a_clean_file_prints_no_command(run, tmp_path: Path):
    path = tmp_path / "ok.policy"
    path.write_text("route GET /status {\n  public\n}\n", encoding="utf-8")
    result = run("lint", "--format", "github", str(path))
    assert (result.code, result.out, result.err) == (0, "", "1 file clean\n")
