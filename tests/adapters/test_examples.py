"""examples/*_app.py: each example imports, is guarded by policies/github-ci.policy, and lets
in a CI job's upload to its own project while refusing one to another project.

Each runs against a copy of the policy whose `ci` token store holds a real token issued here,
in process through httpx's ASGI or WSGI transport. Django's settings belong to a process, so
its example runs in a child process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from policyauth.identity import tokens

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
POLICY = ROOT / "policies" / "github-ci.policy"


def _example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def ci(tmp_path: Path) -> tuple[Path, str]:
    """A copy of github-ci.policy and a token of its `ci` store for a job of project widgets."""
    policy = tmp_path / POLICY.name
    shutil.copyfile(POLICY, policy)
    token, _ = tokens.create(tmp_path / "ci.tokens", "job-1", ["widgets"])
    return policy, token


def _check(responses: dict[str, Any]) -> None:
    assert responses["upload"] == [201, {"stored": "widgets/w.tgz", "by": "job-1"}]
    assert responses["download"] == [200, "v1", "job-1"]
    assert responses["other project"] == [403, {"error": "not_allowed"}]
    assert responses["anonymous"] == [401, {"error": "no_credentials"}]
    assert responses["health"] == [200, {"status": "ok"}]


async def _exercise_asgi(app: Any, token: str) -> dict[str, Any]:
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        return await _exercise(client, token)


async def _exercise(client: Any, token: str) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {token}"}
    upload = await client.put("/api/artifacts/widgets/w.tgz", content=b"v1", headers=auth)
    download = await client.get("/api/artifacts/widgets/w.tgz", headers=auth)
    other = await client.put("/api/artifacts/gadgets/g.tgz", content=b"v1", headers=auth)
    anonymous = await client.get("/api/artifacts/widgets/w.tgz")
    health = await client.get("/healthz")
    return {
        "upload": [upload.status_code, upload.json()],
        "download": [download.status_code, download.text, download.headers.get("x-served-to")],
        "other project": [other.status_code, other.json()],
        "anonymous": [anonymous.status_code, anonymous.json()],
        "health": [health.status_code, health.json()],
    }


@pytest.mark.parametrize("name", ["starlette_app", "fastapi_app"])
async def test_asgi_examples(name: str, ci: tuple[Path, str]) -> None:
    policy, token = ci
    app = _example(name).create_app(policy)
    _check(await _exercise_asgi(app, token))


class _SyncAsAsync:
    """An httpx.Client with awaitable methods, so one exercise serves both kinds of app."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    async def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return self._client.put(url, **kwargs)

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self._client.get(url, **kwargs)


async def test_flask_example(ci: tuple[Path, str]) -> None:
    policy, token = ci
    app = _example("flask_app").create_app(policy)
    transport = httpx.WSGITransport(app)
    with httpx.Client(transport=transport, base_url="http://127.0.0.1") as client:
        _check(await _exercise(_SyncAsAsync(client), token))


DJANGO_CHECK = """
import asyncio, json, sys
import httpx
sys.path[:0] = [{tests!r}, {examples!r}]
from test_examples import _SyncAsAsync, _exercise
import django_app  # configures Django: ROOT_URLCONF is the module itself

with httpx.Client(
    transport=httpx.WSGITransport(django_app.application), base_url="http://127.0.0.1"
) as client:
    print(json.dumps(asyncio.run(_exercise(_SyncAsAsync(client), sys.argv[1]))))
"""


def test_django_example(ci: tuple[Path, str]) -> None:
    policy, token = ci
    script = DJANGO_CHECK.format(tests=str(Path(__file__).parent), examples=str(EXAMPLES))
    result = subprocess.run(
        [sys.executable, "-c", script, token],
        env={**os.environ, "POLICYAUTH_POLICY": str(policy)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    _check(json.loads(result.stdout))


def test_the_django_example_passes_djangos_system_check() -> None:
    """The example's command line is Django's: `check` runs the framework's own checks."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "django_app.py"), "check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout
