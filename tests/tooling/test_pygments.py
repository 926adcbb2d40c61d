"""The Pygments lexer: found through its entry point, and lexing every policy without errors.

`pygmentize -l policyauth` and documentation tools find the lexer through the
`pygments.lexers` entry point of the installed package, so these tests go through Pygments'
own lookup (and the console script) rather than importing the class.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pygments.lexers import get_lexer_by_name, get_lexer_for_filename
from pygments.token import (
    Comment,
    Error,
    Keyword,
    Name,
    Number,
    Operator,
    Punctuation,
    String,
    Whitespace,
)

from policyauth.pygments import (
    BODY_KEYWORDS,
    BUILTINS,
    CONSTANTS,
    DECLARATIONS,
    OPERATOR_WORDS,
    PolicyLexer,
)

ROOT = Path(__file__).resolve().parents[2]
CONFLUENCE = ROOT / "policies" / "confluence.policy"
POLICIES = sorted(
    [
        *(ROOT / "policies").glob("*.policy"),
        *(ROOT / "tests" / "decisions" / "policies").glob("*.policy"),
        *(ROOT / "tests" / "language" / "examples").glob("*.policy"),
    ]
)


def tokens(text: str) -> list[tuple[object, str]]:
    return [
        (kind, value) for kind, value in get_lexer_by_name("policyauth").get_tokens(text) if value
    ]


def kinds_of(text: str, value: str) -> set[object]:
    return {kind for kind, token in tokens(text) if token == value}


def contains(found: list[tuple[object, str]], run: list[tuple[object, str]]) -> bool:
    """Whether `run` occurs in `found` as consecutive tokens."""
    return any(found[i : i + len(run)] == run for i in range(len(found)))


def test_the_entry_point_registers_the_lexer_by_name_alias_and_file_name():
    assert isinstance(get_lexer_by_name("policyauth"), PolicyLexer)
    assert isinstance(get_lexer_by_name("policy"), PolicyLexer)  # ```policy blocks in Markdown
    assert isinstance(get_lexer_for_filename("policies/api.policy"), PolicyLexer)


def test_confluence_policy_tokens():
    text = CONFLUENCE.read_text(encoding="utf-8")
    found = tokens(text)
    assert "".join(value for _, value in found) == text  # nothing lost or added
    assert not [value for kind, value in found if kind in Error]
    assert kinds_of(text, "settings") == {Keyword.Declaration}
    assert kinds_of(text, "route") == {Keyword.Declaration}
    assert (Keyword.Declaration, "provider") in found
    assert kinds_of(text, "auth") == {Keyword}
    assert kinds_of(text, "allow") == {Keyword}
    assert kinds_of(text, "deny") == {Keyword}
    assert kinds_of(text, "public") == {Keyword}
    assert kinds_of(text, "and") == {Operator.Word}
    assert kinds_of(text, "in") == {Operator.Word}
    assert kinds_of(text, "endswith") == {Operator.Word}
    assert kinds_of(text, "true") == {Keyword.Constant}
    assert kinds_of(text, "env") == {Name.Builtin}
    # declared, and listed in `auth`; `preset = "google"` is a string
    assert kinds_of(text, "google") == {Name.Class, String.Double}
    assert kinds_of(text, "$.realm_access.roles[*]") == {Name.Variable.Global}
    assert kinds_of(text, "$.email") == {Name.Variable.Global}
    assert kinds_of(text, "username") == {Name.Attribute, Name.Variable}  # declared; read
    assert kinds_of(text, "GET") == {Name.Function}
    assert kinds_of(text, "/status") == {Name.Namespace}
    assert kinds_of(text, "**") == {Operator}
    assert kinds_of(text, "5m") == {Number}
    assert (String.Double, "atlassian") in found
    assert (Comment.Single, "# no credentials needed") in found


def test_regexes_params_builtins_and_ignore_comments():
    text = (ROOT / "policies" / "mixed.policy").read_text(encoding="utf-8")
    found = tokens(text)
    assert (String.Regex, "/[0-9]{6,12}/") in found
    assert (String.Regex, "/[^@]+@[a-z0-9.-]+/") in found
    assert (Name.Variable, "{number}") in found  # a captured path segment
    assert contains(found, [(Name.Builtin, "param"), (Punctuation, "."), (Name.Variable, "number")])
    assert kinds_of(text, "provider") == {Keyword.Declaration, Name.Builtin}
    assert kinds_of(text, "method") == {Name.Builtin}
    assert kinds_of(text, "path") == {Name.Builtin}
    assert (Comment.Special, "# policyauth: ignore[PA202]") in found


def test_strings_show_their_escapes():
    found = tokens('settings {\n  realm = "a\\"b\\u00e9"\n}\n')
    assert [value for kind, value in found if kind in String.Escape] == ['\\"', "\\u00e9"]


def test_a_rule_label_is_a_label_not_a_string_value():
    found = tokens('route GET /a {\n  auth corp\n  deny "no \\"eve\\"" if username == "eve"\n}\n')
    assert contains(found, [(Keyword, "deny"), (Whitespace, " "), (Name.Label, '"no \\"eve\\""')])
    assert (Operator, "==") in found
    assert [value for kind, value in found if kind in Error] == []


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_policy_in_the_repository_lexes_without_errors(path: Path):
    text = path.read_text(encoding="utf-8")
    found = tokens(text)
    assert "".join(value for _, value in found) == text
    assert [value for kind, value in found if kind in Error] == []


def test_every_keyword_of_the_grammar_is_lexed_as_one():
    grammar = (ROOT / "grammar" / "policy.lark").read_text(encoding="utf-8")
    literals = set(re.findall(r'"([a-z]+)"', grammar))
    known = {*DECLARATIONS, *BODY_KEYWORDS, *OPERATOR_WORDS, *CONSTANTS, *BUILTINS}
    assert literals <= known, sorted(literals - known)


def test_pygmentize_highlights_a_policy_through_the_console_script():
    script = Path(sys.executable).with_name("pygmentize")
    completed = subprocess.run(
        [str(script), "-l", "policyauth", "-f", "html", str(CONFLUENCE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    html = completed.stdout
    assert '<span class="kd">route</span>' in html  # Keyword.Declaration
    assert '<span class="nv">groups</span>' in html  # a claim read in a rule
    assert '<span class="vg">$.email</span>' in html  # Name.Variable.Global: a claim path
    assert '<span class="c1"># no credentials needed</span>' in html
    assert '<span class="err">' not in html


def test_pygmentize_guesses_the_lexer_from_the_file_name():
    script = Path(sys.executable).with_name("pygmentize")
    completed = subprocess.run(
        [str(script), "-N", str(CONFLUENCE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.stdout.strip() == "policyauth"
