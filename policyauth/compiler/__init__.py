"""Checked policy to Plan: route index, rule closures, compiled claim paths and regexes."""

from policyauth.compiler.plan import (
    Facts,
    Origin,
    Policy,
    ProviderPlan,
    RoutePlan,
    RulePlan,
    compile_policy,
)

__all__ = ["Facts", "Origin", "Policy", "ProviderPlan", "RoutePlan", "RulePlan", "compile_policy"]
