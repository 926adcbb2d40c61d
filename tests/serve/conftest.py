"""Fixtures of the serve tests: one `policyauth serve` per session on a policy with a token
store (see serve_servers.py); tests that change their server's policy start their own."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import proxies
from proxies import Backend, Proxy
from serve_servers import Policy, Server, serving, write_policy


@pytest.fixture(scope="session")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    return write_policy(tmp_path_factory.mktemp("serve-policy"))


@pytest.fixture(scope="session")
def server(policy: Policy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    with serving(policy.path, log) as running:
        yield running


@pytest.fixture(scope="session")
def backend() -> Iterator[Backend]:
    running = Backend()
    yield running
    running.close()


@pytest.fixture(scope="session")
def nginx_proxy(
    server: Server, backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proxy]:
    with proxies.nginx(tmp_path_factory.mktemp("nginx"), server.port, backend) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def caddy_proxy(
    server: Server, backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proxy]:
    with proxies.caddy(tmp_path_factory.mktemp("caddy"), server.port, backend) as proxy:
        yield proxy


@pytest.fixture(params=["nginx", "caddy"])
def proxy(request: pytest.FixtureRequest) -> Proxy:
    return request.getfixturevalue(f"{request.param}_proxy")  # type: ignore[no-any-return]
