"""`reload=True` in the framework adapters (issue 11): Starlette, FastAPI, Flask and Django
watch the policy file they were given and put a changed one in force without a restart.

Policy A makes `GET /r` public (200); policy B has no route for it (403 `no_route`). Each
adapter serves a real app through its framework's own test client (Django in a child process,
since its settings are global); the watcher stats the file every second.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import policyauth.fastapi
import policyauth.flask
import policyauth.starlette

PUBLIC = "route GET /r {\n  public\n}\n"
ELSEWHERE = "route GET /elsewhere {\n  public\n}\n"


def write(path: Path, text: str) -> None:
    """Write, then date the file 2 s ahead so the watcher sees a change within one stat."""
    path.write_text(text)
    later = time.time_ns() + 2_000_000_000
    os.utime(path, ns=(later, later))


def becomes(status: Callable[[], int], expected: int, within: float = 10) -> int:
    """The status once it is `expected`, or the last one seen after `within` seconds."""
    deadline = time.monotonic() + within
    seen = status()
    while seen != expected and time.monotonic() < deadline:
        time.sleep(0.1)
        seen = status()
    return seen


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    file = tmp_path / "p.policy"
    write(file, PUBLIC)
    return file


def test_starlette_reloads_its_policy_file(policy_file: Path) -> None:
    app = Starlette(
        routes=[Route("/r", lambda request: PlainTextResponse("ok"))],
        middleware=[policyauth.starlette.middleware(policy=policy_file, reload=True)],
    )
    with TestClient(app) as client:
        assert client.get("/r").status_code == 200
        write(policy_file, ELSEWHERE)
        assert becomes(lambda: client.get("/r").status_code, 403) == 403
        assert client.get("/r").json() == {"error": "no_route"}


def test_fastapi_install_reloads_its_policy_file(policy_file: Path) -> None:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/r")
    def read() -> str:
        return "ok"

    engine = policyauth.fastapi.install(app, policy=policy_file, reload=True)
    try:
        with TestClient(app) as client:
            assert client.get("/r").status_code == 200
            write(policy_file, ELSEWHERE)
            assert becomes(lambda: client.get("/r").status_code, 403) == 403
    finally:
        engine.close()


@pytest.mark.parametrize("how", ["argument", "config"])
def test_flask_reloads_its_policy_file(policy_file: Path, how: str) -> None:
    from flask import Flask

    app = Flask(__name__)
    app.add_url_rule("/r", "r", lambda: "ok")
    if how == "argument":
        policyauth.flask.PolicyAuth(app, policy=str(policy_file), reload=True)
    else:
        app.config["POLICYAUTH_POLICY"] = str(policy_file)
        app.config["POLICYAUTH_RELOAD"] = True
        policyauth.flask.PolicyAuth(app)
    client = app.test_client()
    try:
        assert client.get("/r").status_code == 200
        write(policy_file, ELSEWHERE)
        assert becomes(lambda: client.get("/r").status_code, 403) == 403
    finally:
        app.extensions["policyauth"].close()


def test_flask_without_reload_keeps_its_policy(policy_file: Path) -> None:
    from flask import Flask

    app = Flask(__name__)
    app.add_url_rule("/r", "r", lambda: "ok")
    policyauth.flask.PolicyAuth(app, policy=str(policy_file))
    write(policy_file, ELSEWHERE)
    time.sleep(2.5)  # two watcher intervals, had there been a watcher
    assert app.test_client().get("/r").status_code == 200
    app.extensions["policyauth"].close()


DJANGO = """
import os, sys, time
import django
from django.conf import settings
from django.http import HttpResponse
from django.urls import path

FILE = sys.argv[1]
settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["testserver"],
    MIDDLEWARE=["policyauth.django.PolicyAuthMiddleware"],
    ROOT_URLCONF=__name__,
    POLICYAUTH={"POLICY": FILE, "RELOAD": True},
)
urlpatterns = [path("r", lambda request: HttpResponse("ok"))]
django.setup()
from django.test import Client

client = Client()
print(client.get("/r").status_code, flush=True)
with open(FILE, "w") as out:
    out.write(sys.argv[2])
later = time.time_ns() + 2_000_000_000
os.utime(FILE, ns=(later, later))
deadline = time.monotonic() + 10
status = client.get("/r").status_code
while status == 200 and time.monotonic() < deadline:
    time.sleep(0.1)
    status = client.get("/r").status_code
print(status, flush=True)
"""


def test_django_reload_setting_reloads_its_policy_file(policy_file: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(DJANGO), str(policy_file), ELSEWHERE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["200", "403"], result.stderr
