"""Real nginx and Caddy in front of a recording backend, `policyauth serve` deciding.

The controls: public 200, no credentials 401 with the challenge, denied 403, allowed 200 with
X-Auth-User seen by the backend (and a client's own X-Auth-User never), provider down 503.
Then every hostile target of the path corpus (tests/request/cases and
tests/integration/test_uvicorn_raw.py), without credentials, over a raw socket: nothing the
backend receives may be a protected path under any reading a server might give it.
"""

from __future__ import annotations

import json
import posixpath
import re
import sys
import unicodedata
from pathlib import Path
from urllib.parse import unquote

from proxies import Backend, Proxy
from serve_servers import Policy, get, header, request

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

from test_uvicorn_raw import TARGETS as RAW_TARGETS  # noqa: E402

CASES = json.loads((HERE.parent / "request" / "cases" / "canonical.json").read_text())
CORPUS = list(dict.fromkeys([*RAW_TARGETS, *(case["target"] for case in CASES)]))


def bearer(token: str) -> tuple[str, str]:
    return ("Authorization", f"Bearer {token}")


def last_seen(backend: Backend, path: str):  # type: ignore[no-untyped-def]
    matching = [seen for seen in backend.seen if seen.target == path]
    assert matching, f"{path} did not reach the backend"
    return matching[-1]


def test_public_is_200_and_reaches_the_backend(proxy: Proxy, backend: Backend) -> None:
    status, _, body = get(proxy.port, "/public/page?x=1", [("X-Auth-User", "mallory")])
    assert status == 200
    assert json.loads(body) == {"target": "/public/page?x=1"}
    seen = last_seen(backend, "/public/page?x=1")
    assert "mallory" not in seen.header("X-Auth-User")  # the client's own is stripped


def test_no_credentials_is_401_with_the_challenge(proxy: Proxy, backend: Backend) -> None:
    before = len(backend.seen)
    status, headers, _ = get(proxy.port, "/admin/users")
    assert status == 401
    challenge = header(headers, "www-authenticate")
    assert challenge
    assert 'Bearer realm="api"' in challenge[0]
    assert any('Basic realm="api"' in value for value in challenge)
    assert len(backend.seen) == before


def test_denied_is_403(proxy: Proxy, backend: Backend, policy: Policy) -> None:
    before = len(backend.seen)
    assert get(proxy.port, "/admin/users", [bearer(policy.outsider)])[0] == 403
    assert get(proxy.port, "/elsewhere", [bearer(policy.staff)])[0] == 403  # no route
    assert len(backend.seen) == before


def test_allowed_reaches_the_backend_with_the_principal(
    proxy: Proxy, backend: Backend, policy: Policy
) -> None:
    target = f"/admin/users/{proxy.name}"
    headers = [bearer(policy.staff), ("X-Auth-User", "mallory"), ("X-Auth-Groups", "root")]
    status, _, _ = get(proxy.port, target, headers)
    assert status == 200
    seen = last_seen(backend, target)
    assert seen.header("X-Auth-User") == ["alice"]
    assert seen.header("X-Auth-Groups") == ["staff,a%2Cb"]
    assert seen.header("X-Auth-Provider") == ["automation"]


def test_provider_down_is_503(proxy: Proxy, backend: Backend) -> None:
    before = len(backend.seen)
    status, _, _ = get(proxy.port, "/down/x", [bearer("some-token")])
    assert status == 503
    assert len(backend.seen) == before


def readings(target: str) -> set[str]:
    """Every path a server might make of `target`: decoded zero to two times, backslashes as
    slashes, `;` parameters dropped, dot-segments resolved, slashes merged, Unicode folded,
    trailing whitespace and controls trimmed, case folded."""
    path = re.sub(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/]*", "", target).split("?", 1)[0]
    path = path.split("#", 1)[0]
    found = set()
    for decoded in (path, unquote(path), unquote(unquote(path))):
        for text in (decoded, decoded.replace("\\", "/")):
            for variant in (text, re.sub(r";[^/]*", "", text)):
                folded = unicodedata.normalize("NFKC", variant)
                normal = posixpath.normpath("/" + re.sub(r"/+", "/", folded))
                found.add(normal.lower().rstrip(" \t\r\n\x00\x0b\x0c\x85\u2028\u3000"))
    return found


def protected(target: str) -> bool:
    return any(
        re.match(r"^/+\s*admin(\W|$)", reading) or re.match(r"^/+[^/]*admin", reading)
        for reading in readings(target)
    )


def test_no_hostile_target_reaches_a_protected_backend_path(proxy: Proxy, backend: Backend) -> None:
    """Without credentials, through the real proxy, byte for byte."""
    before = len(backend.seen)
    answers: dict[str, int] = {}
    for target in CORPUS:
        for method in ("GET", "HEAD"):
            raw = f"{method} {target} HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n"
            try:
                status = request(proxy.port, raw.encode("utf-8"), timeout=10)[0]
            except OSError:
                status = 0  # the proxy closed the connection: nothing was forwarded either
            answers[f"{method} {target!r}"] = status
    reached = backend.seen[before:]
    leaks = [seen.target for seen in reached if protected(seen.target)]
    assert leaks == [], f"{proxy.name} forwarded protected paths without credentials: {leaks}"
    # The sweep was real: public targets were forwarded, protected ones refused.
    assert any(seen.target.startswith("/public") for seen in reached)
    assert answers["GET '/admin'"] == 401
    assert answers["GET '/public/../admin'"] in (400, 403)


def test_docs_give_the_configurations_tested_here() -> None:
    """Every directive of the tested nginx and Caddy configurations that matters for
    security is in docs/serve.md, so what users copy is what is tested."""
    from proxies import CADDY, NGINX

    doc = (HERE.parents[1] / "docs" / "serve.md").read_text()
    for template, starts in (
        (NGINX, ("auth_request", "error_page", "proxy_set_header", "proxy_pass_request_body")),
        (CADDY, ("request_header", "uri ", "copy_headers", "forward_auth")),
    ):
        lines = [line.strip() for line in template.splitlines()]
        wanted = [line.split("{")[0].strip() for line in lines if line.startswith(starts)]
        assert wanted
        for line in wanted:
            assert line in doc, line
