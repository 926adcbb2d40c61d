"""`policyauth serve` over real sockets: the three forward-auth endpoints, their status mapping
and X-Auth-* headers, the trust in forwarded headers, and the operator endpoints.

Requests are written byte for byte, as nginx, Traefik, Caddy and Envoy send them (their docs'
header names and methods), so no client library normalizes anything on the way.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from serve_servers import Policy, Server, get, header, serving, write_policy


def nginx(server: Server, target: str, *extra: tuple[str, str], method: str = "GET"):
    """What the nginx configuration of docs/serve.md sends: GET /auth, the original method and
    `$request_uri`, and the client's headers."""
    headers = [("X-Original-Method", method), ("X-Original-URI", target), *extra]
    return get(server.port, "/auth", headers)


def traefik(server: Server, target: str, *extra: tuple[str, str], method: str = "GET"):
    """Traefik ForwardAuth: GET to the address with the client's headers and X-Forwarded-*."""
    headers = [
        ("X-Forwarded-Method", method),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "api.example.com"),
        ("X-Forwarded-Uri", target),
        ("X-Forwarded-For", "203.0.113.7"),
        *extra,
    ]
    return get(server.port, "/forward-auth", headers)


def bearer(token: str) -> tuple[str, str]:
    return ("Authorization", f"Bearer {token}")


def test_nginx_public_route_is_allowed_without_a_principal(server: Server) -> None:
    status, headers, body = nginx(server, "/public/page")
    assert status == 200
    assert header(headers, "x-policyauth-reason") == ["allowed"]
    for name in ("x-auth-user", "x-auth-groups", "x-auth-provider"):
        assert header(headers, name) == [""]
    assert body == b""


def test_nginx_no_credentials_is_401_with_every_challenge_in_one_header(server: Server) -> None:
    status, headers, body = nginx(server, "/admin/users")
    assert status == 401
    assert header(headers, "www-authenticate") == ['Bearer realm="api", Basic realm="api"']
    assert header(headers, "x-policyauth-reason") == ["no_credentials"]
    assert json.loads(body) == {"error": "no_credentials"}


def test_nginx_allowed_carries_the_principal_percent_encoded(
    server: Server, policy: Policy
) -> None:
    status, headers, _ = nginx(server, "/admin/users", bearer(policy.staff))
    assert status == 200
    assert header(headers, "x-auth-user") == ["alice"]
    assert header(headers, "x-auth-groups") == ["staff,a%2Cb"]  # `a,b` is one group
    assert header(headers, "x-auth-provider") == ["automation"]
    assert header(headers, "x-policyauth-reason") == ["allowed"]


def test_nginx_denied_is_403(server: Server, policy: Policy) -> None:
    status, headers, _ = nginx(server, "/admin/users", bearer(policy.outsider))
    assert status == 403
    assert header(headers, "x-policyauth-reason") == ["not_allowed"]
    assert header(headers, "x-auth-user") == ["bob"]


def test_nginx_original_method_is_the_one_decided(server: Server, policy: Policy) -> None:
    assert nginx(server, "/reports/1", bearer(policy.staff))[0] == 403  # no `reports` group
    assert nginx(server, "/admin/x", bearer(policy.staff), method="POST")[0] == 200
    status, headers, _ = nginx(server, "/admin/x", bearer(policy.staff), method="DELETE")
    assert (status, header(headers, "x-policyauth-reason")) == (403, ["no_route"])


@pytest.mark.parametrize(
    "target",
    ["/public/../admin/x", "/public/%2e%2e/admin/x", "/public%2fadmin", "//admin/x", "/admin%0a"],
)
def test_nginx_a_malformed_target_is_403_never_the_public_route(
    server: Server, target: str
) -> None:
    """nginx passes only 401 and 403 on: a 400 becomes 403 on /auth."""
    status, headers, _ = nginx(server, target)
    assert status == 403
    assert header(headers, "x-policyauth-reason") == ["malformed_request"]


def test_nginx_query_never_widens_a_route(server: Server) -> None:
    status, headers, _ = nginx(server, "/admin/x?/public/a")
    assert (status, header(headers, "x-policyauth-reason")) == (401, ["no_credentials"])


@pytest.mark.parametrize(
    "headers",
    [
        [("X-Original-Method", "GET")],  # no target
        [("X-Original-URI", "/public/a")],  # no method
        [("X-Original-Method", "GET"), ("X-Original-URI", "")],
        [("X-Original-Method", "GET"), ("X-Original-URI", "/public/a"), ("X-Original-URI", "/x")],
        [
            ("X-Original-Method", "GET"),
            ("X-Original-Method", "GET"),
            ("X-Original-URI", "/public/a"),
        ],
        [("X-Original-Method", "GET"), ("X_Original_URI", "/public/a")],  # alias is no target
        # the alias beside the real header: refused as ambiguous (F03)
        [("X-Original-Method", "GET"), ("X-Original-URI", "/public/a"), ("X_Original_URI", "/a")],
    ],
    ids=["no-target", "no-method", "empty", "two-targets", "two-methods", "alias", "alias-too"],
)
def test_nginx_missing_doubled_or_aliased_original_is_never_2xx(
    server: Server, headers: list[tuple[str, str]]
) -> None:
    status, answer, _ = get(server.port, "/auth", headers)
    assert status == 403
    assert header(answer, "x-policyauth-reason") == ["malformed_request"]
    assert header(answer, "x-auth-user") == [""]


def test_traefik_and_caddy_keep_the_status_and_every_challenge(
    server: Server, policy: Policy
) -> None:
    status, headers, _ = traefik(server, "/admin/users")
    assert status == 401
    assert header(headers, "www-authenticate") == ['Bearer realm="api"', 'Basic realm="api"']
    status, headers, _ = traefik(server, "/public/../admin")
    assert (status, header(headers, "x-policyauth-reason")) == (400, ["malformed_request"])
    status, headers, _ = traefik(server, "/admin/users", bearer(policy.staff))
    assert (status, header(headers, "x-auth-user")) == (200, ["alice"])
    assert traefik(server, "/public/a")[0] == 200


def test_traefik_strip_prefix_dot_segment_is_refused(server: Server) -> None:
    """F09: StripPrefixRegex can leave `/./admin/secret` in X-Forwarded-Uri."""
    status, headers, _ = traefik(server, "/./admin/secret")
    assert (status, header(headers, "x-policyauth-reason")) == (400, ["malformed_request"])


def test_forward_auth_alias_headers_are_ignored(server: Server) -> None:
    headers = [("X-Forwarded-Method", "GET"), ("X_Forwarded_Uri", "/public/a")]
    status, answer, _ = get(server.port, "/forward-auth", headers)
    assert (status, header(answer, "x-policyauth-reason")) == (400, ["malformed_request"])


def envoy(server: Server, method: str, path: str, *extra: tuple[str, str]):
    """Envoy's ext_authz HTTP service: the original method, `path_prefix` + the original path
    (query included), Host, Content-Length 0, and the allowed headers."""
    headers = [
        ("Content-Length", "0"),
        ("x-forwarded-proto", "https"),
        ("x-request-id", "8f0e2c7a-1111-2222-3333-444455556666"),
        ("x-envoy-expected-rq-timeout-ms", "1000"),
        *extra,
    ]
    return get(server.port, "/ext-authz" + path, headers, method=method)


def test_envoy_ext_authz(server: Server, policy: Policy) -> None:
    assert envoy(server, "GET", "/public/a")[0] == 200
    status, headers, _ = envoy(server, "GET", "/admin/x")
    assert status == 401
    assert header(headers, "www-authenticate") == ['Bearer realm="api"', 'Basic realm="api"']
    status, headers, _ = envoy(server, "POST", "/admin/x?page=2", bearer(policy.staff))
    assert (status, header(headers, "x-auth-user")) == (200, ["alice"])
    assert envoy(server, "DELETE", "/admin/x", bearer(policy.staff))[0] == 403
    status, headers, _ = envoy(server, "GET", "/public/%2e%2e/admin/x")
    assert (status, header(headers, "x-policyauth-reason")) == (400, ["malformed_request"])
    # Method override headers reach the service (docs/serve.md lists them in allowed_headers).
    status, headers, _ = envoy(server, "GET", "/public/a", ("X-HTTP-Method-Override", "DELETE"))
    assert (status, header(headers, "x-policyauth-reason")) == (400, ["malformed_request"])


def test_operator_endpoints_and_nothing_else(server: Server) -> None:
    assert get(server.port, "/healthz")[0] == 200
    assert get(server.port, "/readyz")[0] == 200
    status, headers, body = get(server.port, "/metrics")
    assert status == 200
    assert b"policyauth_decisions_total" in body
    assert header(headers, "content-type")[0].startswith("text/plain")
    for path in ("/%61uth", "/auth/", "/ext-authz", "/forward-auth/x", "/"):
        assert (
            get(server.port, path, [("X-Original-Method", "GET"), ("X-Original-URI", "/public/a")])[
                0
            ]
            == 404
        )


def test_an_untrusted_peer_is_never_believed(policy: Policy, tmp_path: Path) -> None:
    """serve on loopback, trusting only 10.0.0.0/8: the test's loopback peer is untrusted, so
    even a public target with good credentials is refused, on every endpoint."""
    with serving(policy.path, tmp_path / "serve.log", ["--trusted-proxy", "10.0.0.0/8"]) as other:
        status, headers, _ = nginx(other, "/public/a", bearer(policy.staff))
        assert (status, header(headers, "x-policyauth-reason")) == (403, ["malformed_request"])
        assert traefik(other, "/public/a")[0] == 400
        assert envoy(other, "GET", "/public/a")[0] == 400
        assert get(other.port, "/healthz")[0] == 200
        # The refusals are decisions like any other in the metrics (and the decision log).
        metrics = get(other.port, "/metrics")[2].decode()
        assert 'policyauth_decisions_total{reason="malformed_request",status="400"} 3.0' in metrics


def test_a_bad_policy_or_cidr_is_exit_2_with_the_diagnostic(tmp_path: Path) -> None:
    import subprocess
    import sys

    broken = tmp_path / "broken.policy"
    broken.write_text("route GET /x {\n  auth nobody\n  allow\n}\n")
    run = subprocess.run(
        [sys.executable, "-m", "policyauth.cli.main", "serve", str(broken), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "PA110" in run.stderr or "nobody" in run.stderr
    assert "Traceback" not in run.stderr
    good = write_policy(tmp_path)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "policyauth.cli.main",
            "serve",
            str(good.path),
            "--trusted-proxy",
            "10.0.0.300/8",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "10.0.0.300/8" in run.stderr
