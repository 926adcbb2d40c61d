"""What the engine answers for one request: a Decision, with the reason and the rule behind it.

A deny is a value, not an exception: every path through the engine ends in a Decision that an
integration can turn into a response without knowing why it was made, and that a person can
read (`reason`, `message`, the route and rule locations, the trace of rules evaluated).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import attrs

from policyauth.diagnostics import Span


class Reason(enum.StrEnum):
    """The reason codes of section 5 of the language page; stable, safe to show callers."""

    ALLOWED = "allowed"
    MALFORMED_REQUEST = "malformed_request"
    NO_ROUTE = "no_route"
    INVALID_REQUEST = "invalid_request"
    NO_CREDENTIALS = "no_credentials"
    INVALID_TOKEN = "invalid_token"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    DENIED = "denied"
    NOT_ALLOWED = "not_allowed"


class Outcome(enum.StrEnum):
    TRUE = "true"
    FALSE = "false"
    ERROR = "error"


@attrs.frozen
class Principal:
    """Who the caller is: the authenticator that vouched for them and the claims it gave."""

    provider: str
    username: str
    groups: tuple[str, ...]
    claims: Mapping[str, Any] = attrs.field(repr=False)


@attrs.frozen
class RuleTrace:
    """One rule as the evaluator saw it: its text, where it is, and what it came to."""

    kind: str  # "allow" or "deny"
    text: str
    span: Span
    outcome: Outcome
    detail: str = ""  # why it errored


@attrs.frozen
class Decision:
    status: int
    reason: Reason
    message: str
    route: Span | None = None
    rule: Span | None = None
    principal: Principal | None = None
    headers: tuple[tuple[str, str], ...] = ()
    # The rules evaluated, as plain tuples (kind, text, span, outcome, detail): building
    # RuleTrace values on every request would cost more than evaluating the rules; `trace`
    # builds them when someone reads it (explain, policy tests, logs).
    steps: tuple[tuple[str, str, Span, Outcome, str], ...] = attrs.field(default=(), repr=False)
    route_text: str | None = None  # `GET /a/{id}`, for logs and `explain`
    rule_label: str | None = None  # the deciding rule's label (`allow "readers" if ...`), if any
    # What the ASGI and WSGI middleware hand the application as the caller (a read-only
    # PolicyUser, policyauth/middleware.py's `user_of`), made once per decision: a remembered
    # decision answers request after request, and building it anew cost each of them more than
    # a tenth of the middleware. Not part of the value (no argument, no equality, no repr); it
    # never refers back to the decision, so no cycle keeps an evicted decision alive.
    memo: object = attrs.field(default=None, init=False, eq=False, repr=False)

    @property
    def allowed(self) -> bool:
        return self.status == 200

    @property
    def trace(self) -> tuple[RuleTrace, ...]:
        """Each rule the evaluator ran, in order, with its outcome."""
        return tuple(RuleTrace(*step) for step in self.steps)
