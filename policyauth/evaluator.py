"""Decisions from a compiled policy, without I/O: section 5 of the language page, step by step.

Every function here is pure. The engine calls `prepare` (steps 1 to 5: canonical request, first
matching route, credentials, the one authenticator for them), asks its identity source about
the credential if `prepare` did not already decide, and hands the answer to `finish` (steps 6
and 7: the principal and the rules, deny overriding allow). Integrations and the CLI never
re-implement any of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from policyauth.compiler import Facts, Policy, RoutePlan
from policyauth.compiler.expressions import RuleError
from policyauth.decision import Decision, Outcome, Principal, Reason, RuleTrace
from policyauth.identity.source import Credential, Identity, IdentityResult, Invalid
from policyauth.identity.tokens import TOKEN_PREFIX
from policyauth.language.ast import RuleKind
from policyauth.request import (
    BasicCredential,
    CanonicalRequest,
    Headers,
    NoCredentials,
    Rejection,
    canonicalize,
    read_credentials,
)


@attrs.frozen
class Pending:
    """A request that needs its credential validated before the rules can run.

    `authenticators` is the one provider chosen for a bearer token, or the route's tokens
    blocks in order for an API token: stores are local, so asking each in turn leaks nothing,
    and a token is accepted by the store that issued it.
    """

    request: CanonicalRequest
    route: RoutePlan
    authenticators: tuple[str, ...]
    credential: Credential = attrs.field(repr=False)


def prepare(policy: Policy, method: str, target: str, headers: Headers) -> Decision | Pending:
    """Steps 1 to 5: a Decision when one is already certain, else what to validate."""
    request = canonicalize(method, target, headers, max_path=policy.settings.max_path)
    if isinstance(request, Rejection):
        return Decision(400, Reason.MALFORMED_REQUEST, request.detail)
    route = policy.route_for(request.method, request.segments)
    if route is None:
        return Decision(
            403, Reason.NO_ROUTE, f"no route matches {request.method} {_shown(request)}"
        )
    if route.public:
        return _decided(route, 200, Reason.ALLOWED, "public route")
    credential = read_credentials(headers, request.query)
    if isinstance(credential, Rejection):
        return _decided(
            route,
            400,
            Reason.INVALID_REQUEST,
            credential.detail,
            headers=_challenges(policy, route, 'error="invalid_request"'),
        )
    if isinstance(credential, NoCredentials):
        return _decided(
            route,
            401,
            Reason.NO_CREDENTIALS,
            "the request has no credentials",
            headers=_challenges(policy, route, None),
        )
    authenticator = choose_authenticator(policy, route, credential)
    if authenticator is None:
        return invalid_token(policy, route, "no authenticator of this route takes this credential")
    if authenticator in route.tokens:
        return Pending(request, route, route.tokens, credential)
    return Pending(request, route, (authenticator,), credential)


def choose_authenticator(policy: Policy, route: RoutePlan, credential: Credential) -> str | None:
    """The one authenticator a credential is shown to (a token never goes to two providers).

    Basic credentials and `pa_` tokens belong to the route's tokens blocks (the first one; a
    store answers only for tokens it issued). Other bearer tokens go to the provider whose
    `token_prefix` matches, or to the route's only provider when it declares no prefix: a
    provider that declares prefixes is never shown a token outside them (security case A20),
    even when it is alone on the route.
    """
    if isinstance(credential, BasicCredential) or credential.token.startswith(TOKEN_PREFIX):
        return route.tokens[0] if route.tokens else None
    for name in route.providers:
        prefixes = policy.providers[name].spec.token_prefix
        if credential.token.startswith(prefixes):
            return name
        if not prefixes and len(route.providers) == 1:
            return name
    return None


def finish(
    policy: Policy, pending: Pending, authenticator: str, result: IdentityResult
) -> Decision:
    """Steps 6 and 7: what `authenticator` answered, then the route's rules."""
    route = pending.route
    if isinstance(result, Invalid):
        return invalid_token(policy, route, result.detail)
    if not isinstance(result, Identity):
        return _decided(route, 503, Reason.PROVIDER_UNAVAILABLE, result.detail)
    principal = principal_from(authenticator, result.claims)
    if principal is None:
        return invalid_token(policy, route, "the identity has no usable `username`")
    return evaluate_rules(route, pending.request, principal)


def principal_from(authenticator: str, claims: Mapping[str, Any]) -> Principal | None:
    """The principal for validated claims; None when `username` is missing or not a name."""
    username = claims.get("username")
    if isinstance(username, int) and not isinstance(username, bool):
        username = str(username)  # GitHub and Facebook ids are numbers
    if not isinstance(username, str) or not username:
        return None
    groups = claims.get("groups")
    if isinstance(groups, str):
        groups = [groups]
    names = tuple(g for g in groups if isinstance(g, str)) if isinstance(groups, list) else ()
    return Principal(authenticator, username, names, dict(claims))


def evaluate_rules(route: RoutePlan, request: CanonicalRequest, principal: Principal) -> Decision:
    """Deny overrides allow: any deny that holds or errors denies, then the first allow allows."""
    facts = Facts(
        principal.claims,
        principal.provider,
        # Servers answer HEAD with the GET handler (security case M01), so a rule about GET
        # must hold for HEAD too: in rules, `method` of a HEAD request is "GET".
        "GET" if request.method == "HEAD" else request.method,
        request.path,
        route.capture(request.segments),
    )
    trace: list[RuleTrace] = []
    for rule in route.rules:
        if rule.kind is not RuleKind.DENY or rule.test is None:
            continue
        outcome, detail = _run(rule.test, facts)
        trace.append(RuleTrace("deny", rule.text, rule.span, outcome, detail))
        if outcome is not Outcome.FALSE:
            message = (
                "a deny rule holds" if outcome is Outcome.TRUE else f"a deny rule errored: {detail}"
            )
            return _decided(route, 403, Reason.DENIED, message, rule.span, principal, trace=trace)
    for rule in route.rules:
        if rule.kind is not RuleKind.ALLOW:
            continue
        if rule.test is None:
            outcome, detail = Outcome.TRUE, ""
        else:
            outcome, detail = _run(rule.test, facts)
        trace.append(RuleTrace("allow", rule.text, rule.span, outcome, detail))
        if outcome is Outcome.TRUE:
            return _decided(
                route, 200, Reason.ALLOWED, "an allow rule holds", rule.span, principal, trace=trace
            )
    return _decided(
        route, 403, Reason.NOT_ALLOWED, "no allow rule holds", None, principal, trace=trace
    )


def invalid_token(policy: Policy, route: RoutePlan, detail: str) -> Decision:
    return _decided(
        route,
        401,
        Reason.INVALID_TOKEN,
        detail,
        headers=_challenges(policy, route, 'error="invalid_token"'),
    )


def _run(test: Any, facts: Facts) -> tuple[Outcome, str]:
    try:
        return (Outcome.TRUE if test(facts) else Outcome.FALSE), ""
    except RuleError as exc:
        return Outcome.ERROR, str(exc)


def _decided(
    route: RoutePlan,
    status: int,
    reason: Reason,
    message: str,
    rule: Any = None,
    principal: Principal | None = None,
    *,
    headers: tuple[tuple[str, str], ...] = (),
    trace: list[RuleTrace] | tuple[RuleTrace, ...] = (),
) -> Decision:
    return Decision(
        status, reason, message, route.span, rule, principal, headers, tuple(trace), route.text
    )


def _challenges(policy: Policy, route: RoutePlan, error: str | None) -> tuple[tuple[str, str], ...]:
    """One WWW-Authenticate challenge per scheme the route accepts (RFC 6750 3, RFC 7617 2)."""
    realm = f'realm="{policy.settings.realm}"'
    bearer = f"Bearer {realm}" + (f", {error}" if error else "")
    challenges = [("WWW-Authenticate", bearer)]
    if route.tokens:
        challenges.append(("WWW-Authenticate", f"Basic {realm}"))
    return tuple(challenges)


def _shown(request: CanonicalRequest) -> str:
    path = request.path
    return path if len(path) <= 80 else path[:77] + "..."
