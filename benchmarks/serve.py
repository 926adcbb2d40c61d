"""Requests per second through nginx, with no auth, with a trivial auth service, and with
`policyauth serve`: what forward auth costs, and what policyauth costs on top of the floor.

Three variants, all behind the same nginx (one worker) with `auth_request` as docs/serve.md
configures it, all proxying to the same static upstream (a second nginx server block that
returns a fixed body, so the upstream costs next to nothing):

- `no-auth`: nginx proxies to the upstream without `auth_request`;
- `trivial`: `auth_request` to an ASGI app on uvicorn that answers 200 to everything, the
  floor of any auth service written in Python (same uvicorn, same settings as serve);
- `policyauth`: `auth_request` to `policyauth serve` (one worker), with a bearer token whose
  identity is cached: the provider's userinfo (served by nginx as well) is asked once, every
  other request is an identity cache hit, as in production.

nginx and the auth services are pinned to CPU 0 and wrk (Debian's `wrk`, installed when
missing) to CPU 1. Each server is checked first (200 with the token; policyauth also 401
without it). Runs go round-robin over the variants, `wrk -t1 -c32 -d6s` each, five runs per
variant after a warm-up; the figure is the median run. Both auth services run on the HTTP stack
uvicorn picks by itself: httptools and uvloop when installed (the `bench` extra, as
`uvicorn[standard]` deployments have them), h11 and asyncio otherwise; the report says which.

Goal: policyauth serve within 1.15x of the trivial service's throughput (trivial / policyauth
<= 1.15); both are also shown against no auth. The exit status stays 0 whatever the figures.

Run from the project root: `python benchmarks/serve.py` (about 2 minutes), or `--quick`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # run as a script: make `benchmarks.*` importable
    sys.path.insert(0, str(ROOT))

from benchmarks import _common  # noqa: E402
from benchmarks.middleware import Run, _ms, ensure_wrk  # noqa: E402

GOAL = 1.15
HOST = "127.0.0.1"
TOKEN = "serve-bench-token"
SERVER_CPU = "0"
LOAD_CPU = "1"
VARIANTS = ("no-auth", "trivial", "policyauth")
LABELS = {
    "no-auth": "nginx -> static upstream, no auth",
    "trivial": "nginx auth_request -> always-200 uvicorn app",
    "policyauth": "nginx auth_request -> policyauth serve (cached identity)",
}

POLICY = """\
provider bench {{  # policyauth: ignore[PA201]
  userinfo = "http://{host}:{upstream}/userinfo"
  username = $.sub
  groups   = $.groups[*]
}}

route GET /** {{
  auth bench
  allow if "staff" in groups
}}
"""

NGINX = """\
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  upstream static {{ server {host}:{upstream}; keepalive 32; }}
  upstream trivial {{ server {host}:{trivial}; keepalive 32; }}
  upstream policyauth {{ server {host}:{serve}; keepalive 32; }}

  server {{  # the static upstream, and the provider's userinfo
    listen {host}:{upstream};
    location = /userinfo {{
      default_type application/json;
      return 200 '{{"sub": "alice", "groups": ["staff"]}}';
    }}
    location / {{ return 200 'Hello, world!'; }}
  }}

  server {{ listen {host}:{no_auth}; location / {{ {proxy} }} }}

  server {{
    listen {host}:{trivial_front};
    location / {{ auth_request /_auth; {proxy} }}
    location = /_auth {{ internal; proxy_pass http://trivial/auth; {auth} }}
  }}

  server {{
    listen {host}:{serve_front};
    location / {{
      auth_request /_auth;
      auth_request_set $auth_user $upstream_http_x_auth_user;
      proxy_set_header X-Auth-User $auth_user;
      {proxy}
    }}
    location = /_auth {{ internal; proxy_pass http://policyauth/auth; {auth} }}
  }}
}}
"""
PROXY = "proxy_http_version 1.1; proxy_set_header Connection ''; proxy_pass http://static;"
AUTH = (
    "proxy_http_version 1.1; proxy_set_header Connection ''; proxy_pass_request_body off; "
    'proxy_set_header Content-Length ""; proxy_set_header X-Original-Method $request_method; '
    "proxy_set_header X-Original-URI $request_uri;"
)


async def trivial_app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
    """The floor: an ASGI app that answers 200 with no body to every request."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()  # type: ignore[operator]
            kind = "startup" if message["type"] == "lifespan.startup" else "shutdown"
            await send({"type": f"lifespan.{kind}.complete"})  # type: ignore[operator]
            if kind == "shutdown":
                return
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]}
    )  # type: ignore[operator]
    await send({"type": "http.response.body", "body": b""})  # type: ignore[operator]


def _stack() -> str:
    """The HTTP stack uvicorn picks on its own ("auto"), as `policyauth serve` runs it."""
    import importlib.util

    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return ", ".join(
        f"{name} {_common._version(name)}" for name in (http, loop) if name != "asyncio"
    ) + (" + asyncio" if loop == "asyncio" else "")


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _taskset(cpu: str) -> list[str]:
    return ["taskset", "-c", cpu] if shutil.which("taskset") else []


@contextlib.contextmanager
def _process(command: list[str], log: Path, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*_taskset(SERVER_CPU), *command], cwd=cwd, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def _status(url: str, token: str | None) -> int:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def _wait(url: str, token: str | None, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited:\n{log.read_text()}")
        with contextlib.suppress(OSError):
            if _status(url, token) == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"not ready after 30 s:\n{log.read_text()}")


@contextlib.contextmanager
def servers(workdir: Path) -> Iterator[dict[str, str]]:
    """Start everything; the URL of each variant's front."""
    ports = {
        name: _free_port()
        for name in ("upstream", "trivial", "serve", "no_auth", "trivial_front", "serve_front")
    }
    policy = workdir / "bench.policy"
    policy.write_text(POLICY.format(host=HOST, upstream=ports["upstream"]))
    config = workdir / "nginx.conf"
    config.write_text(NGINX.format(tmp=workdir, host=HOST, proxy=PROXY, auth=AUTH, **ports))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    trivial = [sys.executable, "-m", "uvicorn", "benchmarks.serve:trivial_app"]
    trivial += ["--host", HOST, "--port", str(ports["trivial"]), "--no-access-log"]
    trivial += ["--no-proxy-headers", "--log-level", "warning"]
    serve = [sys.executable, "-m", "policyauth.cli.main", "serve", str(policy)]
    serve += ["--host", HOST, "--port", str(ports["serve"]), "--log-level", "warning"]
    urls = {
        "no-auth": f"http://{HOST}:{ports['no_auth']}/hello",
        "trivial": f"http://{HOST}:{ports['trivial_front']}/hello",
        "policyauth": f"http://{HOST}:{ports['serve_front']}/hello",
    }
    with (
        _process([nginx, "-c", str(config), "-p", str(workdir)], workdir / "nginx.log", ROOT) as a,
        _process(trivial, workdir / "trivial.log", ROOT) as b,
        _process(serve, workdir / "serve.log", ROOT) as c,
    ):
        for variant, process, log in (
            ("no-auth", a, workdir / "nginx.log"),
            ("trivial", b, workdir / "trivial.log"),
            ("policyauth", c, workdir / "serve.log"),
        ):
            _wait(urls[variant], TOKEN, process, log)
        if _status(urls["policyauth"], None) != 401:
            raise RuntimeError("policyauth is not in the way: no 401 without the token")
        yield urls


def run_wrk(wrk: str, url: str, seconds: int) -> Run:
    command = [*_taskset(LOAD_CPU), wrk, "-t1", "-c32", f"-d{seconds}s", "--latency"]
    command += ["-H", f"Authorization: Bearer {TOKEN}", url]
    text = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in text or "Socket errors" in text:
        raise RuntimeError(f"wrk reported errors:\n{text}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.MULTILINE)
    if not (rate and total and p50 and p99):
        raise RuntimeError(f"cannot read wrk's output:\n{text}")
    return Run(float(rate.group(1)), _ms(p50.group(1)), _ms(p99.group(1)), int(total.group(1)))


def median(runs: list[Run]) -> Run:
    """The median run by throughput (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda run: run.requests_per_second)
    return ordered[(len(ordered) - 1) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2-second runs, one per variant")
    parser.add_argument("--report", help="where to write the report")
    args = parser.parse_args(argv)
    seconds, rounds, warmup = (2, 1, 1) if args.quick else (6, 5, 3)
    wrk = ensure_wrk()
    load = _common._load_average()
    runs: dict[str, list[Run]] = {v: [] for v in VARIANTS}
    with (
        tempfile.TemporaryDirectory(prefix="policyauth-serve-bench-") as folder,
        servers(Path(folder)) as urls,
    ):
        for variant in VARIANTS:
            run_wrk(wrk, urls[variant], warmup)
        for _ in range(rounds):
            for variant in VARIANTS:
                runs[variant].append(run_wrk(wrk, urls[variant], seconds))
                print(f"{variant}: {runs[variant][-1].requests_per_second:,.0f} req/s")
    medians = {v: median(runs[v]) for v in VARIANTS}
    base = medians["no-auth"].requests_per_second
    rows = [
        [
            LABELS[v],
            f"{medians[v].requests_per_second:,.0f}",
            ", ".join(f"{r.requests_per_second:,.0f}" for r in runs[v]),
            f"{medians[v].requests_per_second / base:.1%}",
            f"{medians[v].latency_p50_ms:.2f} ms",
            f"{medians[v].latency_p99_ms:.2f} ms",
        ]
        for v in VARIANTS
    ]
    ratio = medians["trivial"].requests_per_second / medians["policyauth"].requests_per_second
    verdict = "met" if ratio <= GOAL else "missed"
    body = [
        "## Setup",
        "",
        "- nginx (one worker) with `auth_request` as in docs/serve.md, upstream keepalive; the"
        " static upstream and the provider's userinfo are nginx server blocks",
        f"- auth services: uvicorn {_common._version('uvicorn')}, one worker, {_stack()} (both"
        " services on uvicorn's automatic choice, the same stack), access log off, proxy headers"
        f" off; pinned with nginx to CPU {SERVER_CPU}; load average before the run: {load}",
        f"- load: `taskset -c {LOAD_CPU} wrk -t1 -c32 -d{seconds}s --latency`, `GET /hello` with"
        " `Authorization: Bearer ...`",
        f"- {rounds} run(s) per variant, round-robin, after a {warmup} s warm-up each; the"
        " median run is the figure",
        "",
        "## Throughput",
        "",
        _common.markdown_table(
            ["variant", "req/s (median)", "runs", "of no auth", "latency p50", "latency p99"],
            rows,
        ),
        "",
        f"- the trivial service is {ratio:.2f}x policyauth serve's throughput: goal <= {GOAL}x,"
        f" **{verdict}**.",
    ]
    path = _common.report_path(args.report, "serve", quick=args.quick)
    command = "python benchmarks/serve.py" + (" --quick" if args.quick else "")
    _common.write_report(
        path, "policyauth serve behind nginx: requests per second", body, command=command
    )
    print("\n".join(body))
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
