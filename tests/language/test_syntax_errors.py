"""Syntax errors people make, and what policyauth tells them: code, place, message, help.

The parser stops at the first syntax error and must explain it in the words of the language
(`}`, a string, a condition), never in Lark's (terminal names, exception classes).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import pytest

import policyauth
from policyauth.language.parser import _parser, parse

PROVIDER = """\
provider corp {
  userinfo = "https://sso.example.com/userinfo"
  username = $.sub
  groups   = $.groups[*]
}

"""  # six lines: a route written after it starts on line 7


def route(rule: str, head: str = "route GET /a") -> str:
    """A policy whose route's first rule is on line 9."""
    return PROVIDER + f"{head} {{\n  auth corp\n  {rule}\n}}\n"


class Case(NamedTuple):
    id: str
    text: str
    code: str
    line: int
    column: int
    message: str
    help: str | None


DURATION_HELP = "a duration is a whole number and one unit of ms, s, m, h or d: `30s`, `5m`"
REGEX_HELP = "a regex is written `/.../`; write `\\/` for a slash inside it"
BODY_HELP = "a route body is `public`, or `auth NAME, ...` followed by rules"
CONDITION_HELP = 'a condition reads like `"admins" in groups` or `username == "alice"`'
DENY_HELP = "a deny rule needs a condition: `deny if EXPR`"
NOT_CLOSED = "the block above is not closed with `}`"
FOREIGN_HELP = (
    'conditions read like `"admins" in groups` or `username == "alice"`, joined with `and`, '
    "`or` and negated with `not`"
)
DECLARATIONS = "`provider`, `route`, `settings`, `tokens`, the end of the file"

CASES = [
    Case(
        "missing brace at end of file",
        PROVIDER + "route GET /a {\n  auth corp\n  allow\n",
        "PA003", 9, 8,
        "unexpected end of file; expected one of `allow`, `deny`, `if`, `}`, a rule label",
        "a block opened with `{` is not closed",
    ),
    Case(
        "missing brace before the next route",
        PROVIDER + "route GET /a {\n  auth corp\n  allow\n\nroute GET /b {\n  public\n}\n",
        "PA002", 11, 1, "expected `}` before `route`", NOT_CLOSED,
    ),
    Case(
        "missing brace before the next provider",
        'provider corp {\n  userinfo = "https://sso.example.com/userinfo"\n  username = $.sub\n'
        "\nprovider other {\n}\n",
        "PA002", 5, 1, "expected `}` before `provider`", NOT_CLOSED,
    ),
    Case(
        "missing brace in settings before a route",
        'settings {\n  realm = "api"\n\nroute GET /a {\n  public\n}\n',
        "PA002", 4, 1, "expected `}` before `route`", NOT_CLOSED,
    ),
    Case(
        "`=` in a rule",
        route('allow if username = "alice"'),
        "PA002", 9, 21, "`=` assigns; compare with `==`", "write `==`",
    ),
    Case(
        "`===` in a rule",
        route('allow if username === "alice"'),
        "PA002", 9, 23, "`===` is not an operator; compare with `==`", "write `==`",
    ),
    Case(
        "`==` in a setting",
        'settings {\n  realm == "api"\n}\n',
        "PA002", 2, 10, "`==` compares; a setting takes one `=`", "write `=`",
    ),
    Case(
        "`:` in a setting",
        'settings {\n  realm: "api"\n}\n',
        "PA002", 2, 8, "unexpected `:`; expected `=`", None,
    ),
    Case(
        "unquoted string value",
        "settings {\n  realm = api\n}\n",
        "PA002", 2, 11, "expected a value, found `api`",
        'strings are written in double quotes: `"api"`',
    ),
    Case(
        "unquoted env() name",
        'provider g {\n  preset    = "google"\n  client_id = env(GOOGLE_CLIENT_ID)\n}\n',
        "PA002", 3, 19, "expected a value, found `GOOGLE_CLIENT_ID`",
        'strings are written in double quotes: `"GOOGLE_CLIENT_ID"`',
    ),
    Case(
        "single quotes",
        "settings {\n  realm = 'api'\n}\n",
        "PA001", 2, 11, "unexpected character `'`; strings are written in double quotes",
        'write `"..."`',
    ),
    Case(
        "duration with a long unit",
        "settings {\n  cache_ttl = 5min\n}\n",
        "PA006", 2, 15, "invalid duration `5min`", DURATION_HELP,
    ),
    Case(
        "fractional duration",
        "settings {\n  timeout = 1.5h\n}\n",
        "PA006", 2, 13, "invalid duration `1.5h`", DURATION_HELP,
    ),
    Case(
        "unterminated regex",
        route("allow if username matches /svc-.*"),
        "PA007", 9, 29, "unterminated regex literal", REGEX_HELP,
    ),
    Case(
        "regex closed by an escaped slash only",
        route("allow if username matches /svc\\/"),
        "PA007", 9, 29, "unterminated regex literal", REGEX_HELP,
    ),
    Case(
        "unterminated string",
        'settings {\n  realm = "api\n}\n',
        "PA007", 2, 11, "unterminated string", 'close the string with `"` on the same line',
    ),
    Case(
        "unterminated string at the end of the file",
        'settings {\n  realm = "api',
        "PA007", 2, 11, "unterminated string", 'close the string with `"` on the same line',
    ),
    Case(
        "method in lower case",
        "route get /status {\n  public\n}\n",
        "PA004", 1, 7, "method `get` must be written in upper case", "write `GET`",
    ),
    Case(
        "unknown method",
        "route FETCH /status {\n  public\n}\n",
        "PA004", 1, 7, "unknown method `FETCH`",
        "methods are GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, or `*` for all of them",
    ),
    Case(
        "`**` not last",
        "route GET /files/**/raw {\n  public\n}\n",
        "PA005", 1, 11, "`**` must be the last segment of a pattern", "use `*` for one segment",
    ),
    Case(
        "wildcard inside a segment",
        "route GET /files/*.txt {\n  public\n}\n",
        "PA005", 1, 11, "`*.txt` mixes text with a wildcard",
        "`*`, `**` and `{name}` must each be a whole segment",
    ),
    Case(
        "empty segment",
        "route GET /a//b {\n  public\n}\n",
        "PA005", 1, 11, "empty segment in the pattern",
        "remove the extra `/` (one trailing slash on a request is ignored anyway)",
    ),
    Case(
        "percent escape in a pattern",
        "route GET /a%2Fb {\n  public\n}\n",
        "PA005", 1, 11, "character `%` cannot appear in a pattern",
        "patterns match decoded paths; write the character itself, not an escape",
    ),
    Case(
        "missing method before the path",
        "route /status {\n  public\n}\n",
        "PA002", 1, 7, "expected a method before the path",
        "write the methods first: `route GET /path { ... }`",
    ),
    Case(
        "methods without a comma",
        "route GET POST /status {\n  public\n}\n",
        "PA002", 1, 11, "unexpected `POST`; expected one of `,`, a path pattern `/...`", None,
    ),
    Case(
        "path without a slash",
        "route GET status {\n  public\n}\n",
        "PA002", 1, 11, "unexpected `status`; expected one of `,`, a path pattern `/...`", None,
    ),
    Case(
        "missing `{` after the pattern",
        "route GET /status\n  public\n}\n",
        "PA002", 2, 3, "unexpected `public`; expected `{`", None,
    ),
    Case(
        "`deny` without `if`",
        route('deny username == "eve"\n  allow'),
        "PA002", 9, 8, "expected `if` after `deny`, found `username`", DENY_HELP,
    ),
    Case(
        "`deny` without `if`, a string first: it reads as the rule's label",
        route('deny "contractors" in groups\n  allow'),
        "PA002", 9, 22, "unexpected `in`; expected `if`",
        "a string after `deny` is the rule's label; a condition follows `if`: "
        '`deny if "contractors" in groups`',
    ),
    Case(
        "`deny` with nothing after it",
        route("allow\n  deny"),
        "PA002", 11, 1, "expected `if` after `deny`, found `}`", DENY_HELP,
    ),
    Case(
        "bad escape",
        'settings {\n  realm = "a\\qb"\n}\n',
        "PA008", 2, 13, "unknown escape `\\q` in a string",
        'strings know `\\"`, `\\\\`, `\\n`, `\\t` and `\\uXXXX`',
    ),
    Case(
        "invalid claim path",
        'provider corp {\n  userinfo = "https://sso.example.com/userinfo"\n  username = $.x[\n}\n',
        "PA002", 3, 14, "invalid claim path `$.x[`",
        "claim paths look like `$.email`, `$.roles[*]` or `$['cognito:groups'][*]`",
    ),
    Case(
        "route body without auth or public",
        PROVIDER + "route GET /a {\n  allow\n}\n",
        "PA002", 8, 3, "unexpected `allow`; expected one of `auth`, `public`", BODY_HELP,
    ),
    Case(
        "empty route body",
        "route GET /a {\n}\n",
        "PA002", 2, 1, "unexpected `}`; expected one of `auth`, `public`", BODY_HELP,
    ),
    Case(
        "`if` with no condition",
        route("allow if\n"),
        "PA002", 11, 1, "unexpected `}`; expected a condition", CONDITION_HELP,
    ),
    Case(
        "dangling `and`",
        route('allow if username == "a" and\n'),
        "PA002", 11, 1, "unexpected `}`; expected a condition", CONDITION_HELP,
    ),
    Case(
        "`if` at the end of the file",
        PROVIDER + "route GET /a {\n  auth corp\n  allow if",
        "PA003", 9, 11, "unexpected end of file; expected a condition", CONDITION_HELP,
    ),
    Case(
        "unclosed parenthesis",
        route('allow if (username == "a" or username == "b"\n'),
        "PA002", 11, 1, "unexpected `}`; expected `)`", None,
    ),
    Case(
        "`not` without `in`",
        route('allow if "x" not groups'),
        "PA002", 9, 20, "unexpected `groups`; expected `in`", None,
    ),
    Case(
        "unexpected character",
        'settings {\n  realm = "api" @\n}\n',
        "PA001", 2, 17, "unexpected character `@`; expected one of `}`, a name", None,
    ),
    Case(
        "control character",
        'settings {\n  realm = "api"\x01\n}\n',
        "PA001", 2, 16, "unexpected character `\\x01`; expected one of `}`, a name", None,
    ),
    Case(
        "invisible character",
        "route GET /a {\n  public\n}\n\u200b\n",
        "PA001", 4, 1, f"unexpected character `\\u200b`; expected one of {DECLARATIONS}", None,
    ),
    Case(
        "stray closing brace",
        "settings {\n}\n}\n",
        "PA002", 3, 1, f"unexpected `}}`; expected one of {DECLARATIONS}", None,
    ),
    Case(
        "unknown declaration",
        "rule GET /a {\n  public\n}\n",
        "PA002", 1, 1, f"unexpected `rule`; expected one of {DECLARATIONS}", None,
    ),
    # --- what newcomers write (issue 15): another language's habits, with the rewrite -------
    Case(
        "`&&` for and",
        route('allow if username == "a" && "x" in groups'),
        "PA012", 9, 28, "`&&` is not an operator in a policy; write `and`", FOREIGN_HELP,
    ),
    Case(
        "`||` for or",
        route('allow if username == "a" || "x" in groups'),
        "PA012", 9, 28, "`||` is not an operator in a policy; write `or`", FOREIGN_HELP,
    ),
    Case(
        "`!` for not",
        route('allow if !("x" in groups)'),
        "PA012", 9, 12, "`!` is not an operator in a policy; write `not`", FOREIGN_HELP,
    ),
    Case(
        "`contains` for in",
        route('allow if groups contains "admins"'),
        "PA012", 9, 19,
        "`contains` is not an operator in a policy; membership is `VALUE in LIST`",
        'write `"admins" in groups`',
    ),
    Case(
        "a duration in words, reported where it is written",
        "settings {\n  cache_ttl = 5 minutes\n  timeout   = 3s\n}\n",
        "PA013", 2, 15, "`5 minutes` is not a duration",
        "a duration is one word, a whole number and its unit: write `5m`",
    ),
    Case(
        "a duration in words as the last setting",
        "settings {\n  timeout = 30 seconds\n}\n",
        "PA013", 2, 13, "`30 seconds` is not a duration",
        "a duration is one word, a whole number and its unit: write `30s`",
    ),
    Case(
        "`:id` for a parameter",
        "route GET /items/:id {\n  public\n}\n",
        "PA014", 1, 18, "`:id` is not a parameter in a policy pattern",
        "parameters are written in braces, as a whole segment: `{id}`",
    ),
    Case(
        "`{x}` glued inside a segment",
        "route GET /x{public} {\n  public\n}\n",
        "PA014", 1, 12, "`{public}` inside the segment `x{public}` is not a parameter",
        "a parameter is a whole segment: `/{public}`; to open the route's block, put a space "
        "before `{`",
    ),
    Case(
        "`{x}` glued inside a middle segment",
        "route GET /x{id}/y {\n  public\n}\n",
        "PA014", 1, 12, "`{id}` inside the segment `x{id}` is not a parameter",
        "a parameter is a whole segment: `/{id}`",
    ),
    Case(
        "the route's block glued to its pattern",
        "route GET /health{public}\n",
        "PA014", 1, 18,
        "`{public}` is glued to the path, so it reads as a parameter, not as the route's block",
        "put a space before `{` to open the route's block: `/health {public}`",
    ),
    Case(
        "a condition without `if` after `allow` reads as a label",
        route('allow "admins" in groups'),
        "PA002", 9, 18, "unexpected `in`; expected one of `allow`, `deny`, `if`, `}`",
        "a string after `allow` is the rule's label; a condition follows `if`: "
        '`allow if "admins" in groups`',
    ),
    Case(
        "an unquoted file name",
        'tokens ci {\n  store = scripts.tokens\n}\n',
        "PA002", 2, 11, "expected a value, found `scripts.tokens`",
        'strings are written in double quotes: `"scripts.tokens"`',
    ),
]  # fmt: skip


def diagnose(text: str, name: str = "t.policy") -> list[policyauth.Diagnostic]:
    with pytest.raises(policyauth.PolicyError) as caught:
        policyauth.loads(text, name)
    return caught.value.diagnostics


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 14
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_syntax_error(case: Case) -> None:
    [diagnostic] = diagnose(case.text)
    assert (diagnostic.code, diagnostic.line, diagnostic.column, diagnostic.message) == (
        case.code,
        case.line,
        case.column,
        case.message,
    )
    assert diagnostic.help == case.help
    assert diagnostic.file == "t.policy"
    assert diagnostic.is_error


# --- nothing of Lark shows ----------------------------------------------------------------------

LARK_WORDS = re.compile(
    r"__ANON|Token\(|\$END|Unexpected(Token|Characters|Input|EOF)|LarkError|VisitError|"
    r"\bTree\b|\bLark\b|Traceback"
)
HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
# Placeholders that stand for what a person writes: `auth NAME, ...`, `deny if EXPR`, `\uXXXX`.
PLACEHOLDERS = {"NAME", "EXPR", "XXXX"}


def terminal_names() -> set[str]:
    return {terminal.name for terminal in _parser().terminals} | {"$END"}


def test_terminal_names_are_known() -> None:
    """The check below is only as good as this list: Lark's terminal names for the grammar."""
    assert {"RBRACE", "NAME", "STRING", "JSONPATH", "PATH", "COMMA"} <= terminal_names()


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_no_lark_internals_in_messages(case: Case) -> None:
    [diagnostic] = diagnose(case.text)
    terminals = terminal_names()
    for text in (diagnostic.message, diagnostic.help or "", diagnostic.render()):
        assert not LARK_WORDS.search(text), text
    for text in (diagnostic.message, diagnostic.help or ""):
        quoted = re.findall(r"`([^`]*)`", text)
        plain = re.sub(r"`[^`]*`", "", text)
        # Outside backticks, no upper-case word at all (but HTTP methods, listed for help).
        shouting = set(re.findall(r"\b[A-Z][A-Z0-9_]+\b", plain)) - HTTP_METHODS
        assert not shouting, text
        # Inside backticks only what a person writes: the user's own input or placeholders.
        for snippet in quoted:
            for word in re.findall(r"[A-Z][A-Z0-9_]+", snippet):
                assert word not in terminals - PLACEHOLDERS or word in case.text, text


def test_internal_names_never_leak_from_any_error() -> None:
    """Every unexpected-token state of the table, with a few more: still nothing of Lark."""
    texts = [case.text for case in CASES] + [
        "route GET /a { auth corp allow if provider == }",
        "route GET /a { auth corp allow if path == }",
        "route GET /a { auth corp allow if x matches }",
        "route GET /a { auth corp allow if x matches 1 }",
        "route GET /a { auth corp allow if [1, }",
        "provider p { headers = { 1 } }",
        'provider p { headers = { "a": } }',
        "provider p { x = env( }",
        "provider p { x = [1, 2 }",
        "route * { public }",
        "route GET, { public }",
        "route GET /a { public public }",
        "settings { realm = 5min }",
        "provider p { success = }",
        "route GET /a { auth a, }",
    ]
    for text in texts:
        for diagnostic in diagnose(text):
            for shown in (diagnostic.message, diagnostic.help or ""):
                assert not LARK_WORDS.search(shown), (text, shown)
                plain = re.sub(r"`[^`]*`", "", shown)
                shouting = set(re.findall(r"\b[A-Z][A-Z0-9_]+\b", plain)) - HTTP_METHODS
                assert not shouting, (text, shown)


# --- how errors are reported --------------------------------------------------------------------


def test_full_form_shows_the_line_and_a_caret() -> None:
    [diagnostic] = diagnose("settings {\n  cache_ttl = 5min\n}\n")
    assert diagnostic.render() == (
        "t.policy:2:15: PA006 invalid duration `5min`\n"
        "2 |   cache_ttl = 5min\n"
        "                  ^^^^\n"
        f"help: {DURATION_HELP}"
    )


def test_one_line_form() -> None:
    [diagnostic] = diagnose("route get /status {\n  public\n}\n", name="api.policy")
    assert diagnostic.one_line() == (
        "api.policy:1:7: PA004 method `get` must be written in upper case"
    )


def test_error_string_is_the_first_error() -> None:
    with pytest.raises(policyauth.PolicyError) as caught:
        policyauth.loads("route get /a/**/b {\n  public\n}\n", "t.policy")
    assert str(caught.value) == (
        "t.policy:1:7: PA004 method `get` must be written in upper case (and 1 more)"
    )


def test_parsing_stops_at_the_first_syntax_error() -> None:
    text = "settings {\n  realm = api\n}\nroute get /a {\n}\n"
    assert [d.code for d in diagnose(text)] == ["PA002"]


def test_shape_problems_are_reported_together() -> None:
    """Problems found while building the tree (not syntax errors) are all reported at once."""
    text = (
        "settings {\n"
        '  realm   = "a\\qb"\n'
        "  timeout = 5min\n"
        "}\n"
        "route get, FETCH /a/**/b {\n"
        "  public\n"
        "}\n"
    )
    found = [(d.code, d.line, d.column, d.message) for d in diagnose(text)]
    assert found == [
        ("PA008", 2, 15, "unknown escape `\\q` in a string"),
        ("PA006", 3, 13, "invalid duration `5min`"),
        ("PA004", 5, 7, "method `get` must be written in upper case"),
        ("PA004", 5, 12, "unknown method `FETCH`"),
        ("PA005", 5, 18, "`**` must be the last segment of a pattern"),
    ]


def test_unicode_escapes_and_known_escapes_are_fine() -> None:
    policy = policyauth.loads('tokens t {\n  store = "caf\\u00e9 \\"x\\" \\\\ \\t\\n"\n}\n')
    assert policy.tokens["t"].store == 'caf\u00e9 "x" \\ \t\n'


def test_too_deep() -> None:
    text = route("allow if " + "(" * 5000 + "username == 1" + ")" * 5000)
    [diagnostic] = diagnose(text)
    assert (diagnostic.code, diagnostic.line, diagnostic.column, diagnostic.message) == (
        "PA009",
        1,
        1,
        "the policy is nested too deeply to read",
    )


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.policy"
    with pytest.raises(policyauth.PolicyError) as caught:
        policyauth.load(missing)
    [diagnostic] = caught.value.diagnostics
    assert (diagnostic.code, diagnostic.line, diagnostic.column) == ("PA010", 1, 1)
    assert diagnostic.message == "cannot read the file: No such file or directory"
    assert diagnostic.file == str(missing)


def test_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.policy"
    path.write_bytes('settings {\n  realm = "caf\u00e9"\n}\n'.encode("latin-1"))
    with pytest.raises(policyauth.PolicyError) as caught:
        policyauth.load(path)
    [diagnostic] = caught.value.diagnostics
    assert (diagnostic.code, diagnostic.line, diagnostic.column, diagnostic.message) == (
        "PA011",
        2,
        15,
        "the file is not valid UTF-8",
    )


def test_byte_order_mark_is_allowed(tmp_path: Path) -> None:
    path = tmp_path / "bom.policy"
    path.write_bytes(b"\xef\xbb\xbfroute GET /a {\n  public\n}\n")
    assert len(policyauth.load(path).routes) == 1


def test_byte_order_mark_in_text_is_allowed() -> None:
    policy, diagnostics = policyauth.analyze("\ufeffroute GET /a {\n  public\n}\n")
    assert diagnostics == []
    assert policy is not None


def test_crlf_line_endings() -> None:
    text = PROVIDER + "route GET /a {  # the route\n  auth corp\n  allow\n}\n"
    crlf = text.replace("\n", "\r\n")
    tree = parse(crlf, "t.policy")
    assert tree == parse(text, "t.policy")
    assert [c.text for c in tree.comments] == ["# the route"]
    [diagnostic] = diagnose(crlf.replace("allow", "allow if"))
    assert (diagnostic.code, diagnostic.line, diagnostic.column) == ("PA002", 10, 1)
    assert diagnostic.source_line == "}"
