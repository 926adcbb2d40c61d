"""Real parts for the Redis cache tests: a counting userinfo server and a Redis that can stall.

- `Userinfo`: a userinfo endpoint on loopback (a thread of this process) that counts calls per
  token and answers by the token's prefix: `good` an identity, `bad` 401, `down` 503, `hang`
  a first call that never answers (later ones do), `exp<N>-` an identity whose `exp` is N
  seconds away.
- `StallingProxy`: a TCP proxy in front of the real redis-server; `stall()` makes it keep
  every connection open and answer nothing (a Redis that is slow, not down: the client only
  learns of it from its own socket timeout), `resume()` forwards again.
"""

from __future__ import annotations

import collections
import contextlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SECRET = "s" * 40


class Userinfo:
    """A userinfo endpoint on loopback that counts calls per token."""

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.closed = threading.Event()
        self.gate = gate  # when given, every call waits for it before answering
        self._lock = threading.Lock()
        userinfo = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                token = self.headers.get("authorization", "").removeprefix("Bearer ")
                with userinfo._lock:
                    userinfo.calls[token] += 1
                    first = userinfo.calls[token] == 1
                if token.startswith("hang") and first:
                    userinfo.closed.wait(30)  # the caller is killed or times out meanwhile
                    return
                if userinfo.gate is not None:
                    userinfo.gate.wait(30)
                time.sleep(delay)
                status, document = userinfo.answer(token)
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/userinfo"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def answer(token: str) -> tuple[int, dict[str, Any]]:
        if token.startswith("bad"):
            return 401, {"error": "invalid_token"}
        if token.startswith("down"):
            return 503, {"error": "temporarily_unavailable"}
        document: dict[str, Any] = {"sub": "alice-user", "groups": ["staff-group"]}
        if token.startswith("exp"):
            document["exp"] = int(time.time()) + int(token[3:].split("-", 1)[0])
        return 200, document

    def close(self) -> None:
        self.closed.set()
        self.server.shutdown()
        self.server.server_close()


def policy_text(cache: str, userinfo: str, *, timeout: str = "3s", extra: str = "") -> str:
    """One provider and `GET /x`, allowed to members of staff-group."""
    return f"""\
settings {{
  cache        = "{cache}"
  cache_secret = "{SECRET}"
  timeout      = {timeout}
{extra}}}

provider corp {{
  userinfo = "{userinfo}"
  username = $.sub
  groups   = $.groups[*]
}}

route GET /x {{
  auth corp
  allow if "staff-group" in groups
}}
"""


class StallingProxy:
    """A TCP proxy to `port` on loopback that can stop answering without closing anything."""

    def __init__(self, port: int) -> None:
        self._target = port
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stall(self) -> None:
        """From now on nothing is forwarded either way; connections stay open."""
        self._forwarding.clear()

    def resume(self) -> None:
        self._forwarding.set()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self._target))
            except OSError:
                client.close()
                continue
            self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        """Forward while forwarding; while stalled, swallow what comes (nobody answers)."""
        try:
            while chunk := source.recv(65536):
                if self._forwarding.is_set():
                    sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        for sock in self._sockets:
            sock.close()
