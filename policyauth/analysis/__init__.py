"""Static analyses over compiled policies: what changes between two versions of a policy.

Everything here reads checked models and compiled plans (never policy text a second time) and
decides with the real evaluator, so an analysis cannot disagree with the engine.
"""

from __future__ import annotations

from policyauth.analysis.diff import Change, DiffReport, SettingChange, diff_policies, load_for_diff

__all__ = ["Change", "DiffReport", "SettingChange", "diff_policies", "load_for_diff"]
