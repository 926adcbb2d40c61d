"""The core imports no web framework, and each adapter imports only its own.

Checked in a fresh interpreter per case, since this test process has imported them all.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FRAMEWORKS = {"starlette", "fastapi", "flask", "werkzeug", "django", "uvicorn", "waitress"}

CHECK = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & set({frameworks}))))
"""


def _frameworks_loaded_by(*modules: str) -> set[str]:
    script = CHECK.format(frameworks=sorted(FRAMEWORKS))
    result = subprocess.run(
        [sys.executable, "-c", script, *modules],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout))


def test_the_core_and_the_pure_middleware_import_no_framework() -> None:
    core = ("policyauth", "policyauth.asgi", "policyauth.wsgi", "policyauth.cli.main")
    assert _frameworks_loaded_by(*core) == set()


@pytest.mark.parametrize(
    ("adapter", "allowed"),
    [
        ("policyauth.starlette", {"starlette"}),
        ("policyauth.fastapi", {"fastapi", "starlette"}),
        ("policyauth.flask", {"flask", "werkzeug"}),
        ("policyauth.django", {"django"}),
    ],
)
def test_each_adapter_imports_only_its_framework(adapter: str, allowed: set[str]) -> None:
    loaded = _frameworks_loaded_by(adapter)
    assert loaded <= allowed
    assert loaded & allowed
