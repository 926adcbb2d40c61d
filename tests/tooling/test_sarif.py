"""`policyauth lint --format sarif`: a SARIF 2.1.0 log that the schema and GitHub accept.

The schema is tests/tooling/sarif-schema-2.1.0.json, vendored byte for byte from the npm package
@microsoft/jest-sarif 1.0.0-beta.0 (MIT, Microsoft's sarif-js-sdk), file
lib/schemas/sarif-2.1.0-rtm.5.json: the JSON schema of SARIF 2.1.0 (its final committee draft,
"rtm.5", which OASIS published as the 2.1.0 standard; schemastore serves it as
sarif-2.1.0.json). Fetched with `npm pack @microsoft/jest-sarif@1.0.0-beta.0`; sha256
2d99159ae54a3eea97f81781cff48780548657c35949f4b7f25e99a2ba4de4f8.

The rules in the log come from policyauth/cli/sarif_rules.json, generated from the Diagnostics
section of docs/language.md by `rules_from_reference` below. When the page changes, regenerate:
`.venv/bin/python tests/tooling/test_sarif.py`.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from policyauth.cli.sarif import RULES_FILE, rules, to_sarif
from policyauth.diagnostics import Diagnostic, Severity

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = Path(__file__).with_name("sarif-schema-2.1.0.json")
SCHEMA_SHA256 = "2d99159ae54a3eea97f81781cff48780548657c35949f4b7f25e99a2ba4de4f8"
DOC = ROOT / "docs" / "language.md"
RULES = ROOT / "policyauth" / "cli" / RULES_FILE

# Two errors (an undeclared claim, a parameter not captured) and one warning (an unanchored
# suffix).
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

route GET /users/{id} {
  auth corp
  allow if param.user == username
}
"""

CLEAN = """\
route GET /status {
  public
}
"""


# --- generating the rules from the language reference --------------------------------------------

_CATEGORY = {"0": "syntax", "1": "semantic", "2": "correctness", "3": "style", "9": "internal"}


def rules_from_reference(markdown: str) -> list[dict[str, str]]:
    """One entry per `### PAxxx` heading of the page's Diagnostics section.

    The heading's first paragraph starts with the rule's name in bold; the paragraph is its
    description, and the first fenced block under the heading its example.
    """
    section = markdown.split("\n## Diagnostics\n", 1)[1].split("\n## ", 1)[0]
    entries = []
    for match in re.finditer(r"^### (PA\d{3})\n(.*?)(?=^### |\Z)", section, re.M | re.S):
        code, body = match.group(1), match.group(2).strip()
        paragraph = body.split("\n\n", 1)[0]
        bold = re.match(r"\*\*(.+?)\*\*", paragraph)
        assert bold is not None, f"{code}: the first paragraph does not start with a bold name"
        title = bold.group(1).rstrip(".")
        description = " ".join(paragraph.replace("**", "").split())
        example = re.search(r"^```(\w*)\n(.*?)^```$", body, re.M | re.S)
        help_text, help_markdown = description, " ".join(paragraph.split())
        if example is not None:
            language, text = example.group(1), example.group(2)
            help_text += "\n\nExample:\n" + "".join(f"    {line}\n" for line in text.splitlines())
            help_markdown += f"\n\nExample:\n\n```{language}\n{text}```"
        entries.append(
            {
                "id": code,
                "name": "".join(
                    word[:1].upper() + word[1:] for word in re.findall(r"[A-Za-z0-9]+", title)
                ),
                "title": title,
                "description": description,
                "help_text": help_text.rstrip("\n"),
                "help_markdown": help_markdown,
                "level": "warning" if code[2] in "23" else "error",
                "category": _CATEGORY.get(code[2], "other"),
            }
        )
    return entries


def generated_rules_file() -> str:
    data = {
        "generated": "from the Diagnostics section of docs/language.md by "
        "tests/tooling/test_sarif.py; edit the page, then run that file to regenerate",
        "rules": rules_from_reference(DOC.read_text(encoding="utf-8")),
    }
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def test_the_rules_file_is_generated_from_the_language_reference():
    assert RULES.read_text(encoding="utf-8") == generated_rules_file(), (
        "docs/language.md changed: run `.venv/bin/python tests/tooling/test_sarif.py`"
    )


def test_every_documented_code_has_a_rule_with_a_description_and_help():
    documented = re.findall(r"^### (PA\d{3})$", DOC.read_text(encoding="utf-8"), re.M)
    table = rules()
    assert [rule["id"] for rule in table] == documented
    for rule in table:
        assert rule["shortDescription"]["text"], rule["id"]
        assert rule["fullDescription"]["text"].startswith(rule["shortDescription"]["text"])
        assert rule["help"]["text"], rule["id"]
        assert rule["help"]["markdown"], rule["id"]
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]*", rule["name"]), rule["name"]


def test_rule_levels_follow_the_code_classes():
    levels = {rule["id"]: rule["defaultConfiguration"]["level"] for rule in rules()}
    assert levels["PA111"] == "error"
    assert levels["PA001"] == "error"
    assert levels["PA202"] == "warning"
    assert levels["PA301"] == "warning"


# --- the log --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def validator() -> Any:
    raw = SCHEMA.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == SCHEMA_SHA256, "the vendored schema was changed"
    schema = json.loads(raw)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _errors(validator: Any, log: object) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(log)
    ]


@pytest.fixture
def broken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A policy with errors, linted from its folder so that its path is relative."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "api.policy").write_text(BROKEN, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return "policies/api.policy"


def test_a_file_with_errors_gives_a_log_the_schema_accepts(run, broken, validator):
    result = run("lint", "--format", "sarif", broken)
    assert result.code == 1
    assert result.err == ""  # the log only: stdout is often redirected to the upload step
    log = json.loads(result.out)
    assert _errors(validator, log) == []
    assert log["version"] == "2.1.0"
    assert len(log["runs"]) == 1


def test_the_log_describes_the_tool_and_every_rule(run, broken):
    log = json.loads(run("lint", "--format", "sarif", broken).out)
    driver = log["runs"][0]["tool"]["driver"]
    assert driver["name"] == "policyauth"
    assert driver["informationUri"].startswith("https://")
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", driver["version"])
    documented = set(re.findall(r"^### (PA\d{3})$", DOC.read_text(encoding="utf-8"), re.M))
    assert {rule["id"] for rule in driver["rules"]} == documented


def test_results_carry_rule_level_message_and_region(run, broken):
    log = json.loads(run("lint", "--format", "sarif", broken).out)
    run_ = log["runs"][0]
    rules_ = run_["tool"]["driver"]["rules"]
    results = run_["results"]
    assert [(r["ruleId"], r["level"]) for r in results] == [
        ("PA203", "warning"),
        ("PA111", "error"),
        ("PA124", "error"),
    ]
    for result in results:
        assert rules_[result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["message"]["text"]
        (location,) = result["locations"]
        artifact = location["physicalLocation"]["artifactLocation"]
        assert artifact == {"uri": "policies/api.policy", "uriBaseId": "%SRCROOT%"}
    region = results[1]["locations"][0]["physicalLocation"]["region"]
    # `groupz` on line 9: columns 24 to 30, the end column exclusive as in SARIF.
    assert region == {"startLine": 9, "startColumn": 24, "endLine": 9, "endColumn": 30}
    assert results[1]["message"]["text"] == (
        "claim `groupz` is not declared by `corp`\nhelp: declare it in a provider block "
        '(`groupz = $.path`), or write a string in quotes: `"groupz"`'
    )
    base = run_["originalUriBaseIds"]["%SRCROOT%"]["uri"]
    assert base.startswith("file:///")
    assert base.endswith("/")


def test_a_clean_run_is_a_valid_log_with_no_results(run, tmp_path, monkeypatch, validator):
    (tmp_path / "ok.policy").write_text(CLEAN, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = run("lint", "--format", "sarif", "ok.policy")
    assert result.code == 0
    log = json.loads(result.out)
    assert _errors(validator, log) == []
    assert log["runs"][0]["results"] == []


def test_paths_outside_the_working_directory_and_odd_names_stay_valid(validator, tmp_path):
    odd = tmp_path / "a folder" / "50% off, really.policy"
    findings = [
        Diagnostic("PA111", Severity.ERROR, "x", str(odd), 2, 3, 2, 5),
        Diagnostic("PA010", Severity.ERROR, "cannot read", "./rel/p.policy", 1, 1, 1, 1),
        Diagnostic("PA999", Severity.WARNING, "a code newer than the rules", "p.policy", 1, 1),
    ]
    log = to_sarif(findings)
    assert _errors(validator, log) == []
    results = log["runs"][0]["results"]
    outside = results[0]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert outside["uri"].startswith("file:///")
    assert "%25" in outside["uri"]
    relative = results[1]["locations"][0]["physicalLocation"]
    assert relative["artifactLocation"]["uri"] == "rel/p.policy"
    assert relative["region"] == {"startLine": 1, "startColumn": 1}  # an empty region: no end
    rules_ = log["runs"][0]["tool"]["driver"]["rules"]
    assert rules_[results[2]["ruleIndex"]]["id"] == "PA999"


if __name__ == "__main__":
    RULES.write_text(generated_rules_file(), encoding="utf-8")
    sys.stdout.write(f"wrote {RULES.relative_to(ROOT)}\n")
