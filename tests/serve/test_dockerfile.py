"""The Dockerfile (no image can be built here): a slim Python base, a non-root user, and
`policyauth serve` on the mounted policy as the entry point, bound where a container's port
mapping can reach it. The entry point's arguments are also checked against the CLI parser."""

from __future__ import annotations

import json
import re
from pathlib import Path

from policyauth.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
TEXT = (ROOT / "Dockerfile").read_text()


def instruction(name: str) -> list[str]:
    return re.findall(rf"^{name}\s+(.*)$", TEXT, flags=re.MULTILINE)


def test_base_is_python_slim() -> None:
    (base,) = instruction("FROM")
    assert re.fullmatch(r"python:3\.1[1-9]-slim", base)


def test_runs_as_a_non_root_user() -> None:
    users = instruction("USER")
    assert users
    assert users[-1] not in ("root", "0")
    assert "useradd --system --uid 10001" in TEXT


def test_entrypoint_is_policyauth_serve_on_the_mounted_policy() -> None:
    (entrypoint,) = instruction("ENTRYPOINT")
    command = json.loads(entrypoint)  # exec form: signals reach policyauth, not a shell
    assert command[:3] == ["policyauth", "serve", "/etc/policyauth/policy.policy"]
    args = build_parser().parse_args(command[1:])
    assert (args.command, args.host, args.port) == ("serve", "0.0.0.0", 9000)
    assert instruction("EXPOSE") == ["9000"]


def test_installs_the_metrics_extra_and_the_docs_name_the_same_path() -> None:
    assert "'.[serve,metrics]'" in TEXT  # the fast HTTP stack and /metrics
    assert "/etc/policyauth/policy.policy" in (ROOT / "docs" / "serve.md").read_text()
