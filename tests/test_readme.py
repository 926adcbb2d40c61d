"""README.md and docs/python.md stay true: every Python snippet runs as written, and the
README's ten-line policy shows exactly the warning the text says it does.

Snippets are run in a scratch folder holding the repository's policies/ plus the `api.policy`
the embedding snippets name, with what a snippet takes from the reader's own project (an `app`
of the framework it imports, `routes`, Django's `BASE_DIR`) provided by a small harness; every
name that comes from a library must be imported by the snippet itself.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import policyauth

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PYTHON_DOC = ROOT / "docs" / "python.md"

API_POLICY = """\
provider corp {
  userinfo = "https://sso.example.com/userinfo"
  username = $.sub
  groups   = $.groups[*]
}

route GET /reports/{name} {
  auth corp
  allow if "reporting" in groups
}

route GET /health {
  public
}
"""


def fenced(language: str, page: Path = README) -> list[str]:
    text = page.read_text(encoding="utf-8")
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


SNIPPETS = fenced("python")
PAGES = [(page, code) for page in (README, PYTHON_DOC) for code in fenced("python", page)]


def harness(code: str, folder: Path) -> dict[str, Any]:
    """What the snippet takes from the reader's project, chosen by what it imports."""
    namespace: dict[str, Any] = {"__name__": "readme_snippet"}
    if "policyauth.flask" in code or "policyauth.wsgi" in code:
        from flask import Flask

        namespace["app"] = Flask("readme")
    elif "policyauth.fastapi" in code:
        from fastapi import FastAPI

        namespace["app"] = FastAPI()
    elif "policyauth.asgi" in code:
        from starlette.applications import Starlette

        namespace["app"] = Starlette()
    if re.search(r"\broutes\b", code):
        namespace["routes"] = []
    if "BASE_DIR" in code:
        namespace["BASE_DIR"] = folder
    return namespace


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder to run snippets in; what they change in `logging` is undone afterwards."""
    root = logging.getLogger()
    handlers, levels = (
        list(root.handlers),
        {
            name: logging.getLogger(name).level
            for name in ("", "policyauth", "policyauth.decisions")
        },
    )
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    (tmp_path / "policies" / "api.policy").write_text(API_POLICY, encoding="utf-8")
    (tmp_path / "api.policy").write_text(API_POLICY, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    root.handlers[:] = handlers
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_the_readme_has_python_snippets():
    assert len(SNIPPETS) >= 6


@pytest.mark.parametrize(
    ("page", "code"), PAGES, ids=[f"{page.name}-{i}" for i, (page, _) in enumerate(PAGES)]
)
def test_each_python_snippet_runs_as_written(page: Path, code: str, scratch: Path):
    namespace = harness(code, scratch)
    exec(compile(code, page.name, "exec"), namespace)


def test_the_python_api_snippet_decides(scratch: Path):
    """The first snippet is the engine itself: its decision is the public route's."""
    [code] = [c for c in SNIPPETS if "authorize_sync" in c]
    namespace = harness(code, scratch)
    exec(compile(code, "README.md", "exec"), namespace)
    decision = namespace["decision"]
    assert (decision.status, decision.reason.value, decision.message) == (
        200,
        "allowed",
        "public route",
    )


def test_the_ten_line_policy_shows_its_warning_on_purpose():
    [policy] = [b for b in fenced("") if b.lstrip().startswith("provider")]
    assert len(policy.strip().splitlines()) <= 14  # ten lines of rules, and the blank lines
    _, diagnostics = policyauth.analyze(policy, "readme.policy")
    assert [(d.code, d.is_error) for d in diagnostics] == [("PA202", False)]
    text = README.read_text(encoding="utf-8")
    after = text[text.index(policy) + len(policy) :]
    # The paragraph right after the policy says that lint warns, and why.
    assert after.split("\n\n", 2)[1].startswith(
        "`policyauth lint` warns about this policy on purpose (PA202)"
    )
