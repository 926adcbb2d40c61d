"""No text makes loading a policy raise anything but a PolicyError with well-formed diagnostics.

Random text reaches the lexer's corners; mutations of the example policies (characters and
tokens deleted, inserted or replaced, lines spliced) reach deep into the parser, the checker
and the compiler, which random text almost never does.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import policyauth

EXAMPLES = sorted((Path(__file__).parent / "examples").glob("*.policy"))
TEXTS = [path.read_text(encoding="utf-8") for path in EXAMPLES]
ENV = {"GOOGLE_CLIENT_ID": "x"}
CODE = re.compile(r"PA\d{3}")

# About a second per property; a local run with max_examples=20000 found nothing more.
FAST = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Pieces of the language, and of mistakes: what a mutation inserts or replaces with.
PIECES = [
    "{", "}", "(", ")", "[", "]", ",", "=", "==", "!=", ":", '"', "'", "#", "/", "\\", "$", "*",
    "**", ".", "..", "\n", " ", "route", "provider", "tokens", "settings", "auth", "public",
    "allow", "deny", "if", "and", "or", "not", "in", "matches", "startswith", "endswith",
    "true", "false", "env", "success", "preset", "userinfo", "username", "groups", "param.id",
    "provider", "method", "path", "GET", "get", "POST", "*", "/a/{id}", "/**", "/x/**/y",
    "5m", "5min", "1.5h", "0s", "-1", "42", "1e9", '"x"', '"\\q"', '"\\u00e9"', "/re/", "/(/",
    "$.a", "$[", "$.a[*]", "$['a:b'][*]", "$[?(@.x ==)]", "$..a", "\x00", "\t", "\u00e9",
    "\U0001f600", "\ufeff", "\r", "\x0b",
]  # fmt: skip
TOKEN = re.compile(r"\s+|[A-Za-z_][A-Za-z0-9_.-]*|\$\S*|\"(?:[^\"\\\n]|\\.)*\"|/\S*|.", re.S)


def assert_loads_or_diagnoses(text: str) -> None:
    """Either a Policy, or a PolicyError whose every diagnostic has a code and a place."""
    error: policyauth.PolicyError | None = None
    try:
        policy = policyauth.loads(text, "fuzz.policy", env=ENV)
    except policyauth.PolicyError as exc:
        error = exc
    if error is None:
        assert isinstance(policy, policyauth.Policy)
        diagnostics = list(policy.warnings)
    else:
        diagnostics = error.diagnostics
        assert any(d.is_error for d in diagnostics), text
        str(error)
    for diagnostic in diagnostics:
        assert CODE.fullmatch(diagnostic.code), diagnostic
        assert diagnostic.line >= 1, diagnostic
        assert diagnostic.column >= 1, diagnostic
        assert diagnostic.message, diagnostic
        assert diagnostic.file == "fuzz.policy"
        diagnostic.render()  # rendering never fails either


@FAST
@given(st.text(max_size=200))
def test_random_text(text: str) -> None:
    assert_loads_or_diagnoses(text)


@FAST
@given(st.lists(st.sampled_from(PIECES), max_size=40).map(" ".join))
def test_random_pieces(text: str) -> None:
    assert_loads_or_diagnoses(text)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """An example policy with a few characters, tokens or lines changed."""
    text: str = draw(st.sampled_from(TEXTS))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["char", "token", "line"]))
        if kind == "char":
            at = draw(st.integers(0, len(text)))
            cut = draw(st.integers(0, 3))
            insert = draw(st.one_of(st.just(""), st.sampled_from(PIECES), st.text(max_size=3)))
            text = text[:at] + insert + text[at + cut :]
        elif kind == "token":
            tokens = TOKEN.findall(text)
            if not tokens:
                continue
            at = draw(st.integers(0, len(tokens) - 1))
            action = draw(st.sampled_from(["delete", "replace", "insert", "duplicate"]))
            piece = draw(st.sampled_from(PIECES))
            if action == "delete":
                del tokens[at]
            elif action == "replace":
                tokens[at] = piece
            elif action == "insert":
                tokens.insert(at, piece)
            else:
                tokens.insert(at, tokens[at])
            text = "".join(tokens)
        else:
            lines = text.split("\n")
            other = draw(st.sampled_from(TEXTS)).split("\n")
            start = draw(st.integers(0, len(lines)))
            end = draw(st.integers(start, min(len(lines), start + 6)))
            taken = draw(st.integers(0, len(other)))
            lines[start:end] = other[taken : taken + draw(st.integers(0, 6))]
            text = "\n".join(lines)
    return text


@FAST
@given(mutated())
def test_mutated_examples(text: str) -> None:
    assert_loads_or_diagnoses(text)


@pytest.mark.parametrize("text", TEXTS, ids=[path.name for path in EXAMPLES])
def test_every_prefix_of_an_example(text: str) -> None:
    """Cut anywhere: an unfinished file is always a diagnostic (or, between blocks, a policy)."""
    for end in range(0, len(text) + 1, 7):
        assert_loads_or_diagnoses(text[:end])


NESTING = [
    "(" * 5000,
    ")" * 5000,
    "{" * 5000,
    "[" * 5000,
    "route GET /a { auth corp allow if " + "(" * 5000,
    "route GET /a { auth corp allow if " + "(" * 3000 + "x" + ")" * 3000 + " }",
    "route GET /a { auth corp allow if " + "not " * 5000 + "x }",
    "route GET /a { auth corp allow if " + " and ".join(["x"] * 5000) + " }",
    "route GET /a { auth corp allow if " + " or ".join(['"a" in groups'] * 3000) + " }",
    "provider p { x = " + "[" * 3000 + "]" * 3000 + " }",
    "provider p { x = " + '{ "a": ' * 3000 + "1" + " }" * 3000 + " }",
    "provider p { username = $" + ".a" * 5000 + " }",
    "provider p { username = $" + "[*]" * 5000 + " }",
    "route GET " + "/a" * 5000 + " { public }",
    "# " + "x" * 100_000,
    '"' + "x" * 100_000,
]


@pytest.mark.parametrize("text", NESTING, ids=lambda t: t[:40])
def test_deep_or_long_input(text: str) -> None:
    assert_loads_or_diagnoses(text)


def test_deep_nesting_is_pa009() -> None:
    with pytest.raises(policyauth.PolicyError) as caught:
        policyauth.loads(
            "route GET /a { auth corp allow if " + "(" * 5000 + "x" + ")" * 5000 + " }"
        )
    assert [d.code for d in caught.value.diagnostics] == ["PA009"]
