"""The cold path: requests that each carry a token the engine has never seen.

Every such request costs one userinfo call, so the engine can go no faster than the HTTP client
it uses. This benchmark puts a number on how close it gets: a local provider (a minimal asyncio
HTTP/1.1 server in a child process, keep-alive, answering any bearer token with a userinfo
document) is called at the same concurrency by

- a bare httpx loop: one `httpx.AsyncClient` with limits matched to the concurrency, `GET` with
  the bearer token, `response.json()`; the best a hand-written client does with httpx;
- the same loop over policyauth's own transport (policyauth/identity/transport.py);
- `Engine.authorize` with a new token per request: parsing the request, the flood guard, the
  keyed-hash cache miss, the userinfo call, judging the answer, the claim paths, the rule;
  once over httpx's own transport (what the engine used before it had its own), once with
  its default (its own transport).

Within each round the four variants run one after the other, so that a change in the machine's
load hits all of them. The ratio engine / bare httpx loop is the figure of issue 13's goal (at
least 60%); the others say what the transport changed. The same four variants then run
synchronously (`httpx.Client`, `Engine.authorize_sync`) from as many threads, as under a WSGI
server. Run `python benchmarks/cold.py` (a few minutes) or `--quick`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import socket
import ssl
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence

import httpx

import policyauth
from policyauth.identity.transport import AsyncPoolTransport, PoolTransport
from policyauth.identity.userinfo import POOL_SIZE

try:  # imported as `benchmarks.cold` from the project root
    from benchmarks import _common
except ImportError:  # run as a script: benchmarks/ itself is on sys.path
    import _common  # type: ignore[no-redef, import-not-found]

CONCURRENCY = 32

# A generous timeout: on a loaded machine a call over httpx's pool has taken more than the
# default 3 s (its CPU per call is what is measured), and one 503 would end the run.
POLICY = """
settings {{
  cache_ttl = 5m
  timeout   = 30s
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


_VARIANTS = (
    ("bare httpx loop, httpx's pool", "bare-httpx"),
    ("bare httpx loop, policyauth's transport", "bare-ours"),
    ("Engine.authorize, httpx's pool", "engine-httpx"),
    ("Engine.authorize, policyauth's transport (default)", "engine-ours"),
)


async def _measure(port: int, requests: int, rounds: int) -> dict[str, list[float]]:
    """Rates of the four variants, one round of each in turn, `rounds` times."""
    url = f"http://127.0.0.1:{port}/userinfo"
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    serial = itertools.count()
    policy = policyauth.loads(POLICY.format(port=port))
    # The engine's transport before policyauth had its own: httpx's, sized as userinfo.py
    # sizes its pools.
    engines_httpx = httpx.AsyncHTTPTransport(
        limits=httpx.Limits(max_connections=POOL_SIZE, max_keepalive_connections=POOL_SIZE)
    )
    ours = AsyncPoolTransport(ssl.create_default_context(), CONCURRENCY)
    async with (
        httpx.AsyncClient(limits=limits, trust_env=False) as bare_httpx,
        httpx.AsyncClient(transport=ours, trust_env=False) as bare_ours,
        policyauth.Engine(policy, engines_httpx) as engine_httpx,
        policyauth.Engine(policy) as engine_ours,
    ):

        def bare(client: httpx.AsyncClient) -> Callable[[int], Awaitable[None]]:
            async def call(_: int) -> None:
                response = await client.get(
                    url, headers={"Authorization": f"Bearer bare-{next(serial)}"}
                )
                assert response.json()["preferred_username"] == "someone"

            return call

        def cold(engine: policyauth.Engine) -> Callable[[int], Awaitable[None]]:
            async def call(_: int) -> None:
                headers = [("authorization", f"Bearer cold-{next(serial)}")]
                decision = await engine.authorize("GET", "/reports/7", headers)
                assert decision.status == 200, decision

            return call

        calls = {
            "bare-httpx": bare(bare_httpx),
            "bare-ours": bare(bare_ours),
            "engine-httpx": cold(engine_httpx),
            "engine-ours": cold(engine_ours),
        }
        for call in calls.values():  # warm-up: connections, imports, caches
            await _rate(call, requests // 4)
        rates: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(rounds):
            for name, call in calls.items():
                rates[name].append(await _rate(call, requests))
    return rates


def _rate_sync(call: Callable[[int], None], requests: int) -> float:
    """Requests per second of `requests` calls made by CONCURRENCY threads (a WSGI server's
    worker threads)."""
    counter = itertools.count()

    def worker() -> None:
        while (i := next(counter)) < requests:
            call(i)

    threads = [threading.Thread(target=worker) for _ in range(CONCURRENCY)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return requests / (time.perf_counter() - start)


def _measure_sync(port: int, requests: int, rounds: int) -> dict[str, list[float]]:
    """The same four variants, synchronous: httpx.Client and Engine.authorize_sync."""
    url = f"http://127.0.0.1:{port}/userinfo"
    limits = httpx.Limits(max_connections=POOL_SIZE, max_keepalive_connections=POOL_SIZE)
    serial = itertools.count()
    policy = policyauth.loads(POLICY.format(port=port))
    ours = PoolTransport(ssl.create_default_context(), POOL_SIZE)
    with (
        httpx.Client(limits=limits, trust_env=False) as bare_httpx,
        httpx.Client(transport=ours, trust_env=False) as bare_ours,
        policyauth.Engine(policy, httpx.HTTPTransport(limits=limits)) as engine_httpx,
        policyauth.Engine(policy) as engine_ours,
    ):

        def bare(client: httpx.Client) -> Callable[[int], None]:
            def call(_: int) -> None:
                response = client.get(url, headers={"Authorization": f"Bearer s-{next(serial)}"})
                assert response.json()["preferred_username"] == "someone"

            return call

        def cold(engine: policyauth.Engine) -> Callable[[int], None]:
            def call(_: int) -> None:
                headers = [("authorization", f"Bearer sc-{next(serial)}")]
                decision = engine.authorize_sync("GET", "/reports/7", headers)
                assert decision.status == 200, decision

            return call

        calls = {
            "bare-httpx": bare(bare_httpx),
            "bare-ours": bare(bare_ours),
            "engine-httpx": cold(engine_httpx),
            "engine-ours": cold(engine_ours),
        }
        for call in calls.values():
            _rate_sync(call, requests // 4)
        rates: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(rounds):
            for name, call in calls.items():
                rates[name].append(_rate_sync(call, requests))
    return rates


def _row(label: str, values: Sequence[float], *, ratio: bool = False) -> list[str]:
    """Median and range of per-round figures: rates, or ratios as percentages."""

    def shown(value: float) -> str:
        return f"{value:.0%}" if ratio else f"{value:,.0f}"

    return [label, shown(statistics.median(values)), f"{shown(min(values))}-{shown(max(values))}"]


def _table(rates: dict[str, list[float]]) -> str:
    """Rates of the four variants and the ratios that matter, per round."""

    def per_round(top: str, bottom: str) -> list[float]:
        return [a / b for a, b in zip(rates[top], rates[bottom], strict=True)]

    rows = [_row(label, rates[name]) for label, name in _VARIANTS]
    ratios = (
        ("engine (ours) / bare httpx loop: the goal", "engine-ours", "bare-httpx"),
        ("engine (ours) / bare loop over ours", "engine-ours", "bare-ours"),
        ("engine (httpx's pool) / bare httpx loop", "engine-httpx", "bare-httpx"),
        ("bare loop: ours / httpx's pool", "bare-ours", "bare-httpx"),
        ("engine: ours / httpx's pool", "engine-ours", "engine-httpx"),
    )
    rows += [_row(label, per_round(top, bottom), ratio=True) for label, top, bottom in ratios]
    return _common.markdown_table(["variant", "req/s (median)", "range over rounds"], rows)


def main(argv: Sequence[str] | None = None) -> int:
    """Run, print, write the report; always 0 (figures are reported, not judged)."""
    parser = argparse.ArgumentParser(prog="benchmarks/cold.py", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer requests and rounds")
    parser.add_argument("--report", help="report path (default: benchmarks/reports/cold.md)")
    args = parser.parse_args(argv)
    requests, rounds = (400, 2) if args.quick else (2_000, 5)
    load_before = _common._load_average()
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    provider = multiprocessing.get_context("spawn").Process(target=_serve, args=(sock,))
    provider.start()
    try:
        rates = asyncio.run(_measure(port, requests, rounds))
        rates_sync = _measure_sync(port, requests, rounds)
    finally:
        provider.terminate()
        provider.join()
        sock.close()

    table = _table(rates)
    names = ("httpx", "httpcore", "h11", "sniffio", "anyio")
    versions = ", ".join(f"{n} {_common._version(n)}" for n in names)
    body = [
        "## A new token per request against a local provider",
        "",
        f"{CONCURRENCY} concurrent workers, {rounds} rounds of {requests} requests per variant,"
        " the four variants interleaved within each round; the provider runs in a child process"
        " on 127.0.0.1 (plain HTTP/1.1, keep-alive). HTTP stack: httpx as the API over either"
        " httpx's own transport (httpcore's connection pool, anyio streams) or policyauth's"
        " (policyauth/identity/transport.py: h11 over asyncio streams, a LIFO pool per host);"
        f" the event loop is asyncio's default. Versions: {versions}."
        f" Load average (1, 5, 15 min) before the run: {load_before}."
        " Goal (issue 13): the engine at 60% or more of the bare httpx loop.",
        "",
        table,
        "",
        "## The same, synchronous",
        "",
        f"`httpx.Client` and `Engine.authorize_sync` from {CONCURRENCY} threads (a WSGI server's"
        " workers), over the same provider, after the asynchronous rounds; the pools hold up to"
        f" {POOL_SIZE} connections.",
        "",
        _table(rates_sync),
    ]
    path = _common.report_path(args.report, "cold", quick=args.quick)
    command = "python benchmarks/cold.py" + (" --quick" if args.quick else "")
    _common.write_report(path, "The cold path: new tokens", body, command=command)
    print("\n".join(body))
    print(f"\nreport: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
