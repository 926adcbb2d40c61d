"""The compiled policy: what the evaluator reads on every request, built once at load time.

Nothing in a Plan is parsed or looked up by name per request: routes sit in the route index,
rules are closures, claim paths and regexes are compiled, and each route knows which of its
authenticators are remote providers and which are API token stores.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from policyauth.compiler.expressions import RuleError, Test, compile_expr
from policyauth.diagnostics import Diagnostic, Span
from policyauth.language import ast
from policyauth.language.claimpath import MISSING, compile_claim_path
from policyauth.language.model import CheckedPolicy, ProviderSpec, Settings, TokensSpec
from policyauth.language.routing import Methods, RouteIndex


class Facts:
    """What a rule can read about one request: the caller's claims and the request itself."""

    __slots__ = ("claims", "method", "params", "path", "provider")

    def __init__(
        self,
        claims: Mapping[str, Any],
        provider: str,
        method: str,
        path: str,
        params: Mapping[str, str],
    ) -> None:
        self.claims = claims
        self.provider = provider
        self.method = method
        self.path = path
        self.params = params


@attrs.frozen
class RulePlan:
    kind: ast.RuleKind
    text: str  # the rule as written, for `explain` and test failure messages
    span: Span = attrs.field(eq=False)
    test: Test | None = attrs.field(eq=False, repr=False)  # None: a bare `allow`
    label: str | None = None  # `allow "readers" if ...`: what tests and `explain` call it


@attrs.frozen
class RoutePlan:
    index: int
    text: str  # `GET, HEAD /a/{id}`
    span: Span = attrs.field(eq=False)
    methods: Methods
    public: bool
    providers: tuple[str, ...]  # remote providers, in `auth` order
    tokens: tuple[str, ...]  # API token stores, in `auth` order
    rules: tuple[RulePlan, ...]
    params: tuple[tuple[int, str], ...]  # (segment position, name) for each `{name}`
    # The rules split by kind once, at load time, for the evaluator's deny-then-allow pass.
    denies: tuple[RulePlan, ...] = attrs.field(init=False, eq=False, repr=False)
    allows: tuple[RulePlan, ...] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        deny = tuple([r for r in self.rules if r.kind is ast.RuleKind.DENY and r.test is not None])
        allow = tuple([r for r in self.rules if r.kind is ast.RuleKind.ALLOW])
        object.__setattr__(self, "denies", deny)
        object.__setattr__(self, "allows", allow)

    @property
    def authenticators(self) -> tuple[str, ...]:
        return self.providers + self.tokens

    def capture(self, segments: Sequence[str]) -> dict[str, str]:
        return {name: segments[position] for position, name in self.params}


@attrs.frozen
class ProviderPlan:
    """A provider merged with its preset, with its `success` condition compiled."""

    spec: ProviderSpec
    success: Test | None = attrs.field(eq=False, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    def claims_from(self, document: object) -> dict[str, Any]:
        """The declared claims found in a userinfo document; missing ones are left out."""
        claims = {}
        for name, path in self.spec.claims:
            value = path.select(document)
            if value is not MISSING:
                claims[name] = value
        for name, path in self.spec.fallbacks:  # a preset's second choices (Entra v1.0 `upn`)
            if name not in claims:
                value = path.select(document)
                if value is not MISSING:
                    claims[name] = value
        return claims

    def accepts(self, document: object) -> bool:
        """Whether the response meets `success`; one that cannot be decided does not."""
        if self.success is None:
            return True
        try:
            return self.success(document)
        except RuleError:
            return False


@attrs.frozen
class Origin:
    """The file a policy was loaded from, and the environment its `env()` calls read."""

    path: str
    env: Mapping[str, str] | None = attrs.field(default=None, repr=False)


@attrs.frozen
class Policy:
    """A loaded policy. Immutable; share one between threads and requests."""

    file: str
    settings: Settings
    providers: Mapping[str, ProviderPlan]
    tokens: Mapping[str, TokensSpec]
    routes: tuple[RoutePlan, ...]
    warnings: tuple[Diagnostic, ...] = attrs.field(eq=False)
    _index: RouteIndex = attrs.field(eq=False, repr=False, alias="index")
    # Where `load` read the policy (None for `loads`): what `Engine.reload` reads again.
    origin: Origin | None = attrs.field(default=None, eq=False, repr=False)
    # A token unique to this compiled policy. Whatever is remembered from a plan (a located
    # route, a decision memo keyed by route index) is keyed by it too, so that after a reload
    # nothing remembered from one plan is ever used with another.
    generation: object = attrs.field(factory=object, init=False, eq=False, repr=False)

    def route_for(self, method: str, segments: Sequence[str]) -> RoutePlan | None:
        """The first route, in file order, that matches a canonical method and path."""
        found = self._index.lookup(segments, method)
        return None if found is None else self.routes[found]


def compile_policy(model: CheckedPolicy, warnings: Sequence[Diagnostic] = ()) -> Policy:
    """Turn a checked policy into a Policy; the model must be free of errors."""
    providers = {name: _provider(spec) for name, spec in model.providers.items()}
    source = _Source(model)
    routes = tuple(_route(index, route, model, source) for index, route in enumerate(model.routes))
    return Policy(
        file=model.file,
        settings=model.settings,
        providers=types.MappingProxyType(providers),
        tokens=types.MappingProxyType(dict(model.tokens)),
        routes=routes,
        warnings=tuple(w for w in warnings if not w.is_error),
        index=model.index,
    )


def _provider(spec: ProviderSpec) -> ProviderPlan:
    success = None
    if spec.success is not None:
        success = compile_expr(spec.success, _document_refs)
    return ProviderPlan(spec, success)


def _document_refs(operand: ast.Operand) -> Any:
    """In `success`, operands are claim paths into the userinfo response itself."""
    assert isinstance(operand, ast.JsonPathRef)
    path = compile_claim_path(operand.text)
    return lambda document: path.select(document)


def rule_refs(operand: ast.Operand) -> Any:
    """How a rule's operand reads the request's facts (also used by `policyauth diff`, which
    must evaluate atoms exactly as the engine does)."""
    if isinstance(operand, ast.ClaimRef):
        name = operand.name
        return lambda facts: facts.claims.get(name, MISSING)
    if isinstance(operand, ast.ParamRef):
        param = operand.name
        return lambda facts: facts.params.get(param, MISSING)
    assert isinstance(operand, ast.BuiltinRef)
    attribute = operand.builtin.value
    return lambda facts: getattr(facts, attribute)


def _route(index: int, route: ast.RouteDecl, model: CheckedPolicy, source: _Source) -> RoutePlan:
    methods = model.index.methods(index)
    # Lists, not generators, throughout: this runs once per route of every load (issue 13).
    text = (", ".join([m.text for m in route.methods]) or "*") + " " + route.pattern.text
    params = tuple(
        [
            (position, segment.text)
            for position, segment in enumerate(route.pattern.segments)
            if segment.kind is ast.Segment.PARAM
        ]
    )
    if isinstance(route.body, ast.Public):
        return RoutePlan(index, text, route.span, methods, True, (), (), (), params)
    names = [n.text for n in route.body.authenticators]
    rules = tuple(
        [
            RulePlan(
                rule.kind,
                source.text_of(rule.span),
                rule.span,
                compile_expr(rule.condition, rule_refs) if rule.condition is not None else None,
                rule.label.value if rule.label is not None else None,
            )
            for rule in route.body.rules
        ]
    )
    return RoutePlan(
        index=index,
        text=text,
        span=route.span,
        methods=methods,
        public=False,
        providers=tuple(dict.fromkeys([n for n in names if n in model.providers])),
        tokens=tuple(dict.fromkeys([n for n in names if n in model.tokens])),
        rules=rules,
        params=params,
    )


class _Source:
    """The policy text, split once, with where each line's comment starts: rule texts are cut
    from it for every rule of the policy, so nothing here may scan the whole text per rule."""

    def __init__(self, model: CheckedPolicy) -> None:
        self.lines = model.source.splitlines()
        self.comment_at = {c.span.line: c.span.column for c in model.comments}

    def text_of(self, span: Span) -> str:
        """The source text of `span` on one line, without comments between its lines."""
        lines = self.lines[span.line - 1 : span.end_line]
        if not lines:
            return ""
        for offset in range(len(lines) - 1):
            column = self.comment_at.get(span.line + offset)
            if column is not None:
                lines[offset] = lines[offset][: column - 1]
        lines[-1] = lines[-1][: span.end_column - 1]
        lines[0] = lines[0][span.column - 1 :]
        return " ".join(" ".join(lines).split())
