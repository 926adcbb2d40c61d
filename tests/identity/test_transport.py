"""Our own httpx transport (policyauth/identity/transport.py) against a real loopback server
that writes raw bytes: connections are kept alive and reused, bounded, given up when the
exchange did not end cleanly or the server closed them, and every malformed answer is an
error, never a response. Both the sync and the async transport run every case."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from policyauth.identity import Unavailable
from policyauth.identity import transport as transport_module
from policyauth.identity.transport import DEADLINE, AsyncPoolTransport, PoolTransport
from policyauth.identity.userinfo import POOL_SIZE, Request, Response, UserinfoClient
from policyauth.language.model import Outbound

BODY = b'{"sub": "x"}'
OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n" + BODY
CLOSE = (
    b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\nconnection: close\r\n\r\n" + BODY
)  # fmt: skip

Answer = Callable[[int, socket.socket], bytes | None]


class RawServer:
    """Answers each request head with `answer(n, sock)` (n counts requests from 1); None
    closes the connection unanswered. Counts connections, and the most open at once."""

    def __init__(self, answer: Answer) -> None:
        self._answer = answer
        self._lock = threading.Lock()
        self.requests = 0
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.heads: list[bytes] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/userinfo?q=1"
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self.open += 1
                self.most_open = max(self.most_open, self.open)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                with self._lock:
                    self.requests += 1
                    number = self.requests
                    self.heads.append(head)
                answer = self._answer(number, conn)
                if answer is None:
                    return
                conn.sendall(answer)
                if b"connection: close" in answer.lower():
                    return
        except OSError:
            return
        finally:
            conn.close()
            with self._lock:
                self.open -= 1

    def stop(self) -> None:
        self._stopped = True
        self._sock.close()


@pytest.fixture
def serve() -> Iterator[Callable[[Answer], RawServer]]:
    servers: list[RawServer] = []

    def start(answer: Answer) -> RawServer:
        servers.append(RawServer(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def always(data: bytes) -> Answer:
    return lambda n, sock: data


def then_hang_up(data: bytes, *, after: int = 1) -> Answer:
    """Sends `data` and closes the connection for the first `after` requests, as if the
    answer had said keep-alive and the server went away; answers OK after that."""

    def answer(n: int, sock: socket.socket) -> bytes | None:
        if n > after:
            return OK
        sock.sendall(data)
        return None

    return answer


CONTEXT = ssl.create_default_context()


def get_sync(transport: PoolTransport, url: str, **options: float) -> httpx.Response:
    """One GET through `transport`, left open for the next (closing a client closes its
    transport)."""
    client = httpx.Client(transport=transport, timeout=httpx.Timeout(5.0, **options))
    return client.get(url)


async def get_async(transport: AsyncPoolTransport, url: str, **options: float) -> httpx.Response:
    client = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5.0, **options))
    return await client.get(url)


# --- keep-alive and reuse ----------------------------------------------------------------------


def test_sync_connections_are_kept_alive_and_reused(
    serve: Callable[[Answer], RawServer],
) -> None:
    server = serve(always(OK))
    transport = PoolTransport(CONTEXT, 4)
    for _ in range(5):
        response = get_sync(transport, server.url)
        assert response.status_code == 200
        assert response.json() == {"sub": "x"}
        assert response.http_version == "HTTP/1.1"
    assert server.requests == 5
    assert server.connections == 1
    assert server.heads[0].startswith(b"GET /userinfo?q=1 HTTP/1.1\r\n")
    transport.close()


async def test_async_connections_are_kept_alive_and_reused(
    serve: Callable[[Answer], RawServer],
) -> None:
    server = serve(always(OK))
    transport = AsyncPoolTransport(CONTEXT, 4)
    for _ in range(5):
        response = await get_async(transport, server.url)
        assert response.status_code == 200
        assert response.json() == {"sub": "x"}
    assert server.requests == 5
    assert server.connections == 1
    await transport.aclose()


def test_connection_close_is_obeyed(serve: Callable[[Answer], RawServer]) -> None:
    server = serve(always(CLOSE))
    transport = PoolTransport(CONTEXT, 4)
    for _ in range(3):
        assert get_sync(transport, server.url).json() == {"sub": "x"}
    assert server.connections == 3
    transport.close()


async def test_a_response_closed_unread_costs_its_connection(
    serve: Callable[[Answer], RawServer],
) -> None:
    server = serve(always(OK))
    transport = AsyncPoolTransport(CONTEXT, 1)
    async with httpx.AsyncClient(transport=transport) as client:
        async with client.stream("GET", server.url) as response:
            assert response.status_code == 200  # the body is never read
        assert (await client.get(server.url)).json() == {"sub": "x"}
    assert server.connections == 2  # the unread one was not handed to the next request


def test_a_connection_the_server_closed_while_idle_is_not_reused(
    serve: Callable[[Answer], RawServer],
) -> None:
    # The first answer says keep-alive, then the server hangs up: the pooled socket is dead.
    server = serve(then_hang_up(OK))
    transport = PoolTransport(CONTEXT, 4)
    assert get_sync(transport, server.url).status_code == 200
    time.sleep(0.2)
    assert get_sync(transport, server.url).json() == {"sub": "x"}
    assert server.connections == 2
    transport.close()


async def test_async_a_connection_the_server_closed_while_idle_is_not_reused(
    serve: Callable[[Answer], RawServer],
) -> None:
    server = serve(then_hang_up(OK))
    transport = AsyncPoolTransport(CONTEXT, 4)
    assert (await get_async(transport, server.url)).status_code == 200
    await asyncio.sleep(0.2)
    assert (await get_async(transport, server.url)).json() == {"sub": "x"}
    assert server.connections == 2
    await transport.aclose()


def test_idle_connections_expire(
    serve: Callable[[Answer], RawServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport_module, "KEEPALIVE_EXPIRY", 0.1)
    server = serve(always(OK))
    transport = PoolTransport(CONTEXT, 4)
    get_sync(transport, server.url)
    time.sleep(0.3)
    get_sync(transport, server.url)
    assert server.connections == 2
    time.sleep(0.1)
    assert server.open == 1  # the expired one was closed, not only skipped
    transport.close()


# --- bounds ------------------------------------------------------------------------------------


def slow(seconds: float) -> Answer:
    def answer(n: int, sock: socket.socket) -> bytes:
        time.sleep(seconds)
        return OK

    return answer


async def test_async_connections_are_bounded_and_requests_wait_for_one(
    serve: Callable[[Answer], RawServer],
) -> None:
    server = serve(slow(0.05))
    transport = AsyncPoolTransport(CONTEXT, 2)
    async with httpx.AsyncClient(transport=transport) as client:
        responses = await asyncio.gather(*(client.get(server.url) for _ in range(8)))
    assert [r.status_code for r in responses] == [200] * 8
    assert server.requests == 8
    assert server.connections == 2
    assert server.most_open == 2


def test_sync_connections_are_bounded_across_threads(
    serve: Callable[[Answer], RawServer],
) -> None:
    server = serve(slow(0.05))
    transport = PoolTransport(CONTEXT, 2)
    statuses: list[int] = []
    with httpx.Client(transport=transport) as client:

        def call() -> None:
            statuses.append(client.get(server.url).status_code)

        threads = [threading.Thread(target=call) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert statuses == [200] * 8
    assert server.connections == 2
    assert server.most_open == 2


async def test_async_pool_timeout(serve: Callable[[Answer], RawServer]) -> None:
    server = serve(slow(0.5))
    transport = AsyncPoolTransport(CONTEXT, 1)
    async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5.0, pool=0.1)) as c:
        first = asyncio.ensure_future(c.get(server.url))
        await asyncio.sleep(0.05)
        with pytest.raises(httpx.PoolTimeout):
            await c.get(server.url)
        assert (await first).status_code == 200


def test_sync_pool_timeout(serve: Callable[[Answer], RawServer]) -> None:
    server = serve(slow(0.5))
    transport = PoolTransport(CONTEXT, 1)
    with httpx.Client(transport=transport, timeout=httpx.Timeout(5.0, pool=0.1)) as client:
        holder = threading.Thread(target=client.get, args=(server.url,))
        holder.start()
        time.sleep(0.05)
        with pytest.raises(httpx.PoolTimeout):
            client.get(server.url)
        holder.join()


async def test_a_cancelled_request_frees_its_slot_and_closes_its_connection(
    serve: Callable[[Answer], RawServer],
) -> None:
    server = serve(slow(0.3))
    transport = AsyncPoolTransport(CONTEXT, 1)
    async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5.0, pool=1.0)) as c:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await c.get(server.url)
        assert (await c.get(server.url)).status_code == 200
    assert server.connections == 2


# --- strictness --------------------------------------------------------------------------------

MALFORMED = {
    "garbage status line": b"HTTP/1.1 two hundred\r\n\r\n",
    "header without colon": b"HTTP/1.1 200 OK\r\nbroken header\r\ncontent-length: 0\r\n\r\n",
    "two content lengths": b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
    "not http at all": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
}


@pytest.mark.parametrize("answer", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_response_is_a_protocol_error_sync(
    serve: Callable[[Answer], RawServer], answer: bytes
) -> None:
    server = serve(always(answer))
    with pytest.raises(httpx.RemoteProtocolError, match=r"malformed or cut short"):
        get_sync(PoolTransport(CONTEXT, 1), server.url)


@pytest.mark.parametrize("answer", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_response_is_a_protocol_error_async(
    serve: Callable[[Answer], RawServer], answer: bytes
) -> None:
    server = serve(always(answer))
    with pytest.raises(httpx.RemoteProtocolError, match=r"malformed or cut short"):
        await get_async(AsyncPoolTransport(CONTEXT, 1), server.url)


async def test_a_body_cut_short_is_an_error_not_a_shorter_body(
    serve: Callable[[Answer], RawServer],
) -> None:
    cut = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + BODY
    server = serve(then_hang_up(cut, after=2))
    with pytest.raises(httpx.RemoteProtocolError):
        await get_async(AsyncPoolTransport(CONTEXT, 1), server.url)
    with pytest.raises(httpx.RemoteProtocolError):
        get_sync(PoolTransport(CONTEXT, 1), server.url)


async def test_hanging_up_without_an_answer_is_an_error(
    serve: Callable[[Answer], RawServer],
) -> None:
    server = serve(lambda n, sock: None)
    with pytest.raises(httpx.RemoteProtocolError, match=r"malformed or cut short"):
        await get_async(AsyncPoolTransport(CONTEXT, 1), server.url)
    with pytest.raises(httpx.RemoteProtocolError, match=r"malformed or cut short"):
        get_sync(PoolTransport(CONTEXT, 1), server.url)


def test_an_interim_100_continue_is_skipped(serve: Callable[[Answer], RawServer]) -> None:
    server = serve(always(b"HTTP/1.1 100 Continue\r\n\r\n" + OK))
    assert get_sync(PoolTransport(CONTEXT, 1), server.url).json() == {"sub": "x"}


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_an_unsendable_header_fails_without_quoting_the_token(
    serve: Callable[[Answer], RawServer], mode: str
) -> None:
    server = serve(always(OK))
    headers = {"Authorization": "Bearer secret\nvalue"}

    async def send() -> httpx.Response:
        if mode == "sync":
            return httpx.Client(transport=PoolTransport(CONTEXT, 1)).get(
                server.url, headers=headers
            )
        client = httpx.AsyncClient(transport=AsyncPoolTransport(CONTEXT, 1))
        return await client.get(server.url, headers=headers)

    with pytest.raises(httpx.LocalProtocolError) as caught:
        await send()
    error = caught.value
    assert str(error) == "the request cannot be sent as HTTP/1.1"
    assert error.__cause__ is None
    assert error.__context__ is None  # h11's own error quotes the header value
    assert server.requests == 0


# --- timeouts ----------------------------------------------------------------------------------


def drip(n: int, sock: socket.socket) -> None:
    for byte in OK:
        time.sleep(0.2)
        sock.sendall(bytes([byte]))
    return None


def test_the_sync_transport_obeys_the_calls_deadline(
    serve: Callable[[Answer], RawServer],
) -> None:
    """Each byte comes well within the read timeout; only the deadline cuts the call off."""
    server = serve(drip)
    transport = PoolTransport(CONTEXT, 1)
    started = time.monotonic()
    token = DEADLINE.set(started + 0.6)
    try:
        with pytest.raises(httpx.ReadTimeout):
            get_sync(transport, server.url)
    finally:
        DEADLINE.reset(token)
    assert time.monotonic() - started < 1.5


def test_the_read_timeout_applies_to_each_read(serve: Callable[[Answer], RawServer]) -> None:
    server = serve(slow(1.0))
    with pytest.raises(httpx.ReadTimeout):
        get_sync(PoolTransport(CONTEXT, 1), server.url, read=0.1)


async def test_async_read_timeout(serve: Callable[[Answer], RawServer]) -> None:
    server = serve(slow(1.0))
    with pytest.raises(httpx.ReadTimeout):
        await get_async(AsyncPoolTransport(CONTEXT, 1), server.url, read=0.1)


# --- the userinfo client's choice --------------------------------------------------------------


async def test_the_userinfo_client_uses_our_transport_unless_a_proxy_is_set(
    serve: Callable[[Answer], RawServer],
) -> None:
    server = serve(always(OK))
    client = UserinfoClient(5.0)
    try:
        answer = client.send_sync(Request("GET", server.url, ()))
        assert answer == Response(
            200, {"content-type": "application/json", "content-length": "12"}, BODY
        )
        assert isinstance(await client.send(Request("GET", server.url, ())), Response)
        sync = client._sync_client(Outbound(), "o")
        proxied = client._sync_client(Outbound(proxy="http://127.0.0.1:9"), "o")
        assert isinstance(sync, httpx.Client)
        assert isinstance(proxied, httpx.Client)
        assert isinstance(sync._transport, PoolTransport)
        assert sync._transport.max_connections == POOL_SIZE
        assert isinstance(proxied._transport, httpx.HTTPTransport)
        plain = client._async_client(Outbound(), "o")
        tunnel = client._async_client(Outbound(proxy="http://127.0.0.1:9"), "o")
        assert isinstance(plain, httpx.AsyncClient)
        assert isinstance(tunnel, httpx.AsyncClient)
        assert isinstance(plain._transport, AsyncPoolTransport)
        assert isinstance(tunnel._transport, httpx.AsyncHTTPTransport)
    finally:
        await client.aclose()
    assert server.connections == 2  # one per stack


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_malformed_answer_is_unavailable_naming_the_host(
    serve: Callable[[Answer], RawServer], mode: str
) -> None:
    server = serve(always(MALFORMED["header without colon"]))
    client = UserinfoClient(5.0)
    request = Request("GET", server.url, (("Authorization", "Bearer secret-token"),))
    try:
        answer = client.send_sync(request) if mode == "sync" else await client.send(request)
    finally:
        await client.aclose()
    assert answer == Unavailable(
        f"127.0.0.1:{server.port} could not be reached (RemoteProtocolError)"
    )
