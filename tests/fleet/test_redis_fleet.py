"""The Redis cache across real processes: a killed lock holder, and uvicorn with 4 workers.

- A process holding a token's lock is killed (SIGKILL) in the middle of its provider call:
  a waiter elsewhere takes the provider call on itself once the lock's lifetime is over,
  sync and asyncio alike, and gets the answer.
- uvicorn with `--workers 4`, the ASGI middleware and Redis: 1,000 requests with one token
  (many connections, so several workers answer) make exactly 1 userinfo call.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

sys.path.insert(0, str(Path(__file__).parent))
from redis_parts import Userinfo, policy_text

import policyauth
from policyauth import Reason

HERE = Path(__file__).parent
WORKER = HERE / "fleet_worker.py"
LOCK_SECONDS = 1 * 3 + 1  # rediscache: three provider calls of `timeout` (1s), and a second


@pytest.fixture(scope="module")
def userinfo() -> Iterator[Userinfo]:
    server = Userinfo()
    yield server
    server.close()


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout}s")
        time.sleep(0.01)


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_a_waiter_whose_lock_holder_was_killed_calls_the_provider_itself(
    redis_server: Any, userinfo: Userinfo, tmp_path: Path, flavour: str
) -> None:
    token = f"hang-kill-{flavour}"  # the first call never answers; later ones do, at once
    policy = tmp_path / "fleet.policy"
    policy.write_text(policy_text(redis_server.url, userinfo.url, timeout="1s"))
    store = redis.Redis.from_url(redis_server.url)
    holder = subprocess.Popen(
        [sys.executable, str(WORKER), str(policy), "0", "1", token], stdout=subprocess.DEVNULL
    )
    try:
        wait_until(lambda: userinfo.calls[token] == 1, 30, "the holder did not call")
        locks = store.keys("policyauth:*:lock")
        assert len(locks) == 1  # taken before the call
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        assert store.pttl(locks[0]) > 0  # the lock outlives its holder
        started = time.monotonic()
        with policyauth.Engine(policyauth.load(policy)) as waiter:
            headers = [("authorization", f"Bearer {token}")]
            if flavour == "sync":
                decision = waiter.authorize_sync("GET", "/x", headers)
            else:
                decision = await waiter.authorize("GET", "/x", headers)
        waited = time.monotonic() - started
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        store.close()
    assert (decision.status, decision.reason) == (200, Reason.ALLOWED)
    assert userinfo.calls[token] == 2  # the dead holder's call, and the waiter's own
    assert waited < LOCK_SECONDS + 2  # no longer than the lock's lifetime, and a step


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def slow_userinfo() -> Iterator[Userinfo]:
    server = Userinfo(delay=0.3)
    yield server
    server.close()


def test_uvicorn_with_four_workers_makes_one_provider_call_for_a_thousand_requests(
    redis_server: Any, slow_userinfo: Userinfo, tmp_path: Path
) -> None:
    policy = tmp_path / "fleet.policy"
    policy.write_text(policy_text(redis_server.url, slow_userinfo.url))
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "redis_app:app",
            "--app-dir",
            str(HERE),
            "--workers",
            "4",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env={**os.environ, "FLEET_POLICY": str(policy)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(base, server), 60, "uvicorn did not answer")
        pids, statuses = asyncio.run(_thousand(base, "good-uvicorn"))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            output, _ = server.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            output, _ = server.communicate()
    assert statuses == {200: 1000}, output.decode(errors="replace")
    assert len(pids) >= 2  # several workers answered
    assert slow_userinfo.calls == {"good-uvicorn": 1}


def _answers(base: str, server: subprocess.Popen[bytes]) -> bool:
    if server.poll() is not None:
        output = server.stdout.read() if server.stdout else b""
        raise AssertionError(f"uvicorn exited: {output.decode(errors='replace')}")
    try:
        return httpx.get(base + "/x", timeout=1).status_code == 401  # no token: no call
    except httpx.HTTPError:
        return False


async def _thousand(base: str, token: str) -> tuple[set[int], dict[int, int]]:
    """1,000 requests, 50 at a time, each on a connection of its own (so the kernel hands
    them to every worker), all with `token`."""
    pids: set[int] = set()
    statuses: dict[int, int] = {}
    gate = asyncio.Semaphore(50)
    headers = {"authorization": f"Bearer {token}", "connection": "close"}

    async with httpx.AsyncClient(base_url=base, timeout=30) as client:

        async def one() -> None:
            async with gate:
                response = await client.get("/x", headers=headers)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code == 200:
                pids.add(response.json()["pid"])

        await asyncio.gather(*(one() for _ in range(1000)))
    return pids, statuses
