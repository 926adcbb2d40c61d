"""A fleet: the Redis identity cache against the memory one, and a reload under traffic.

Three measurements (production.md section 2; issue 11's speed list), with a real redis-server
on a free loopback port (Debian's `redis-server`; `make test` installs it) and a userinfo
server in this process that answers after 50 ms and counts calls:

- one decision whose identity is cached, with `cache = "redis://..."` against
  `cache = "memory"` (target: within 1.3x). Each process keeps its own identity cache in front
  of Redis, so a hit should never leave the process;
- provider calls per token when 1, 2 and 4 worker processes (4 threads each, started
  together) decide the same new tokens, with each cache. The ideal with Redis is 1 whatever
  the number of processes; with memory it is one per process;
- `engine.reload()` of a 1,000-route policy while a thread decides requests: how long the
  reload takes (compiling off the request path), and the worst decision latency while it runs
  against the median decision outside reloads (the collector on, as in an application, and
  off, to tell its pauses apart).

Run `python benchmarks/fleet.py` (about a minute) or `--quick`. Ratios, not absolute times,
carry across machines.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import policyauth

try:  # imported as `benchmarks.fleet` from the project root
    from benchmarks import _common, _policies
except ImportError:  # run as a script: benchmarks/ itself is on sys.path
    import _common  # type: ignore[no-redef, import-not-found]
    import _policies  # type: ignore[no-redef, import-not-found]

SECRET = "benchmark-cache-secret-0123456789abcdef"
PROVIDER_DELAY = 0.05  # seconds per userinfo answer
THREADS = 4  # per worker process
CACHED_TARGET = 1.3  # a cached decision with Redis, at most this times the memory one

POLICY = """\
settings {{
  cache        = "{cache}"
  cache_secret = "{secret}"
  timeout      = 3s
}}

provider corp {{
  userinfo = "{userinfo}"
  username = $.sub
  groups   = $.groups[*]
}}

route GET /reports/{{id}} {{
  auth corp
  allow if "reporting" in groups
}}
"""


class CountingUserinfo:
    """A userinfo endpoint on loopback: every token is alice in `reporting`; calls counted."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        lock = threading.Lock()
        calls = self.calls

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                token = self.headers.get("authorization", "").removeprefix("Bearer ")
                with lock:
                    calls[token] += 1
                time.sleep(PROVIDER_DELAY)
                body = json.dumps({"sub": "alice", "groups": ["reporting"]}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/userinfo"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def redis_server() -> Iterator[str]:
    """A redis-server on a free loopback port, in a folder of its own, stopped by its pid."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    folder = tempfile.mkdtemp(prefix="policyauth-bench-redis-")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", folder, "--save", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def _headers(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}"), ("accept", "application/json")]


# --- 1. a cached decision ------------------------------------------------------------------------


def measure_cached(redis_url: str, userinfo: CountingUserinfo, quick: bool) -> list[str]:
    overhead = _common.timer_overhead_ns()
    samples: dict[str, _common.Sample] = {}
    for label, cache in (("memory", "memory"), ("redis", redis_url)):
        text = POLICY.format(cache=cache, secret=SECRET, userinfo=userinfo.url)
        with policyauth.Engine(policyauth.loads(text)) as engine:
            token = f"cached-{label}"
            first = engine.authorize_sync("GET", "/reports/7", _headers(token))
            assert first.status == 200, first
            samples[label] = _common.time_calls(
                lambda e=engine, t=token: e.authorize_sync("GET", "/reports/7", _headers(t)),
                max_calls=20_000 if quick else 200_000,
                budget_s=1.0 if quick else 5.0,
                warmup=1_000,
                overhead_ns=overhead,
            )
            assert userinfo.calls[token] == 1
    ratio = samples["redis"].median / samples["memory"].median
    verdict = "met" if ratio <= CACHED_TARGET else "NOT met"
    rows = [
        [
            label,
            _common.format_ns(sample.median),
            _common.format_ns(sample.p90),
            f"{sample.count:,}",
            _common.format_ratio(sample.median / samples["memory"].median),
        ]
        for label, sample in samples.items()
    ]
    return [
        "## A cached decision: Redis configured against memory",
        "",
        "`engine.authorize_sync` of `GET /reports/7` with a token validated once before timing "
        "(one userinfo call each, checked); the same policy but for `cache`.",
        "",
        _common.markdown_table(["cache", "median", "p90", "samples", "vs memory"], rows),
        "",
        f"Target: within {CACHED_TARGET}x of the memory cache: **{verdict}** "
        f"({_common.format_ratio(ratio)}). A hit is answered by the process's own cache in "
        "front of Redis; Redis is asked only on a miss.",
        "",
    ]


# --- 2. provider calls per token across processes ------------------------------------------------


def worker(argv: Sequence[str]) -> None:
    """One process of the fleet: at START_AT, THREADS threads decide every TOKEN in turn."""
    policy, start_at, tokens = argv[0], float(argv[1]), argv[2:]
    engine = policyauth.Engine(policyauth.load(policy))
    statuses: Counter[int] = Counter()

    def run() -> None:
        time.sleep(max(0.0, start_at - time.time()))
        for token in tokens:
            statuses[engine.authorize_sync("GET", "/reports/7", _headers(token)).status] += 1

    threads = [threading.Thread(target=run) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    engine.close()
    print(json.dumps(statuses), flush=True)


def measure_calls(
    redis_url: str, userinfo: CountingUserinfo, folder: Path, quick: bool
) -> list[str]:
    tokens_per_run = 5 if quick else 20
    rows = []
    for cache, label in (("memory", "memory"), (redis_url, "redis")):
        policy = folder / f"fleet-{label}.policy"
        policy.write_text(POLICY.format(cache=cache, secret=SECRET, userinfo=userinfo.url))
        cells = [label]
        for processes in (1, 2, 4):
            tokens = [f"run-{label}-{processes}-{i}" for i in range(tokens_per_run)]
            start_at = time.time() + 4  # every process imported and ready by then
            procs = [
                subprocess.Popen(
                    [sys.executable, __file__, "--worker", str(policy), str(start_at), *tokens],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for _ in range(processes)
            ]
            statuses: Counter[str] = Counter()
            for proc in procs:
                out, _ = proc.communicate(timeout=300)
                if proc.returncode != 0:
                    raise RuntimeError(f"a worker failed with {proc.returncode}")
                statuses.update(json.loads(out))
            expected = processes * THREADS * tokens_per_run
            if statuses != {"200": expected}:
                raise RuntimeError(f"unexpected decisions: {dict(statuses)}")
            calls = sum(userinfo.calls[token] for token in tokens)
            cells.append(f"{calls / tokens_per_run:.2f}")
        rows.append(cells)
    return [
        "## Provider calls per token, 1, 2 and 4 worker processes",
        "",
        f"Each process runs {THREADS} threads that decide the same {tokens_per_run} new tokens "
        f"in turn, every process starting at the same moment; the userinfo server answers "
        f"after {PROVIDER_DELAY * 1000:.0f} ms and counts. Every decision was checked to be "
        "200.",
        "",
        _common.markdown_table(["cache", "1 process", "2 processes", "4 processes"], rows),
        "",
        "With memory each process validates a token on its own (the figure follows the "
        "number of processes); with Redis the first caller anywhere holds the token's lock and "
        "the others take its answer, so a token costs one call whatever the number of "
        "processes.",
        "",
    ]


# --- 3. reload under traffic ---------------------------------------------------------------------


def measure_reload(folder: Path, quick: bool) -> list[str]:
    specs = _policies.generate_routes(1000)
    file = folder / "bench.policy"
    file.write_text(_policies.render_policy(specs))
    (folder / "automation.tokens").write_text("")
    probe = _policies.probes(specs)[1]  # the middle route
    reloads = 3 if quick else 8
    runs = {
        label: _reload_run(file, probe, reloads, collector)
        for label, collector in (("collector on", True), ("collector off", False))
    }
    measures = [
        "reload (compile and swap), median",
        "reload, slowest",
        "decision outside reloads, median",
        "decision during a reload, median",
        "decision during a reload, p99",
        "decision during a reload, worst",
        "worst during / median outside",
    ]
    rows = [[m, *(runs[label][m] for label in runs)] for m in measures]
    counts = ", ".join(f"{label}: {runs[label]['counts']}" for label in runs)
    return [
        "## Reload of a 1,000-route policy under traffic",
        "",
        f"`engine.reload()` {reloads} times, half a second apart, while one thread decides "
        f"`{probe.method} {probe.path}` (the middle route, a StaticIdentitySource) in a loop "
        f"(decisions, and those overlapping a reload: {counts}). Once with the collector on, "
        "as in an application, once with it off for both threads, to tell its pauses from "
        "the interpreter's.",
        "",
        _common.markdown_table(["measure", *runs], rows),
        "",
        "The reload compiles in the caller's thread, off the request path, and swaps the new "
        "state in with one assignment: no decision waits for a lock. A decision overlapping a "
        "reload still shares the interpreter with it: the GIL (handed over every "
        f"{sys.getswitchinterval() * 1000:.0f} ms) and the cyclic collector, whose runs, set "
        "off by the reload's allocations over a heap that holds two 1,000-route plans, stop "
        f"every thread. {_collector_verdict(runs)} The worst single decision also carries "
        "whatever else the machine did at that moment (see the load average above). A service "
        "that cannot afford that tail reloads a worker that is out of rotation, or runs "
        "`policyauth serve` with several workers.",
        "",
    ]


def _collector_verdict(runs: dict[str, dict[str, str]]) -> str:
    """What the two runs say about the p99 during a reload, in words that follow the figures."""
    on, off = (runs[label]["p99 ns"] for label in ("collector on", "collector off"))
    busy = os.getloadavg()[0] > (os.cpu_count() or 1)
    if busy:
        return (
            "The load average was above nproc during this run: the tails measure the "
            "machine's scheduling as much as policyauth, and the two runs cannot be told apart."
        )
    if float(on) > 2 * float(off):
        return (
            f"Here the collector makes the tail: the p99 during a reload is "
            f"{_common.format_ns(float(on))} with it and {_common.format_ns(float(off))} "
            "without."
        )
    return "Here the collector makes no clear difference to the p99 during a reload."


def _reload_run(
    file: Path, probe: _policies.Probe, reloads: int, collector: bool
) -> dict[str, str]:
    policy = policyauth.load(file, env={})
    identities = policyauth.StaticIdentitySource(policy, _policies.IDENTITY_DOCUMENTS)
    engine = policyauth.Engine(policy, identities=identities)
    assert engine.authorize_sync(probe.method, probe.target, probe.headers).status == 200
    samples: list[tuple[int, int]] = []  # (start, duration) of every decision, in ns
    stop = threading.Event()

    def decide() -> None:
        clock = time.perf_counter_ns
        while not stop.is_set():
            start = clock()
            engine.authorize_sync(probe.method, probe.target, probe.headers)
            samples.append((start, clock() - start))

    windows: list[tuple[int, int]] = []
    decider = threading.Thread(target=decide)
    was_enabled = gc.isenabled()
    gc.collect()
    if not collector:
        gc.disable()
    decider.start()
    try:
        for _ in range(reloads):
            time.sleep(0.5)
            start = time.perf_counter_ns()
            assert engine.reload() is True
            windows.append((start, time.perf_counter_ns()))
        time.sleep(0.5)
    finally:
        stop.set()
        decider.join()
        engine.close()
        if was_enabled:
            gc.enable()

    def during(start: int, duration: int) -> bool:
        return any(start < end and start + duration > begin for begin, end in windows)

    outside = [d for s, d in samples if not during(s, d)]
    inside = [d for s, d in samples if during(s, d)]
    reload_times = [end - begin for begin, end in windows]
    median_outside = statistics.median(outside)
    return {
        "reload (compile and swap), median": _common.format_ns(statistics.median(reload_times)),
        "reload, slowest": _common.format_ns(max(reload_times)),
        "decision outside reloads, median": _common.format_ns(median_outside),
        "decision during a reload, median": _common.format_ns(statistics.median(inside)),
        "decision during a reload, p99": _common.format_ns(_common.percentile(inside, 99)),
        "decision during a reload, worst": _common.format_ns(max(inside)),
        "worst during / median outside": _common.format_ratio(max(inside) / median_outside),
        "counts": f"{len(samples):,} and {len(inside):,}",
        "p99 ns": str(_common.percentile(inside, 99)),
    }


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["--worker"]:
        worker(arguments[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run (smoke test)")
    parser.add_argument("--report", help="where to write the markdown report")
    args = parser.parse_args(arguments)
    userinfo = CountingUserinfo()
    folder = Path(tempfile.mkdtemp(prefix="policyauth-bench-fleet-"))
    try:
        with redis_server() as url:
            body = measure_cached(url, userinfo, args.quick)
            body += measure_calls(url, userinfo, folder, args.quick)
        body += measure_reload(folder, args.quick)
    finally:
        userinfo.close()
        shutil.rmtree(folder, ignore_errors=True)
    path = _common.report_path(args.report, "fleet", quick=args.quick)
    command = "python benchmarks/fleet.py" + (" --quick" if args.quick else "")
    _common.write_report(path, "A fleet: Redis cache and reload", body, command=command)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
