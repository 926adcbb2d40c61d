"""`policyauth diff`: the classes of requests two versions of a policy decide differently.

Why concrete witnesses: the request space is split into classes inside which neither policy
can decide two requests differently, and one concrete request and identity per class is run
through the real evaluator (`evaluate_rules`), so the diff never disagrees with the engine.

- Paths: the patterns of both policies are walked together, segment by segment (one branch per
  literal a live pattern names at that depth, one for "any other segment", one for "the path
  ends here"); a path skeleton is a region in which every path matches the same patterns of
  both policies, so first-match order and shadowing come from `route_for` itself.
- Methods: every method either policy names, the common ones, and one no route names.
- Identities: no credentials, or each authenticator of the two routes; then every value the
  atoms of both routes' rules can tell apart (language/routing.py decides routes; here only
  values matter): the literals compared with each claim or parameter, fresh values equal to
  none of them, prefix and suffix witnesses, a missing claim (three-valued: an error), list
  claims as subsets of the literals tested for membership. Claims compared with each other or
  with a parameter share one pool of values, so `param.id == username` can hold or not.
- A regex atom is decided by the candidate values; when the candidates do not show every
  combination of truth values of the regexes on one operand, a difference may hide in what
  they miss, and a class without a concrete difference is reported as "possibly changes".
- More than MAX_ATOMS atoms on a route pair, or too many valuations: the pair is reported as
  "the rules of this route changed" with both rule lists, never a silent "no change".
"""

from __future__ import annotations

import importlib
import itertools
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs

from policyauth.compiler import Facts, Policy, RoutePlan, compile_policy
from policyauth.compiler.expressions import RuleError, compile_expr
from policyauth.compiler.plan import rule_refs
from policyauth.decision import Decision, Reason
from policyauth.diagnostics import Diagnostic, PolicyError, Span
from policyauth.evaluator import evaluate_rules
from policyauth.identity.source import principal_from
from policyauth.language import ast
from policyauth.language.checker import check
from policyauth.language.claimpath import MISSING
from policyauth.language.model import CheckedPolicy
from policyauth.language.parser import parse
from policyauth.language.regex import compile_regex
from policyauth.language.routing import ALL_METHODS
from policyauth.loader import decode
from policyauth.request import Rejection, canonical_target

# The standard library's own regex parser (no public name): read only to build witnesses, each
# then checked with the real matcher, so a change in its shape costs a witness, never a result.
_sre: Any = importlib.import_module("re._parser")

MAX_ATOMS = 16
MAX_VALUATIONS = 20_000  # per route pair, method and authenticator
_NO_CREDENTIALS = ""  # the identity class of a request without credentials
_OTHER = "*"  # a credential that no authenticator of the routes compared takes


@attrs.frozen
class Loaded:
    """One side of a diff: the checked model (rule atoms, spans) and its compiled plan."""

    model: CheckedPolicy
    plan: Policy


def load_for_diff(path: str | os.PathLike[str]) -> Loaded:
    """Parse, check and compile a policy file once; errors raise PolicyError (diagnostics)."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        span = Span(str(path), 1, 1, 1, 1)
        raise PolicyError(
            [Diagnostic.at(span, "PA010", f"cannot read the file: {exc.strerror or exc}")]
        ) from None
    text = decode(data, str(path)).removeprefix("\ufeff")
    tree = parse(text, str(path))
    model, diagnostics = check(tree, source=text, base_dir=file.parent)
    if model is None:
        raise PolicyError([d for d in diagnostics if d.is_error])
    return Loaded(model, compile_policy(model))


@attrs.frozen
class Outcome:
    """What one policy answers for a class: status, reason and the deciding rule or route."""

    status: int
    reason: str
    rule: str | None  # the deciding rule's text, or the route's for public and 401 answers
    where: str | None  # file:line of that rule or route

    @property
    def short(self) -> str:
        return f"{self.status} {self.reason}"


@attrs.frozen
class Change:
    """One reported class: requests that `old` and `new` decide differently (or may)."""

    methods: tuple[str, ...]
    pattern: str
    example: str
    identity: str  # in policy syntax; "no credentials" or `provider == "x" and ...`
    old: Outcome
    new: Outcome
    possibly: bool = False
    old_rules: tuple[str, ...] = ()  # only for "the rules of this route changed"
    new_rules: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "methods": list(self.methods),
            "pattern": self.pattern,
            "example": self.example,
            "identity": self.identity,
            "old": attrs.asdict(self.old),
            "new": attrs.asdict(self.new),
            "possibly": self.possibly,
            **({"old_rules": list(self.old_rules)} if self.old_rules else {}),
            **({"new_rules": list(self.new_rules)} if self.new_rules else {}),
        }


@attrs.frozen
class SettingChange:
    """A provider, tokens block or setting that changed: decisions may change without a rule."""

    name: str
    fields: tuple[str, ...]
    where: str


@attrs.frozen
class DiffReport:
    changes: tuple[Change, ...]
    settings: tuple[SettingChange, ...]

    @property
    def flips(self) -> bool:
        return bool(self.changes or self.settings)


# --- path regions -------------------------------------------------------------------------------

Skeleton = tuple[str | None, ...]  # a literal segment, or None: any segment no pattern names
_DEEPER = ""  # the last item of a skeleton: one or more segments (no pattern names "")


def _skeletons(patterns: Sequence[tuple[ast.PatternSegment, ...]]) -> Iterator[Skeleton]:
    """Every path region of the patterns together: paths in one region match the same patterns.

    One branch per literal a live pattern names at a depth, one for any other segment (when a
    live pattern takes any segment there, or a `**` is active), and the path ending there.
    """
    rest_kind, literal_kind = ast.Segment.REST, ast.Segment.LITERAL
    stack: list[tuple[Skeleton, tuple[int, ...], bool]] = [((), tuple(range(len(patterns))), False)]
    while stack:
        prefix, live, rest = stack.pop()
        depth = len(prefix)
        rest_here = rest or any(
            len(patterns[i]) > depth and patterns[i][depth].kind is rest_kind for i in live
        )
        if rest_here or any(len(patterns[i]) == depth for i in live):
            yield prefix
        going = [
            i for i in live if len(patterns[i]) > depth and patterns[i][depth].kind is not rest_kind
        ]
        if not going:
            if rest_here:
                yield (*prefix, _DEEPER)  # longer paths, which only `**` routes take
            continue
        wild: list[int] = []
        by_text: dict[str, list[int]] = {}
        for i in going:  # one pass: each branch gets its literal's patterns and the wildcards
            segment = patterns[i][depth]
            if segment.kind is literal_kind:
                by_text.setdefault(segment.text, []).append(i)
            else:
                wild.append(i)
        for text in sorted(by_text):
            live_here = tuple(sorted(by_text[text] + wild)) if wild else tuple(by_text[text])
            stack.append(((*prefix, text), live_here, rest_here))
        if wild or rest_here:
            stack.append(((*prefix, None), tuple(wild), rest_here))


def _display(skeleton: Skeleton) -> str:
    return "/" + "/".join("*" if s is None else "**" if s == _DEEPER else s for s in skeleton)


# --- atoms and value domains ---------------------------------------------------------------------

Atom = ast.Compare | ast.Matches | ast.Truth | ast.Has
Var = tuple[str, str | int]  # ("claim", name) or ("seg", path position)


def _atoms(expr: ast.Expr) -> Iterator[Atom]:
    if isinstance(expr, ast.Logical):
        for operand in expr.operands:
            yield from _atoms(operand)
    elif isinstance(expr, ast.Not):
        yield from _atoms(expr.operand)
    else:
        yield expr


def _var(operand: ast.Operand, params: Mapping[str, int]) -> Var | None:
    if isinstance(operand, ast.ClaimRef):
        return ("claim", operand.name)
    if isinstance(operand, ast.ParamRef) and operand.name in params:
        return ("seg", params[operand.name])
    return None


@attrs.define
class _Domains:
    """Candidate values per variable, gathered from the atoms that read it."""

    literals: dict[Var, set[Any]] = attrs.field(factory=dict)
    prefixes: dict[Var, set[str]] = attrs.field(factory=dict)
    suffixes: dict[Var, set[str]] = attrs.field(factory=dict)
    members: dict[Var, set[Any]] = attrs.field(factory=dict)  # list claims: items tested
    truths: set[Var] = attrs.field(factory=set)
    regexes: dict[Var, list[str]] = attrs.field(factory=dict)
    links: list[tuple[Var, Var]] = attrs.field(factory=list)
    order: dict[Var, None] = attrs.field(factory=dict)

    def see(self, var: Var) -> None:
        self.order.setdefault(var, None)
        self.literals.setdefault(var, set())

    def add(self, atom: Atom, params: Mapping[str, int]) -> None:
        if isinstance(atom, ast.Matches):
            var = _var(atom.subject, params)
            if var is not None:
                self.see(var)
                self.regexes.setdefault(var, []).append(atom.pattern)
            return
        if isinstance(atom, ast.Truth | ast.Has):
            var = _var(atom.operand, params)
            if var is not None:
                self.see(var)
                if isinstance(atom, ast.Truth):
                    self.truths.add(var)
                else:
                    self.literals[var].add("v")
            return
        left, right = _var(atom.left, params), _var(atom.right, params)
        for var in (left, right):
            if var is not None:
                self.see(var)
        op = atom.op
        if op in (ast.CompareOp.IN, ast.CompareOp.NOT_IN):
            if right is not None:  # a list claim: the items tested become its candidates
                items = self.members.setdefault(right, set())
                if isinstance(atom.left, ast.Literal):
                    items.add(atom.left.value)
                elif left is not None:
                    self.links.append((left, right))
            elif left is not None and isinstance(atom.right, ast.ListLiteral):
                self.literals[left].update(item.value for item in atom.right.items)
            return
        if left is not None and right is not None:
            self.links.append((left, right))
            return
        var, other = (left, atom.right) if left is not None else (right, atom.left)
        if var is None or not isinstance(other, ast.Literal):
            return
        if op is ast.CompareOp.STARTSWITH and left is not None:
            self.prefixes.setdefault(var, set()).add(str(other.value))
        elif op is ast.CompareOp.ENDSWITH and left is not None:
            self.suffixes.setdefault(var, set()).add(str(other.value))
        else:
            self.literals[var].add(other.value)

    def _witnesses(self, var: Var, fresh: Sequence[str]) -> set[str]:
        """The values that make the prefix, suffix and regex atoms on `var` hold; a variable
        compared with `var` needs them too, or `param.id == username and username matches
        /.*ob/` would never hold."""
        found = {p + fresh[0] for p in self.prefixes.get(var, set())}
        found |= {fresh[0] + s for s in self.suffixes.get(var, set())}
        for pattern in self.regexes.get(var, []):
            witness = regex_witness(pattern)
            if witness is not None and _full(compile_regex(pattern), witness):
                found.add(witness)
        return found

    def values(self, fresh: Sequence[str]) -> tuple[list[Var], list[list[Any]], set[Var]]:
        """Each variable's candidates; and the operands whose regexes stay undecided."""
        groups = {var: {var} for var in self.order}
        for a, b in self.links:
            if a in groups and b in groups and groups[a] is not groups[b]:
                merged = groups[a] | groups[b]
                for var in merged:
                    groups[var] = merged
        variables = list(self.order)
        domains: list[list[Any]] = []
        undecided: set[Var] = set()
        for var in variables:
            strings: set[Any] = set(fresh)
            for member in groups[var]:
                strings |= self.literals.get(member, set())
                if member != var:  # `param.id == username`: one value can satisfy both sides
                    strings |= self.members.get(member, set()) | self._witnesses(member, fresh)
            for p in self.prefixes.get(var, set()):
                strings.add(p + fresh[0])
                strings.update(p + fresh[0] + s for s in self.suffixes.get(var, set()))
            for s in self.suffixes.get(var, set()):
                strings.add(fresh[0] + s)
            numbers = {v for v in strings if isinstance(v, int | float) and not isinstance(v, bool)}
            strings.update(n + 1 for n in numbers)
            candidates: list[Any] = sorted(strings, key=lambda v: (type(v).__name__, str(v)))
            if var in self.truths:
                candidates += [True, False]
            if var in self.members:
                items = sorted(self.members[var] | {fresh[0]}, key=str)
                if len(items) <= 6:
                    subsets = itertools.chain.from_iterable(
                        itertools.combinations(items, n) for n in range(len(items) + 1)
                    )
                    candidates += [list(s) for s in subsets]
                else:
                    candidates += [[], items] + [[item] for item in items]
            if var[0] == "claim":
                candidates.append(MISSING)
            elif var[0] == "seg":
                candidates = [c for c in candidates if isinstance(c, str) and c and "/" not in c]
            if var == ("claim", "username"):
                candidates = [c for c in candidates if isinstance(c, str) and c]
            patterns = self.regexes.get(var, [])
            if patterns:
                matchers = [compile_regex(p) for p in patterns]
                for pattern, matcher in zip(patterns, matchers, strict=True):
                    witness = regex_witness(pattern)
                    if (
                        witness is not None
                        and witness not in candidates
                        and _full(matcher, witness)
                    ):
                        candidates.insert(0, witness)
                seen = {
                    tuple(bool(m(c)) for m in matchers) for c in candidates if isinstance(c, str)
                }
                if len(seen) < 2 ** len(matchers):
                    undecided.add(var)
            domains.append(candidates)
        return variables, domains, undecided


# --- evaluation ---------------------------------------------------------------------------------


@attrs.frozen
class _Side:
    loaded: Loaded
    route: RoutePlan | None

    @property
    def decl(self) -> ast.RouteDecl | None:
        return None if self.route is None else self.loaded.model.routes[self.route.index]


def _where(span: Span | None) -> str | None:
    return None if span is None else f"{span.file}:{span.line}"


def _decide(
    side: _Side, method: str, target: str, provider: str, claims: Mapping[str, Any]
) -> Outcome:
    route = side.route
    if route is None:
        return Outcome(403, Reason.NO_ROUTE.value, None, None)
    if route.public:
        return Outcome(200, Reason.ALLOWED.value, f"{route.text} {{ public }}", _where(route.span))
    if provider == _NO_CREDENTIALS:
        return Outcome(401, Reason.NO_CREDENTIALS.value, route.text, _where(route.span))
    if provider not in route.authenticators:
        return Outcome(401, Reason.INVALID_TOKEN.value, route.text, _where(route.span))
    principal = principal_from(provider, claims)
    if principal is None:
        return Outcome(401, Reason.INVALID_TOKEN.value, route.text, _where(route.span))
    request = canonical_target(method, target, max_path=side.loaded.plan.settings.max_path)
    assert not isinstance(request, Exception)
    assert hasattr(request, "segments")
    decision: Decision = evaluate_rules(route, request, principal)  # type: ignore[arg-type]
    rule_text = None
    if decision.rule is not None:
        rule_text = next((r.text for r in route.rules if r.span == decision.rule), None)
    return Outcome(
        decision.status,
        decision.reason.value,
        rule_text or route.text,
        _where(decision.rule or route.span),
    )


def _content(side: _Side) -> object:
    """What decides a route's answers from an identity's claims, without spans: equal
    content, equal decisions. The providers' and stores' own settings (claim paths,
    `token_prefix`, ...) act before the claims exist; a change there is listed once as a
    SettingChange rather than as every route that names the provider."""
    route = side.route
    if route is None:
        return None
    rules = tuple((r.kind, r.text) for r in route.rules)
    return (route.public, route.providers, route.tokens, rules, route.params)


def _atom_text(source_lines: Sequence[str], span: Span) -> str:
    lines = list(source_lines[span.line - 1 : span.end_line])
    if not lines:
        return "?"
    lines[-1] = lines[-1][: span.end_column - 1]
    lines[0] = lines[0][span.column - 1 :]
    return " ".join(" ".join(lines).split())


def _target(skeleton: Skeleton, values: Mapping[int, str], placeholder: str) -> str:
    parts = [s if s else values.get(position, placeholder) for position, s in enumerate(skeleton)]
    return "/" + "/".join(quote(p, safe="") for p in parts)


@attrs.frozen
class _Row:
    key: tuple[Any, ...]  # everything a merged line shares but the atom vector
    vector: tuple[str, ...]


class _Differ:
    def __init__(self, old: Loaded, new: Loaded) -> None:
        self.old, self.new = old, new
        self.lines = {
            old.model.file: old.model.source.splitlines(),
            new.model.file: new.model.source.splitlines(),
        }
        strings: set[str] = set()
        for loaded in (old, new):
            for decl in loaded.model.routes:
                strings.update(s.text for s in decl.pattern.segments)
                if isinstance(decl.body, ast.Auth):
                    for rule in decl.body.rules:
                        if rule.condition is not None:
                            for atom in _atoms(rule.condition):
                                strings.update(_literal_strings(atom))
        self.fresh = _fresh(strings, 2)
        named = {m.text for loaded in (old, new) for d in loaded.model.routes for m in d.methods}
        self.methods = list(
            dict.fromkeys([*ALL_METHODS, *sorted(named), _fresh(named, 1, "PURGE")[0]])
        )
        self.changes: list[Change] = []
        self.rows: dict[tuple[Any, ...], list[tuple[str, ...]]] = {}
        self.seen: dict[tuple[Any, ...], list[set[str]]] = {}
        self.examples: dict[tuple[Any, ...], str] = {}
        self.tests: dict[int, Any] = {}  # atoms compiled once (the models keep them alive)

    def run(self) -> DiffReport:
        patterns = [d.pattern.segments for d in self.old.model.routes] + [
            d.pattern.segments for d in self.new.model.routes
        ]
        placeholder = self.fresh[0]
        for skeleton in _skeletons(patterns):
            segments = [s or placeholder for s in skeleton]
            pairs: dict[tuple[int | None, int | None], list[str]] = {}
            for method in self.methods:
                old_route = self.old.plan.route_for(method, segments)
                new_route = self.new.plan.route_for(method, segments)
                if old_route is None and new_route is None:
                    continue
                if _content(_Side(self.old, old_route)) == _content(_Side(self.new, new_route)):
                    continue
                key = (
                    None if old_route is None else old_route.index,
                    None if new_route is None else new_route.index,
                )
                pairs.setdefault(key, []).append(method)
            for (old_index, new_index), methods in pairs.items():
                old_side = _Side(
                    self.old, None if old_index is None else self.old.plan.routes[old_index]
                )
                new_side = _Side(
                    self.new, None if new_index is None else self.new.plan.routes[new_index]
                )
                self._pair(skeleton, methods, old_side, new_side)
        return DiffReport(tuple(self._merged()), tuple(self._settings()))

    def _pair(self, skeleton: Skeleton, methods: list[str], old: _Side, new: _Side) -> None:
        domains = _Domains()
        atoms: dict[str, tuple[Atom, _Side]] = {}
        for side in (old, new):
            decl = side.decl
            if decl is None or not isinstance(decl.body, ast.Auth) or side.route is None:
                continue
            params = {name: position for position, name in side.route.params}
            for rule in decl.body.rules:
                if rule.condition is None:
                    continue
                for atom in _atoms(rule.condition):
                    domains.add(atom, params)
                    text = _atom_text(self.lines[side.loaded.model.file], atom.span)
                    atoms.setdefault(text, (atom, side))
        # A parameter where the region has a literal segment holds that literal: its atoms are
        # decided by the path, as the evaluator sees it, and what it is compared with
        # (`param.id == username`) must be able to equal it.
        fixed = {
            var: str(skeleton[int(var[1])])
            for var in domains.order
            if var[0] == "seg" and int(var[1]) < len(skeleton) and skeleton[int(var[1])]
        }
        for var, text in fixed.items():
            domains.literals[var].add(text)
        variables, values, undecided = domains.values(self.fresh)
        for number, var in enumerate(variables):
            if var in fixed:
                values[number] = [fixed[var]]
                undecided.discard(var)
        providers = [
            _NO_CREDENTIALS,
            _OTHER,
            *list(
                dict.fromkeys(
                    p
                    for side in (old, new)
                    if side.route is not None
                    for p in side.route.authenticators
                )
            ),
        ]
        count = 1
        for candidates in values:
            count *= len(candidates)
        too_many = len(atoms) > MAX_ATOMS or count > MAX_VALUATIONS
        pattern = _display(skeleton)
        # Methods that no atom tells apart are decided alike: one of each class runs, and its
        # rows are copied to the others.
        for group in _method_classes(methods, [atom for atom, _ in atoms.values()]):
            rows_before, changes_before = set(self.rows), len(self.changes)
            method = group[0]
            for provider in providers:
                if provider in (_NO_CREDENTIALS, _OTHER) or too_many:
                    if too_many and provider not in (_NO_CREDENTIALS, _OTHER):
                        self._fallback(skeleton, method, provider, old, new)
                        continue
                    self._one(skeleton, pattern, method, provider, {}, {}, old, new, atoms, ())
                    continue
                for combination in itertools.product(*_possible(self, provider, variables, values)):
                    claims = {
                        str(var[1]): value
                        for var, value in zip(variables, combination, strict=True)
                        if var[0] == "claim" and value is not MISSING
                    }
                    claims.setdefault("username", self.fresh[1])
                    segs = {
                        int(var[1]): value
                        for var, value in zip(variables, combination, strict=True)
                        if var[0] == "seg"
                    }
                    self._one(
                        skeleton,
                        pattern,
                        method,
                        provider,
                        claims,
                        segs,
                        old,
                        new,
                        atoms,
                        combination,
                    )
                if undecided:
                    self._possibly(skeleton, method, provider, old, new)
            for key in [k for k in self.rows if k not in rows_before]:
                for other in group[1:]:
                    copy = (other, *key[1:])
                    self.rows[copy] = self.rows[key]
                    self.examples[copy] = self.examples[key]
                    self.seen[copy[:4]] = self.seen[key[:4]]
            for change in self.changes[changes_before:]:
                self.changes.extend(attrs.evolve(change, methods=(m,)) for m in group[1:])

    def _one(
        self,
        skeleton: Skeleton,
        pattern: str,
        method: str,
        provider: str,
        claims: dict[str, Any],
        segs: dict[int, str],
        old: _Side,
        new: _Side,
        atoms: Mapping[str, tuple[Atom, _Side]],
        combination: Sequence[Any],
    ) -> bool:
        target = _target(skeleton, segs, self.fresh[0])
        request = canonical_target(method, target)
        if isinstance(request, Rejection):
            return False
        # A value that is a literal of some pattern routes elsewhere: that region has its own
        # skeleton, so the witness is skipped here.
        for side, plan in ((old, self.old.plan), (new, self.new.plan)):
            routed = plan.route_for(method, request.segments)
            if (routed is None) != (side.route is None) or (
                routed is not None and side.route is not None and routed.index != side.route.index
            ):
                return False
        before = _decide(old, method, target, provider, claims)
        after = _decide(new, method, target, provider, claims)
        if provider in (_NO_CREDENTIALS, _OTHER):
            atoms = {}  # no rule runs: the identity has no claims to test
        vector = tuple(
            self._truth(atom, side, provider, method, target, claims, segs)
            for atom, side in atoms.values()
        )
        region = (method, pattern, provider, tuple(atoms))
        seen = self.seen.setdefault(region, [set() for _ in atoms])
        for values, value in zip(seen, vector, strict=True):
            values.add(value)
        if (before.status, before.reason) == (after.status, after.reason):
            return False
        self.examples.setdefault((*region, before, after), target)
        self.rows.setdefault((*region, before, after), []).append(vector)
        return True

    def _truth(
        self,
        atom: Atom,
        side: _Side,
        provider: str,
        method: str,
        target: str,
        claims: Mapping[str, Any],
        segs: Mapping[int, str],
    ) -> str:
        route = side.route
        assert route is not None
        params = {name: segs.get(position, self.fresh[0]) for position, name in route.params}
        facts = Facts(claims, provider, "GET" if method == "HEAD" else method, target, params)
        try:
            test = self.tests.get(id(atom))
            if test is None:
                test = self.tests[id(atom)] = compile_expr(atom, rule_refs)
            return "true" if test(facts) else "false"
        except RuleError:
            return "error"

    def _fallback(
        self, skeleton: Skeleton, method: str, provider: str, old: _Side, new: _Side
    ) -> None:
        self._possibly(skeleton, method, provider, old, new, rules_changed=True)

    def _possibly(
        self,
        skeleton: Skeleton,
        method: str,
        provider: str,
        old: _Side,
        new: _Side,
        *,
        rules_changed: bool = False,
    ) -> None:
        def outcome(side: _Side) -> Outcome:
            route = side.route
            if route is None:
                return Outcome(403, Reason.NO_ROUTE.value, None, None)
            return Outcome(0, "rules", route.text, _where(route.span))

        def rules(side: _Side) -> tuple[str, ...]:
            route = side.route
            return () if route is None else tuple(r.text for r in route.rules)

        identity = f'provider == "{provider}"'
        if rules_changed:
            identity += ": the rules of this route changed"
        self.changes.append(
            Change(
                (method,),
                _display(skeleton),
                _target(skeleton, {}, self.fresh[0]),
                identity,
                outcome(old),
                outcome(new),
                possibly=True,
                old_rules=rules(old),
                new_rules=rules(new),
            )
        )

    def _merged(self) -> Iterator[Change]:
        lines: dict[tuple[Any, ...], list[str]] = {}
        for key, vectors in self.rows.items():
            method, pattern, provider, names, before, after = key
            example = self.examples[key]
            for vector in _minimize(vectors, self.seen[key[:4]]):
                condition = _condition(provider, names, vector)
                lines.setdefault((pattern, example, condition, before, after), []).append(method)
        for (pattern, example, condition, before, after), methods in lines.items():
            yield Change(tuple(_ordered(methods)), pattern, example, condition, before, after)
        merged: dict[Change, list[str]] = {}
        for change in self.changes:
            merged.setdefault(attrs.evolve(change, methods=()), []).extend(change.methods)
        for change, methods in merged.items():
            yield attrs.evolve(change, methods=tuple(_ordered(methods)))

    def _settings(self) -> Iterator[SettingChange]:
        old, new = self.old.plan, self.new.plan
        for name in sorted(set(old.providers) & set(new.providers)):
            a, b = old.providers[name].spec, new.providers[name].spec
            if a != b:
                fields = tuple(
                    f.name
                    for f in attrs.fields(type(a))
                    if f.eq and getattr(a, f.name) != getattr(b, f.name)
                )
                yield SettingChange(f"provider {name}", fields, _where(b.span) or "")
        for name in sorted(set(old.tokens) & set(new.tokens)):
            if old.tokens[name] != new.tokens[name]:
                yield SettingChange(
                    f"tokens {name}", ("store",), _where(new.tokens[name].span) or ""
                )
        if old.settings != new.settings:
            fields = tuple(
                f.name
                for f in attrs.fields(type(old.settings))
                if getattr(old.settings, f.name) != getattr(new.settings, f.name)
            )
            yield SettingChange("settings", fields, new.file)


def _possible(
    differ: _Differ, authenticator: str, variables: Sequence[Var], values: Sequence[list[Any]]
) -> list[list[Any]]:
    """The candidates an identity of `authenticator` can hold: only consistent valuations run.

    A token store's identity is exactly a username and a list of group names (so `groups` is
    never missing and every other claim always is); a provider's holds only the claims it
    declares (in either version), so an undeclared claim is always missing.
    """
    tokens = authenticator in differ.old.plan.tokens or authenticator in differ.new.plan.tokens
    declared: set[str] = set()
    for plan in (differ.old.plan, differ.new.plan):
        provider = plan.providers.get(authenticator)
        if provider is not None:
            declared.update(name for name, _ in provider.spec.claims)
            declared.update(name for name, _ in provider.spec.fallbacks)
    possible = []
    for var, candidates in zip(variables, values, strict=True):
        name = var[1]
        if var[0] != "claim" or name == "username":
            possible.append(candidates)
        elif tokens and name == "groups":
            lists = [c for c in candidates if isinstance(c, list)]
            possible.append(lists or [[]])
        elif tokens or name not in declared:
            possible.append([MISSING])
        else:
            possible.append(candidates)
    return possible


def _full(matcher: Any, text: str) -> bool:
    try:
        return bool(matcher(text))
    except UnicodeEncodeError:
        return False


def _method_classes(methods: Sequence[str], atoms: Sequence[Atom]) -> list[list[str]]:
    """The methods grouped by what the atoms can tell apart (rules see HEAD as GET): the
    literals `method` is compared with, and one class for the rest; any other test of
    `method` makes each method its own class."""
    literals: set[Any] = set()
    every = False
    for atom in atoms:
        if not _reads_method(atom):
            continue
        if not isinstance(atom, ast.Compare) or atom.op not in _EQUALITY:
            every = True
            continue
        for operand in (atom.left, atom.right):
            if isinstance(operand, ast.Literal):
                literals.add(operand.value)
            elif isinstance(operand, ast.ListLiteral):
                literals.update(item.value for item in operand.items)
            elif not isinstance(operand, ast.BuiltinRef):
                every = True
    groups: dict[str | None, list[str]] = {}
    for method in methods:
        seen_as = "GET" if method == "HEAD" else method
        key = method if every else seen_as if seen_as in literals else None
        groups.setdefault(key, []).append(method)
    return list(groups.values())


_EQUALITY = (ast.CompareOp.EQ, ast.CompareOp.NE, ast.CompareOp.IN, ast.CompareOp.NOT_IN)


def _reads_method(atom: Atom) -> bool:
    operands: tuple[ast.Operand, ...] = (
        (atom.left, atom.right)
        if isinstance(atom, ast.Compare)
        else (atom.subject,)
        if isinstance(atom, ast.Matches)
        else (atom.operand,)
    )
    return any(isinstance(o, ast.BuiltinRef) and o.builtin is ast.Builtin.METHOD for o in operands)


def regex_witness(pattern: str) -> str | None:
    """A string the regex may match, built from its parse (checked by the caller with the
    real matcher): literals kept, classes by their first member, repeats at their minimum
    (at least once), the first branch of an alternation. None when the parse is unfamiliar."""
    try:
        parsed = _sre.parse(pattern)
    except Exception:
        return None
    try:
        return _build(list(parsed))
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def _build(items: list[Any]) -> str:
    out = []
    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            out.append(chr(arg))
        elif name == "NOT_LITERAL":  # `[^@]`: any character but that one
            out.append("a" if arg != ord("a") else "b")
        elif name == "ANY":
            out.append("a")
        elif name == "IN":
            out.append(_first_in(arg))
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, _high, sub = arg
            out.append(_build(list(sub)) * max(low, 1))
        elif name in ("SUBPATTERN", "ATOMIC_GROUP"):
            out.append(_build(list(arg[-1] if name == "SUBPATTERN" else arg)))
        elif name == "BRANCH":
            out.append(_build(list(arg[1][0])))
        elif name == "AT":
            continue
        else:
            raise ValueError(name)
    return "".join(out)


def _first_in(members: list[Any]) -> str:
    for op, arg in members:
        name = str(op)
        if name == "LITERAL":
            return chr(arg)
        if name == "RANGE":
            return chr(arg[0])
        if name == "CATEGORY":
            return {"CATEGORY_DIGIT": "0", "CATEGORY_SPACE": " "}.get(str(arg), "a")
        if name == "NEGATE":
            return "~"
    raise ValueError("class")


def _literal_strings(atom: Atom) -> Iterator[str]:
    operands: list[ast.Operand] = []
    if isinstance(atom, ast.Compare):
        operands = [atom.left, atom.right]
    for operand in operands:
        if isinstance(operand, ast.Literal) and isinstance(operand.value, str):
            yield operand.value
        elif isinstance(operand, ast.ListLiteral):
            yield from (str(i.value) for i in operand.items)


def _fresh(taken: set[str], count: int, base: str = "x") -> list[str]:
    """`count` values that no literal of either policy equals, starts or ends."""
    found: list[str] = []
    number = 0
    while len(found) < count:
        candidate = base if number == 0 else f"{base}{number}"
        number += 1
        # Neither inside a literal nor holding one: no prefix, suffix or equality atom holds.
        if all(candidate not in t and t not in candidate for t in taken if t):
            found.append(candidate)
    return found


def _ordered(methods: Sequence[str]) -> list[str]:
    unique = set(methods)
    if {"GET", "HEAD"} <= unique:
        unique.discard("HEAD")  # GET brings HEAD along
    return [m for m in ALL_METHODS if m in unique] + sorted(unique - set(ALL_METHODS))


def _minimize(vectors: list[tuple[str, ...]], seen: Sequence[set[str]]) -> list[tuple[str, ...]]:
    """Merge vectors that differ only in one atom across every value it takes ("*": any).

    `seen` holds the values each atom took over every valuation of the class, differing or
    not, so an atom is dropped only when the change happens whatever its value; "false" and
    "error" together become "untrue" (the atom does not hold), which is how rules read it."""
    current = set(vectors)
    if not current:
        return []
    width = len(next(iter(current)))
    changed = True
    while changed:
        changed = False
        for position in range(width):
            values = seen[position]
            groups: dict[tuple[str, ...], set[str]] = {}
            for v in current:
                groups.setdefault((*v[:position], "*", *v[position + 1 :]), set()).add(v[position])
            for merged, found in groups.items():
                expanded = set(found)
                if "untrue" in expanded:
                    expanded |= {"false", "error"}
                if expanded >= values and "*" not in found:
                    replacement = merged
                elif {"false", "error"} <= found:
                    replacement = (*merged[:position], "untrue", *merged[position + 1 :])
                else:
                    continue
                current = {
                    v
                    for v in current
                    if (*v[:position], "*", *v[position + 1 :]) != merged
                    or (replacement is not merged and v[position] not in ("false", "error"))
                }
                current.add(replacement)
                changed = True
                break
            if changed:
                break
    return sorted(current)


def _condition(provider: str, names: Sequence[str], vector: Sequence[str]) -> str:
    if provider == _NO_CREDENTIALS:
        return "no credentials"
    if provider == _OTHER:
        return "a credential no authenticator of the route takes"
    parts = [f'provider == "{provider}"']
    for name, value in zip(names, vector, strict=True):
        if value == "true":
            parts.append(name)
        elif value == "false":
            parts.append(f"not ({name})")
        elif value == "error":
            parts.append(f"({name}) errors")
        elif value == "untrue":
            parts.append(f"({name}) does not hold")
    return " and ".join(parts)


def diff_policies(old: Loaded, new: Loaded) -> DiffReport:
    """Every class of requests that `old` and `new` decide differently, merged for reading."""
    return _Differ(old, new).run()
