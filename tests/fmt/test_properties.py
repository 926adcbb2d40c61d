"""Properties of the formatter over generated valid policies.

The strategy builds policies token by token from the grammar's constructs (settings; providers
with claims, `success`, headers, lists and env values; tokens blocks; routes with methods,
patterns, `public` or `auth` and rules whose expressions use and/or/not, parentheses and every
comparison), then lays the tokens out at random: spaces, tabs, line breaks, blank lines, and
comments at line ends and on lines of their own, between any two tokens (so inside headers,
lists and multi-line expressions too). Strings are written with random escapes, so that
re-encoding is exercised.

Properties: formatting keeps the tree and every comment (by text, in order), formatting twice
changes nothing, and two layouts of the same tokens without blank lines or comments format alike.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policyauth.language.formatter import format_policy
from policyauth.language.parser import METHODS, parse

FAST = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

KEYWORDS = {
    "settings", "provider", "tokens", "route", "public", "auth", "allow", "deny", "if", "and",
    "or", "not", "in", "matches", "startswith", "endswith", "true", "false", "env", "success",
    "method", "path", "param", "has",
}  # fmt: skip

Tokens = list[str]

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,8}", fullmatch=True).filter(
    lambda n: n not in KEYWORDS
)
param_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True)
numbers = st.from_regex(r"-?[0-9]{1,4}(\.[0-9]{1,3})?", fullmatch=True)
durations = st.from_regex(r"[0-9]{1,4}(ms|s|m|h|d)", fullmatch=True)
sizes = st.from_regex(r"[0-9]{1,4}(KB|MB|GB)", fullmatch=True)
claim_paths = st.sampled_from(
    [
        "$",
        "$.email",
        "$.realm_access.roles[*]",
        "$.data.teams[*].slug",
        "$['cognito:groups'][*]",
        '$["https://example.com/roles"][*]',
        "$.value[0].id",
        "$..email",
        "$.*",
    ]
) | st.from_regex(r"\$(\.[a-z_][a-z0-9_]{0,5}|\[\*\]|\[[0-9]\]){1,4}", fullmatch=True)
regexes = st.from_regex(r"/([a-z0-9.*+?^$|(){}\[\] #-]|\\/|\\\\|\\d){1,8}/", fullmatch=True)

_SHORT = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t"}


@st.composite
def strings(draw: st.DrawFn) -> str:
    """A string literal, each character written raw or as one of the escapes that means it."""
    chars = draw(
        st.lists(
            st.characters(exclude_categories=("Cs",)) | st.sampled_from([*_SHORT, "\ud800", " "]),
            max_size=6,
        )
    )
    out = []
    for char in chars:
        options = []
        if char not in '"\\\n' and not 0xD800 <= ord(char) <= 0xDFFF:
            options.append(char)
        if char in _SHORT:
            options.append(_SHORT[char])
        if ord(char) <= 0xFFFF:
            options += [f"\\u{ord(char):04x}", f"\\u{ord(char):04X}"]
        out.append(draw(st.sampled_from(options)))
    return '"' + "".join(out) + '"'


def separated(items: list[Tokens], trailing_comma: bool = False) -> Tokens:
    out: Tokens = []
    for index, item in enumerate(items):
        if index:
            out.append(",")
        out += item
    if trailing_comma and items:
        out.append(",")
    return out


# --- values -------------------------------------------------------------------------------------

scalar_values = st.one_of(
    strings().map(lambda s: [s]),
    numbers.map(lambda n: [n]),
    durations.map(lambda d: [d]),
    sizes.map(lambda s: [s]),
    st.sampled_from([["true"], ["false"]]),
    st.tuples(strings(), st.none() | strings()).map(
        lambda t: ["env", "(", t[0], ")"] if t[1] is None else ["env", "(", t[0], ",", t[1], ")"]
    ),
    claim_paths.map(lambda p: [p]),
)


def _containers(children: st.SearchStrategy[Tokens]) -> st.SearchStrategy[Tokens]:
    lists = st.tuples(st.lists(children, max_size=3), st.booleans()).map(
        lambda t: ["[", *separated(t[0], t[1] and bool(t[0])), "]"]
    )
    maps = st.tuples(st.lists(st.tuples(strings(), children), max_size=3), st.booleans()).map(
        lambda t: ["{", *separated([[k, ":", *v] for k, v in t[0]], t[1]), "}"]
    )
    return lists | maps


values = st.recursive(scalar_values, _containers, max_leaves=5)
settings_entries = st.tuples(names, values).map(lambda t: [t[0], "=", *t[1]])


# --- expressions --------------------------------------------------------------------------------

literals = st.one_of(
    strings().map(lambda s: [s]), numbers.map(lambda n: [n]), st.sampled_from([["true"], ["false"]])
)
operands = st.one_of(
    literals,
    st.tuples(st.lists(literals, max_size=3), st.booleans()).map(
        lambda t: ["[", *separated(t[0], t[1]), "]"]
    ),
    names.map(lambda n: [n]),
    st.sampled_from([["provider"], ["method"], ["path"]]),
    param_names.map(lambda n: [f"param.{n}"]),
    claim_paths.map(lambda p: [p]),
)
comparisons = st.one_of(
    operands,
    st.tuples(
        operands, st.sampled_from(["==", "!=", "in", "startswith", "endswith"]), operands
    ).map(lambda t: [*t[0], t[1], *t[2]]),
    st.tuples(operands, operands).map(lambda t: [*t[0], "not", "in", *t[1]]),
    st.tuples(operands, regexes).map(lambda t: [*t[0], "matches", t[1]]),
    operands.map(lambda t: ["has", *t]),
)

# An expression is (tokens, level): 0 an `or`, 1 an `and`, 2 anything tighter.
Expr = tuple[Tokens, int]


def _wrap(expr: Expr, level: int, always: bool) -> Tokens:
    tokens, own = expr
    return ["(", *tokens, ")"] if always or own < level else tokens


def _compound(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    negation = st.tuples(children, st.booleans()).map(lambda t: (["not", *_wrap(t[0], 2, t[1])], 2))
    conjunction = st.lists(st.tuples(children, st.booleans()), min_size=2, max_size=3).map(
        lambda items: (separated_by("and", [_wrap(e, 1, p) for e, p in items]), 1)
    )
    disjunction = st.lists(st.tuples(children, st.booleans()), min_size=2, max_size=3).map(
        lambda items: (separated_by("or", [_wrap(e, 0, p) for e, p in items]), 0)
    )
    grouped = children.map(lambda e: (["(", *e[0], ")"], 2))
    return negation | conjunction | disjunction | grouped


def separated_by(word: str, items: list[Tokens]) -> Tokens:
    out: Tokens = []
    for index, item in enumerate(items):
        if index:
            out.append(word)
        out += item
    return out


expressions = st.recursive(comparisons.map(lambda t: (t, 2)), _compound, max_leaves=6).map(
    lambda e: e[0]
)


# --- declarations -------------------------------------------------------------------------------


def block(header: Tokens, entries: list[Tokens]) -> Tokens:
    return [*header, "{", *[t for e in entries for t in e], "}"]


settings_blocks = st.lists(settings_entries, max_size=4).map(lambda e: block(["settings"], e))
tokens_blocks = st.tuples(names, st.lists(settings_entries, max_size=3)).map(
    lambda t: block(["tokens", t[0]], t[1])
)
provider_entries = settings_entries | expressions.map(lambda e: ["success", "=", *e])
provider_blocks = st.tuples(names, st.lists(provider_entries, max_size=5)).map(
    lambda t: block(["provider", t[0]], t[1])
)

methods = st.one_of(
    st.just(["*"]),
    st.lists(st.sampled_from(METHODS), min_size=1, max_size=3, unique=True).map(
        lambda ms: separated([[m] for m in ms])
    ),
)
literal_segments = st.from_regex(r"[a-z0-9._~-]{1,6}", fullmatch=True).filter(
    lambda s: s not in (".", "..")
)


@st.composite
def patterns(draw: st.DrawFn) -> str:
    count = draw(st.integers(0, 4))
    segments: list[str] = []
    params: set[str] = set()
    for index in range(count):
        kind = draw(st.sampled_from(["literal", "literal", "star", "param", "rest"]))
        if kind == "rest" and index == count - 1:
            segments.append("**")
        elif kind == "star":
            segments.append("*")
        elif kind == "param":
            name = draw(param_names.filter(lambda n: n not in params))
            params.add(name)
            segments.append("{" + name + "}")
        else:
            segments.append(draw(literal_segments))
    return "/" + "/".join(segments)


rules = st.one_of(
    st.just(["allow"]),
    expressions.map(lambda e: ["allow", "if", *e]),
    expressions.map(lambda e: ["deny", "if", *e]),
    # labelled rules (`allow "readers" if ...`), which the formatter must keep
    strings().map(lambda label: ["allow", label]),
    st.tuples(strings(), expressions).map(lambda t: ["allow", t[0], "if", *t[1]]),
    st.tuples(strings(), expressions).map(lambda t: ["deny", t[0], "if", *t[1]]),
)
route_bodies = st.one_of(
    st.just(["public"]),
    st.tuples(st.lists(names, min_size=1, max_size=3), st.lists(rules, max_size=4)).map(
        lambda t: ["auth", *separated([[n] for n in t[0]]), *[x for r in t[1] for x in r]]
    ),
)
route_blocks = st.tuples(methods, patterns(), route_bodies).map(
    lambda t: ["route", *t[0], t[1], "{", *t[2], "}"]
)
policies = st.lists(
    st.one_of(settings_blocks, provider_blocks, tokens_blocks, route_blocks), max_size=4
).map(lambda blocks: [t for b in blocks for t in b])


# --- layout -------------------------------------------------------------------------------------

comment_texts = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\r\n")
    | st.sampled_from(["#", " ", "\x0b", "\u2028", "\x85"]),
    max_size=12,
).map(lambda t: "#" + t.rstrip())
indents = st.sampled_from(["", "  ", "    ", "\t"])
trailing_comments = st.tuples(st.sampled_from([" ", "  ", "      "]), comment_texts, indents).map(
    lambda t: f"{t[0]}{t[1]}\n{t[2]}"
)
own_line_comments = st.tuples(indents, comment_texts, st.sampled_from(["", "\n"]), indents).map(
    lambda t: f"\n{t[0]}{t[1]}\n{t[2]}{t[3]}"
)
plain_space = st.sampled_from([" ", "  ", "\t", "\n", "\n  ", " \n    "])
any_space = plain_space | st.sampled_from(["\n\n", "\n\n\n  "])
separators = st.one_of(any_space, any_space, any_space, trailing_comments, own_line_comments)


@st.composite
def laid_out(
    draw: st.DrawFn, tokens: Tokens, spaces: st.SearchStrategy[str], edges: bool = True
) -> str:
    """`tokens` joined by drawn separators (with comments before and after, if `edges`)."""
    parts = [draw(st.sampled_from(["", "\n"]) | own_line_comments) if edges else ""]
    for index, token in enumerate(tokens):
        if index:
            parts.append(draw(spaces))
        parts.append(token)
    if edges:
        parts.append(draw(st.sampled_from(["", "\n"]) | trailing_comments | own_line_comments))
    return "".join(parts)


@st.composite
def policy_texts(draw: st.DrawFn) -> str:
    return draw(laid_out(draw(policies), separators))


@FAST
@given(policy_texts())
def test_fmt_keeps_the_tree_and_every_comment_and_is_idempotent(text: str):
    original = parse(text)
    formatted = format_policy(text)
    again = parse(formatted)
    # Policy equality is declarations (spans aside) and comments by text, in order.
    assert again == original
    assert [c.text for c in again.comments] == [c.text for c in original.comments]
    assert format_policy(formatted) == formatted


@FAST
@given(st.data())
def test_two_layouts_of_the_same_tokens_format_alike(data: st.DataObject):
    tokens = data.draw(policies)
    first = data.draw(laid_out(tokens, plain_space, edges=False))
    second = data.draw(laid_out(tokens, plain_space, edges=False))
    assert format_policy(first) == format_policy(second)
