"""Decisions from a compiled policy, without I/O: section 5 of the language page, step by step.

Every function here is pure. The engine calls `prepare` (steps 1 to 5: canonical request, first
matching route, credentials, the one authenticator for them), asks its identity source about
the credential if `prepare` did not already decide, and hands the answer to `finish` (steps 6
and 7: the principal and the rules, deny overriding allow). Integrations and the CLI never
re-implement any of it.
"""

from __future__ import annotations

from typing import Any

import attrs

from policyauth.compiler import Facts, Policy, RoutePlan
from policyauth.compiler.expressions import RuleError
from policyauth.decision import Decision, Outcome, Principal, Reason
from policyauth.diagnostics import Span
from policyauth.identity.jwt import unverified_issuer
from policyauth.identity.source import (
    DEFAULT_RETRY_AFTER,
    Credential,
    Identity,
    IdentityResult,
    Invalid,
)
from policyauth.identity.tokens import TOKEN_PREFIX
from policyauth.request import (
    BasicCredential,
    CanonicalRequest,
    Headers,
    NoCredentials,
    Rejection,
    canonical_target,
    header_problem,
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


Located = tuple[CanonicalRequest, RoutePlan | None] | Rejection


def locate(policy: Policy, method: str, target: str | Rejection) -> Located:
    """Steps 1 (the target) and 2: the canonical request and its first matching route.

    A pure function of the policy, the method and the raw target, so the engine remembers its
    answers for recent targets; the header checks of step 1 are made per request in `prepare`.
    A target an integration already refused (a Rejection: its mount does not match) stays so.
    """
    if isinstance(target, Rejection):
        return target
    request = canonical_target(method, target, max_path=policy.settings.max_path)
    if isinstance(request, Rejection):
        return request
    return request, policy.route_for(request.method, request.segments)


def prepare(
    policy: Policy,
    method: str,
    target: str | Rejection,
    headers: Headers,
    located: Located | None = None,
) -> Decision | Pending:
    """Steps 1 to 5: a Decision when one is already certain, else what to validate.

    `located` is `locate(policy, method, target)` when the caller already has it."""
    if located is None:
        located = locate(policy, method, target)
    rejection = located if isinstance(located, Rejection) else header_problem(headers)
    if rejection is not None:
        return Decision(400, Reason.MALFORMED_REQUEST, rejection.detail)
    assert not isinstance(located, Rejection)
    request, route = located
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
    store answers only for tokens it issued). A JWT goes to the `jwt` provider whose `issuer`
    is its `iss` (production.md section 1); other bearer tokens go to the provider whose
    `token_prefix` matches, or to the route's only provider when it declares no prefix: a
    provider that declares prefixes is never shown a token outside them (security case A20),
    even when it is alone on the route.
    """
    if isinstance(credential, BasicCredential) or credential.token.startswith(TOKEN_PREFIX):
        return route.tokens[0] if route.tokens else None
    providers = route.providers
    if len(providers) == 1:  # the common case, decided without a loop
        spec = policy.providers[providers[0]].spec
        if spec.validate == "jwt" or credential.token.startswith(spec.token_prefix):
            return providers[0]
        return None if spec.token_prefix else providers[0]
    opaque = providers
    if any(policy.providers[name].spec.validate == "jwt" for name in providers):
        chosen = _by_issuer(policy, providers, credential.token)
        if chosen is not None:
            return chosen
        opaque = tuple(n for n in providers if policy.providers[n].spec.validate != "jwt")
    for name in opaque:
        prefixes = policy.providers[name].spec.token_prefix
        if credential.token.startswith(prefixes):
            return name
        if not prefixes and len(opaque) == 1:
            return name
    return None


def _by_issuer(policy: Policy, providers: tuple[str, ...], token: str) -> str | None:
    """The jwt provider a JWT goes to: the one whose `issuer` is its unverified `iss` (the
    checker makes sure there is at most one). A jwt provider alone on its route takes every
    token: it refuses a foreign `iss` itself, before looking up any key."""
    if len(providers) == 1:
        return providers[0]
    issuer = unverified_issuer(token)
    if issuer is None:
        return None
    for name in providers:
        spec = policy.providers[name].spec
        if spec.validate == "jwt" and issuer in spec.issuers:
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
        # Every 503 says when to come back (RFC 9110 10.2.3): the provider's own hint or the
        # rationing interval where known, else a short default, so clients back off.
        retry = str(result.retry_after or DEFAULT_RETRY_AFTER)
        return _decided(
            route,
            503,
            Reason.PROVIDER_UNAVAILABLE,
            result.detail,
            headers=(("Retry-After", retry),),
        )
    request = pending.request
    # What follows is a pure function of the identity, the route and the request's method and
    # path, so a cached identity remembers its recent decisions (every header check above
    # still ran for this request). The plan's generation is part of the key: an identity
    # that outlives a reload never answers with a decision of the plan before it.
    key = (policy.generation, authenticator, route.index, request.method, request.path)
    return result.derived(key, lambda: _judge(policy, route, request, authenticator, result))


def _judge(
    policy: Policy,
    route: RoutePlan,
    request: CanonicalRequest,
    authenticator: str,
    identity: Identity,
) -> Decision:
    principal = identity.principal(authenticator)
    if principal is None:
        return invalid_token(policy, route, "the identity has no usable `username`")
    return evaluate_rules(route, request, principal)


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
    steps: list[tuple[str, str, Span, Outcome, str]] = []
    for rule in route.denies:
        outcome, detail = _run(rule.test, facts)
        steps.append(("deny", rule.text, rule.span, outcome, detail))
        if outcome is not Outcome.FALSE:
            message = (
                "a deny rule holds" if outcome is Outcome.TRUE else f"a deny rule errored: {detail}"
            )
            return _decided(
                route,
                403,
                Reason.DENIED,
                message,
                rule.span,
                principal,
                steps=steps,
                label=rule.label,
            )
    for rule in route.allows:
        if rule.test is None:
            outcome, detail = Outcome.TRUE, ""
        else:
            outcome, detail = _run(rule.test, facts)
        steps.append(("allow", rule.text, rule.span, outcome, detail))
        if outcome is Outcome.TRUE:
            return _decided(
                route,
                200,
                Reason.ALLOWED,
                "an allow rule holds",
                rule.span,
                principal,
                steps=steps,
                label=rule.label,
            )
    return _decided(
        route, 403, Reason.NOT_ALLOWED, "no allow rule holds", None, principal, steps=steps
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
    steps: list[tuple[str, str, Span, Outcome, str]] | None = None,
    label: str | None = None,
) -> Decision:
    return Decision(
        status,
        reason,
        message,
        route.span,
        rule,
        principal,
        headers,
        tuple(steps) if steps else (),
        route.text,
        label,
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
