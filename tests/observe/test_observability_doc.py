"""docs/observability.md stays true: its snippets expose the metrics from Starlette, FastAPI
and Flask as written (Django's is compiled: it needs a settings module to run)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.testclient import TestClient

DOC = Path(__file__).resolve().parents[2] / "docs" / "observability.md"


def snippet(framework: str) -> str:
    text = DOC.read_text()
    start = text.index(f"\n{framework}")
    return re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)  # type: ignore[union-attr]


def run(framework: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "snippet"}
    exec(compile(snippet(framework), f"observability.md ({framework})", "exec"), namespace)
    return namespace


def test_starlette_snippet() -> None:
    app = Starlette(routes=run("Starlette:")["routes"])
    response = TestClient(app).get("/metrics")
    assert response.status_code == 200
    assert "policyauth_decisions_total" in response.text


def test_fastapi_snippet() -> None:
    response = TestClient(run("FastAPI:")["app"]).get("/metrics")
    assert response.status_code == 200
    assert "policyauth_identity_cache_total" in response.text


def test_flask_snippet() -> None:
    response = run("Flask:")["app"].test_client().get("/metrics")
    assert response.status_code == 200
    assert b"policyauth_policy_reloads_total" in response.data
    assert response.content_type.startswith("text/plain")


def test_django_snippet_compiles() -> None:
    compile(snippet("Django"), "observability.md (Django)", "exec")
