"""A brute-force oracle for `policyauth diff`: what it reports is exactly what flips.

For random pairs of small policies (a few routes and rules each), every request of a fixed set
of paths, methods and credentials is decided by the real engine under both versions (an Engine
with a StaticIdentitySource: the claim paths, the choice of authenticator and the rules run as
in production, only the network is left out). Then:

- every class `diff` reports as changing contains at least one request decided differently,
  with the old and new status, reason and deciding rule the class states, unless it is a
  "possibly changes" class (which promises no difference, only that one may hide);
- every request decided differently falls in a reported class: its methods, its path region
  (the class's pattern, and the same patterns of both policies as the class's example path),
  its authenticator and the truth of every atom the class's identity condition names.

The run is deterministic (a fixed example database is not needed: `derandomize=True`) and
small enough for the normal suite; `POLICYAUTH_ORACLE_EXAMPLES=1000` runs a longer search, and
`POLICYAUTH_ORACLE_NO_SHRINK=1` reports its first failure without minimizing it (minutes saved).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from hypothesis import HealthCheck, Phase, given, reject, settings
from hypothesis import strategies as st

from policyauth import Engine
from policyauth.analysis.diff import Change, DiffReport, Loaded, diff_policies, load_for_diff
from policyauth.compiler import Facts, RoutePlan
from policyauth.compiler.expressions import RuleError, compile_expr
from policyauth.compiler.plan import rule_refs
from policyauth.decision import Decision
from policyauth.diagnostics import PolicyError
from policyauth.identity.source import StaticIdentitySource
from policyauth.language import ast
from policyauth.language.routing import contains
from policyauth.request import canonical_target

EXAMPLES = int(os.environ.get("POLICYAUTH_ORACLE_EXAMPLES", "50"))
NO_SHRINK = os.environ.get("POLICYAUTH_ORACLE_NO_SHRINK") == "1"  # report the first failure as is

# --- the policies ---------------------------------------------------------------------------------

SEGMENTS = ("a", "b")
PARAMS = ("id", "name")


def provider_block(prefix: str | None) -> str:
    line = f'  token_prefix = "{prefix}"\n' if prefix else ""
    return (
        "provider corp {\n"
        '  userinfo = "https://sso.example.com/userinfo"\n'
        f"{line}"
        "  username = $.sub\n"
        "  groups   = $.groups[*]\n"
        "  email    = $.email\n"
        "}\n\n"
        "tokens bots {\n"
        '  store = "bots.tokens"\n'
        "}\n"
    )


@st.composite
def patterns(draw: st.DrawFn) -> tuple[str, ...]:
    length = draw(st.integers(1, 3))
    parts: list[str] = []
    for position in range(length):
        last = position == length - 1
        kinds = ["literal", "literal", "star", "param"] + (["rest"] if last else [])
        kind = draw(st.sampled_from(kinds))
        if kind == "literal":
            parts.append(draw(st.sampled_from(SEGMENTS)))
        elif kind == "star":
            parts.append("*")
        elif kind == "rest":
            parts.append("**")
        else:
            free = [p for p in PARAMS if f"{{{p}}}" not in parts]
            parts.append(f"{{{draw(st.sampled_from(free))}}}" if free else "*")
    return tuple(parts)


def atom_choices(params: Sequence[str]) -> list[str]:
    atoms = [
        '"g1" in groups',
        '"g2" in groups',
        'email endswith "@x.com"',
        'email startswith "alice"',
        'username == "alice"',
        'username != "bob"',
        "username matches /al.*/",
        "username matches /.*ob/",
        'method == "GET"',
        'method in ["POST", "DELETE"]',
        'provider == "corp"',
    ]
    for name in params:
        atoms += [
            f"param.{name} == username",
            f'param.{name} == "a"',
            f"param.{name} matches /b.*/",
        ]
    return atoms


@st.composite
def conditions(draw: st.DrawFn, params: Sequence[str], depth: int = 0) -> str:
    atom = st.sampled_from(atom_choices(params))
    if depth >= 1:
        return draw(atom)
    shape = draw(st.sampled_from(["atom", "atom", "not", "and", "or"]))
    if shape == "atom":
        return draw(atom)
    if shape == "not":
        return f"not ({draw(atom)})"
    left = draw(conditions(params, depth + 1))
    right = draw(conditions(params, depth + 1))
    return f"{left} {shape} {right}"


@st.composite
def routes(draw: st.DrawFn) -> str:
    methods = draw(st.sampled_from(["GET", "POST", "GET, DELETE", "*"]))
    pattern = draw(patterns())
    head = f"route {methods} /{'/'.join(pattern)} {{\n"
    if draw(st.integers(0, 5)) == 0:
        return head + "  public\n}\n"
    auth = draw(st.sampled_from(["corp", "corp", "bots", "corp, bots"]))
    params = [p[1:-1] for p in pattern if p.startswith("{")]
    lines = [f"  auth {auth}"]
    if draw(st.booleans()):
        lines.append(f"  deny if {draw(conditions(params))}")
    for _ in range(draw(st.integers(1, 2))):
        if draw(st.integers(0, 4)) == 0:
            lines.append("  allow")
        else:
            lines.append(f"  allow if {draw(conditions(params))}")
    return head + "\n".join(lines) + "\n}\n"


@attrs.frozen
class Version:
    text: str
    prefix: str | None


@st.composite
def versions(draw: st.DrawFn) -> Version:
    prefix = draw(st.sampled_from([None, None, "c_"]))
    body = "\n".join(draw(st.lists(routes(), min_size=1, max_size=3)))
    return Version(provider_block(prefix) + "\n" + body, prefix)


@st.composite
def policy_pairs(draw: st.DrawFn) -> tuple[Version, Version]:
    """An old version, and a new one that is an edit of it (so that most routes line up) or a
    second independent policy."""
    old = draw(versions())
    if draw(st.integers(0, 3)) == 0:
        return old, draw(versions())
    blocks = old.text.split("\n\n")
    head, body = blocks[:2], blocks[2:]
    edit = draw(st.sampled_from(["replace", "insert", "delete", "swap", "prefix"]))
    if edit == "replace" or (edit in ("delete", "swap") and len(body) < 2):
        body[draw(st.integers(0, len(body) - 1))] = draw(routes())
    elif edit == "insert":
        body.insert(draw(st.integers(0, len(body))), draw(routes()))
    elif edit == "delete":
        del body[draw(st.integers(0, len(body) - 1))]
    elif edit == "swap":
        i = draw(st.integers(0, len(body) - 2))
        body[i], body[i + 1] = body[i + 1], body[i]
    else:
        prefix = None if old.prefix else "c_"
        head = [provider_block(prefix).split("\n\n")[0], head[1]]
        return old, Version("\n\n".join(head + body), prefix)
    return old, Version("\n\n".join(head + body), old.prefix)


# --- the requests ---------------------------------------------------------------------------------

PATH_SEGMENTS = ("a", "b", "alice", "bob", "z")  # literals, param values, and a fresh one
PATHS = ["/"] + [
    "/" + "/".join(parts)
    for length in (1, 2, 3, 4)
    for parts in itertools.product(PATH_SEGMENTS if length < 4 else ("a", "b", "z"), repeat=length)
]
PATHS += ["/a/a/a/a/a", "/z/b/a/alice/bob"]  # what only `**` takes
METHODS = ("GET", "HEAD", "POST", "DELETE", "PATCH")


@attrs.frozen
class Credential:
    """A request's credentials and the identity class the diff puts it in."""

    name: str
    headers: tuple[tuple[str, str], ...]
    authenticator: str  # "" no credentials, "*" no authenticator takes it, else its name
    # What the authenticator's identity holds (for atom truths); the name tells credentials apart.
    claims: Mapping[str, Any] = attrs.field(eq=False)
    issuer: str = attrs.field(default="", eq=False)  # the authenticator that knows the token
    document: Mapping[str, Any] = attrs.field(factory=dict, eq=False)


# Each combination of the username atoms (== "alice", != "bob", /al.*/, /.*ob/), and the path
# segments a parameter compared with `username` can hold (the literals, and "z" for any other).
USERNAMES = ("alice", "bob", "z", "a", "b", "rob", "alob", "alan")


def corp_documents() -> Iterator[dict[str, Any]]:
    for sub, groups, email in itertools.product(
        USERNAMES,
        (None, [], ["g1"], ["g2"], ["g1", "g2"]),
        (None, "alice@x.com", "alice@y.com", "bob@x.com", "carol"),
    ):
        document: dict[str, Any] = {}
        for key, value in (("sub", sub), ("groups", groups), ("email", email)):
            if value is not None:
                document[key] = value
        yield document


def all_corp_documents() -> list[dict[str, Any]]:
    return [*corp_documents(), {"groups": ["g1"], "email": "alice@x.com"}]


BOT_RECORDS = tuple(
    {"username": user, "groups": groups}
    for user, groups in itertools.product(USERNAMES, ([], ["g1"], ["g2"], ["g2", "g1"]))
)


def credentials(prefix: str | None) -> list[Credential]:
    """No credentials, a token of each corp identity (with the prefix the provider takes), one
    whose answer has no username, each bot's API token, and a token nobody issued."""
    found = [Credential("none", (), "", {})]
    for number, document in enumerate(all_corp_documents()):
        claims: dict[str, Any] = {k: document[k] for k in ("groups", "email") if k in document}
        token = f"{prefix or ''}corp{number}"
        # Without a username the provider's answer is refused (401 invalid_token), as for a
        # token nobody issued: the diff's class of credentials no authenticator takes.
        taken_by = "corp" if "sub" in document else "*"
        claims["username"] = document.get("sub")
        headers = (("authorization", f"Bearer {token}"),)
        found.append(Credential(token, headers, taken_by, claims, "corp", document))
    for number, record in enumerate(BOT_RECORDS):
        token = f"pa_bot{number}"
        headers = (("authorization", f"Bearer {token}"),)
        found.append(Credential(token, headers, "bots", record, "bots", record))
    found.append(Credential("unknown", (("authorization", "Bearer pa_nobody"),), "*", {}))
    return found


def documents(creds: Sequence[Credential]) -> dict[tuple[str, str], Any]:
    """What the identity source answers for each token (a userinfo document for corp)."""
    return {(c.issuer, c.name): c.document for c in creds if c.issuer}


# --- the oracle -----------------------------------------------------------------------------------


@attrs.frozen
class Request:
    method: str
    path: str
    credential: Credential
    # The method, both routes and their captures: all that a rule or an atom can read of it.
    routed: str = attrs.field(eq=False)
    routes: tuple[RoutePlan | None, ...] = attrs.field(eq=False)
    segments: Sequence[str] = attrs.field(eq=False)


@attrs.frozen
class Seen:
    status: int
    reason: str
    where: str | None  # file:line of the deciding rule, or of the route

    @property
    def decision(self) -> tuple[int, str]:
        return self.status, self.reason


def observed(decision: Decision) -> Seen:
    span = decision.rule or decision.route
    where = None if span is None else f"{span.file}:{span.line}"
    return Seen(decision.status, decision.reason.value, where)


@attrs.define
class Decided:
    """Both versions' answers to every request of the set.

    `routed` gives, for each path and method, a key naming the method, both routes and their
    captured parameters (all a rule or an atom can read of the request but the identity), and
    `answers` both decisions per key and credential.
    """

    routed: dict[tuple[str, str], tuple[str, tuple[RoutePlan | None, ...], list[str]]]
    answers: dict[tuple[str, str], tuple[Seen, Seen]]

    def request(self, path: str, method: str, credential: Credential) -> Request:
        key, routes, segments = self.routed[(path, method)]
        return Request(method, path, credential, key, routes, segments)

    def answer(self, request: Request) -> tuple[Seen, Seen]:
        return self.answers[(request.routed, request.credential.name)]


def decide(sides: Sequence[Loaded], creds: Sequence[Credential]) -> Decided:
    """Every request of the set, decided by the engine under both versions.

    Requests whose method, routes and captured parameters are the same in both versions take
    the answers of the first such one: the generated rules never read `path`, so nothing else
    can tell them apart (the routes come from the plans' own `route_for`, as in the engine).
    """
    engines = [
        Engine(side.plan, identities=StaticIdentitySource(side.plan, documents(creds)))
        for side in sides
    ]
    one_side: dict[tuple[Any, ...], Seen] = {}  # one version's answer by what decides it
    decided = Decided({}, {})
    try:
        for path in PATHS:
            segments = Membership.segments(path)
            for method in METHODS:
                routes = tuple(side.plan.route_for(method, segments) for side in sides)
                sides_key = [
                    (number, method, None if r is None else (r.index, repr(r.capture(segments))))
                    for number, r in enumerate(routes)
                ]
                key = repr(sides_key)
                decided.routed[(path, method)] = (key, routes, segments)
                if (key, creds[0].name) in decided.answers:
                    continue
                for credential in creds:
                    seen = []
                    for engine, side_key in zip(engines, sides_key, strict=True):
                        memo = (*side_key, credential.name)
                        if memo not in one_side:
                            decision = engine.authorize_sync(method, path, credential.headers)
                            one_side[memo] = observed(decision)
                        seen.append(one_side[memo])
                    decided.answers[(key, credential.name)] = (seen[0], seen[1])
    finally:
        for engine in engines:
            engine.close()
    return decided


def atom_texts(loaded: Loaded) -> dict[tuple[int, str], ast.Expr]:
    """Each atom of each route's rules by (route index, source text)."""
    lines = loaded.model.source.splitlines()
    found: dict[tuple[int, str], ast.Expr] = {}
    for index, decl in enumerate(loaded.model.routes):
        if not isinstance(decl.body, ast.Auth):
            continue
        for rule in decl.body.rules:
            for atom in leaves(rule.condition):
                span = atom.span
                text = lines[span.line - 1][span.column - 1 : span.end_column - 1]
                found.setdefault((index, " ".join(text.split())), atom)
    return found


def leaves(expr: ast.Expr | None) -> Iterator[ast.Expr]:
    if expr is None:
        return
    if isinstance(expr, ast.Logical):
        for operand in expr.operands:
            yield from leaves(operand)
    elif isinstance(expr, ast.Not):
        yield from leaves(expr.operand)
    else:
        yield expr


class Membership:
    """Whether a concrete request falls in a reported class."""

    def __init__(self, old: Loaded, new: Loaded) -> None:
        self.sides = (old, new)
        self.atoms = (atom_texts(old), atom_texts(new))
        self.patterns = [d.pattern.segments for s in self.sides for d in s.model.routes]
        self.signatures: dict[str, frozenset[int]] = {}
        self.tests: dict[int, Any] = {}  # atoms compiled once (the models keep them alive)
        self.parts: dict[str, list[str]] = {}

    def matched(self, path: str) -> frozenset[int]:
        """The patterns of both policies that take the path: a path region's signature."""
        if path not in self.signatures:
            self.signatures[path] = self._matched(path)
        return self.signatures[path]

    def _matched(self, path: str) -> frozenset[int]:
        request = canonical_target("GET", path)
        assert not isinstance(request, Exception)
        segments = [ast.PatternSegment(ast.Segment.LITERAL, s) for s in request.segments]  # type: ignore[union-attr]
        return frozenset(i for i, p in enumerate(self.patterns) if contains(p, segments))

    def region(self, change: Change, path: str) -> bool:
        shown = [s for s in change.pattern.split("/")[1:]]
        parts = path.split("/")[1:] if path != "/" else []
        if change.pattern == "/":
            shown = []
        if shown and shown[-1] == "**":
            if len(parts) < len(shown):
                return False
            parts = parts[: len(shown) - 1]
            shown = shown[:-1]
        if len(parts) != len(shown):
            return False
        if any(s not in ("*", p) for s, p in zip(shown, parts, strict=True)):
            return False
        return self.matched(path) == self.matched(change.example)

    def truth(self, text: str, request: Request) -> str:
        """The atom named `text` in a class's condition, as the route that holds it reads it:
        the old route's first (the diff names an atom by its text, old version first)."""
        for route, atoms in zip(request.routes, self.atoms, strict=True):
            if route is None:
                continue
            atom = atoms.get((route.index, text))
            if atom is None:
                continue
            facts = Facts(
                request.credential.claims,
                request.credential.authenticator,
                "GET" if request.method == "HEAD" else request.method,
                request.path,
                route.capture(request.segments),
            )
            if id(atom) not in self.tests:
                self.tests[id(atom)] = compile_expr(atom, rule_refs)
            try:
                return "true" if self.tests[id(atom)](facts) else "false"
            except RuleError:
                return "error"
        raise AssertionError(f"the condition names {text!r}, which neither route holds")

    @staticmethod
    def segments(path: str) -> list[str]:
        request = canonical_target("GET", path)
        return list(request.segments)  # type: ignore[union-attr]

    def authenticator(self, request: Request) -> str:
        """The credential's identity class for the two routes the request reaches: its
        authenticator when one of them names it, else one no authenticator takes."""
        taken_by = request.credential.authenticator
        if taken_by in ("", "*"):
            return taken_by
        for route in request.routes:
            if route is not None and taken_by in route.authenticators:
                return taken_by
        return "*"

    def identity(self, change: Change, request: Request) -> bool:
        authenticator = self.authenticator(request)
        if change.identity == "no credentials":
            return authenticator == ""
        if change.identity == "a credential no authenticator of the route takes":
            return authenticator == "*"
        head, _, rest = change.identity.partition(" and ")
        provider = head.split(":")[0].removeprefix("provider == ").strip('"')
        if provider != authenticator:
            return False
        if change.possibly:
            return True
        if rest not in self.parts:
            self.parts[rest] = split_condition(rest)
        for part in self.parts[rest]:
            if part.startswith("not (") and part.endswith(")"):
                wanted, text = {"false"}, part[5:-1]
            elif part.endswith(") errors"):
                wanted, text = {"error"}, part[1 : -len(") errors")]
            elif part.endswith(") does not hold"):
                wanted, text = {"false", "error"}, part[1 : -len(") does not hold")]
            else:
                wanted, text = {"true"}, part
            if self.truth(text, request) not in wanted:
                return False
        return True

    def contains(self, change: Change, request: Request) -> bool:
        """Whether the request is in the class (its path region already checked)."""
        return method_in(change, request.method) and self.identity(change, request)


def method_in(change: Change, method: str) -> bool:
    """A class's methods name GET for GET and HEAD (GET brings HEAD along)."""
    return method in change.methods or (method == "HEAD" and "GET" in change.methods)


def split_condition(rest: str) -> list[str]:
    """The parts of `a and not (b) and (c) errors`, splitting on ` and ` outside brackets and
    quotes (the generated atoms hold no ` and ` of their own)."""
    if not rest:
        return []
    parts, depth, quoted, start = [], 0, False, 0
    index = 0
    while index < len(rest):
        char = rest[index]
        if char == '"':
            quoted = not quoted
        elif not quoted and char in "([":
            depth += 1
        elif not quoted and char in ")]":
            depth -= 1
        elif not quoted and depth == 0 and rest.startswith(" and ", index):
            parts.append(rest[start:index])
            index += 5
            start = index
            continue
        index += 1
    parts.append(rest[start:])
    return parts


def check_oracle(folder: Path, old: Version, new: Version) -> None:
    (folder / "bots.tokens").write_text("", encoding="utf-8")
    (folder / "old.policy").write_text(old.text, encoding="utf-8")
    (folder / "new.policy").write_text(new.text, encoding="utf-8")
    try:
        loaded = (load_for_diff(folder / "old.policy"), load_for_diff(folder / "new.policy"))
    except PolicyError:
        reject()  # a duplicate route, say: `diff` exits 2 on it, tested elsewhere
    report = diff_policies(*loaded)
    if old.prefix != new.prefix:
        assert [s.name for s in report.settings] == ["provider corp"], report.settings
        assert report.flips
        return  # the same token now reaches another authenticator: listed as a setting
    assert report.settings == ()
    creds = credentials(old.prefix)
    decided = decide(loaded, creds)
    membership = Membership(*loaded)
    shown = render(report, old, new)
    regions: dict[str, list[Change]] = {
        path: [c for c in report.changes if membership.region(c, path)] for path in PATHS
    }
    holds: dict[tuple[int, str, str], bool] = {}  # class membership by what decides it

    def classes(request: Request) -> list[Change]:
        found = []
        for change in regions[request.path]:
            memo = (id(change), request.routed, request.credential.name)
            if memo not in holds:
                holds[memo] = membership.contains(change, request)
            if holds[memo]:
                found.append(change)
        return found

    flipped: dict[Change, list[Request]] = {c: [] for c in report.changes}
    done: set[tuple[str, tuple[int, ...]]] = set()
    for path, method in decided.routed:
        # Requests with the same routes, captures and candidate classes are alike: one path
        # of each such group is enough.
        here = tuple(id(c) for c in regions[path] if method_in(c, method))
        group = (decided.routed[(path, method)][0], here)
        if group in done:
            continue
        done.add(group)
        for credential in creds:
            request = decided.request(path, method, credential)
            before, after = decided.answer(request)
            within = classes(request)
            for change in within:
                # A class is exact: every request in it is decided as it says (a condition
                # wider than the truth would hold requests that do not flip, or flip otherwise).
                assert change.possibly or (before.decision, after.decision) == (
                    (change.old.status, change.old.reason),
                    (change.new.status, change.new.reason),
                ), (
                    f"{method} {path} with {credential.name} ({dict(credential.claims)}) is in "
                    f"{change} but decided {before} -> {after}\n{shown}"
                )
            if before.decision == after.decision:
                continue
            assert within, (
                f"{method} {path} with {credential.name} ({dict(credential.claims)}) flips "
                f"{before} -> {after} outside every reported class\n{shown}"
            )
            for change in within:
                flipped[change].append(request)
    for change, requests in flipped.items():
        if change.possibly:
            continue
        assert requests, f"a reported class holds no differing request: {change}\n{shown}"
        stated = (
            Seen(change.old.status, change.old.reason, change.old.where),
            Seen(change.new.status, change.new.reason, change.new.where),
        )
        assert any(decided.answer(r) == stated for r in requests), (
            f"no request of the class is decided with the rules it names: {change}\n{shown}"
        )


def render(report: DiffReport, old: Version, new: Version) -> str:
    from policyauth.cli.diff import render as text

    return f"--- old\n{old.text}\n--- new\n{new.text}\n--- diff\n{text(report, 'text')}"


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.generate] if NO_SHRINK else list(Phase),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(pair=policy_pairs())
def test_diff_reports_exactly_the_requests_that_flip(
    tmp_path: Path, pair: tuple[Version, Version]
) -> None:
    check_oracle(tmp_path, *pair)
