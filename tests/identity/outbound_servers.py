"""Real servers on loopback for the outbound tests: a userinfo server over TLS (its certificate
signed by a CA of our own, optionally requiring a client certificate), a CONNECT proxy that
records what passes through it, and a provider that drips its answer one byte at a time.

Certificates are made with the openssl command line (`cryptography` is not in the venv); a
machine without openssl fails these tests rather than skipping them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


class Certificates:
    """A CA, a server certificate for 127.0.0.1 signed by it, a client certificate signed by
    another CA (the one the mTLS server trusts), and a self-signed impostor."""

    def __init__(self, folder: Path) -> None:
        if shutil.which("openssl") is None:
            raise RuntimeError("the outbound tests need the openssl command to make certificates")
        self.folder = folder
        for name in ("ca", "client-ca"):
            _openssl(
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
                "-subj", f"/CN=policyauth test {name}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                cwd=folder,
            )  # fmt: skip
        self._leaf("server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost", "serverAuth")
        self._leaf("client", "client-ca", "subjectAltName=DNS:policyauth-client", "clientAuth")
        self._leaf("impostor", "client-ca", "subjectAltName=DNS:impostor", "clientAuth")

    def _leaf(self, name: str, ca: str, san: str, usage: str) -> None:
        folder = self.folder
        (folder / f"{name}.ext").write_text(
            f"{san}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            f"extendedKeyUsage={usage}\nsubjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid,issuer\n"
        )
        _openssl(
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=policyauth-{name}",
            cwd=folder,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
            cwd=folder,
        )  # fmt: skip

    def path(self, name: str) -> Path:
        return self.folder / name


class TlsUserinfo:
    """A userinfo endpoint over TLS on 127.0.0.1: `grant` tokens, count calls per token."""

    def __init__(self, certs: Certificates, *, require_client_cert: bool = False) -> None:
        self.granted: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str | None]] = []  # (token, client certificate's CN)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certs.path("server.pem"), certs.path("server.key"))
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(certs.path("client-ca.pem"))
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                peer = self.connection.getpeercert()  # type: ignore[attr-defined]
                subject = dict(item[0] for item in peer["subject"]) if peer else {}
                owner.calls.append((token, subject.get("commonName")))
                document = owner.granted.get(token)
                body = json.dumps(document).encode() if document else b'{"error": "invalid"}'
                self.send_response(200 if document else 401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def finish_request(self, request: Any, client_address: Any) -> None:
                """The handshake in the connection's thread; a refused one ends like a real
                server's: the alert is sent, what the client sent is read, then FIN (closing
                with unread data would reset the connection before the alert is read)."""
                tls = context.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
                try:
                    tls.do_handshake()
                except (ssl.SSLError, OSError):
                    with socket.socket(fileno=os.dup(tls.fileno())) as raw:
                        raw.settimeout(2)
                        with contextlib.suppress(OSError):
                            while raw.recv(65536):
                                pass
                    tls.close()
                    return
                self.RequestHandlerClass(tls, client_address, self)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}/userinfo"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self, token: str) -> int:
        return sum(1 for seen, _ in self.calls if seen == token)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ConnectProxy:
    """An HTTP proxy that only tunnels (CONNECT), and records the request lines it was sent
    and every byte it relayed from the client."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.relayed = bytearray()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(4096)
                if not chunk:
                    return
                head += chunk
            line = head.split(b"\r\n", 1)[0].decode()
            self.requests.append(line)
            method, target, _ = line.split(" ", 2)
            if method != "CONNECT":
                client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            host, port = target.rsplit(":", 1)
            try:
                upstream = socket.create_connection((host, int(port)), timeout=5)
            except OSError:
                client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            client.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            with upstream:
                threading.Thread(
                    target=self._pipe, args=(upstream, client, False), daemon=True
                ).start()
                self._pipe(client, upstream, True)

    def _pipe(self, source: socket.socket, sink: socket.socket, record: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if record:
                    self.relayed += data
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        self._stopped = True
        self._listener.close()


class DripProvider:
    """A provider that sends its status line and headers one byte every `pause` seconds (each
    read completes well within any per-read timeout; the whole answer takes ~20 s)."""

    ANSWER = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n"
        b'{"sub": "dripped"}'
    )

    def __init__(self, pause: float = 0.5) -> None:
        self.pause = pause
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/userinfo"
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._drip, args=(client,), daemon=True).start()

    def _drip(self, client: socket.socket) -> None:
        with client:
            try:
                client.recv(65536)  # the request
                for byte in self.ANSWER:
                    if self._stopped.wait(self.pause):
                        return
                    client.sendall(bytes([byte]))
            except OSError:
                return  # the client gave up: what the test wants

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()
