"""Lint rules: policies that load but probably do not mean what their author thinks.

Each rule is one function with a code (PA2xx correctness and security, PA3xx style) whose
docstring is its documentation. A warning can be silenced on its own line with a comment
`# policyauth: ignore[PA202]` (several codes separated by commas); errors cannot be.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from policyauth.diagnostics import Diagnostic, Severity, Span
from policyauth.language import ast, validation_checks
from policyauth.language.model import CheckedPolicy
from policyauth.language.presets import PRESETS, Audience
from policyauth.language.shadowing import collect_overlaps, crosswise_overlaps

_IGNORE = re.compile(r"policyauth:\s*ignore\[([A-Z0-9, ]+)\]")
# A bare domain as an `endswith` suffix (PA203); compiled once, not looked up on every rule.
_BARE_DOMAIN = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")

Finding = tuple[Span, str, str, str | None]  # span, code, message, help
Rule = Callable[[ast.Policy, CheckedPolicy | None], Iterator[Finding]]


def audience_unchecked(policy: ast.Policy, model: CheckedPolicy | None) -> Iterator[Finding]:
    """PA202: a provider accepts tokens issued to any client.

    A userinfo call only proves that the provider issued the token to *some* client (OIDC Core
    5.3.2): a token a user gave to any other app passes it too. Where the preset can bind the
    token to your client (Google's tokeninfo), set `client_id`; where it cannot, know that the
    route trusts every app of that provider, and silence the warning on the provider's line.
    Providers without a preset are not judged: policyauth cannot know what they offer.
    """
    if model is None:
        return
    for spec in model.providers.values():
        preset = PRESETS.get(spec.preset) if spec.preset else None
        if preset is None or spec.audience is not Audience.NONE or spec.validate != "userinfo":
            continue
        if preset.audience is not Audience.NONE:
            yield (
                spec.span,
                "PA202",
                f"provider `{spec.name}` accepts tokens issued to any {preset.name} client",
                'set `client_id = env("...")`'
                + (' and `client_secret = env("...")`' if preset.audience_needs_secret else "")
                + " so tokens are checked against your client",
            )
        else:
            yield (
                spec.span,
                "PA202",
                f"provider `{spec.name}` cannot check that tokens were issued to your client",
                "userinfo accepts tokens issued to any client of this provider; if that is "
                "intended, add `# policyauth: ignore[PA202]` on this line",
            )


def unanchored_suffix(policy: ast.Policy, model: CheckedPolicy | None) -> Iterator[Finding]:
    """PA203: `endswith` a domain without a boundary.

    `username endswith "example.com"` also holds for `eve@evilexample.com`; write the boundary
    into the suffix: `endswith "@example.com"` or `endswith ".example.com"` (security case U24).
    """
    for expr in _expressions(policy):
        if (
            isinstance(expr, ast.Compare)
            and expr.op is ast.CompareOp.ENDSWITH
            and isinstance(expr.right, ast.Literal)
            and isinstance(expr.right.value, str)
            and _BARE_DOMAIN.fullmatch(expr.right.value)
        ):
            suffix = expr.right.value
            yield (
                expr.right.span,
                "PA203",
                f'`endswith "{suffix}"` also matches `evil{suffix}`',
                f'anchor it at a boundary: `endswith "@{suffix}"` or `endswith ".{suffix}"`',
            )


def redundant_anchors(policy: ast.Policy, model: CheckedPolicy | None) -> Iterator[Finding]:
    """PA301: `^` or `$` around a regex.

    `matches` always tests the whole value, so `/^admin$/` and `/admin/` mean the same; the
    anchors suggest a substring search that never happens.
    """
    for expr in _expressions(policy):
        if isinstance(expr, ast.Matches) and (
            expr.pattern.startswith("^")
            or (expr.pattern.endswith("$") and not expr.pattern.endswith("\\$"))
        ):
            yield (
                expr.pattern_span,
                "PA301",
                "`matches` already tests the whole value; `^` and `$` are not needed",
                "remove the anchors",
            )


def crosswise_routes(policy: ast.Policy, model: CheckedPolicy | None) -> Iterator[Finding]:
    """PA204: two routes share some requests, and neither pattern contains the other.

    `GET /files/{name}/raw` and `GET /files/a/*` both match `GET /files/a/raw`; the earlier one
    decides it, which is easy to miss when reading either route alone. A specific route before
    a general one is not reported (that is what file order is for), nor two public routes.
    """
    routes = tuple(d for d in policy.declarations if isinstance(d, ast.RouteDecl))
    overlaps = model.overlaps if model is not None else collect_overlaps(routes)
    yield from crosswise_overlaps(routes, overlaps)


RULES: tuple[Rule, ...] = (
    audience_unchecked,
    unanchored_suffix,
    redundant_anchors,
    crosswise_routes,
    validation_checks.introspection_without_audience,  # PA208
    validation_checks.id_tokens_accepted,  # PA209
)


def lint(policy: ast.Policy, model: CheckedPolicy | None, *, source: str) -> list[Diagnostic]:
    """Warnings from every lint rule, less those silenced by an ignore comment on their line."""
    found = []
    for rule in RULES:
        for span, code, message, help in rule(policy, model):
            found.append(
                Diagnostic.at(
                    span, code, message, help=help, severity=Severity.WARNING, source=source
                )
            )
    return silence(policy, found)


def silence(policy: ast.Policy, diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """`diagnostics` less the warnings an ignore comment on their line names.

    Applied to every phase's output (the checker's PA201 as much as the lint rules), so a
    warning can always be silenced where it is reported; errors never can.
    """
    ignored: dict[int, set[str]] = {}
    for comment in policy.comments:
        match = _IGNORE.search(comment.text)
        if match:
            codes = {c.strip() for c in match[1].split(",")}
            ignored.setdefault(comment.span.line, set()).update(codes)
    return [d for d in diagnostics if d.is_error or d.code not in ignored.get(d.line, ())]


def _expressions(policy: ast.Policy) -> list[ast.Expr]:
    """Every expression node in the routes' rules, outermost first. A list built by one walk,
    not nested generators: each rule that reads it pays a resumption per node otherwise."""
    found: list[ast.Expr] = []
    for decl in policy.declarations:
        if isinstance(decl, ast.RouteDecl) and isinstance(decl.body, ast.Auth):
            for rule in decl.body.rules:
                if rule.condition is not None:
                    _walk(rule.condition, found)
    return found


def _walk(expr: ast.Expr, found: list[ast.Expr]) -> None:
    found.append(expr)
    if isinstance(expr, ast.Logical):
        for operand in expr.operands:
            _walk(operand, found)
    elif isinstance(expr, ast.Not):
        _walk(expr.operand, found)
