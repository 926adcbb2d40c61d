"""The cold path: requests that each carry a token the engine has never seen.

Every such request costs one userinfo call, so the engine can go no faster than the HTTP client
it uses. This benchmark puts a number on how close it gets: a local provider (a minimal asyncio
HTTP/1.1 server in a child process, keep-alive, answering any bearer token with a userinfo
document) is called at the same concurrency by

- a bare httpx loop: one `httpx.AsyncClient` with limits matched to the concurrency, `GET` with
  the bearer token, `response.json()`; the best a hand-written client does with httpx;
- `Engine.authorize` with a new token per request: parsing the request, the flood guard, the
  keyed-hash cache miss, the userinfo call, judging the answer, the claim paths, the rule.

Rounds alternate between the two so that a change in the machine's load hits both. The ratio
engine / bare is the figure (issue 13's goal: at least 60%). Run `python benchmarks/cold.py`
(about half a minute) or `--quick`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence

import httpx

import policyauth

try:  # imported as `benchmarks.cold` from the project root
    from benchmarks import _common
except ImportError:  # run as a script: benchmarks/ itself is on sys.path
    import _common  # type: ignore[no-redef, import-not-found]

CONCURRENCY = 32

POLICY = """
settings {{
  cache_ttl = 5m
}}

provider corp {{
  userinfo = "http://127.0.0.1:{port}/userinfo"
  username = $.preferred_username
  groups   = $.roles[*]
}}

route GET /reports/{{id}} {{
  auth corp
  allow if "reporting" in groups
}}
"""

_BODY = b'{"preferred_username":"someone","roles":["reporting"]}'
_ANSWER = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(_BODY)).encode()
    + b"\r\n\r\n"
    + _BODY
)


def _serve(sock: socket.socket) -> None:
    """The provider: reads requests head by head (they have no body) and answers each one."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(_ANSWER)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, sock=sock)
        await server.serve_forever()

    asyncio.run(main())


async def _rate(call: Callable[[int], Awaitable[None]], requests: int) -> float:
    """Requests per second of `requests` calls made by CONCURRENCY workers."""
    counter = itertools.count()

    async def worker() -> None:
        while (i := next(counter)) < requests:
            await call(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return requests / (time.perf_counter() - start)


async def _measure(port: int, requests: int, rounds: int) -> tuple[list[float], list[float]]:
    url = f"http://127.0.0.1:{port}/userinfo"
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    serial = itertools.count()
    policy = policyauth.loads(POLICY.format(port=port))
    async with (
        httpx.AsyncClient(limits=limits, trust_env=False) as client,
        policyauth.Engine(policy) as engine,
    ):

        async def bare(_: int) -> None:
            response = await client.get(
                url, headers={"Authorization": f"Bearer bare-{next(serial)}"}
            )
            assert response.json()["preferred_username"] == "someone"

        async def cold(_: int) -> None:
            headers = [("authorization", f"Bearer cold-{next(serial)}")]
            decision = await engine.authorize("GET", "/reports/7", headers)
            assert decision.status == 200, decision

        await _rate(bare, requests // 4)  # warm-up: connections, imports, caches
        await _rate(cold, requests // 4)
        bare_rates, cold_rates = [], []
        for _ in range(rounds):
            bare_rates.append(await _rate(bare, requests))
            cold_rates.append(await _rate(cold, requests))
    return bare_rates, cold_rates


def main(argv: Sequence[str] | None = None) -> int:
    """Run, print, write the report; always 0 (figures are reported, not judged)."""
    parser = argparse.ArgumentParser(prog="benchmarks/cold.py", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer requests and rounds")
    parser.add_argument("--report", help="report path (default: benchmarks/reports/cold.md)")
    args = parser.parse_args(argv)
    requests, rounds = (400, 2) if args.quick else (2_000, 4)
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    provider = multiprocessing.get_context("spawn").Process(target=_serve, args=(sock,))
    provider.start()
    try:
        bare, cold = asyncio.run(_measure(port, requests, rounds))
    finally:
        provider.terminate()
        provider.join()
        sock.close()
    ratios = [c / b for b, c in zip(bare, cold, strict=True)]
    rows = [
        [
            "bare httpx loop",
            f"{statistics.median(bare):,.0f}",
            f"{min(bare):,.0f}-{max(bare):,.0f}",
        ],
        [
            "Engine.authorize, new token each",
            f"{statistics.median(cold):,.0f}",
            f"{min(cold):,.0f}-{max(cold):,.0f}",
        ],
        [
            "ratio engine / bare (per round)",
            f"{statistics.median(ratios):.0%}",
            f"{min(ratios):.0%}-{max(ratios):.0%}",
        ],
    ]
    table = _common.markdown_table(["variant", "req/s (median)", "range over rounds"], rows)
    versions = ", ".join(f"{n} {_common._version(n)}" for n in ("httpx", "httpcore", "sniffio"))
    body = [
        "## A new token per request against a local provider",
        "",
        f"{CONCURRENCY} concurrent workers, {rounds} interleaved rounds of {requests} requests"
        f" each; the provider runs in a child process on 127.0.0.1 (plain HTTP/1.1, keep-alive)."
        f" HTTP stack: {versions}. Goal: the engine at 60% or more of the bare loop.",
        "",
        table,
    ]
    path = _common.report_path(args.report, "cold", quick=args.quick)
    command = "python benchmarks/cold.py" + (" --quick" if args.quick else "")
    _common.write_report(path, "The cold path: new tokens", body, command=command)
    print("\n".join(body))
    print(f"\nreport: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
