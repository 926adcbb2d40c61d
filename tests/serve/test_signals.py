"""`policyauth serve` under signals: SIGHUP reloads (and keeps a broken policy out), SIGTERM
lets the requests in flight finish before the process exits.

The SIGHUP test rewrites the policy in place with the same size and puts the old modification
time back, so the file watcher sees no change: only the signal can have reloaded it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from serve_servers import POLICY, get, header, serving, write_policy


def rewrite_unseen(path: Path, text: str) -> None:
    """Replace the file's text in place, keeping its size, inode and modification time."""
    before = path.stat()
    assert len(text.encode()) == before.st_size
    with path.open("r+") as handle:
        handle.write(text)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def reason(port: int, target: str) -> tuple[int, list[str]]:
    status, headers, _ = get(
        port, "/auth", [("X-Original-Method", "GET"), ("X-Original-URI", target)]
    )
    return status, header(headers, "x-policyauth-reason")


def wait_for(check, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_sighup_reloads_and_a_broken_policy_stays_out(tmp_path: Path) -> None:
    policy = write_policy(tmp_path)
    # `/public/**` becomes `/publik/**`: same size, and /public/a is then no route at all.
    opened = POLICY.replace("route GET /public/**", "route GET /publik/**")
    broken = POLICY.replace("route GET /public/**", "route GET /public/*{")
    with serving(policy.path, tmp_path / "serve.log") as server:
        assert reason(server.port, "/public/a") == (200, ["allowed"])
        rewrite_unseen(policy.path, broken)
        server.process.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "did not reload" in server.output())
        assert reason(server.port, "/public/a") == (200, ["allowed"])  # the old policy serves
        assert server.process.poll() is None
        rewrite_unseen(policy.path, opened)
        server.process.send_signal(signal.SIGHUP)
        assert wait_for(lambda: reason(server.port, "/public/a") == (403, ["no_route"]))
        assert reason(server.port, "/publik/a") == (200, ["allowed"])
        _, _, metrics = get(server.port, "/metrics")
        assert b'policyauth_policy_reloads_total{result="failure"} 1.0' in metrics
        assert b'policyauth_policy_reloads_total{result="success"} 1.0' in metrics


def test_a_changed_file_is_reloaded_without_a_signal(tmp_path: Path) -> None:
    policy = write_policy(tmp_path)
    with serving(policy.path, tmp_path / "serve.log") as server:
        assert reason(server.port, "/public/a") == (200, ["allowed"])
        replacement = tmp_path / "next.policy"
        replacement.write_text(POLICY.replace("route GET /public/**", "route GET /publik/**"))
        replacement.replace(policy.path)
        assert wait_for(lambda: reason(server.port, "/public/a") == (403, ["no_route"]))


class SlowUserinfo(BaseHTTPRequestHandler):
    """A provider that takes a second and a half to answer userinfo."""

    def do_GET(self) -> None:
        time.sleep(1.5)
        body = b'{"sub": "carol"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_sigterm_lets_a_request_in_flight_finish(tmp_path: Path) -> None:
    provider = ThreadingHTTPServer(("127.0.0.1", 0), SlowUserinfo)
    threading.Thread(target=provider.serve_forever, daemon=True).start()
    try:
        path = tmp_path / "slow.policy"
        path.write_text(
            "provider slow {  # policyauth: ignore[PA201]\n"
            f'  userinfo = "http://127.0.0.1:{provider.server_address[1]}/userinfo"\n'
            "  username = $.sub\n"
            "}\n\n"
            "route GET /a {\n  auth slow\n  allow\n}\n"
        )
        with serving(path, tmp_path / "serve.log") as server:
            answers: list[tuple[int, list[str]]] = []

            def ask() -> None:
                status, headers, _ = get(
                    server.port,
                    "/auth",
                    [
                        ("X-Original-Method", "GET"),
                        ("X-Original-URI", "/a"),
                        ("Authorization", "Bearer slow-token-1"),
                    ],
                )
                answers.append((status, header(headers, "x-auth-user")))

            asking = threading.Thread(target=ask)
            asking.start()
            time.sleep(0.5)  # the request is waiting for the provider
            server.process.send_signal(signal.SIGTERM)
            asking.join(10)
            assert answers == [(200, ["carol"])]
            # uvicorn re-raises the signal once it has shut down: death by SIGTERM, as asked.
            assert server.process.wait(20) in (0, -signal.SIGTERM)
            assert "Traceback" not in server.output()
    finally:
        provider.shutdown()


def test_sighup_to_the_supervisor_reloads_every_worker(tmp_path: Path) -> None:
    """Under --workers 2, serve's own supervisor forwards SIGHUP; no worker is restarted."""
    policy = write_policy(tmp_path)
    opened = POLICY.replace("route GET /public/**", "route GET /publik/**")
    with serving(policy.path, tmp_path / "serve.log", ["--workers", "2"]) as server:
        assert reason(server.port, "/public/a") == (200, ["allowed"])
        rewrite_unseen(policy.path, opened)
        server.process.send_signal(signal.SIGHUP)
        assert wait_for(lambda: reason(server.port, "/public/a") == (403, ["no_route"]))
        time.sleep(0.5)  # both workers have had the signal for a while
        answers = [reason(server.port, "/public/a") for _ in range(40)]
        assert answers == [(403, ["no_route"])] * 40
        assert server.process.poll() is None
        assert "starting another" not in server.output()
