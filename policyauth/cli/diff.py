"""`policyauth diff OLD NEW`: which requests a policy change decides differently.

Exit 0 when no decision changes, 1 when some do (or may), 2 on errors: a policy that does not
load prints its diagnostics, never a traceback.
"""

from __future__ import annotations

import argparse
import json

from policyauth.analysis.diff import DiffReport, diff_policies, load_for_diff
from policyauth.cli import EXIT_NEGATIVE, EXIT_OK, Command, out


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("old", metavar="OLD", help="the policy before the change")
    parser.add_argument("new", metavar="NEW", help="the policy after the change")
    parser.add_argument(
        "--format",
        choices=("text", "json", "markdown"),
        default="text",
        help="markdown: a table for a pull-request comment",
    )


def _run(args: argparse.Namespace) -> int:
    report = diff_policies(load_for_diff(args.old), load_for_diff(args.new))
    out(render(report, args.format))
    return EXIT_NEGATIVE if report.flips else EXIT_OK


def render(report: DiffReport, style: str) -> str:
    """The report in one of the three formats (`text`, `json`, `markdown`)."""
    if style == "json":
        document = {
            "changes": [c.to_json() for c in report.changes],
            "settings": [
                {"name": s.name, "fields": list(s.fields), "where": s.where}
                for s in report.settings
            ],
        }
        return json.dumps(document, indent=2)
    if style == "markdown":
        return _markdown(report)
    return _text(report)


def _rule(outcome_rule: str | None, where: str | None) -> str:
    if outcome_rule is None:
        return "(no route)"
    return f"`{outcome_rule}` ({where})"


def _text(report: DiffReport) -> str:
    if not report.flips:
        return "no decision changes"
    lines = []
    for change in report.changes:
        methods = ", ".join(change.methods)
        head = f"{methods} {change.pattern} (e.g. {change.example}) if {change.identity}:"
        if change.possibly:
            lines.append(f"{head} possibly changes")
            for label, rules, outcome in (
                ("old", change.old_rules, change.old),
                ("new", change.new_rules, change.new),
            ):
                listed = "; ".join(rules) or _rule(outcome.rule, outcome.where)
                lines.append(f"  {label} rules: {listed}")
            continue
        lines.append(f"{head} {change.old.short} -> {change.new.short}")
        lines.append(f"  old: {_rule(change.old.rule, change.old.where)}")
        lines.append(f"  new: {_rule(change.new.rule, change.new.where)}")
    for setting in report.settings:
        lines.append(
            f"{setting.name} changed ({', '.join(setting.fields)}) at {setting.where}: "
            "decisions may change without a rule change"
        )
    count = len(report.changes)
    if count:
        lines.append(f"{count} class{'es' if count != 1 else ''} of requests change")
    else:
        lines.append("no rule decides differently; the settings above may still change decisions")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown(report: DiffReport) -> str:
    if not report.flips:
        return "**policyauth diff**: no decision changes."
    if not report.changes:
        lines = ["**policyauth diff**: no rule decides differently, but settings changed."]
    else:
        lines = [
            "**policyauth diff**: these requests are decided differently.",
            "",
            "| methods | pattern | example | identity | old | new | old rule | new rule |",
            "|---|---|---|---|---|---|---|---|",
        ]
    for change in report.changes:
        old, new = (
            ("possibly changes", "") if change.possibly else (change.old.short, change.new.short)
        )
        old_rule = "; ".join(change.old_rules) or _rule(change.old.rule, change.old.where)
        new_rule = "; ".join(change.new_rules) or _rule(change.new.rule, change.new.where)
        cells = [
            ", ".join(change.methods),
            f"`{change.pattern}`",
            f"`{change.example}`",
            f"`{change.identity}`",
            old,
            new,
            old_rule,
            new_rule,
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    for setting in report.settings:
        lines.append("")
        lines.append(
            f"- `{setting.name}` changed ({', '.join(setting.fields)}) at {setting.where}: "
            "decisions may change without a rule change."
        )
    return "\n".join(lines)


COMMAND = Command(
    name="diff",
    help="list the requests two versions of a policy decide differently",
    description=__doc__ or "",
    configure=_configure,
    run=_run,
)
