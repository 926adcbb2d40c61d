"""docs/language.md stays true: every diagnostic code is documented with an example that
produces it, every reference example loads clean, and the presets tables match presets.py."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest

from policyauth.language.presets import PRESETS
from policyauth.loader import analyze

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "language.md"
CODE = re.compile(r'"(PA\d{3})"')


@attrs.frozen
class Block:
    """A fenced block of the page: its language, its text, and the headings it stands under."""

    language: str
    text: str
    section: str  # the `##` heading
    heading: str  # the nearest heading of any level


def blocks() -> list[Block]:
    found: list[Block] = []
    section = heading = ""
    language: str | None = None
    lines: list[str] = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if language is not None:
            if line == "```":
                found.append(Block(language, "\n".join(lines) + "\n", section, heading))
                language = None
            else:
                lines.append(line)
        elif line.startswith("```"):
            language, lines = line[3:].strip(), []
        elif line.startswith("## "):
            section = heading = line[3:].strip()
        elif line.startswith("### "):
            heading = line[4:].strip()
    assert language is None, "a fenced block is not closed"
    return found


def source_codes() -> set[str]:
    return {
        code
        for path in (ROOT / "policyauth").rglob("*.py")
        for code in CODE.findall(path.read_text(encoding="utf-8"))
    }


def documented_codes() -> set[str]:
    text = DOC.read_text(encoding="utf-8")
    return set(re.findall(r"^### (PA\d{3})$", text, flags=re.MULTILINE))


def test_every_code_in_the_source_is_documented():
    assert sorted(source_codes() - documented_codes()) == []


def test_every_documented_code_exists_in_the_source():
    assert sorted(documented_codes() - source_codes()) == []


DIAGNOSTIC_EXAMPLES = [b for b in blocks() if b.language == "policy" and b.section == "Diagnostics"]
CODE_EXAMPLES = [b for b in DIAGNOSTIC_EXAMPLES if re.fullmatch(r"PA\d{3}", b.heading)]
REFERENCE_EXAMPLES = [b for b in blocks() if b.language == "policy" and b not in CODE_EXAMPLES]


@pytest.mark.parametrize("block", CODE_EXAMPLES, ids=lambda b: b.heading)
def test_each_code_example_produces_exactly_its_code(block: Block, tmp_path: Path):
    _, diagnostics = analyze(block.text, "example.policy", env={}, base_dir=tmp_path)
    assert {d.code for d in diagnostics} == {block.heading}, [d.one_line() for d in diagnostics]


def test_every_code_whose_example_is_a_policy_has_one():
    # PA009 (nesting), PA010 (unreadable file) and PA011 (not UTF-8) cannot be shown as text;
    # PA901 and PA902 are the formatter's internal errors, which no policy should produce.
    shown = {b.heading for b in CODE_EXAMPLES}
    # PA220 to PA222 need an OpenAPI description besides the policy (tests/analysis).
    openapi = {"PA220", "PA221", "PA222"}
    assert documented_codes() - shown == {"PA009", "PA010", "PA011", "PA901", "PA902"} | openapi


@pytest.mark.parametrize(
    "block", REFERENCE_EXAMPLES, ids=lambda b: f"{b.heading}-{REFERENCE_EXAMPLES.index(b)}"
)
def test_each_reference_example_loads_without_any_diagnostic(block: Block, tmp_path: Path):
    policy, diagnostics = analyze(block.text, "example.policy", env={}, base_dir=tmp_path)
    assert [d.one_line() for d in diagnostics] == []
    assert policy is not None


def test_the_whole_file_example_is_policies_confluence():
    (first,) = [b for b in blocks() if b.section == "A whole file"]
    example = ROOT / "tests" / "language" / "examples" / "confluence.policy"
    assert first.text == example.read_text(encoding="utf-8")


def _row(table_heading: str, preset: str) -> str:
    """The row of `preset` in the table that follows the line starting with `table_heading`."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index(table_heading)
    rows = [line for line in text[start:].splitlines() if line.startswith(f"| `{preset}` |")]
    assert rows, f"preset `{preset}` has no row after {table_heading!r}"
    return rows[0]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_the_presets_tables_match_presets_py(name: str):
    preset = PRESETS[name]
    summary = _row("| Preset | Userinfo endpoint |", name)
    cells = [cell.strip() for cell in summary.strip("|").split("|")]
    assert len(cells) == 6, summary
    _, endpoint, required, optional, prefixes, _ = cells
    for template in preset.userinfo:
        assert f"`{template}`" in endpoint
    assert required == (", ".join(f"`{p}`" for p in preset.required) or "none")
    assert optional == (", ".join(f"`{p}`" for p in preset.optional) or "none")
    assert prefixes == (", ".join(f"`{p}`" for p in preset.token_prefix) or "none")
    claims = _row("| Preset | Claims |", name).strip("|").split("|")[1]
    for claim, path in preset.claims:
        assert f"`{claim} = {path}`" in claims
    assert claims.count(" = $") == len(preset.claims)
