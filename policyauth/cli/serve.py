"""`policyauth serve POLICY`: the forward-auth service for nginx, Caddy, Traefik and Envoy.

The command only reads arguments; policyauth.serve.runner runs uvicorn (see there for why
`proxy_headers` is off and why SIGHUP is handled here rather than by uvicorn's supervisor).
"""

from __future__ import annotations

import argparse

from policyauth.cli import EXIT_OK, Command, UsageError

DESCRIPTION = """\
Run a forward-auth service: proxies send the original request, policyauth answers with the
decision the policy makes for it.

  GET /auth            nginx auth_request (X-Original-Method, X-Original-URI = $request_uri)
  GET /forward-auth    Traefik ForwardAuth, Caddy forward_auth (X-Forwarded-Method, -Uri)
  *   /ext-authz/...   Envoy ext_authz HTTP service (path_prefix: /ext-authz)
  GET /healthz, /readyz, /metrics

Forwarded headers are believed only from --trusted-proxy peers (default: loopback), judged
on the connection's address. The policy is reloaded when its file changes and on SIGHUP; a
file that does not load leaves the running policy in force. SIGTERM finishes the requests in
flight, then exits. See docs/serve.md for each proxy's configuration.

exit status: 2 a policy that does not load or a usage error; on SIGTERM the process ends by
that signal once the requests in flight are answered"""


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("policy", metavar="POLICY", help="the policy file")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=9000, help="port to bind (9000)")
    parser.add_argument(
        "--trusted-proxy",
        action="append",
        metavar="CIDR",
        dest="trusted",
        help="a proxy address or network whose forwarded headers are believed; repeat for "
        "more (default: 127.0.0.0/8 and ::1)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes sharing the port (1)"
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="log level (info)",
    )


def _run(args: argparse.Namespace) -> int:
    from policyauth.serve.runner import ServeOptions, serve  # uvicorn, only when serving
    from policyauth.serve.trust import DEFAULT_TRUSTED

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not a port number")
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    options = ServeOptions(
        policy=args.policy,
        host=args.host,
        port=args.port,
        trusted=tuple(args.trusted) if args.trusted else DEFAULT_TRUSTED,
        workers=args.workers,
        log_level=args.log_level,
    )
    serve(options)
    return EXIT_OK


COMMAND = Command(
    name="serve",
    help="run the forward-auth service for nginx, Caddy, Traefik and Envoy",
    description=DESCRIPTION,
    configure=_configure,
    run=_run,
)
