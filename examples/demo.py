"""The main job, end to end, on one machine and without any outside account.

`make demo` runs this. It copies the policy examples/demo.policy into a temporary folder, issues
two API tokens into that policy's token store, starts a Starlette API under a real uvicorn
server on a free loopback port with `policyauth.asgi.PolicyAuthMiddleware` in front, and sends
it requests over HTTP: no token (401), a token (200), a caller a deny rule refuses (403) and a
hostile path (400). For each it prints what the server answered and, next to it, the reason and
the rule of the same decision made in process with `Engine.authorize_sync` (the server does not
reveal its rules to callers), and checks that the two agree. The server is stopped and the
folder removed at the end; the exit status is 0 only if every answer was the expected one.
"""

from __future__ import annotations

import json
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import policyauth
from policyauth.asgi import PolicyAuthMiddleware
from policyauth.identity import tokens

# The demo's policy is a file of its own, to open and edit: examples/demo.policy.
POLICY_FILE = Path(__file__).resolve().with_name("demo.policy")

HOST = "127.0.0.1"
START_TIMEOUT = 10.0


def build_api() -> Starlette:
    """The sample API: it knows nothing of tokens or rules, only who the middleware let in."""

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def report(request: Request) -> JSONResponse:
        name = request.path_params["name"]
        return JSONResponse({"report": name, "for": request.user.display_name})

    async def admin(request: Request) -> JSONResponse:
        return JSONResponse({"admin": request.path_params["rest"], "by": request.user.display_name})

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/reports/{name:path}", report),
            Route("/admin/{rest:path}", admin, methods=["GET", "POST"]),
        ]
    )


@contextmanager
def serving(app: Callable[..., Any]) -> Iterator[str]:
    """`app` under uvicorn on a loopback port the system picks; stopped when the block ends."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((HOST, 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise SystemExit("demo: uvicorn did not start")
            time.sleep(0.02)
        yield f"http://{HOST}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=START_TIMEOUT)
        listener.close()


@dataclass(frozen=True)
class Step:
    """One request of the demo and the answer it must get."""

    method: str
    target: str
    caller: str | None  # whose token is sent, if any
    status: int
    reason: str


STEPS = [
    Step("GET", "/health", None, 200, "allowed"),
    Step("GET", "/reports/q3", None, 401, "no_credentials"),
    Step("GET", "/reports/q3", "ada", 200, "allowed"),
    Step("GET", "/admin/users", "cole", 403, "denied"),
    Step("GET", "/admin/users", "ada", 403, "not_allowed"),
    Step("GET", "/reports/%2e%2e/admin", "ada", 400, "malformed_request"),
]


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="policyauth-demo-") as folder:
        policy_file = Path(folder) / "demo.policy"
        policy_file.write_text(POLICY_FILE.read_text(encoding="utf-8"), encoding="utf-8")
        store = Path(folder) / "demo.tokens"
        issued = {
            "ada": tokens.create(store, "ada", ["reporting"])[0],
            "cole": tokens.create(store, "cole", ["reporting", "admins", "contractors"])[0],
        }
        print(f"policy {_relative(POLICY_FILE)} (open it to see the rules below), run from")
        print(f"a copy in {folder}, next to a fresh token store {store.name}")
        print(f"  API token for ada  (reporting):                      {_shown(issued['ada'])}")
        print(f"  API token for cole (reporting, admins, contractors): {_shown(issued['cole'])}")
        # The in-process twin of the server's engine: same policy, same token store.
        with policyauth.Engine(policyauth.load(policy_file)) as engine:
            app = PolicyAuthMiddleware(build_api(), policy=policy_file)
            with serving(app) as url, httpx.Client(base_url=url, timeout=5.0) as client:
                print(f"\nStarlette API under uvicorn at {url}, behind PolicyAuthMiddleware;")
                print("each answer next to the same decision made in process, with its rule\n")
                failures = sum(
                    _exchange(step, client, engine, issued, policy_file.name) for step in STEPS
                )
    if failures:
        print(f"{failures} answer(s) not as expected")
        return 1
    print("every answer as expected; the server is stopped and the folder removed")
    return 0


def _exchange(
    step: Step, client: httpx.Client, engine: policyauth.Engine, issued: dict[str, str], name: str
) -> int:
    """Send one request, decide it in process too, print both; 1 if anything disagrees."""
    token = issued[step.caller] if step.caller else None
    headers = [("Authorization", f"Bearer {token}")] if token else []
    response = client.request(step.method, step.target, headers=headers)
    decision = engine.authorize_sync(step.method, step.target, headers)
    return _report(step, response, decision, name)


def _report(step: Step, response: httpx.Response, decision: policyauth.Decision, name: str) -> int:
    """Print one exchange; 1 if the server, the engine and the expectation disagree, else 0."""
    credential = f"{step.caller}'s token" if step.caller else "no token"
    print(f"{step.method} {step.target}  with {credential}")
    body = response.json()
    print(f"  server  {response.status_code} {json.dumps(body)}")
    for challenge in response.headers.get_list("www-authenticate"):
        print(f"          WWW-Authenticate: {challenge}")
    print(f"  engine  {decision.status} {decision.reason}: {decision.message}")
    print(f"  rule    {_rule(decision, name)}\n")
    answered = body.get("error", "allowed") if isinstance(body, dict) else "?"
    agree = (response.status_code, answered) == (decision.status, str(decision.reason))
    if agree and (decision.status, str(decision.reason)) == (step.status, step.reason):
        return 0
    print(f"  MISMATCH: expected {step.status} {step.reason} from both\n")
    return 1


def _relative(path: Path) -> Path:
    """`examples/demo.policy` when run from the checkout, as `make demo` does."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def _rule(decision: policyauth.Decision, name: str) -> str:
    """The deciding rule, as written, with its place; or what decided instead."""
    if decision.rule is not None:
        texts = [step.text for step in decision.trace if step.span == decision.rule]
        return f"{texts[0] if texts else '?'}  ({name}:{decision.rule.line})"
    if decision.route is not None:
        return f"none  (route `{decision.route_text}`, {name}:{decision.route.line})"
    return "none  (refused before any route was looked at)"


def _shown(token: str) -> str:
    """Enough of a token to tell it apart in the output, not enough to use it."""
    return f"{token[:7]}...{token[-4:]}"


if __name__ == "__main__":
    sys.exit(main())
