"""A first look at policyauth: real decisions for real-looking requests, offline.

Loads policies/confluence.policy (the example of the language reference), stands in for the
identity providers with known userinfo documents, and prints what the engine decides for a
handful of requests: who was let in, who was not, and the rule or reason behind each answer.

Run it with `make demo`.
"""

from __future__ import annotations

from pathlib import Path

import policyauth

ROOT = Path(__file__).resolve().parent.parent

# What each provider's userinfo endpoint would answer for these tokens.
IDENTITIES = {
    ("google", "ya29.ada"): {"email": "ada@example.com", "email_verified": True, "sub": "1"},
    ("google", "ya29.eve"): {"email": "eve@example.com", "email_verified": False, "sub": "2"},
    ("corp", "corp-ann"): {
        "preferred_username": "ann",
        "realm_access": {"roles": ["confluence-writers"]},
    },
    ("corp", "corp-bob"): {
        "preferred_username": "bob",
        "realm_access": {"roles": ["confluence-writers", "contractors"]},
    },
    ("automation", "pa_ci"): {"username": "ci", "groups": ["confluence-readers"]},
}

REQUESTS = [
    ("GET", "/status", None),
    ("GET", "/confluence/rest/api/content/42", None),
    ("GET", "/confluence/rest/api/content/42", "Bearer ya29.ada"),
    ("GET", "/confluence/rest/api/content/42", "Bearer ya29.eve"),
    ("GET", "/confluence/rest/api/content/42", "Bearer pa_ci"),
    ("PUT", "/confluence/rest/api/content/42", "Bearer corp-ann"),
    ("PUT", "/confluence/rest/api/content/42", "Bearer corp-bob"),
    ("PUT", "/confluence/rest/api/content/42", "Bearer corp-nobody"),
    ("GET", "/status/../confluence/rest/api/content/42", None),
    ("GET", "/admin", "Bearer corp-ann"),
]


def main() -> int:
    path = ROOT / "policies" / "confluence.policy"
    policy = policyauth.load(path, env={"GOOGLE_CLIENT_ID": "demo-client"})
    engine = policyauth.Engine(
        policy, identities=policyauth.StaticIdentitySource(policy, IDENTITIES)
    )
    print(f"policy: {path.relative_to(ROOT)} ({len(policy.routes)} routes)\n")
    for method, target, authorization in REQUESTS:
        headers = [("Authorization", authorization)] if authorization else []
        decision = engine.authorize_sync(method, target, headers)
        who = decision.principal.username if decision.principal else "-"
        by = f"rule at line {decision.rule.line}" if decision.rule else decision.message
        credential = authorization.split()[1] if authorization else "no credentials"
        print(f"{method:4} {target}")
        print(f"     {credential:>16} -> {decision.status} {decision.reason:<20} user={who:<4} {by}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
