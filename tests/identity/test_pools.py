"""Connection pools for providers (issue 13): one pool per provider host, every connection
kept alive, and sniffio installed so httpcore does not retry a failing import on every lock."""

from __future__ import annotations

import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from policyauth.identity.transport import PoolTransport
from policyauth.identity.userinfo import POOL_SIZE, Request, Response, UserinfoClient, _origin


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b'{"sub": "x"}'
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def two_providers() -> Iterator[tuple[str, str]]:
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _Handler) for _ in range(2)]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    try:
        first, second = (f"http://127.0.0.1:{s.server_address[1]}/userinfo" for s in servers)
        yield first, second
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_the_origin_is_scheme_host_and_port_never_the_path_or_query() -> None:
    assert _origin("https://sso.example.com/userinfo?x=1") == "https://sso.example.com:443"
    assert _origin("http://127.0.0.1:8080/a/b") == "http://127.0.0.1:8080"
    assert _origin("HTTPS://api.github.com/user") == "https://api.github.com:443"


def test_each_provider_host_gets_its_own_pool_with_every_connection_kept_alive(
    two_providers: tuple[str, str],
) -> None:
    client = UserinfoClient(5.0)
    try:
        for url in (*two_providers, two_providers[0]):
            answer = client.send_sync(Request("GET", url, ()))
            assert isinstance(answer, Response)
            assert answer.status == 200
        assert sorted(origin for _, origin in client._sync) == sorted(
            _origin(url) for url in two_providers
        )
        pools = [c._transport for c in client._sync.values()]  # type: ignore[attr-defined]
        assert pools[0] is not pools[1]
        for pool in pools:
            assert isinstance(pool, PoolTransport)
            assert pool.max_connections == POOL_SIZE
            assert [len(kept) for kept in pool._idle.values()] == [1]  # only its own host's
    finally:
        client.close()


async def test_async_pools_are_per_host_too(two_providers: tuple[str, str]) -> None:
    client = UserinfoClient(5.0)
    try:
        for url in two_providers:
            answer = await client.send(Request("GET", url, ()))
            assert isinstance(answer, Response)
            assert answer.status == 200
        assert len(client._async) == 2
    finally:
        await client.aclose()


def test_sniffio_is_a_core_dependency_and_importable() -> None:
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    assert any(d.startswith("sniffio") for d in dependencies)
    import sniffio  # noqa: F401 - httpcore's lock imports it on every acquire when missing
