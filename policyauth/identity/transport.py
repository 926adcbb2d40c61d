"""Our own httpx transport for provider calls: HTTP/1.1 parsed by h11, over asyncio streams
(async) or plain sockets (sync), with a small last-in-first-out pool of kept-alive
connections. httpx stays the API: the client, its request building, its exceptions and its
response decoding are httpx's; only the transport below them is ours.

Why not httpx's own transport: a request with a new token is one userinfo call, and measured
against a local provider (benchmarks/cold.py) httpcore's connection pool spent most of the CPU
of such a call deciding which connection to use: every request and every released response
scans every connection it holds, asking each whether its socket is readable. A LIFO list of
idle connections per host answers the same question in O(1): take the last one put back (the
warmest, the least likely to have been closed by the server), drop it if it is closed or has
sat idle too long, else connect.

The strictness is h11's (the HTTP/1.1 parser httpcore itself uses): malformed status lines,
headers or framing are a RemoteProtocolError, never a response; headers are bounded; a body
shorter than its Content-Length is an error. A connection goes back to the pool only when both
sides finished the exchange cleanly, so a response closed early (unread) or cut off costs that
connection, never the next request's correctness.

Timeouts: httpx's per-operation timeouts (connect, read, write, pool) apply as usual; the
synchronous side also obeys the call's deadline (`DEADLINE`, set by the userinfo client), so a
provider dripping its answer a byte at a time cannot hold a thread past the policy's
`timeout`. The asynchronous side needs no deadline of its own: its caller wraps the whole call
in asyncio.timeout, and a cancelled call closes its connection.

Proxies are not handled here: a provider with `proxy` keeps httpx's own transport (see
policyauth/identity/userinfo.py).
"""

from __future__ import annotations

import asyncio
import contextvars
import select
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import h11
import httpx

KEEPALIVE_EXPIRY = 5.0  # seconds idle before a kept connection is closed (httpx's default)
READ_SIZE = 64 * 1024
MAX_HEAD = 100 * 1024  # the largest response head h11 buffers (httpcore's bound)

# The end of the current synchronous call (time.monotonic()), set by the userinfo client. A
# context variable: each thread has its own, and a pooled connection obeys whichever call is
# using it.
DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "policyauth_deadline", default=None
)


def budget(timeout: float | None, expired: type[Exception]) -> float | None:
    """The timeout for one network operation: `timeout` cut to what is left of the call's
    deadline; `expired` when nothing is left."""
    deadline = DEADLINE.get()
    if deadline is None:
        return timeout
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise expired("the call took longer than the policy's timeout")
    return remaining if timeout is None else min(timeout, remaining)


def _timeouts(request: httpx.Request) -> dict[str, float | None]:
    timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
    return timeouts


def _key(url: httpx.URL) -> tuple[str, str, int]:
    """Scheme, host and port: which connections may serve a request."""
    scheme = url.scheme
    return scheme, url.host, url.port or (443 if scheme == "https" else 80)


def _head(request: httpx.Request, connection: h11.Connection, body: bytes) -> bytes:
    """The request's bytes, framed by h11, which refuses what HTTP/1.1 cannot carry (a header
    value with a newline). Its error quotes the offending value, which may be the token, so it
    is dropped, not chained: the exception raised carries neither it nor its text."""
    try:
        data = connection.send(
            h11.Request(
                method=request.method, target=request.url.raw_path, headers=request.headers.raw
            )
        )
        if body:
            data = (data or b"") + (connection.send(h11.Data(data=body)) or b"")
        return (data or b"") + (connection.send(h11.EndOfMessage()) or b"")
    except h11.LocalProtocolError:
        pass
    raise httpx.LocalProtocolError("the request cannot be sent as HTTP/1.1")


def _event(connection: h11.Connection) -> Any:
    """h11's next event; its protocol errors as httpx's."""
    try:
        return connection.next_event()
    except h11.RemoteProtocolError as exc:
        raise httpx.RemoteProtocolError(
            "the server broke HTTP/1.1 (malformed or cut short)"
        ) from exc


def _response(event: h11.Response, stream: Any) -> httpx.Response:
    return httpx.Response(
        status_code=event.status_code,
        headers=event.headers.raw_items(),
        stream=stream,
        extensions={"http_version": b"HTTP/1.1", "reason_phrase": event.reason},
    )


def _reusable(connection: h11.Connection) -> bool:
    """Both sides ended the exchange cleanly (and neither asked to close): the connection can
    serve the next request."""
    if connection.our_state is h11.DONE and connection.their_state is h11.DONE:
        connection.start_next_cycle()
        return True
    return False


# --- asynchronous ------------------------------------------------------------------------------


class _AsyncConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        self.idle_since = 0.0

    def usable(self, now: float) -> bool:
        """Not hung up by the server (asyncio has seen its end of stream by the time the
        connection is taken again), not idle for too long."""
        return (
            now - self.idle_since < KEEPALIVE_EXPIRY
            and not self.writer.is_closing()
            and not self.reader.at_eof()
            and self.reader.exception() is None
        )

    async def receive(self, timeout: float | None) -> Any:
        """The next h11 event, reading from the network as needed."""
        while (event := _event(self.h11)) is h11.NEED_DATA:
            try:
                async with asyncio.timeout(timeout):
                    data = await self.reader.read(READ_SIZE)
            except TimeoutError as exc:
                raise httpx.ReadTimeout("the server did not answer in time") from exc
            except OSError as exc:
                raise httpx.ReadError("reading the response failed") from exc
            self.h11.receive_data(data)
        return event

    def close(self) -> None:
        self.writer.close()


class _AsyncBody(httpx.AsyncByteStream):
    """A response body; closing it hands the connection back to the pool, or closes it."""

    def __init__(
        self,
        pool: AsyncPoolTransport,
        connection: _AsyncConnection,
        key: Any,
        timeout: float | None,
    ) -> None:
        self._pool = pool
        self._connection = connection
        self._key = key
        self._timeout = timeout
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            event = await self._connection.receive(self._timeout)
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return
            else:
                raise httpx.RemoteProtocolError("the server closed the connection mid-body")

    async def aclose(self) -> None:
        # Awaits nothing, so that a cancelled caller cannot interrupt it halfway.
        if not self._closed:
            self._closed = True
            self._pool._release(self._key, self._connection)


class AsyncPoolTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over asyncio streams: at most `max_connections` open at once (a request waits,
    up to httpx's pool timeout, for one to be released), each kept alive and reused
    last-in-first-out. `ssl_context` verifies https servers (the provider's CA, client
    certificate). Belongs to the event loop it is first used on."""

    def __init__(self, ssl_context: ssl.SSLContext, max_connections: int) -> None:
        self._ssl = ssl_context
        self.max_connections = max_connections
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: dict[Any, list[_AsyncConnection]] = {}
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = _timeouts(request)
        try:
            async with asyncio.timeout(timeouts.get("pool")):
                await self._slots.acquire()
        except TimeoutError as exc:
            raise httpx.PoolTimeout("no connection became free in time") from exc
        key = _key(request.url)
        connection: _AsyncConnection | None = None
        try:
            body = await request.aread()
            connection = self._checkout(key) or await self._connect(key, timeouts.get("connect"))
            try:
                async with asyncio.timeout(timeouts.get("write")):
                    connection.writer.write(_head(request, connection.h11, body))
                    await connection.writer.drain()
            except TimeoutError as exc:
                raise httpx.WriteTimeout("sending the request took too long") from exc
            except OSError as exc:
                raise httpx.WriteError("sending the request failed") from exc
            read = timeouts.get("read")
            event = await connection.receive(read)
            while isinstance(event, h11.InformationalResponse):  # 100 Continue and the like
                event = await connection.receive(read)
            if not isinstance(event, h11.Response):
                raise httpx.RemoteProtocolError("the server closed the connection unanswered")
        except BaseException:
            if connection is not None:
                connection.close()
            self._slots.release()
            raise
        return _response(event, _AsyncBody(self, connection, key, read))

    def _checkout(self, key: Any) -> _AsyncConnection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.usable(now):
                return connection
            connection.close()
        return None

    async def _connect(self, key: Any, timeout: float | None) -> _AsyncConnection:
        scheme, host, port = key
        tls = scheme == "https"
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    ssl=self._ssl if tls else None,
                    server_hostname=host if tls else None,
                    limit=READ_SIZE,
                )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout("connecting took too long") from exc
        except OSError as exc:  # ssl.SSLError and socket.gaierror included
            raise httpx.ConnectError("connecting failed") from exc
        return _AsyncConnection(reader, writer)

    def _release(self, key: Any, connection: _AsyncConnection) -> None:
        """Back to the pool (or closed), then the slot freed: a connection is idle or busy,
        never both, so the pool never holds more than `max_connections`."""
        if self._closed or not _reusable(connection.h11):
            connection.close()
        else:
            now = connection.idle_since = time.monotonic()
            idle = self._idle.setdefault(key, [])
            idle.append(connection)
            while now - idle[0].idle_since >= KEEPALIVE_EXPIRY:  # the oldest sit first
                idle.pop(0).close()
        self._slots.release()

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()


# --- synchronous -------------------------------------------------------------------------------


def _readable(sock: socket.socket) -> bool:
    """Whether an idle socket has something to read: the server closed it, or sent what no
    request asked for; either way it must not be reused."""
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])  # pragma: no cover - no poll()
    except (OSError, ValueError):
        return True


class _SyncConnection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        self.idle_since = 0.0

    def usable(self, now: float) -> bool:
        return now - self.idle_since < KEEPALIVE_EXPIRY and not _readable(self.sock)

    def send(self, data: bytes, timeout: float | None) -> None:
        try:
            self.sock.settimeout(budget(timeout, httpx.WriteTimeout))
            self.sock.sendall(data)
        except TimeoutError as exc:
            raise httpx.WriteTimeout("sending the request took too long") from exc
        except OSError as exc:
            raise httpx.WriteError("sending the request failed") from exc

    def receive(self, timeout: float | None) -> Any:
        while (event := _event(self.h11)) is h11.NEED_DATA:
            try:
                self.sock.settimeout(budget(timeout, httpx.ReadTimeout))
                data = self.sock.recv(READ_SIZE)
            except TimeoutError as exc:
                raise httpx.ReadTimeout("the server did not answer in time") from exc
            except OSError as exc:
                raise httpx.ReadError("reading the response failed") from exc
            self.h11.receive_data(data)
        return event

    def close(self) -> None:
        self.sock.close()


class _SyncBody(httpx.SyncByteStream):
    def __init__(
        self, pool: PoolTransport, connection: _SyncConnection, key: Any, timeout: float | None
    ) -> None:
        self._pool = pool
        self._connection = connection
        self._key = key
        self._timeout = timeout
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        while True:
            event = self._connection.receive(self._timeout)
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return
            else:
                raise httpx.RemoteProtocolError("the server closed the connection mid-body")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool._release(self._key, self._connection)


class PoolTransport(httpx.BaseTransport):
    """The synchronous twin of AsyncPoolTransport, safe to share between threads; every
    network operation also obeys the call's DEADLINE."""

    def __init__(self, ssl_context: ssl.SSLContext, max_connections: int) -> None:
        self._ssl = ssl_context
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._idle: dict[Any, list[_SyncConnection]] = {}
        self._closed = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = _timeouts(request)
        if not self._slots.acquire(timeout=budget(timeouts.get("pool"), httpx.PoolTimeout)):
            raise httpx.PoolTimeout("no connection became free in time")
        key = _key(request.url)
        connection: _SyncConnection | None = None
        try:
            body = request.read()
            connection = self._checkout(key) or self._connect(key, timeouts.get("connect"))
            connection.send(_head(request, connection.h11, body), timeouts.get("write"))
            read = timeouts.get("read")
            event = connection.receive(read)
            while isinstance(event, h11.InformationalResponse):
                event = connection.receive(read)
            if not isinstance(event, h11.Response):
                raise httpx.RemoteProtocolError("the server closed the connection unanswered")
        except BaseException:
            if connection is not None:
                connection.close()
            self._slots.release()
            raise
        return _response(event, _SyncBody(self, connection, key, read))

    def _checkout(self, key: Any) -> _SyncConnection | None:
        now = time.monotonic()
        while True:
            with self._lock:
                idle = self._idle.get(key)
                if not idle:
                    return None
                connection = idle.pop()
            if connection.usable(now):
                return connection
            connection.close()

    def _connect(self, key: Any, timeout: float | None) -> _SyncConnection:
        scheme, host, port = key
        try:
            sock = socket.create_connection(
                (host, port), timeout=budget(timeout, httpx.ConnectTimeout)
            )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout("connecting took too long") from exc
        except OSError as exc:
            raise httpx.ConnectError("connecting failed") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                sock.settimeout(budget(timeout, httpx.ConnectTimeout))
                sock = self._ssl.wrap_socket(sock, server_hostname=host)
        except TimeoutError as exc:
            sock.close()
            raise httpx.ConnectTimeout("the TLS handshake took too long") from exc
        except OSError as exc:
            sock.close()
            raise httpx.ConnectError("the TLS handshake failed") from exc
        except BaseException:
            sock.close()
            raise
        return _SyncConnection(sock)

    def _release(self, key: Any, connection: _SyncConnection) -> None:
        expired = []
        with self._lock:
            if self._closed or not _reusable(connection.h11):
                expired.append(connection)
            else:
                now = connection.idle_since = time.monotonic()
                idle = self._idle.setdefault(key, [])
                idle.append(connection)
                while now - idle[0].idle_since >= KEEPALIVE_EXPIRY:
                    expired.append(idle.pop(0))
        for old in expired:
            old.close()
        self._slots.release()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()
