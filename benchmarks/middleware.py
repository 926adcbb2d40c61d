"""Requests per second of a hello-world Starlette app under uvicorn, with and without policyauth.

The ASGI middleware sits in front of every request, so what it costs is what an application
loses in throughput. This benchmark serves the same hello-world Starlette application in
variants, each in its own uvicorn process (one worker, pinned to CPU 0 with `taskset`), and
drives each with wrk (a load generator written in C, from Debian's `wrk` package, installed
with apt-get when missing) pinned to CPU 1, so that the server and the load generator never
share a core:

- `bare`: the application alone;
- `policyauth`: `PolicyAuthMiddleware` as Starlette middleware, with an Engine whose identity
  source is a StaticIdentitySource: the bearer token is already known, as after an identity
  cache hit, so no network is involved and only policyauth's own work is added;
- `policyauth-cache`: the same middleware with the default, remote identity source over an
  httpx mock transport: the first request fills the real identity cache, every other request
  is a cache hit, as in production;
- `policyauth-fixed`: the same middleware with an engine that returns one precomputed allow
  decision without deciding: what the integration itself costs, apart from the engine;
- `basehttp`: a do-nothing Starlette `BaseHTTPMiddleware` (the usual way to write middleware,
  and the peer: what any such middleware costs).

Every variant gets the same request (`GET /hello` with `Authorization: Bearer ...`; the
policy's route needs that token's group). Before timing, each server is checked to answer 200
`Hello, world!`, and the policyauth ones to answer 401 without the token (the middleware is
really in the way). Runs go round-robin over the variants (so slow drift of the machine hits
them all alike), `wrk -t1 -c32 -d10s` each, five runs per variant after a warm-up; a run with
errors or non-2xx answers is an error. The figure is the median of the runs.

Target: policyauth with a cached identity (`policyauth-cache`, the production path, as the
issue states it) keeps at least 85% of the bare throughput; `policyauth` (a StaticIdentitySource,
which makes a new identity per request and so remembers nothing between requests) is shown
beside it. A missed target is reported
(with a cProfile of the policyauth server, also on demand with `--profile`), and the exit status
stays 0: benchmarks never fail on an absolute figure.

Run from the project root: `python benchmarks/middleware.py` (about 3.5 minutes), or `--quick`
(about 30 seconds: 2-second runs, one per variant) as a smoke test.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # run as a script: make `benchmarks.middleware` importable
    sys.path.insert(0, str(ROOT))

try:  # imported as `benchmarks.middleware` from the project root
    from benchmarks import _common
except ImportError:  # pragma: no cover
    import _common  # type: ignore[no-redef, import-not-found]

TARGET_RATIO = 0.85
HOST = "127.0.0.1"
TOKEN = "t-bench"
SERVER_CPU = "0"
LOAD_CPU = "1"
VARIANTS = ("bare", "policyauth", "policyauth-cache", "policyauth-fixed", "basehttp")
LABELS = {
    "bare": "bare Starlette app",
    "policyauth": "policyauth middleware (StaticIdentitySource)",
    "policyauth-cache": "policyauth middleware (identity cache hit)",
    "policyauth-fixed": "policyauth middleware, engine answering a fixed decision",
    "basehttp": "do-nothing BaseHTTPMiddleware",
}

POLICY = """
settings {
  realm = "bench"
}

provider corp {
  userinfo = "https://sso.example.com/userinfo"
  username = $.preferred_username
  groups   = $.groups[*]
}

route GET /public/** {
  public
}

route GET /hello {
  auth corp
  deny  if "suspended" in groups
  allow if "staff" in groups
}
"""
USERINFO = {"sub": "1", "preferred_username": "ann", "groups": ["staff", "admins"]}


# --- the application (imported by the uvicorn processes) ------------------------------------


def create_app() -> Any:
    """The hello-world application in the variant named by PA_BENCH_VARIANT (uvicorn factory)."""
    import httpx
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    import policyauth
    from policyauth.asgi import PolicyAuthMiddleware

    async def hello(request: Request) -> Response:
        return PlainTextResponse("Hello, world!")

    class DoNothing(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
            return await call_next(request)

    def userinfo(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") == f"Bearer {TOKEN}":
            return httpx.Response(200, json=USERINFO)
        return httpx.Response(401)

    variant = os.environ["PA_BENCH_VARIANT"]
    policy = policyauth.loads(POLICY, name="bench.policy")
    middleware: list[Middleware] = []
    if variant == "policyauth":
        identities = policyauth.StaticIdentitySource(policy, {("corp", TOKEN): USERINFO})
        engine = policyauth.Engine(policy, identities=identities)
        middleware = [Middleware(PolicyAuthMiddleware, engine=engine)]
    elif variant == "policyauth-cache":
        engine = policyauth.Engine(policy, transport=httpx.MockTransport(userinfo))
        middleware = [Middleware(PolicyAuthMiddleware, engine=engine)]
    elif variant == "policyauth-fixed":

        class FixedEngine(policyauth.Engine):
            """Answers the benchmark request's decision, made once, to every request."""

            async def authorize(self, method: str, target: str, headers: Any = ()) -> Any:
                return fixed

        identities = policyauth.StaticIdentitySource(policy, {("corp", TOKEN): USERINFO})
        fixed = policyauth.Engine(policy, identities=identities).authorize_sync(
            "GET", "/hello", [("authorization", f"Bearer {TOKEN}")]
        )
        assert fixed.allowed
        engine = FixedEngine(policy, identities=identities)
        middleware = [Middleware(PolicyAuthMiddleware, engine=engine)]
    elif variant == "basehttp":
        middleware = [Middleware(DoNothing)]
    elif variant != "bare":
        raise ValueError(f"unknown variant {variant!r}")
    return Starlette(routes=[Route("/hello", hello)], middleware=middleware)


def serve_profiled(port: int, output: str) -> None:
    """Run the policyauth variant under cProfile until SIGTERM, then write the stats."""
    import uvicorn

    config = uvicorn.Config(
        "benchmarks.middleware:create_app",
        factory=True,
        host=HOST,
        port=port,
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises SIGTERM once it has shut down; with the default handler that would end
    # the process before the stats are written.
    signal.signal(signal.SIGTERM, lambda number, frame: None)
    profile = cProfile.Profile()
    profile.enable()
    try:
        server.run()
    finally:
        profile.disable()
        profile.dump_stats(output)


# --- servers and the load generator ----------------------------------------------------------


@dataclass
class Server:
    variant: str
    port: int
    process: subprocess.Popen[bytes]
    output: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/hello"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _taskset(cpu: str) -> list[str]:
    return ["taskset", "-c", cpu] if shutil.which("taskset") else []


def start_server(variant: str, workdir: Path, *, profile_to: Path | None = None) -> Server:
    port = _free_port()
    env = {**os.environ, "PA_BENCH_VARIANT": variant}
    if profile_to is None:
        command = [sys.executable, "-m", "uvicorn", "benchmarks.middleware:create_app"]
        command += ["--factory", "--host", HOST, "--port", str(port)]
        command += ["--no-access-log", "--log-level", "warning"]
    else:
        code = (
            "from benchmarks.middleware import serve_profiled; "
            f"serve_profiled({port}, {str(profile_to)!r})"
        )
        command = [sys.executable, "-c", code]
    output = workdir / f"{variant}.log"
    with open(output, "wb") as sink:
        process = subprocess.Popen(
            [*_taskset(SERVER_CPU), *command],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    server = Server(variant, port, process, output)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{variant} server exited:\n{output.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return server
        time.sleep(0.05)
    stop_server(server)
    raise RuntimeError(f"{variant} server not ready after 20 s:\n{output.read_text()}")


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(5)


def check_server(server: Server) -> None:
    """The server answers the benchmark request, and policyauth is really in the way."""
    import httpx

    with httpx.Client(timeout=10) as client:
        reply = client.get(server.url, headers={"Authorization": f"Bearer {TOKEN}"})
        if (reply.status_code, reply.text) != (200, "Hello, world!"):
            raise RuntimeError(f"{server.variant}: {reply.status_code} {reply.text!r}")
        anonymous = client.get(server.url)
        in_the_way = server.variant in ("policyauth", "policyauth-cache")
        expected = 401 if in_the_way else 200
        if anonymous.status_code != expected:
            raise RuntimeError(f"{server.variant} without a token: {anonymous.status_code}")


def ensure_wrk() -> str:
    """wrk's path, installing Debian's package first when it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk is not installed: installing Debian's `wrk` package (apt-get install -y wrk)")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT}
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, check=False, **quiet).returncode != 0:  # type: ignore[call-overload]
        subprocess.run(["apt-get", "update", "-q"], check=True, **quiet)  # type: ignore[call-overload]
        subprocess.run(install, check=True, **quiet)  # type: ignore[call-overload]
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is still missing after apt-get install")
    return found


@dataclass(frozen=True)
class Run:
    requests_per_second: float
    latency_p50_ms: float
    latency_p99_ms: float
    requests: int


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def run_wrk(wrk: str, server: Server, seconds: int) -> Run:
    command = [*_taskset(LOAD_CPU), wrk, "-t1", "-c32", f"-d{seconds}s", "--latency"]
    command += ["-H", f"Authorization: Bearer {TOKEN}", server.url]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    text = result.stdout
    problems = [
        line.strip()
        for line in text.splitlines()
        if "Non-2xx" in line or "Socket errors" in line or "errors" in line.lower()
    ]
    if problems:
        raise RuntimeError(f"{server.variant}: wrk reported errors: {problems}\n{text}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.MULTILINE)
    if not (rate and total and p50 and p99):
        raise RuntimeError(f"cannot read wrk's output:\n{text}")
    return Run(float(rate.group(1)), _ms(p50.group(1)), _ms(p99.group(1)), int(total.group(1)))


@contextlib.contextmanager
def servers(variants: Sequence[str], workdir: Path) -> Iterator[dict[str, Server]]:
    started: dict[str, Server] = {}
    try:
        for variant in variants:
            started[variant] = start_server(variant, workdir)
            check_server(started[variant])
        yield started
    finally:
        for server in started.values():
            stop_server(server)


# --- profile -------------------------------------------------------------------------------


def decision_steps() -> list[str]:
    """Where the middleware's time goes, in process: the benchmark request's decision and each
    of its steps timed alone (best of five loops, collector off), free of a profiler's cost."""
    import asyncio
    import gc

    import httpx

    import policyauth
    from policyauth.asgi import PolicyAuthMiddleware
    from policyauth.evaluator import Pending, finish, prepare
    from policyauth.request import canonicalize, normalize_headers, read_credentials

    policy = policyauth.loads(POLICY, name="bench.policy")
    static = policyauth.StaticIdentitySource(policy, {("corp", TOKEN): USERINFO})
    engine = policyauth.Engine(policy, identities=static)
    cached = policyauth.Engine(
        policy, transport=httpx.MockTransport(lambda _: httpx.Response(200, json=USERINFO))
    )
    raw = [(b"host", f"{HOST}:8000".encode()), (b"authorization", f"Bearer {TOKEN}".encode())]
    headers = normalize_headers(raw)
    step = prepare(policy, "GET", "/hello", headers)
    assert isinstance(step, Pending)
    name = step.authenticators[0]
    identity = static.identify_sync(name, step.credential)
    assert cached.authorize_sync("GET", "/hello", raw).allowed  # fills the identity cache
    scope = {"type": "http", "method": "GET", "path": "/hello", "raw_path": b"/hello"}
    scope |= {"root_path": "", "query_string": b"", "headers": raw}

    async def downstream(scope: Any, receive: Any, send: Any) -> None:
        return None

    middleware = PolicyAuthMiddleware(downstream, engine=engine)

    def timed(call: Any, count: int = 20_000) -> float:
        for _ in range(count // 10):
            call()
        best = float("inf")
        gc.collect()
        gc.disable()
        try:
            for _ in range(5):
                start = time.perf_counter_ns()
                for _ in range(count):
                    call()
                best = min(best, (time.perf_counter_ns() - start) / count)
        finally:
            gc.enable()
        return best

    def timed_async(make: Any, count: int = 20_000) -> float:
        """Awaited `count` times in one coroutine, as a server's task awaits the middleware."""

        async def calls() -> None:
            for _ in range(count):
                await make()

        return timed(lambda: asyncio.run(calls()), 1) / count

    steps = [
        (
            "`PolicyAuthMiddleware` call (the app does nothing)",
            timed_async(lambda: middleware(dict(scope), None, None)),  # type: ignore[arg-type]
        ),
        (
            "`await Engine.authorize`, StaticIdentitySource",
            timed_async(lambda: engine.authorize("GET", "/hello", raw)),
        ),
        (
            "`Engine.authorize_sync`, StaticIdentitySource",
            timed(lambda: engine.authorize_sync("GET", "/hello", raw)),
        ),
        (
            "`Engine.authorize_sync`, identity cache hit",
            timed(lambda: cached.authorize_sync("GET", "/hello", raw)),
        ),
        ("- normalize_headers", timed(lambda: normalize_headers(raw))),
        (
            "- prepare (canonicalize, route, credentials)",
            timed(lambda: prepare(policy, "GET", "/hello", headers)),
        ),
        ("  - canonicalize", timed(lambda: canonicalize("GET", "/hello", headers))),
        ("  - read_credentials", timed(lambda: read_credentials(headers, ""))),
        (
            "- identify: StaticIdentitySource",
            timed(lambda: static.identify_sync(name, step.credential)),
        ),
        (
            "- finish (principal, two rules, Decision)",
            timed(lambda: finish(policy, step, name, identity)),
        ),
    ]
    rows = [[label, f"{ns / 1000:.2f} µs"] for label, ns in steps]
    return [
        "The benchmark request's decision in process, each step timed alone (best of five"
        " loops, collector off): the middleware's own code is the difference between the first"
        " two rows; the rest is the engine's, whose steps follow (as `decide.py` times them).",
        "",
        _common.markdown_table(["step", "time per request"], rows),
    ]


def profile_policyauth(wrk: str, workdir: Path, seconds: int) -> list[str]:
    """A cProfile of the policyauth server under the same load: policyauth's own functions."""
    stats_path = workdir / "policyauth.prof"
    server = start_server("policyauth", workdir, profile_to=stats_path)
    try:
        check_server(server)
        run = run_wrk(wrk, server, seconds)
    finally:
        stop_server(server)
    stats = pstats.Stats(str(stats_path))
    entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(tottime for _, _, tottime, _, _ in entries.values())
    own = [
        (cumtime, tottime, calls, f"{Path(file).name}:{line} {name}")
        for (file, line, name), (_, calls, tottime, cumtime, _) in entries.items()
        if f"{os.sep}policyauth{os.sep}" in file
    ]
    own_total = sum(tottime for _, tottime, _, _ in own)
    per_request = 1e6 / max(run.requests, 1)
    rows = [
        [
            where,
            f"{calls / max(run.requests, 1):.1f}",
            f"{cumtime * per_request:.1f} µs",
            f"{tottime * per_request:.1f} µs",
            f"{tottime / total:.1%}",
        ]
        for cumtime, tottime, calls, where in sorted(own, reverse=True)[:18]
    ]
    buffer = io.StringIO()
    pstats.Stats(str(stats_path), stream=buffer).sort_stats("tottime").print_stats(12)
    return [
        *decision_steps(),
        "",
        f"cProfile of the `policyauth` server under `wrk -d{seconds}s` ({run.requests} requests,"
        f" {run.requests_per_second:.0f} req/s under the profiler, which slows Python calls"
        " down: compare rows with each other). policyauth's own functions take"
        f" {own_total / total:.1%} of the server's CPU time. By cumulative time:",
        "",
        _common.markdown_table(
            ["policyauth function", "calls/request", "cumulative", "own", "own, of server CPU"],
            rows,
        ),
        "",
        "Whole server, by own time:",
        "",
        "```",
        _trim(buffer.getvalue()),
        "```",
    ]


def _trim(text: str) -> str:
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    prefixes = [str(ROOT) + os.sep, sys.prefix + os.sep, sys.base_prefix + os.sep]
    kept = []
    for line in lines[start:]:
        if line.strip():
            for prefix in prefixes:
                line = line.replace(prefix, "")
            kept.append(line.rstrip())
    return "\n".join(kept)


# --- main ----------------------------------------------------------------------------------


def run(*, quick: bool, profile: bool) -> tuple[list[str], str]:
    wrk = ensure_wrk()
    seconds, rounds, warmup = (2, 1, 1) if quick else (10, 5, 3)
    results: dict[str, list[Run]] = {variant: [] for variant in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="pa-bench-") as temporary:
        workdir = Path(temporary)
        with servers(VARIANTS, workdir) as started:
            for variant in VARIANTS:  # warm-up: imports, caches, the identity cache
                run_wrk(wrk, started[variant], warmup)
            for _ in range(rounds):
                for variant in VARIANTS:
                    results[variant].append(run_wrk(wrk, started[variant], seconds))
        median = {v: statistics.median(r.requests_per_second for r in results[v]) for v in VARIANTS}
        ratio = median["policyauth-cache"] / median["bare"]
        met = ratio >= TARGET_RATIO
        profile_lines = profile_policyauth(wrk, workdir, seconds) if (profile or not met) else []

    rows = []
    for variant in VARIANTS:
        runs = results[variant]
        rows.append(
            [
                LABELS[variant],
                f"{median[variant]:,.0f}",
                ", ".join(f"{r.requests_per_second:,.0f}" for r in runs),
                f"{median[variant] / median['bare']:.1%}",
                f"{statistics.median(r.latency_p50_ms for r in runs):.2f} ms",
                f"{statistics.median(r.latency_p99_ms for r in runs):.2f} ms",
            ]
        )
    table = _common.markdown_table(
        ["variant", "req/s (median)", "runs", "of bare", "latency p50", "latency p99"], rows
    )
    per_request_us = (1 / median["policyauth-cache"] - 1 / median["bare"]) * 1e6
    verdict = "met" if met else "MISSED"
    summary = [
        f"- policyauth with a cached identity keeps {ratio:.1%} of the bare throughput: "
        f"target >= {TARGET_RATIO:.0%}, **{verdict}**.",
        f"- policyauth with a StaticIdentitySource (no identity kept between requests) keeps "
        f"{median['policyauth'] / median['bare']:.1%}.",
        f"- the middleware with an engine that does not decide keeps "
        f"{median['policyauth-fixed'] / median['bare']:.1%}: the rest of the cost is the "
        "engine's decision.",
        f"- a do-nothing BaseHTTPMiddleware keeps {median['basehttp'] / median['bare']:.1%}; "
        f"policyauth does {median['policyauth-cache'] / median['basehttp']:.2f}x its throughput.",
        f"- policyauth adds about {per_request_us:.0f} µs of server CPU per request "
        "(1/rate difference, one worker on one core).",
    ]
    setup = [
        f"- server: uvicorn {_common._version('uvicorn')} ({_http_impl()}, asyncio loop), one "
        f"worker, pinned to CPU {SERVER_CPU}; Starlette {_common._version('starlette')}",
        f"- load: `taskset -c {LOAD_CPU} wrk -t1 -c32 -d{seconds}s --latency` "
        f"({_wrk_version(wrk)}), `GET /hello` with `Authorization: Bearer ...`",
        f"- {rounds} run(s) per variant, round-robin over the variants, after a {warmup} s "
        "warm-up each; the median run is the figure",
    ]
    body = [
        "## Setup",
        "",
        *setup,
        "",
        "## Throughput",
        "",
        table,
        "",
        *summary,
    ]
    if profile_lines:
        body += ["", "## Profile", "", *profile_lines]
    printed = "\n".join([table, "", *summary])
    return body, printed


def _http_impl() -> str:
    try:
        import httptools  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return "h11 HTTP parser"
    return "httptools HTTP parser"


def _wrk_version(wrk: str) -> str:
    result = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    first = (result.stdout or result.stderr).strip().splitlines()
    return first[0].split(" [")[0] if first else "wrk"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table, write the report; 0 unless the benchmark itself
    could not run (a missed target is reported, not an error)."""
    parser = argparse.ArgumentParser(
        prog="benchmarks/middleware.py", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="2 s runs, one per variant")
    parser.add_argument("--profile", action="store_true", help="add a cProfile of the server")
    parser.add_argument("--report", help="report path (default: benchmarks/reports/middleware.md)")
    args = parser.parse_args(argv)
    body, printed = run(quick=args.quick, profile=args.profile)
    flags = [f for f, on in (("--quick", args.quick), ("--profile", args.profile)) if on]
    path = _common.report_path(args.report, "middleware", quick=args.quick)
    _common.write_report(
        path,
        "The ASGI middleware under load: requests per second",
        body,
        command=" ".join(["python benchmarks/middleware.py", *flags]),
    )
    print(printed)
    print(f"\nreport: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
