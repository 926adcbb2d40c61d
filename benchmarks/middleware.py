"""Requests per second of a hello-world app with and without policyauth, beside the auth a
user would write by hand, on the HTTP stacks applications run on.

Each variant is its own server process (one worker, pinned to CPU 0 with `taskset`), driven by
wrk (a load generator written in C, from Debian's `wrk` package, installed with apt-get when
missing) pinned to CPU 1, so that the server and the load generator never share a core.

ASGI, on uvicorn with each of its two HTTP stacks: h11 on the asyncio loop (what plain
`pip install uvicorn` runs), and httptools on uvloop (what `uvicorn[standard]` installs and
most deployments run; the `bench` extra installs them):

- `bare`: the hello-world Starlette application alone;
- `policyauth-cache`: `PolicyAuthMiddleware` with the default, remote identity source over an
  httpx mock transport: the first request fills the real identity cache, every other request
  is answered from it, as in production;
- `policyauth-fixed`: the same middleware with an engine that returns one precomputed allow
  decision without deciding: what the integration itself costs, apart from the engine;
- `starlette-auth`: Starlette's own `AuthenticationMiddleware` with a backend that looks the
  bearer token up in a dict, and `@requires("staff")` on the endpoint: the auth a user would
  write by hand;
- `fastapi-jwt`: FastAPI with `HTTPBearer` and a PyJWT decode (HS256) in a dependency that
  checks the group: the usual FastAPI tutorial auth.

WSGI, on gunicorn (one sync worker) and on waitress (its default four threads), a hello-world
Flask application:

- `bare`: the Flask application alone;
- `policyauth-cache`: policyauth's WSGI middleware, identity cache hit as above;
- `handwritten`: a WSGI middleware that looks the bearer token up in a dict and checks the
  group, answering 401/403 itself.

Every variant gets the same request (`GET /hello` with `Authorization: Bearer ...`, a JWT for
`fastapi-jwt`); the route needs that token's group. Before timing, each server is checked to
answer 200 `Hello, world!`, and the auth variants to refuse the request without a token.
Runs go round-robin over every server of a family (so slow drift of the machine hits them
all alike), `wrk -t1 -c32` each, after a warm-up; a run with errors or non-2xx answers is an
error.

Targets (issue 13): on httptools + uvloop, policyauth with a cached identity keeps at least 85%
of the bare throughput AND is faster than `starlette-auth` in the same run; the same for WSGI
on both servers (at least 85% of bare Flask, faster than the hand-written middleware). A
missed target is reported (with a cProfile of the policyauth server, also on demand with
`--profile`), and the exit status stays 0: benchmarks never fail on an absolute figure.

Run from the project root: `python benchmarks/middleware.py` (5 rounds of 5-second runs, about
13 minutes; `--rounds`, `--seconds` and `--stacks` change that), or `--quick` (2-second runs,
one per variant) as a smoke test. Ratios are medians of round-by-round ratios; each run also
reads the server's CPU time, so the report gives requests per server CPU-second beside the
throughput: on a machine shared with other work, that one is the steadier.
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
JWT_SECRET = "bench-secret-of-at-least-32-bytes!"
SERVER_CPU = "0"
LOAD_CPU = "1"
# Stacks: how the server is run; each has its family of variants.
ASGI_STACKS = {
    "h11": ["--http", "h11", "--loop", "asyncio"],
    "httptools": ["--http", "httptools", "--loop", "uvloop"],
}
WSGI_STACKS = ("gunicorn", "waitress")
ASGI_VARIANTS = ("bare", "policyauth-cache", "policyauth-fixed", "starlette-auth", "fastapi-jwt")
WSGI_VARIANTS = ("bare", "policyauth-cache", "handwritten")
STACK_LABELS = {
    "h11": "uvicorn, h11 + asyncio",
    "httptools": "uvicorn, httptools + uvloop",
    "gunicorn": "gunicorn, one sync worker",
    "waitress": "waitress, 4 threads",
}
LABELS = {
    "bare": "bare app",
    "policyauth-cache": "policyauth middleware (identity cache hit)",
    "policyauth-fixed": "policyauth middleware, engine answering a fixed decision",
    "starlette-auth": "Starlette AuthenticationMiddleware, dict backend",
    "fastapi-jwt": "FastAPI + HTTPBearer + PyJWT decode",
    "handwritten": "hand-written WSGI auth middleware, dict lookup",
}
IN_THE_WAY = ("policyauth-cache", "starlette-auth", "fastapi-jwt", "handwritten")
# The hand-written variants' "database": token -> (user, groups).
USERS = {TOKEN: ("ann", ("staff", "admins"))}

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


def jwt_token() -> str:
    """The bearer token of the `fastapi-jwt` variant: an HS256 JWT with the same groups."""
    import jwt

    return jwt.encode({"sub": "ann", "groups": ["staff", "admins"]}, JWT_SECRET, "HS256")


def _policyauth_engine() -> Any:
    """An engine with the real identity cache over a mock provider (no network)."""
    import httpx

    import policyauth

    def userinfo(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") == f"Bearer {TOKEN}":
            return httpx.Response(200, json=USERINFO)
        return httpx.Response(401)

    policy = policyauth.loads(POLICY, name="bench.policy")
    return policyauth.Engine(policy, transport=httpx.MockTransport(userinfo))


def create_app() -> Any:
    """The hello-world application in the variant named by PA_BENCH_VARIANT (uvicorn factory)."""
    variant = os.environ["PA_BENCH_VARIANT"]
    if variant == "fastapi-jwt":
        return _fastapi_jwt_app()
    from starlette.applications import Starlette
    from starlette.authentication import (
        AuthCredentials,
        AuthenticationBackend,
        SimpleUser,
        requires,
    )
    from starlette.middleware import Middleware
    from starlette.middleware.authentication import AuthenticationMiddleware
    from starlette.requests import HTTPConnection, Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    import policyauth
    from policyauth.asgi import PolicyAuthMiddleware

    async def hello(request: Request) -> Response:
        return PlainTextResponse("Hello, world!")

    class DictBackend(AuthenticationBackend):
        async def authenticate(
            self, conn: HTTPConnection
        ) -> tuple[AuthCredentials, SimpleUser] | None:
            scheme, _, token = conn.headers.get("authorization", "").partition(" ")
            found = USERS.get(token) if scheme.lower() == "bearer" else None
            if found is None:
                return None
            return AuthCredentials(list(found[1])), SimpleUser(found[0])

    policy = policyauth.loads(POLICY, name="bench.policy")
    middleware: list[Middleware] = []
    endpoint = hello
    if variant == "policyauth-cache":
        middleware = [Middleware(PolicyAuthMiddleware, engine=_policyauth_engine())]
    elif variant == "policyauth-fixed":

        class FixedEngine(policyauth.Engine):
            """Answers the benchmark request's decision, made once, to every request."""

            def remembered(self, method: str, target: str, headers: Any = ()) -> Any:
                return fixed

            async def authorize(self, method: str, target: str, headers: Any = ()) -> Any:
                return fixed

        identities = policyauth.StaticIdentitySource(policy, {("corp", TOKEN): USERINFO})
        fixed = policyauth.Engine(policy, identities=identities).authorize_sync(
            "GET", "/hello", [("authorization", f"Bearer {TOKEN}")]
        )
        assert fixed.allowed
        engine = FixedEngine(policy, identities=identities)
        middleware = [Middleware(PolicyAuthMiddleware, engine=engine)]
    elif variant == "starlette-auth":
        middleware = [Middleware(AuthenticationMiddleware, backend=DictBackend())]
        endpoint = requires("staff")(hello)
    elif variant != "bare":
        raise ValueError(f"unknown variant {variant!r}")
    return Starlette(routes=[Route("/hello", endpoint)], middleware=middleware)


def _fastapi_jwt_app() -> Any:
    import jwt
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import PlainTextResponse
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

    bearer = HTTPBearer()

    def staff(credentials: HTTPAuthorizationCredentials = Depends(bearer)) -> dict[str, Any]:  # noqa: B008
        try:
            claims: dict[str, Any] = jwt.decode(
                credentials.credentials, JWT_SECRET, algorithms=["HS256"]
            )
        except jwt.InvalidTokenError:
            raise HTTPException(401, "invalid token") from None
        if "staff" not in claims.get("groups", ()):
            raise HTTPException(403, "forbidden")
        return claims

    app = FastAPI()

    @app.get("/hello", response_class=PlainTextResponse)
    def hello(claims: dict[str, Any] = Depends(staff)) -> str:  # noqa: B008
        return "Hello, world!"

    return app


def create_wsgi_app() -> Any:
    """The hello-world Flask application in the variant named by PA_BENCH_VARIANT."""
    from flask import Flask

    from policyauth.wsgi import PolicyAuthMiddleware

    app = Flask("bench")

    @app.get("/hello")
    def hello() -> tuple[str, int, dict[str, str]]:
        return "Hello, world!", 200, {"Content-Type": "text/plain; charset=utf-8"}

    variant = os.environ["PA_BENCH_VARIANT"]
    inner = app.wsgi_app
    if variant == "policyauth-cache":
        app.wsgi_app = PolicyAuthMiddleware(inner, engine=_policyauth_engine())  # type: ignore[method-assign]
    elif variant == "handwritten":
        app.wsgi_app = _handwritten(inner)  # type: ignore[method-assign]
    elif variant != "bare":
        raise ValueError(f"unknown variant {variant!r}")
    return app


def _handwritten(inner: Any) -> Any:
    """What a user writes without policyauth: a dict lookup and a group check."""

    def middleware(environ: dict[str, Any], start_response: Any) -> Any:
        scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        found = USERS.get(token) if scheme.lower() == "bearer" else None
        if found is None or "staff" not in found[1]:
            status = "401 Unauthorized" if found is None else "403 Forbidden"
            start_response(status, [("Content-Type", "text/plain"), ("Content-Length", "6")])
            return [b"denied"]
        environ["REMOTE_USER"] = found[0]
        return inner(environ, start_response)

    return middleware


def serve_profiled(port: int, output: str, stack: str) -> None:
    """Run the policyauth variant under cProfile until SIGTERM, then write the stats."""
    import uvicorn

    http, loop = ASGI_STACKS[stack][1], ASGI_STACKS[stack][3]
    config = uvicorn.Config(
        "benchmarks.middleware:create_app",
        factory=True,
        host=HOST,
        port=port,
        log_level="warning",
        access_log=False,
        http=http,  # type: ignore[arg-type]
        loop=loop,  # type: ignore[arg-type]
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
    stack: str
    variant: str
    port: int
    process: subprocess.Popen[bytes]
    output: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/hello"

    @property
    def authorization(self) -> str:
        return f"Bearer {jwt_token() if self.variant == 'fastapi-jwt' else TOKEN}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _taskset(cpu: str) -> list[str]:
    return ["taskset", "-c", cpu] if shutil.which("taskset") else []


def _command(stack: str, port: int) -> list[str]:
    python = sys.executable
    if stack in ASGI_STACKS:
        command = [python, "-m", "uvicorn", "benchmarks.middleware:create_app", "--factory"]
        command += ["--host", HOST, "--port", str(port), "--no-access-log"]
        return [*command, "--log-level", "warning", *ASGI_STACKS[stack]]
    if stack == "gunicorn":
        command = [python, "-m", "gunicorn", "-w", "1", "-k", "sync", "-b", f"{HOST}:{port}"]
        return [*command, "--log-level", "warning", "benchmarks.middleware:create_wsgi_app()"]
    if stack == "waitress":
        command = [python, "-m", "waitress", "--host", HOST, "--port", str(port), "--threads", "4"]
        return [*command, "--call", "benchmarks.middleware:create_wsgi_app"]
    raise ValueError(f"unknown stack {stack!r}")


def start_server(
    stack: str, variant: str, workdir: Path, *, profile_to: Path | None = None
) -> Server:
    port = _free_port()
    env = {**os.environ, "PA_BENCH_VARIANT": variant}
    if profile_to is None:
        command = _command(stack, port)
    else:
        code = (
            "from benchmarks.middleware import serve_profiled; "
            f"serve_profiled({port}, {str(profile_to)!r}, {stack!r})"
        )
        command = [sys.executable, "-c", code]
    output = workdir / f"{stack}-{variant}.log"
    with open(output, "wb") as sink:
        process = subprocess.Popen(
            [*_taskset(SERVER_CPU), *command],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    server = Server(stack, variant, port, process, output)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{stack} {variant} server exited:\n{output.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return server
        time.sleep(0.05)
    stop_server(server)
    raise RuntimeError(f"{stack} {variant} server not ready after 30 s:\n{output.read_text()}")


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(5)


def check_server(server: Server) -> None:
    """The server answers the benchmark request, and the auth is really in the way."""
    import httpx

    shown = f"{server.stack} {server.variant}"
    with httpx.Client(timeout=10) as client:
        reply = client.get(server.url, headers={"Authorization": server.authorization})
        if (reply.status_code, reply.text) != (200, "Hello, world!"):
            raise RuntimeError(f"{shown}: {reply.status_code} {reply.text!r}")
        anonymous = client.get(server.url)
        refused = anonymous.status_code in (401, 403)
        if refused != (server.variant in IN_THE_WAY):
            raise RuntimeError(f"{shown} without a token: {anonymous.status_code}")


def ensure_wrk() -> str:
    """wrk's path, installing Debian's package first when it is missing."""
    return ensure_tool("wrk")


def ensure_tool(name: str) -> str:
    """A command's path, installing the Debian package of that name first when missing."""
    found = shutil.which(name)
    if found:
        return found
    print(f"{name} is not installed: installing Debian's `{name}` package (apt-get install -y)")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT}
    install = ["apt-get", "install", "-y", "-q", name]
    if subprocess.run(install, check=False, **quiet).returncode != 0:  # type: ignore[call-overload]
        subprocess.run(["apt-get", "update", "-q"], check=True, **quiet)  # type: ignore[call-overload]
        subprocess.run(install, check=True, **quiet)  # type: ignore[call-overload]
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is still missing after apt-get install")
    return found


@dataclass(frozen=True)
class Run:
    requests_per_second: float
    latency_p50_ms: float
    latency_p99_ms: float
    requests: int
    server_cpu_seconds: float = 0.0  # the server's processes, user + system, during the run

    @property
    def per_cpu_second(self) -> float:
        """Requests per second of the server's own CPU time: what one worker would serve on
        a CPU of its own. Waits for a CPU taken by other processes are not in it, so it is
        steadier than `requests_per_second` on a shared machine."""
        return self.requests / self.server_cpu_seconds if self.server_cpu_seconds else 0.0


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants (gunicorn's worker is a
    child of its master), from /proc; 0 where /proc is missing."""
    tick = os.sysconf("SC_CLK_TCK")
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            stat = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        total += (int(stat[11]) + int(stat[12])) / tick
        pending += [int(child) for child in children]
    return total


def run_wrk(wrk: str, server: Server, seconds: int) -> Run:
    command = [*_taskset(LOAD_CPU), wrk, "-t1", "-c32", f"-d{seconds}s", "--latency"]
    command += ["-H", f"Authorization: {server.authorization}", server.url]
    cpu_before = _cpu_seconds(server.process.pid)
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    cpu = _cpu_seconds(server.process.pid) - cpu_before
    text = result.stdout
    problems = [
        line.strip()
        for line in text.splitlines()
        if "Non-2xx" in line or "Socket errors" in line or "errors" in line.lower()
    ]
    if problems:
        raise RuntimeError(f"{server.stack} {server.variant}: wrk errors: {problems}\n{text}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.MULTILINE)
    if not (rate and total and p50 and p99):
        raise RuntimeError(f"cannot read wrk's output:\n{text}")
    return Run(float(rate.group(1)), _ms(p50.group(1)), _ms(p99.group(1)), int(total.group(1)), cpu)


@contextlib.contextmanager
def servers(
    family: Sequence[tuple[str, str]], workdir: Path
) -> Iterator[dict[tuple[str, str], Server]]:
    started: dict[tuple[str, str], Server] = {}
    try:
        for stack, variant in family:
            started[stack, variant] = start_server(stack, variant, workdir)
            check_server(started[stack, variant])
        yield started
    finally:
        for server in started.values():
            stop_server(server)


# --- profile -------------------------------------------------------------------------------


def decision_steps() -> list[str]:
    """Where the middleware's time goes, in process: the benchmark request's decision and each
    of its steps timed alone (best of five loops, collector off), free of a profiler's cost."""
    import asyncio

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
    recall = cached._state.recall
    scope = {"type": "http", "method": "GET", "path": "/hello", "raw_path": b"/hello"}
    scope |= {"root_path": "", "query_string": b"", "headers": raw}

    async def downstream(scope: Any, receive: Any, send: Any) -> None:
        return None

    middleware = PolicyAuthMiddleware(downstream, engine=cached)

    def timed_async(make: Any, count: int = 20_000) -> float:
        """Awaited `count` times in one coroutine, as a server's task awaits the middleware."""

        async def calls() -> None:
            for _ in range(count):
                await make()

        return _best_ns(lambda: asyncio.run(calls()), 1) / count

    steps = [
        (
            "`PolicyAuthMiddleware` call, remembered decision (the app does nothing)",
            timed_async(lambda: middleware(dict(scope), None, None)),  # type: ignore[arg-type]
        ),
        (
            "`await Engine.authorize`, remembered decision",
            timed_async(lambda: cached.authorize("GET", "/hello", raw)),
        ),
        (
            "`Engine.authorize_sync`, remembered decision",
            timed(lambda: cached.authorize_sync("GET", "/hello", raw)),
        ),
        (
            "- `Recall.find` (key, lookup, identity cache check, metrics)",
            timed(lambda: recall.find("GET", "/hello", raw)),
        ),
        (
            "`Engine.authorize_sync`, full path (StaticIdentitySource: nothing remembered)",
            timed(lambda: engine.authorize_sync("GET", "/hello", raw)),
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
        " loops, collector off). A repeated request is answered from the engine's remembered"
        " decisions (policyauth/recall.py); the full path, and its steps as `decide.py` times"
        " them, follow.",
        "",
        _common.markdown_table(["step", "time per request"], rows),
    ]


def timed(call: Any, count: int = 20_000) -> float:
    """Nanoseconds per call, best of five loops of `count`, collector off."""
    return _best_ns(call, count) / count


def _best_ns(call: Any, count: int) -> float:
    import gc

    for _ in range(max(count // 10, 1)):
        call()
    best = float("inf")
    gc.collect()
    gc.disable()
    try:
        for _ in range(5):
            start = time.perf_counter_ns()
            for _ in range(count):
                call()
            best = min(best, time.perf_counter_ns() - start)
    finally:
        gc.enable()
    return best


def asgi_scope(variant: str) -> dict[str, Any]:
    """The benchmark's request as uvicorn's httptools protocol hands it over: a new scope with
    new header bytes for each request."""
    token = jwt_token() if variant == "fastapi-jwt" else TOKEN
    headers = [
        (b"host", f"{HOST}:8000".encode()),
        (b"authorization", b"Bearer " + token.encode()),
    ]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/hello",
        "raw_path": b"/hello",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": (HOST, 50000),
        "server": (HOST, 8000),
        "state": {},
        "extensions": {},
    }


def wsgi_environ() -> dict[str, Any]:
    """The benchmark's request as gunicorn hands it over: a new environ for each request."""
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/hello",
        "QUERY_STRING": "",
        "RAW_URI": "/hello",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": HOST,
        "SERVER_PORT": "8000",
        "REMOTE_ADDR": HOST,
        "REMOTE_PORT": "50000",
        "HTTP_HOST": f"{HOST}:8000",
        "HTTP_AUTHORIZATION": "Bearer " + TOKEN,
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def in_process() -> list[str]:
    """Each variant's whole application called in process, its request built afresh each time
    (the ASGI scope with new header bytes; the WSGI environ of gunicorn), variants in turn for
    30 rounds, best round each: the cost of the auth in microseconds, without a server, a
    network or a load generator (the steady figure beside the noisy ones)."""
    import asyncio

    asgi: dict[str, Any] = {}
    wsgi: dict[str, Any] = {}
    for variant in ASGI_VARIANTS:
        os.environ["PA_BENCH_VARIANT"] = variant
        asgi[variant] = create_app()
    for variant in WSGI_VARIANTS:
        os.environ["PA_BENCH_VARIANT"] = variant
        wsgi[variant] = create_wsgi_app()
    os.environ.pop("PA_BENCH_VARIANT", None)

    statuses: list[int | str] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(status)

    async def asgi_round(variant: str, count: int) -> float:
        app = asgi[variant]
        start = time.perf_counter()
        for _ in range(count):
            await app(asgi_scope(variant), receive, send)
        return (time.perf_counter() - start) / count

    def wsgi_round(variant: str, count: int) -> float:
        app = wsgi[variant]
        start = time.perf_counter()
        for _ in range(count):
            b"".join(app(wsgi_environ(), start_response))
        return (time.perf_counter() - start) / count

    async def measure() -> dict[tuple[str, str], float]:
        best: dict[tuple[str, str], float] = {}
        for variant in ASGI_VARIANTS:
            await asgi_round(variant, 300)  # warm-up, and the identity cache filled
        for variant in WSGI_VARIANTS:
            wsgi_round(variant, 300)
        if set(statuses) != {200, "200 OK"}:
            raise RuntimeError(f"in process, a variant answered {sorted(map(str, set(statuses)))}")
        for _ in range(30):
            for variant in ASGI_VARIANTS:
                taken = await asgi_round(variant, 1000 if variant != "fastapi-jwt" else 100)
                best["asgi", variant] = min(best.get(("asgi", variant), taken), taken)
            for variant in WSGI_VARIANTS:
                taken = wsgi_round(variant, 500)
                best["wsgi", variant] = min(best.get(("wsgi", variant), taken), taken)
        return best

    best = asyncio.run(measure())
    rows = []
    for family, variants in (("asgi", ASGI_VARIANTS), ("wsgi", WSGI_VARIANTS)):
        bare = best[family, "bare"]
        for variant in variants:
            label = f"{'Starlette' if family == 'asgi' else 'Flask'}: {LABELS[variant]}"
            took = best[family, variant]
            rows.append([label, f"{took * 1e6:.2f} µs", f"{(took - bare) * 1e6:+.2f} µs"])
    return [
        "Each application called in process (no server, no network): a request built afresh"
        " each time, variants in turn over 30 rounds, the best round of each. `over bare` is"
        " what the auth adds to a request; the server tables above add the server's own work"
        " (tens of microseconds) to every variant alike.",
        "",
        _common.markdown_table(["application", "per request", "over bare"], rows),
    ]


# Instructions per request: the variants whose difference the goals are about, by family.
COUNTED_VARIANTS = {
    "asgi": ("bare", "starlette-auth", "policyauth-cache", "policyauth-fixed"),
    "wsgi": ("bare", "handwritten", "policyauth-cache"),
}
_BASELINES = {"asgi": "starlette-auth", "wsgi": "handwritten"}  # what a user writes by hand
_FAMILIES = {"asgi": "Starlette", "wsgi": "Flask"}
COUNTS = (1_000, 6_000)  # requests per counted run: the difference is the cost of 5,000


def drive(variant: str, count: int, family: str = "asgi") -> None:
    """Serve `count` requests of `variant` in process, after a warm-up (the identity cache
    filled): what `instructions` counts under callgrind. Each ASGI request is one coroutine run
    to its end (the applications never wait on anything here); any answer but 200 is an error."""
    import asyncio

    os.environ["PA_BENCH_VARIANT"] = variant
    if family == "wsgi":
        _drive_wsgi(variant, count)
        return
    app = create_app()
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def warm() -> None:
        for _ in range(3):
            await app(asgi_scope(variant), receive, send)

    asyncio.run(warm())
    for _ in range(count):
        with contextlib.suppress(StopIteration):
            app(asgi_scope(variant), receive, send).send(None)
    if set(statuses) != {200} or len(statuses) != count + 3:
        raise RuntimeError(f"{variant} answered {sorted(set(statuses))}")


def _drive_wsgi(variant: str, count: int) -> None:
    app = create_wsgi_app()
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(status)

    for _ in range(count + 3):
        b"".join(app(wsgi_environ(), start_response))
    if set(statuses) != {"200 OK"}:
        raise RuntimeError(f"{variant} answered {sorted(set(statuses))}")


def instructions() -> list[str]:
    """Instructions per request of each variant in process (ASGI and WSGI), counted by valgrind's
    callgrind: two runs of different lengths, the difference divided by the extra requests.

    Throughput on a shared VM drifts by tens of percent between runs; instruction counts do
    not by much: with the hash seed fixed, each variant repeats within a few percent (2.5% for
    Starlette's auth, 6% for policyauth, whose MAC keys are random and whose metrics thread runs
    on a timer, over four runs). In a uvicorn
    server, counted the same way, the auth variants add what they add here. Cache misses are
    not counted: callgrind's cache simulation showed them alike for the auth variants."""
    valgrind = ensure_tool("valgrind")
    rows = []
    for family, variants in COUNTED_VARIANTS.items():
        counted = {variant: _count(valgrind, family, variant) for variant in variants}
        bare, by_hand = counted["bare"], counted[_BASELINES[family]]
        rows.append([f"{_FAMILIES[family]}: bare app", f"{bare:,.0f}", "", ""])
        rows += [
            [
                f"{_FAMILIES[family]}: {LABELS[variant]}",
                f"{counted[variant]:,.0f}",
                f"{counted[variant] - bare:+,.0f}",
                f"{(counted[variant] - bare) / (by_hand - bare):.2f}",
            ]
            for variant in variants
            if variant != "bare"
        ]
    return [
        "Each application called in process under callgrind (`PYTHONHASHSEED=0`): machine"
        f" instructions per request, from runs of {COUNTS[0]:,} and {COUNTS[1]:,} requests."
        " `of the hand-written auth` divides what a variant adds by what the hand-written auth"
        " adds (Starlette's AuthenticationMiddleware; for Flask, the WSGI middleware with a dict"
        " lookup): below 1.00, the variant costs less than the auth a user would write by hand.",
        "",
        _common.markdown_table(
            ["application", "instructions", "over bare", "of the hand-written auth"], rows
        ),
    ]


def _count(valgrind: str, family: str, variant: str) -> float:
    """Instructions per request of one variant: two counted runs, the difference divided by
    the extra requests."""
    totals = []
    for count in COUNTS:
        code = f"from benchmarks.middleware import drive; drive({variant!r}, {count}, {family!r})"
        command = [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null"]
        done = subprocess.run(
            [*command, sys.executable, "-c", code],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": "0"},
            capture_output=True,
            text=True,
            check=False,
        )
        found = re.search(r"Collected : (\d+)", done.stderr)
        if done.returncode != 0 or found is None:
            raise RuntimeError(f"callgrind of {variant} failed:\n{done.stderr[-2000:]}")
        totals.append(int(found.group(1)))
    return (totals[1] - totals[0]) / (COUNTS[1] - COUNTS[0])


def profile_policyauth(wrk: str, workdir: Path, seconds: int) -> list[str]:
    """A cProfile of the policyauth server under the same load: policyauth's own functions."""
    stats_path = workdir / "policyauth.prof"
    server = start_server("httptools", "policyauth-cache", workdir, profile_to=stats_path)
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


GOALS = {
    "httptools": "starlette-auth",
    "gunicorn": "handwritten",
    "waitress": "handwritten",
}


def run(
    *,
    quick: bool,
    profile: bool,
    rounds: int,
    seconds: int,
    stacks: Sequence[str],
    counted: bool = True,
) -> tuple[list[str], str]:
    wrk = ensure_wrk()
    warmup = 1 if quick else 2
    families = [
        [(stack, variant) for stack in ASGI_STACKS if stack in stacks for variant in ASGI_VARIANTS],
        [(stack, variant) for stack in WSGI_STACKS if stack in stacks for variant in WSGI_VARIANTS],
    ]
    load_before = _common._load_average()
    results: dict[tuple[str, str], list[Run]] = {}
    with tempfile.TemporaryDirectory(prefix="pa-bench-") as temporary:
        workdir = Path(temporary)
        for family in filter(None, families):
            with servers(family, workdir) as started:
                for key in family:  # warm-up: imports, caches, the identity cache
                    run_wrk(wrk, started[key], warmup)
                for number in range(rounds):
                    # Each round starts one server later, so no variant always runs first.
                    shift = number % len(family)
                    for key in family[shift:] + family[:shift]:
                        results.setdefault(key, []).append(run_wrk(wrk, started[key], seconds))
        chosen = [stack for stack in [*ASGI_STACKS, *WSGI_STACKS] if stack in stacks]
        summary, missed = _verdicts(results, chosen)
        process_lines = in_process()
        counted_lines = instructions() if counted else []
        wanted = (profile or missed) and "httptools" in chosen
        profile_lines = profile_policyauth(wrk, workdir, seconds) if wanted else []

    body = ["## Setup", "", *_setup(wrk, seconds, rounds, warmup, load_before), ""]
    body += ["## Goals", "", *summary, ""]
    for stack in chosen:
        body += [f"## {STACK_LABELS[stack]}", "", _table(stack, results), ""]
    body += ["## In process", "", *process_lines, ""]
    if counted_lines:
        body += ["## Instructions per request", "", *counted_lines, ""]
    if profile_lines:
        body += ["## Profile", "", *profile_lines]
    printed = "\n".join([*(_table(stack, results) for stack in chosen), *summary])
    return body, printed


def _paired(
    results: dict[tuple[str, str], list[Run]], stack: str, variant: str, peer: str, measure: str
) -> list[float]:
    """`variant` over `peer`, round by round (each round runs both within seconds of each
    other, so the machine's slow drift cancels out); `measure` is a Run attribute."""
    return [
        getattr(ours, measure) / getattr(theirs, measure)
        for ours, theirs in zip(results[stack, variant], results[stack, peer], strict=True)
    ]


def _verdicts(
    results: dict[tuple[str, str], list[Run]], stacks: Sequence[str]
) -> tuple[list[str], bool]:
    """One line per stack: policyauth against bare and against the hand-written auth, as the
    median of the round-by-round ratios of throughput; the same ratios of requests per
    server CPU-second are shown beside them (steadier when other processes share the CPUs)."""
    lines, missed = [], False
    for stack in stacks:
        peer = GOALS.get(stack) or "starlette-auth"
        kept = statistics.median(
            _paired(results, stack, "policyauth-cache", "bare", "requests_per_second")
        )
        versus = statistics.median(
            _paired(results, stack, "policyauth-cache", peer, "requests_per_second")
        )
        kept_cpu = statistics.median(
            _paired(results, stack, "policyauth-cache", "bare", "per_cpu_second")
        )
        versus_cpu = statistics.median(
            _paired(results, stack, "policyauth-cache", peer, "per_cpu_second")
        )
        if stack in GOALS:
            met = kept >= TARGET_RATIO and versus > 1
            missed = missed or not met
            verdict = f" Goal (>= {TARGET_RATIO:.0%} of bare and faster than it): " + (
                "**met**." if met else "**MISSED**."
            )
        else:
            verdict = " (no goal on this stack; shown for comparison)"
        line = (
            f"- {STACK_LABELS[stack]}: policyauth with a cached identity keeps {kept:.1%} of the"
            f" bare app and does {versus:.2f}x the throughput of the {LABELS[peer]}"
            f" (per server CPU-second: {kept_cpu:.1%} and {versus_cpu:.2f}x).{verdict}"
        )
        if stack in ASGI_STACKS:
            fixed = statistics.median(
                _paired(results, stack, "policyauth-fixed", "bare", "requests_per_second")
            )
            jwt_kept = statistics.median(
                _paired(results, stack, "fastapi-jwt", "bare", "requests_per_second")
            )
            line += (
                f" The middleware with a fixed decision keeps {fixed:.1%}; FastAPI + HTTPBearer"
                f" + PyJWT keeps {jwt_kept:.1%} (of bare Starlette)."
            )
        lines.append(line)
    return lines, missed


def _table(stack: str, results: dict[tuple[str, str], list[Run]]) -> str:
    variants = ASGI_VARIANTS if stack in ASGI_STACKS else WSGI_VARIANTS
    rows = []
    for variant in variants:
        runs = results[stack, variant]
        kept = _paired(results, stack, variant, "bare", "requests_per_second")
        kept_cpu = _paired(results, stack, variant, "bare", "per_cpu_second")
        rows.append(
            [
                LABELS[variant],
                f"{statistics.median(r.requests_per_second for r in runs):,.0f}",
                ", ".join(f"{r.requests_per_second:,.0f}" for r in runs),
                f"{statistics.median(kept):.1%} ({min(kept):.0%}-{max(kept):.0%})",
                f"{statistics.median(r.per_cpu_second for r in runs):,.0f}",
                f"{statistics.median(kept_cpu):.1%}",
                f"{statistics.median(r.latency_p50_ms for r in runs):.2f} ms",
                f"{statistics.median(r.latency_p99_ms for r in runs):.2f} ms",
            ]
        )
    return _common.markdown_table(
        [
            STACK_LABELS[stack],
            "req/s (median)",
            "runs",
            "of bare, by round (median, range)",
            "req per server CPU-s",
            "of bare, per CPU-s",
            "p50",
            "p99",
        ],
        rows,
    )


def _setup(wrk: str, seconds: int, rounds: int, warmup: int, load_before: str) -> list[str]:
    versions = ", ".join(
        f"{name} {_common._version(name)}"
        for name in (
            "uvicorn",
            "h11",
            "httptools",
            "uvloop",
            "starlette",
            "fastapi",
            "PyJWT",
            "flask",
            "gunicorn",
            "waitress",
            "httpx",
        )
    )
    return [
        f"- HTTP stacks and versions: {versions}",
        f"- servers: one worker (one process), pinned to CPU {SERVER_CPU}; uvicorn with"
        " `--http h11 --loop asyncio` and with `--http httptools --loop uvloop`; gunicorn"
        " `-w 1 -k sync`; waitress `--threads 4`",
        f"- load: `taskset -c {LOAD_CPU} wrk -t1 -c32 -d{seconds}s --latency`"
        f" ({_wrk_version(wrk)}), `GET /hello` with `Authorization: Bearer ...`",
        f"- {rounds} run(s) per variant, round-robin over every server of a family (ASGI, then"
        f" WSGI), each round starting one server later, after a {warmup} s warm-up each; a"
        " ratio is the median of the round-by-round ratios (both runs of a pair are seconds"
        " apart); the server's CPU time (user + system, from /proc) is read around each run",
        f"- load average (1, 5, 15 min) before the run: {load_before}",
    ]


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
    parser.add_argument("--rounds", type=int, help="runs per variant (default 5; quick: 1)")
    parser.add_argument("--seconds", type=int, help="seconds per run (default 5; quick: 2)")
    stacks = [*ASGI_STACKS, *WSGI_STACKS]
    parser.add_argument(
        "--stacks", default=",".join(stacks), help=f"comma-separated, of {', '.join(stacks)}"
    )
    parser.add_argument(
        "--no-instructions",
        action="store_true",
        help="skip the instructions per request (callgrind, about 3 minutes)",
    )
    parser.add_argument("--report", help="report path (default: benchmarks/reports/middleware.md)")
    args = parser.parse_args(argv)
    chosen = [stack for stack in args.stacks.split(",") if stack]
    unknown = sorted(set(chosen) - set(stacks))
    if unknown:
        parser.error(f"unknown stacks: {', '.join(unknown)}")
    rounds = args.rounds or (1 if args.quick else 5)
    seconds = args.seconds or (2 if args.quick else 5)
    body, printed = run(
        quick=args.quick,
        profile=args.profile,
        rounds=rounds,
        seconds=seconds,
        stacks=chosen,
        counted=not (args.quick or args.no_instructions),
    )
    switches = (("--quick", args.quick), ("--profile", args.profile))
    flags = [f for f, on in (*switches, ("--no-instructions", args.no_instructions)) if on]
    flags += [f"--rounds {rounds}", f"--seconds {seconds}"]
    if chosen != stacks:
        flags.append(f"--stacks {','.join(chosen)}")
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
