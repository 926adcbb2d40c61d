"""Running the forward-auth app on uvicorn: one process, or a supervisor and N workers.

The one module that imports uvicorn. Three choices here are security or availability choices:

- `proxy_headers=False`: uvicorn would otherwise take the peer address from X-Forwarded-For,
  and `--trusted-proxy` would judge a header instead of the socket.
- SIGHUP reloads the policy in every worker (`Engine.reload`, which keeps the old policy when
  the new file is broken). uvicorn's own supervisor answers SIGHUP by restarting its workers,
  which with a broken policy would take every worker down; so `--workers N` runs this module's
  supervisor instead, which forwards SIGHUP and never restarts a worker for it.
- SIGTERM and SIGINT: uvicorn's graceful shutdown in each worker (stop accepting, let in-flight
  requests finish, then close the engine); the supervisor forwards SIGTERM and waits.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
from types import FrameType

import attrs
import uvicorn

from policyauth.engine import Engine
from policyauth.loader import load
from policyauth.observe.metrics import exposition, prepare_workers
from policyauth.serve.app import ForwardAuthApp
from policyauth.serve.trust import DEFAULT_TRUSTED, TrustedPeers

log = logging.getLogger("policyauth.serve")
GRACEFUL_SECONDS = 30  # how long in-flight requests may take to finish on SIGTERM


@attrs.frozen
class ServeOptions:
    policy: str
    host: str = "127.0.0.1"
    port: int = 9000
    trusted: tuple[str, ...] = DEFAULT_TRUSTED
    workers: int = 1
    log_level: str = "info"
    reload_interval: float = 1.0


def serve(options: ServeOptions) -> int:
    """Serve until SIGTERM or SIGINT; the exit code. A policy that does not load, or a bad
    `--trusted-proxy`, raises (PolicyError, ValueError) before anything listens."""
    TrustedPeers(options.trusted)  # a bad CIDR is a usage error, before any worker starts
    load(options.policy)  # so is a broken policy: diagnostics now, not in N workers' logs
    if options.workers <= 1:
        _configure_logging(options.log_level)
        _run_worker(options, None)
        return 0
    return _supervise(options)


def build_app(options: ServeOptions) -> ForwardAuthApp:
    """The app one worker serves: its own engine, watching the policy file for changes."""
    engine = Engine(load(options.policy), reload=True, reload_interval=options.reload_interval)
    return ForwardAuthApp(engine, trusted=TrustedPeers(options.trusted), metrics=exposition())


def _run_worker(options: ServeOptions, sock: socket.socket | None) -> None:
    # SIGHUP stays blocked (a spawned worker inherits the mask from its supervisor) until its
    # handler is in place: one that arrives while the policy is being loaded waits, and
    # reloads then, instead of ending the process by the default action.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    app = build_app(options)
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        proxy_headers=False,
        server_header=False,
        access_log=False,
        log_level=options.log_level,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
    )
    server = uvicorn.Server(config)

    def reload(signum: int, frame: FrameType | None) -> None:
        # Compiling a policy takes milliseconds to seconds: off the event loop's thread.
        threading.Thread(target=app.engine.reload, name="policyauth-sighup", daemon=True).start()

    # uvicorn's server handles SIGINT and SIGTERM only; SIGHUP is ours.
    signal.signal(signal.SIGHUP, reload)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
    server.run(sockets=[sock] if sock is not None else None)


def _worker_main(options: ServeOptions, sock: socket.socket) -> None:
    """The entry point of a spawned worker process."""
    _configure_logging(options.log_level)
    _run_worker(options, sock)


def _supervise(options: ServeOptions) -> int:
    """Bind once, spawn `workers` processes on the socket, forward SIGHUP and SIGTERM. A worker
    that dies on its own is started again; none is restarted for a reload."""
    _configure_logging(options.log_level)
    prepare_workers()  # metrics of every worker in one place (prometheus multiprocess mode)
    sock = uvicorn.Config("policyauth:serve", host=options.host, port=options.port).bind_socket()
    context = multiprocessing.get_context("spawn")
    stopping = threading.Event()

    def start() -> multiprocessing.process.BaseProcess:
        process = context.Process(target=_worker_main, args=(options, sock), daemon=False)
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        try:
            process.start()  # the worker starts with SIGHUP blocked (see _run_worker)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        return process

    workers = [start() for _ in range(options.workers)]

    def forward(signum: int, frame: FrameType | None) -> None:
        if signum != signal.SIGHUP:
            stopping.set()
        for process in workers:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGHUP if signum == signal.SIGHUP else signal.SIGTERM)

    for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    log.info("policyauth serve: %d workers on %s:%d", options.workers, options.host, options.port)
    while not stopping.is_set():
        for index, process in enumerate(workers):
            if not process.is_alive() and not stopping.is_set():
                log.warning(
                    "worker %s exited (%s); starting another", process.pid, process.exitcode
                )
                workers[index] = start()
        stopping.wait(0.5)
    for process in workers:
        process.join(GRACEFUL_SECONDS + 5)
    sock.close()
    return 0


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
