"""policyauth: authenticate REST requests with the identity callers already have, by policy.

The public API. Everything a user or a test relies on is importable from here; the modules
behind it may move.
"""

from policyauth.compiler import Policy
from policyauth.decision import Decision, Outcome, Principal, Reason, RuleTrace
from policyauth.diagnostics import Diagnostic, PolicyError, Severity, Span
from policyauth.engine import Engine
from policyauth.identity import (
    Identity,
    IdentitySource,
    Invalid,
    StaticIdentitySource,
    Unavailable,
)
from policyauth.loader import analyze, load, loads
from policyauth.observe import exposition
from policyauth.serve import ForwardAuthApp, TrustedPeers

__all__ = [
    "Decision",
    "Diagnostic",
    "Engine",
    "ForwardAuthApp",
    "Identity",
    "IdentitySource",
    "Invalid",
    "Outcome",
    "Policy",
    "PolicyError",
    "Principal",
    "Reason",
    "RuleTrace",
    "Severity",
    "Span",
    "StaticIdentitySource",
    "TrustedPeers",
    "Unavailable",
    "analyze",
    "exposition",
    "load",
    "loads",
]
