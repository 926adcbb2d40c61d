"""A Pygments lexer for policy files, so that `pygmentize`, Sphinx, MkDocs and other tools that
use Pygments highlight policies.

Registered under the `pygments.lexers` entry point (pyproject.toml), which is how Pygments
finds lexers of other packages: `pygmentize -l policyauth`, a file named `*.policy`, and fenced
blocks marked `policy` in Markdown all pick it. Pygments is an optional dependency
(`policyauth[pygments]`); nothing else in policyauth imports this module.

The words come from the grammar (grammar/policy.lark; a test checks that every keyword there is
lexed as one). The lexer keeps just enough context to tell the grammar's look-alikes apart, as
the grammar's contextual lexer does: `provider` opens a block at the top level and is the
request fact in a rule, `/` starts a path after `route METHODS` and a regex after `matches`.
"""

from __future__ import annotations

from typing import Any, ClassVar

# Pygments ships no type information (and its stubs are not a dependency), hence the ignores.
from pygments.lexer import RegexLexer, bygroups, default, include, words  # type: ignore[import-untyped]
from pygments.token import (  # type: ignore[import-untyped]
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

__all__ = ["PolicyLexer"]

_NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# A claim path as the grammar's JSONPATH terminal has it: `$` and steps, unquoted.
_JSONPATH = (
    r"\$(?:\.\.?(?:[A-Za-z_][A-Za-z0-9_-]*|\*)"
    r"|\[(?:\?\((?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^'\"()]|\([^()]*\))*\)"
    r"|'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"|[^\]'\"\s]*)\])*"
)

DECLARATIONS = ("settings", "provider", "tokens", "route")
BODY_KEYWORDS = ("public", "auth", "allow", "deny", "if", "success")
OPERATOR_WORDS = ("and", "or", "not", "in", "matches", "startswith", "endswith", "has")
CONSTANTS = ("true", "false")
BUILTINS = ("env", "provider", "method", "path", "param")


class PolicyLexer(RegexLexer):  # type: ignore[misc]
    """Policy files (`*.policy`) of policyauth, the declarative HTTP authorization language."""

    name = "policyauth"
    aliases: ClassVar[list[str]] = ["policyauth", "policy"]
    filenames: ClassVar[list[str]] = ["*.policy"]
    mimetypes: ClassVar[list[str]] = ["text/x-policyauth"]
    url = "https://pypi.org/project/policyauth/"

    tokens: ClassVar[dict[str, list[Any]]] = {
        "common": [
            (r"\s+", Whitespace),
            # `# policyauth: ignore[PA202]` changes what lint reports: show it as a directive.
            (r"#[^\n]*?policyauth:\s*ignore\[[^\n]*", Comment.Special),
            (r"#[^\n]*", Comment.Single),
        ],
        "root": [
            include("common"),
            (r"(route)\b", Keyword.Declaration, "route-head"),
            (
                rf"(provider|tokens)(\s+)({_NAME})",
                bygroups(Keyword.Declaration, Whitespace, Name.Class),
            ),
            (r"settings\b", Keyword.Declaration),
            (r"\{", Punctuation, "block"),
            (r"\}", Punctuation),
            (r"[^\s{}#]+", Error),
        ],
        "route-head": [
            (r"\s+", Whitespace),
            (words(_METHODS, suffix=r"\b"), Name.Function),
            (r"\*", Name.Function),
            (r",", Punctuation),
            default(("#pop", "path")),
        ],
        "path": [
            (rf"\{{{_NAME}\}}", Name.Variable),
            (r"\*\*?", Operator),
            (r"[^\s{}#*]+", Name.Namespace),
            default("#pop"),
        ],
        "block": [
            include("common"),
            (r"\{", Punctuation, "#push"),  # a map value: headers = { ... }
            (r"\}", Punctuation, "#pop"),
            (r"(auth)\b", Keyword, "authenticators"),
            (r"(success)(\s*)(=)(?!=)", bygroups(Keyword, Whitespace, Operator)),
            (rf"({_NAME})(\s*)(=)(?!=)", bygroups(Name.Attribute, Whitespace, Operator)),
            # A rule's label (`allow "readers" if ...`) names the rule; it is not a value.
            (
                r'(allow|deny)(\s+)("(?:[^"\\\n]|\\.)*")',
                bygroups(Keyword, Whitespace, Name.Label),
            ),
            (words(BODY_KEYWORDS, suffix=r"\b"), Keyword),
            (
                r"(matches)(\s+)(/(?:[^/\\\n]|\\.)+/)",
                bygroups(Operator.Word, Whitespace, String.Regex),
            ),
            (words(OPERATOR_WORDS, suffix=r"\b"), Operator.Word),
            (words(CONSTANTS, suffix=r"\b"), Keyword.Constant),
            (r"(env)(\s*)(\()", bygroups(Name.Builtin, Whitespace, Punctuation)),
            (rf"(param)(\.)({_NAME})", bygroups(Name.Builtin, Punctuation, Name.Variable)),
            (r"(provider|method|path)\b", Name.Builtin),
            (_JSONPATH, Name.Variable.Global),
            (r'"', String.Double, "string"),
            (r"[0-9]+(?:ms|s|m|h|d)\b", Number),
            (r"[0-9]+(?:KB|MB|GB)\b", Number),
            (r"-?[0-9]+\.[0-9]+", Number.Float),
            (r"-?[0-9]+", Number.Integer),
            (r"==|!=|=", Operator),
            (r"[,:()\[\]]", Punctuation),
            (_NAME, Name.Variable),  # a claim
            (r"[^\s{}#]", Error),
        ],
        "authenticators": [
            (r"[ \t]+", Whitespace),
            (r",", Punctuation),
            (_NAME, Name.Class),
            default("#pop"),
        ],
        "string": [
            (r'\\(?:["\\nt]|u[0-9a-fA-F]{4})', String.Escape),
            (r"\\.", String.Escape),
            (r'[^"\\\n]+', String.Double),
            (r'"', String.Double, "#pop"),
            (r"\n", Whitespace, "#pop"),  # left open (PA007): end it at the line's end
        ],
    }
