"""Evidence of what policyauth decided: decision logs and Prometheus metrics (production.md
section 4). Every integration goes through `Engine.authorize`, and the engine reports each
decision here, so an embedded app and `policyauth serve` leave the same evidence."""

from policyauth.observe.decisions import DecisionLog
from policyauth.observe.metrics import METRICS, Metrics, exposition

__all__ = ["METRICS", "DecisionLog", "Metrics", "exposition"]
