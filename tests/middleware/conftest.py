"""Fixtures of the middleware tests: real uvicorn and waitress processes on loopback.

Module-scoped servers run the applications of apps/ with the engine of apps/server.json (the
server tests' policy and identities, in the decision-table format); the token RAISING_TOKEN
makes their identity source raise. `server_pool` starts servers per decision-table file for
the replay, once per session. The machinery is in middleware_servers.py.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from middleware_servers import RAISING_TOKEN, Server, ServerPool, running


@pytest.fixture(scope="module")
def uvicorn_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """asgi_app:app: the middleware added as Starlette middleware, at the root."""
    workdir = tmp_path_factory.mktemp("uvicorn")
    with running("uvicorn", "asgi_app:app", workdir, raising_token=RAISING_TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def uvicorn_httptools_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """asgi_app:app on uvicorn's fast stack (httptools + uvloop, as `uvicorn[standard]`)."""
    workdir = tmp_path_factory.mktemp("uvicorn-httptools")
    args = ["--http", "httptools", "--loop", "uvloop"]
    with running("uvicorn", "asgi_app:app", workdir, args=args) as server:
        yield server


@pytest.fixture(scope="module")
def uvicorn_root_path_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """asgi_app:app behind `uvicorn --root-path /mount` (a proxy that strips the prefix)."""
    workdir = tmp_path_factory.mktemp("uvicorn-root-path")
    with running("uvicorn", "asgi_app:app", workdir, args=["--root-path", "/mount"]) as server:
        yield server


@pytest.fixture(scope="module")
def uvicorn_mount_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """asgi_app:mounted_app: the middleware inside `Mount("/mount", ...)`."""
    workdir = tmp_path_factory.mktemp("uvicorn-mount")
    with running("uvicorn", "asgi_app:mounted_app", workdir) as server:
        yield server


@pytest.fixture(scope="module")
def waitress_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("waitress")
    with running("waitress", "wsgi_app:app", workdir, raising_token=RAISING_TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def waitress_prefix_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """wsgi_app:app under waitress `--url-prefix=/mount` (SCRIPT_NAME)."""
    workdir = tmp_path_factory.mktemp("waitress-prefix")
    with running("waitress", "wsgi_app:app", workdir, args=["--url-prefix=/mount"]) as server:
        yield server


@pytest.fixture(scope="session")
def server_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPool]:
    pool = ServerPool(tmp_path_factory.mktemp("table-servers"))
    try:
        yield pool
    finally:
        pool.close()
