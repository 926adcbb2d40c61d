"""A policy that does not load stops the application from starting, and says every reason.

Starlette and FastAPI build `add_middleware`'s middleware on the first call, the lifespan
call, where uvicorn's default lifespan mode ("auto") would swallow the exception, print
"Application startup complete" and answer 500 to everything. The middleware answers that
lifespan startup with `lifespan.startup.failed` and every diagnostic instead, so uvicorn exits.
Written by hand, `PolicyAuthMiddleware(app, policy=...)` raises where it is written, as the
WSGI middleware and Flask's extension do, with every diagnostic in the exception's notes.

Real uvicorn processes, with the default lifespan mode, on an application and a broken policy
written into a temporary folder.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from flask import Flask
from starlette.applications import Starlette

from policyauth import PolicyError
from policyauth.asgi import PolicyAuthMiddleware
from policyauth.flask import PolicyAuth
from policyauth.wsgi import PolicyAuthMiddleware as WSGIMiddleware

BROKEN = """\
route GET /a/** {
  auth nobody
  allow
}

route GET /b/** {
  auth ghost
  allow
}

route GET /c {
  auth phantom
  allow
}
"""

# Each diagnostic in its one-line form, and the line its help gives.
EVERY_DIAGNOSTIC = [
    "broken.policy:2:8: PA110 unknown provider or tokens block `nobody`",
    "broken.policy:7:8: PA110 unknown provider or tokens block `ghost`",
    "broken.policy:12:8: PA110 unknown provider or tokens block `phantom`",
]

APPS = {
    "starlette add_middleware": """
        from starlette.applications import Starlette
        from policyauth.asgi import PolicyAuthMiddleware

        app = Starlette()
        app.add_middleware(PolicyAuthMiddleware, policy="broken.policy")
    """,
    "starlette middleware list": """
        from starlette.applications import Starlette
        from starlette.middleware import Middleware
        from policyauth.asgi import PolicyAuthMiddleware

        app = Starlette(middleware=[Middleware(PolicyAuthMiddleware, policy="broken.policy")])
    """,
    "fastapi add_middleware": """
        from fastapi import FastAPI
        from policyauth.asgi import PolicyAuthMiddleware

        app = FastAPI()
        app.add_middleware(PolicyAuthMiddleware, policy="broken.policy")
    """,
    "wrapped by hand": """
        from starlette.applications import Starlette
        from policyauth.asgi import PolicyAuthMiddleware

        app = PolicyAuthMiddleware(Starlette(), policy="broken.policy")
    """,
}


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    (tmp_path / "broken.policy").write_text(BROKEN, encoding="utf-8")
    return tmp_path / "broken.policy"


def _uvicorn(folder: Path, source: str) -> subprocess.CompletedProcess[str]:
    """uvicorn with its default lifespan mode on `source`; it must exit by itself."""
    (folder / "served.py").write_text(textwrap.dedent(source), encoding="utf-8")
    command = [sys.executable, "-m", "uvicorn", "served:app", "--host", "127.0.0.1"]
    command += ["--port", "0"]
    try:
        return subprocess.run(
            command,
            cwd=folder,
            env={**os.environ, "PYTHONPATH": str(folder)},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired as running:
        output = (running.stdout or b"") + (running.stderr or b"")
        text = output.decode(errors="replace") if isinstance(output, bytes) else output
        pytest.fail(f"uvicorn started and kept serving on a broken policy:\n{text}")


@pytest.mark.parametrize("kind", list(APPS))
def test_uvicorn_exits_and_names_every_diagnostic(kind: str, broken: Path) -> None:
    result = _uvicorn(broken.parent, APPS[kind])
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Application startup complete" not in output
    for line in EVERY_DIAGNOSTIC:
        assert line in output, output
    if kind != "wrapped by hand":  # that one raises at import: a traceback with its notes
        assert "Application startup failed" in output
        assert "Traceback" not in output
        assert "more)" not in output


async def test_without_a_lifespan_every_request_is_refused(
    broken: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Where the server runs no lifespan, the lazily built middleware lets nothing in."""
    monkeypatch.chdir(broken.parent)
    app = Starlette()
    app.add_middleware(PolicyAuthMiddleware, policy="broken.policy")
    transport = httpx.ASGITransport(app)  # runs no lifespan
    with caplog.at_level(logging.ERROR, logger="policyauth.middleware"):
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/a/x")
    assert (response.status_code, response.json()) == (500, {"error": "internal_error"})
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for line in EVERY_DIAGNOSTIC:
        assert line in logged


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda policy: PolicyAuthMiddleware(Starlette(), policy=policy), id="asgi"),
        pytest.param(lambda policy: WSGIMiddleware(Flask(__name__), policy=policy), id="wsgi"),
        pytest.param(lambda policy: PolicyAuth(Flask(__name__), policy=policy), id="flask"),
    ],
)
def test_written_by_hand_a_broken_policy_raises_with_every_diagnostic(
    build: Callable[[str], object], broken: Path
) -> None:
    with pytest.raises(PolicyError) as raised:
        build(str(broken))
    error = raised.value
    assert str(error).endswith("PA110 unknown provider or tokens block `nobody` (and 2 more)")
    notes = "\n".join(getattr(error, "__notes__", []))
    for line in EVERY_DIAGNOSTIC:
        assert f"{broken.parent}/{line}" in notes
