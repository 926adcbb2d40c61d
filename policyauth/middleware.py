"""What the ASGI and WSGI middleware share: building the engine, the principal objects handlers
see, and the response a denial becomes.

The body of a denial is deliberately small (`{"error": "<reason>"}`): the reason codes are
public (RFC 6750 error codes and policyauth's own), the message, the rule and the route are not,
since they describe the policy to whoever probes it. Integrations log those instead.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from policyauth.compiler import Policy
from policyauth.decision import Decision, Principal
from policyauth.diagnostics import PolicyError
from policyauth.engine import Engine
from policyauth.loader import load

log = logging.getLogger("policyauth.middleware")


def build_engine(
    engine: Engine | None,
    policy: str | os.PathLike[str] | Policy | None,
    *,
    reload: bool = False,
) -> Engine:
    """The engine a middleware uses: the one given, or one built for a policy (file or value).

    `reload=True` makes the built engine watch its policy file (Engine(reload=True)); a given
    engine already decided that for itself, so the two together are a mistake."""
    if (engine is None) == (policy is None):
        raise TypeError("give exactly one of `engine=` or `policy=`")
    if engine is not None:
        if reload:
            raise TypeError(
                "`reload=True` goes with `policy=`; a given engine watches its file "
                "if it was made with Engine(..., reload=True)"
            )
        return engine
    assert policy is not None
    if isinstance(policy, Policy):
        return Engine(policy, reload=reload)
    try:
        return Engine(load(policy), reload=reload)
    except PolicyError as error:
        # The message names the first error; a traceback at startup shows the notes too.
        error.add_note("every diagnostic:\n" + error.render())
        raise


class PolicyUser:
    """The caller, as `request.user` (Starlette's BaseUser interface, without importing it).

    Read-only: the middleware hands every request a decision answers the same one
    (`user_of`)."""

    __slots__ = ("_principal",)

    def __init__(self, principal: Principal | None) -> None:
        self._principal = principal

    @property
    def principal(self) -> Principal | None:
        return self._principal

    @property
    def is_authenticated(self) -> bool:
        return self._principal is not None

    @property
    def display_name(self) -> str:
        return self._principal.username if self._principal else ""

    @property
    def identity(self) -> str:
        return self.display_name

    @property
    def username(self) -> str:
        return self.display_name

    @property
    def groups(self) -> tuple[str, ...]:
        return self._principal.groups if self._principal else ()

    @property
    def provider(self) -> str | None:
        return self._principal.provider if self._principal else None

    @property
    def claims(self) -> Mapping[str, Any]:
        return self._principal.claims if self._principal else {}

    def __repr__(self) -> str:
        return f"PolicyUser({self.display_name!r})" if self._principal else "PolicyUser(anonymous)"


def user_of(decision: Decision) -> PolicyUser:
    """The PolicyUser for `decision`'s requests, made on its first and kept on the decision
    (`Decision.memo`): a remembered decision then costs its requests no new object."""
    user = decision.memo
    if type(user) is not PolicyUser:
        user = PolicyUser(decision.principal)
        object.__setattr__(decision, "memo", user)  # a memo, not part of the frozen value
    return user


class PolicyAuth:
    """`request.auth`: Starlette's AuthCredentials shape (`scopes` are the caller's groups),
    plus the whole decision for handlers that want the route or rule."""

    __slots__ = ("decision",)

    def __init__(self, decision: Decision) -> None:
        self.decision = decision

    @property
    def scopes(self) -> list[str]:
        principal = self.decision.principal
        return list(principal.groups) if principal else []


def denial_body(decision: Decision) -> bytes:
    return json.dumps({"error": str(decision.reason)}).encode()


def denial_headers(decision: Decision) -> list[tuple[str, str]]:
    body = denial_body(decision)
    return [
        ("content-type", "application/json"),
        ("content-length", str(len(body))),
        ("cache-control", "no-store"),
        *decision.headers,
    ]


def log_decision(decision: Decision, method: str) -> None:
    """Denials an integration answered itself, at DEBUG, by route; never credentials.

    The documented switch for seeing decisions is the `policyauth.decisions` logger at INFO
    (policyauth/logline.py: every decision, allowed or denied, with the canonical path and the
    user); this line only says that the integration, not the application, sent the denial."""
    if decision.allowed:
        return
    where = f" rule {decision.rule}" if decision.rule else ""
    log.debug(
        "%s -> %d %s%s: denied by the integration",
        decision.route_text or f"{method} (no route)",
        decision.status,
        decision.reason,
        where,
    )
