"""The Redis identity cache with real processes, a real redis-server and a slow userinfo server.

- 3 processes x 10 threads asking for one new token make exactly 1 provider call;
- a refused token is asked of the provider once across processes;
- Redis stopped mid-run: every process keeps deciding (direct calls), never an allow;
- a dump of Redis holds no token, no username, no group.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

WORKER = Path(__file__).with_name("fleet_worker.py")
SECRET = "s" * 40


class Userinfo:
    """A userinfo endpoint on loopback that answers slowly and counts calls per token."""

    def __init__(self, delay: float) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        userinfo = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                token = self.headers.get("authorization", "").removeprefix("Bearer ")
                userinfo.calls[token] += 1
                time.sleep(delay)
                if token.startswith("good"):
                    body = json.dumps({"sub": "alice-user", "groups": ["staff-group"]}).encode()
                    self.send_response(200)
                else:
                    body = b'{"error": "invalid_token"}'
                    self.send_response(401)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def userinfo() -> Iterator[Userinfo]:
    server = Userinfo(delay=0.5)
    yield server
    server.close()


def policy_file(folder: Path, cache: str, port: int) -> Path:
    path = folder / "fleet.policy"
    path.write_text(
        f"""\
settings {{
  cache        = "{cache}"
  cache_secret = "{SECRET}"
  timeout      = 5s
}}

provider corp {{
  userinfo = "http://127.0.0.1:{port}/userinfo"
  username = $.sub
  groups   = $.groups[*]
}}

route GET /x {{
  auth corp
  allow if "staff-group" in groups
}}
""",
        encoding="utf-8",
    )
    return path


def run_fleet(policy: Path, processes: int, threads: int, *tokens: str) -> list[list[list[int]]]:
    start_at = time.time() + 3  # imports and engine set-up done by then
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(policy), str(start_at), str(threads), *tokens],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    outputs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        outputs.append(json.loads(out))
    return outputs


def test_thirty_threads_in_three_processes_make_one_call(
    redis_server: Any, userinfo: Userinfo, tmp_path: Path
) -> None:
    policy = policy_file(tmp_path, redis_server.url, userinfo.port)
    results = run_fleet(policy, 3, 10, "good-token-1")
    assert [status for proc in results for thread in proc for status in thread] == [200] * 30
    assert userinfo.calls == {"good-token-1": 1}


def test_memory_cache_calls_once_per_process(userinfo: Userinfo, tmp_path: Path) -> None:
    """The baseline the Redis cache improves on: each process calls on its own."""
    policy = policy_file(tmp_path, "memory", userinfo.port)
    results = run_fleet(policy, 3, 10, "good-token-2")
    assert [status for proc in results for thread in proc for status in thread] == [200] * 30
    assert userinfo.calls == {"good-token-2": 3}


def test_a_refused_token_is_asked_once_across_processes(
    redis_server: Any, userinfo: Userinfo, tmp_path: Path
) -> None:
    policy = policy_file(tmp_path, redis_server.url, userinfo.port)
    results = run_fleet(policy, 3, 5, "bad-token-3")
    assert [status for proc in results for thread in proc for status in thread] == [401] * 15
    assert userinfo.calls == {"bad-token-3": 1}


def test_redis_dump_holds_no_token_username_or_group(
    redis_server: Any, userinfo: Userinfo, tmp_path: Path
) -> None:
    policy = policy_file(tmp_path, redis_server.url, userinfo.port)
    run_fleet(policy, 2, 2, "good-token-4", "bad-token-4")
    # SAVE writes the dump into the server's folder at once (`--rdb` waits 5 s for a replica).
    subprocess.run(
        ["redis-cli", "-p", str(redis_server.port), "SAVE"], check=True, capture_output=True
    )
    data = (redis_server.folder / "dump.rdb").read_bytes()
    assert len(data) > 100  # the entries are there, sealed
    for secret in (
        b"good-token-4",
        b"bad-token-4",
        b"alice-user",
        b"staff-group",
        b"invalid_token",
    ):
        assert secret not in data


def test_redis_stopped_mid_run_every_process_keeps_deciding(
    redis_server: Any, userinfo: Userinfo, tmp_path: Path
) -> None:
    policy = policy_file(tmp_path, redis_server.url, userinfo.port)
    tokens = [f"good-token-5-{i}" for i in range(12)] + ["bad-token-5"]
    start_at = time.time() + 3
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(policy), str(start_at), "2", *tokens],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        time.sleep(3 + 0.5 * 4)  # a few tokens through Redis
        redis_server.stop()
        outputs = [proc.communicate(timeout=120) for proc in procs]
    finally:
        redis_server.stop()
        redis_server.start()
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0
        assert json.loads(out) == [[200] * 12 + [401]] * 2
        assert err.count("the Redis identity cache is unavailable") <= 1
    assert set(userinfo.calls) == set(tokens)
