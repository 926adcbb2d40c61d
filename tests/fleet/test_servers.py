"""The fleet fixtures run real servers: redis answers PING, PostgreSQL answers a query."""

from __future__ import annotations

import socket
import subprocess
from typing import Any


def test_redis_server_answers_ping(redis_server: Any) -> None:
    with socket.create_connection(("127.0.0.1", redis_server.port), timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(64) == b"+PONG\r\n"


def test_postgres_runs_as_the_postgres_user(postgres_server: Any) -> None:
    done = subprocess.run(
        [str(postgres_server.bin / "psql"), postgres_server.url, "-tAc", "select current_user"],
        capture_output=True,
        text=True,
    )
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, "postgres", "")
