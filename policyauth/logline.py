"""One plain log line per decision, on the `policyauth.decisions` logger at INFO.

The one switch that makes allowed and denied requests visible, whatever the integration:
`logging.getLogger("policyauth.decisions").setLevel(logging.INFO)` (with a handler). The line
names the method once, the canonical path, the user when known, the status and reason, the
deciding rule (its label and place) and the decision's message:

    GET /reports/q3 -> 403 denied user=cody rule="contractors" reports.policy:8: a deny rule holds

Never a credential, and never the query: a query may carry a token (`access_token=`), so the
path is the canonical one without it, or, for a target that has none, the raw path cut before
its `?`, escaped and shortened. Claims other than the username are not logged either.
"""

from __future__ import annotations

import logging

from policyauth.decision import Decision
from policyauth.evaluator import Located
from policyauth.request.canonical import Rejection

DECISIONS = logging.getLogger("policyauth.decisions")


def log_line(method: str, target: str | Rejection, located: Located, decision: Decision) -> None:
    """Log `decision` at INFO; the caller checks `DECISIONS.isEnabledFor(logging.INFO)`."""
    if isinstance(located, Rejection):
        # An integration's own Rejection (a mount that does not match) carries no target.
        raw = target if isinstance(target, str) else "-"
        path = _shown(raw.split("?", 1)[0].split("#", 1)[0])
    else:
        path = _shown(located[0].path)
    parts = [f"{_shown(method)} {path} -> {decision.status} {decision.reason.value}"]
    if decision.principal is not None:
        parts.append(f"user={_shown(decision.principal.username)}")
    if decision.rule is not None:
        label = f'"{_shown(decision.rule_label)}" ' if decision.rule_label is not None else ""
        parts.append(f"rule={label}{decision.rule.file}:{decision.rule.line}")
    DECISIONS.info("%s: %s", " ".join(parts), _shown(decision.message))


def _shown(text: str) -> str:
    """Caller-controlled text for one log line: escaped (no forged lines), at most 200 chars."""
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= 200 else text[:197] + "..."
