"""Golden tests for the formatter: messy input, canonical output, reviewed as diffs.

Each `golden/NAME.in.policy` is formatted and compared with `golden/NAME.out.policy`. After a
deliberate change of the layout, regenerate the expected files and review the diff:

    POLICYAUTH_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/fmt/test_golden.py

The shipped policies are already canonical (formatting them changes nothing), and every example
the language tests use formats to a fixed point with the same meaning.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from policyauth.language.formatter import format_policy
from policyauth.language.parser import parse

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
GOLDEN = HERE / "golden"
INPUTS = sorted(GOLDEN.glob("*.in.policy"))
UPDATE = os.environ.get("POLICYAUTH_UPDATE_GOLDEN") == "1"

POLICIES = sorted((ROOT / "policies").glob("*.policy"))
EXAMPLES = sorted((ROOT / "tests" / "language" / "examples").glob("*.policy"))


def expected_path(source: Path) -> Path:
    return source.with_name(source.name.removesuffix(".in.policy") + ".out.policy")


def read(path: Path) -> str:
    with path.open(encoding="utf-8", newline="") as stream:  # keep `\r` where a file has it
        return stream.read()


def same_meaning(a: str, b: str) -> bool:
    """Equal trees (spans aside) and the same comments, in order, less trailing whitespace."""
    x, y = parse(a), parse(b)
    comments = [c.text.rstrip() for c in x.comments] == [c.text.rstrip() for c in y.comments]
    return x.declarations == y.declarations and comments


@pytest.mark.parametrize("source", INPUTS, ids=lambda p: p.name.removesuffix(".in.policy"))
def test_golden(source: Path):
    formatted = format_policy(read(source), source.name)
    expected = expected_path(source)
    if UPDATE:
        expected.write_text(formatted, encoding="utf-8", newline="")
        return
    assert expected.exists(), f"no {expected.name}; run with POLICYAUTH_UPDATE_GOLDEN=1"
    assert formatted == read(expected)


@pytest.mark.parametrize("source", INPUTS, ids=lambda p: p.name.removesuffix(".in.policy"))
def test_golden_output_is_a_fixed_point_with_the_same_meaning(source: Path):
    expected = read(expected_path(source))
    assert format_policy(expected) == expected
    assert same_meaning(read(source), expected)


def test_every_expected_file_has_an_input():
    outputs = {p.name.removesuffix(".out.policy") for p in GOLDEN.glob("*.out.policy")}
    inputs = {p.name.removesuffix(".in.policy") for p in INPUTS}
    assert outputs == inputs


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.name)
def test_the_shipped_policies_are_canonical(path: Path):
    text = read(path)
    assert format_policy(text, path.name) == text


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_the_language_examples_format_to_a_fixed_point_with_the_same_meaning(path: Path):
    text = read(path)
    once = format_policy(text, path.name)
    assert format_policy(once, path.name) == once
    assert same_meaning(text, once)
