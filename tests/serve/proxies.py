"""Real nginx (auth_request) and Caddy (forward_auth) in front of a recording backend, with
`policyauth serve` deciding: temporary configurations on free loopback ports, as
docs/serve.md writes them.

A missing binary fails the tests under CI=true (`make test` installs both when it runs as
root) and skips them elsewhere; a binary that is there but cannot start always fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import attrs
import pytest
from serve_servers import HOST, free_port, stop, wait_ready

NGINX = """\
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 512; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;

  server {{
    listen {host}:{port};

    location / {{
      auth_request /_policyauth;
      auth_request_set $auth_user $upstream_http_x_auth_user;
      auth_request_set $auth_groups $upstream_http_x_auth_groups;
      auth_request_set $auth_provider $upstream_http_x_auth_provider;
      # nginx turns a 503 from the auth service into 500: give the client the 503.
      error_page 500 = @policyauth_unavailable;
      # What the client sent under these names never reaches the upstream.
      proxy_set_header X-Auth-User $auth_user;
      proxy_set_header X-Auth-Groups $auth_groups;
      proxy_set_header X-Auth-Provider $auth_provider;
      proxy_pass http://{host}:{backend};
    }}

    location = /_policyauth {{
      internal;
      proxy_pass http://{host}:{serve}/auth;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Original-URI $request_uri;
    }}

    location @policyauth_unavailable {{
      return 503;
    }}
  }}
}}
"""

CADDY = """\
{{
  admin off
  auto_https off
}}

http://:{port} {{
  bind {host}
  route {{
    # What the client sent under these names never reaches the upstream.
    request_header -X-Auth-User
    request_header -X-Auth-Groups
    request_header -X-Auth-Provider
    forward_auth {host}:{serve} {{
      uri /forward-auth
      copy_headers X-Auth-User X-Auth-Groups X-Auth-Provider
    }}
    reverse_proxy {host}:{backend}
  }}
}}
"""


@attrs.frozen
class Seen:
    """One request as the backend received it."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


class Backend:
    """The upstream: answers 200 to anything and records what reached it."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                backend.seen.append(Seen(self.command, self.path, tuple(self.headers.items())))
                body = json.dumps({"target": self.path}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def binary(name: str) -> str:
    """The server's executable; a missing one fails under CI and skips elsewhere."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")
    if found is None:
        message = f"`{name}` is not installed (Debian package `{name}`; `make test` installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


@attrs.frozen
class Proxy:
    name: str
    port: int
    log: Path


@contextlib.contextmanager
def nginx(folder: Path, serve_port: int, backend: Backend) -> Iterator[Proxy]:
    executable = binary("nginx")
    port = free_port()
    config = folder / "nginx.conf"
    text = NGINX.format(tmp=folder, host=HOST, port=port, backend=backend.port, serve=serve_port)
    config.write_text(text)
    with _running([executable, "-c", str(config), "-p", str(folder)], folder, port) as log:
        yield Proxy("nginx", port, log)


@contextlib.contextmanager
def caddy(folder: Path, serve_port: int, backend: Backend) -> Iterator[Proxy]:
    executable = binary("caddy")
    port = free_port()
    config = folder / "Caddyfile"
    config.write_text(CADDY.format(host=HOST, port=port, backend=backend.port, serve=serve_port))
    command = [executable, "run", "--config", str(config), "--adapter", "caddyfile"]
    env = {"HOME": str(folder), "XDG_DATA_HOME": str(folder), "XDG_CONFIG_HOME": str(folder)}
    with _running(command, folder, port, env) as log:
        yield Proxy("caddy", port, log)


@contextlib.contextmanager
def _running(
    command: list[str], folder: Path, port: int, env: dict[str, str] | None = None
) -> Iterator[Path]:
    log = folder / "server.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=folder,
            env={**os.environ, **(env or {})},
        )
    try:
        # Any answer means it listens: /public/ready is allowed by the policy.
        if not wait_ready(process, port, "/public/ready"):
            raise AssertionError(f"{command[0]} did not start:\n{log.read_text(errors='replace')}")
        yield log
    finally:
        stop(process)
