"""The pure parts of the userinfo client (what to send, how to judge an answer) and its I/O
rules (size cap, no redirects, timeouts), with httpx.MockTransport instead of a server."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from provider_server import GITHUB_USER, SLACK_USERINFO, WATCH, new_token, policy_for

import policyauth
from policyauth.compiler import ProviderPlan
from policyauth.identity import Identity, Invalid, Unavailable
from policyauth.identity.userinfo import (
    MAX_BODY,
    MAX_DEPTH,
    Request,
    Response,
    UserinfoClient,
    judge,
    parse_document,
    userinfo_request,
)

JSON = {"content-type": "application/json"}
NOW = 1_767_225_600.0


def provider(name: str) -> ProviderPlan:
    return policy_for([name]).providers[name]


def response(body: object, status: int = 200, **headers: str) -> Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Response(status, {**JSON, **headers}, raw)


# --- parse_document -------------------------------------------------------------------------------


def test_one_json_object_is_a_document() -> None:
    assert parse_document(response({"sub": "1", "groups": ["a"]})) == {"sub": "1", "groups": ["a"]}


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'[{"sub": "1"}]',
        b'"sub"',
        b"null",
        b"42",
        b"true",
        b"",
        b"   ",
        b"<html><body>Sign in</body></html>",
        b'{"sub": "1"',
        b'{"sub": "1"} {"sub": "2"}',
        b'{"sub": "1", "sub": "2"}',
        b'{"a": {"sub": "1", "sub": "1"}}',
        b'{"a": [{"x": 1, "x": 1}]}',
        b'{"n": NaN}',
        b'{"n": Infinity}',
        b'{"n": -Infinity}',
        b'{"name": "\xff"}',
        b'{"n": 1' + b"0" * 5000 + b"}",
    ],
    ids=[
        "empty-array",
        "array",
        "string",
        "null",
        "number",
        "bool",
        "empty",
        "blank",
        "html",
        "truncated",
        "two-documents",
        "duplicate-key",
        "duplicate-nested-key",
        "duplicate-key-in-list",
        "nan",
        "infinity",
        "minus-infinity",
        "invalid-utf8",
        "huge-integer",
    ],
)
def test_anything_else_is_unavailable(body: bytes) -> None:
    assert isinstance(parse_document(response(body)), Unavailable)


def nested(depth: int) -> bytes:
    return b'{"a": ' * (depth - 1) + b"{}" + b"}" * (depth - 1)


def test_nesting_up_to_the_limit_is_fine_one_more_is_not() -> None:
    assert isinstance(parse_document(response(nested(MAX_DEPTH))), dict)
    assert isinstance(parse_document(response(nested(MAX_DEPTH + 1))), Unavailable)


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deep_nesting_is_unavailable_not_a_recursion_error(depth: int) -> None:
    body = b'{"a": ' + b"[" * depth + b"]" * depth + b"}"
    assert isinstance(parse_document(response(body)), Unavailable)


def test_signed_userinfo_is_refused_clearly() -> None:
    result = parse_document(
        Response(200, {"content-type": "application/jwt"}, b"eyJhbGciOiJSUzI1NiJ9.e30.c2ln")
    )
    assert isinstance(result, Unavailable)
    assert "application/jwt" in result.detail


# --- judge ----------------------------------------------------------------------------------------


def test_judge_extracts_the_declared_claims() -> None:
    result = judge(provider("github"), response(GITHUB_USER), NOW)
    assert result == Identity({"username": "octocat", "id": 1})  # `email: null` is missing
    assert result.lifetime is None


@pytest.mark.parametrize("status", [400, 401, 403])
def test_refusals_are_invalid(status: int) -> None:
    result = judge(provider("github"), response({"message": "Bad credentials"}, status), NOW)
    assert isinstance(result, Invalid)


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (403, {"x-ratelimit-remaining": "0"}),
        (403, {"retry-after": "60"}),
        (429, {}),
        (429, {"retry-after": "60"}),
        (500, {}),
        (502, {}),
        (503, {}),
        (504, {}),
        (404, {}),
        (204, {}),
        (201, {}),
        (301, {"location": "https://elsewhere.example.com/"}),
        (302, {"location": "/login"}),
        (304, {}),
        (307, {"location": "/user"}),
    ],
)
def test_failures_are_unavailable(status: int, headers: dict[str, str]) -> None:
    result = judge(provider("github"), response(GITHUB_USER, status, **headers), NOW)
    assert isinstance(result, Unavailable)


def test_a_refusal_is_judged_by_status_whatever_the_body() -> None:
    for body in (b"", b"Unauthorized", b"<html>", b"[]", b'{"a": NaN}'):
        assert isinstance(judge(provider("okta"), Response(401, {}, body), NOW), Invalid)


@pytest.mark.parametrize(
    ("ok", "expected"),
    [(True, Identity), (False, Invalid), ("true", Invalid), (1, Invalid), (None, Invalid)],
)
def test_slack_success_condition(ok: object, expected: type) -> None:
    result = judge(provider("slack"), response({**SLACK_USERINFO, "ok": ok}), NOW)
    assert isinstance(result, expected)


def test_slack_without_ok_is_invalid() -> None:
    document = {k: v for k, v in SLACK_USERINFO.items() if k != "ok"}
    assert isinstance(judge(provider("slack"), response(document), NOW), Invalid)


@pytest.mark.parametrize(
    ("exp", "lifetime"),
    [(NOW + 60, 60.0), (NOW + 0.5, 0.5), (NOW - 10, -10.0), (True, None), ("1767225660", None)],
)
def test_lifetime_comes_from_a_numeric_exp(exp: object, lifetime: float | None) -> None:
    document = {"preferred_username": "ada", "exp": exp}
    result = judge(provider("keycloak"), response(document), NOW)
    assert isinstance(result, Identity)
    assert result.lifetime == lifetime


# --- userinfo_request -----------------------------------------------------------------------------


def test_the_token_goes_in_the_authorization_header() -> None:
    token = new_token("gho_")
    request = userinfo_request(provider("github"), "https://api.github.com/user", token)
    headers = {name.lower(): value for name, value in request.headers}
    assert (request.method, request.url) == ("GET", "https://api.github.com/user")
    assert headers["authorization"] == f"Bearer {token}"
    assert headers["accept"] == "application/vnd.github+json"  # the preset's, not the default
    assert headers["x-github-api-version"] == "2022-11-28"
    assert headers["user-agent"]
    assert len(request.headers) == len(headers)  # no header twice
    assert request.params == ()
    assert request.form == ()
    assert token not in repr(request)


def test_facebook_takes_the_token_in_the_query() -> None:
    token = new_token("EAAB")
    url = "https://graph.facebook.com/v19.0/me?fields=id,name,email"
    request = userinfo_request(provider("facebook"), url, token)
    assert request.params == (("access_token", token),)
    assert "authorization" not in {name.lower() for name, _ in request.headers}
    assert token not in repr(request)


def test_slack_is_a_post() -> None:
    token = new_token("xoxp-")
    request = userinfo_request(
        provider("slack"), "https://slack.com/api/openid.connect.userInfo", token
    )
    assert request.method == "POST"
    assert ("Authorization", f"Bearer {token}") in request.headers


# --- UserinfoClient with a MockTransport ----------------------------------------------------------


Handler = Callable[[httpx.Request], httpx.Response]


def clients(handler: Handler, timeout: float = 1.0) -> UserinfoClient:
    return UserinfoClient(timeout, httpx.MockTransport(handler))


async def both(client: UserinfoClient, request: Request) -> list[Response | Unavailable]:
    try:
        return [client.send_sync(request), await client.send(request)]
    finally:
        await client.aclose()


GET = Request("GET", "https://idp.example.com/userinfo", (("Authorization", "Bearer t"),))


async def test_a_body_up_to_the_cap_is_read() -> None:
    body = b" " * (MAX_BODY - 2) + b"{}"
    for result in await both(clients(lambda r: httpx.Response(200, content=body)), GET):
        assert isinstance(result, Response)
        assert result.body == body


@pytest.mark.parametrize("size", [MAX_BODY + 1, 10 * MAX_BODY])
async def test_a_bigger_body_is_unavailable(size: int) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"x" * size)

    for result in await both(clients(handler), GET):
        assert isinstance(result, Unavailable)
        assert "too large" in result.detail


async def test_redirects_are_not_followed() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/userinfo":
            return httpx.Response(302, headers={"location": "https://idp.example.com/other"})
        return httpx.Response(200, json={"sub": "1"})

    for result in await both(clients(handler), GET):
        assert isinstance(result, Response)
        assert result.status == 302
    assert seen == ["/userinfo", "/userinfo"]


@pytest.mark.parametrize(
    ("error", "detail"),
    [
        (httpx.ReadTimeout("timed out"), "timed out"),
        (httpx.ConnectTimeout("timed out"), "timed out"),
        (httpx.ConnectError("refused"), "could not be reached"),
        (httpx.RemoteProtocolError("bad"), "could not be reached"),
    ],
)
async def test_transport_errors_are_unavailable(error: Exception, detail: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    for result in await both(clients(handler), GET):
        assert isinstance(result, Unavailable)
        assert detail in result.detail


async def test_the_url_s_own_query_is_kept_next_to_a_query_token() -> None:
    """Facebook's preset URL carries `fields=`; the token parameter must not replace it."""
    token = new_token("EAAB")
    url = "https://graph.facebook.com/v19.0/me?fields=id,name,email"
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert "authorization" not in request.headers
        seen.append(request.url)
        return httpx.Response(200, json={"id": "1"})

    await both(clients(handler), userinfo_request(provider("facebook"), url, token))
    for sent in seen:
        assert sent.params.get_list("fields") == ["id,name,email"]
        assert sent.params.get_list("access_token") == [token]


async def test_headers_and_method_reach_the_wire() -> None:
    token = new_token("xoxp-")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=SLACK_USERINFO)

    request = userinfo_request(
        provider("slack"), "https://slack.com/api/openid.connect.userInfo", token
    )
    for result in await both(clients(handler), request):
        assert isinstance(result, Response)
        assert result.status == 200
    for sent in seen:
        assert sent.method == "POST"
        assert sent.headers["authorization"] == f"Bearer {token}"
        assert sent.headers["accept"] == "application/json"


def test_a_refusal_with_a_huge_body_is_still_a_refusal() -> None:
    """Only a 200 has a body worth reading: a 401 carrying 2 MiB is an invalid token (and is
    remembered as one), not an oversized answer."""
    token = WATCH.register("huge-refusal-token")
    calls: list[int] = []

    def provider(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(401, content=b"x" * (2 << 20))

    policy = policyauth.loads(
        'provider corp {\n  userinfo = "https://sso.example.com/userinfo"\n'
        "  username = $.sub\n}\nroute GET /a {\n  auth corp\n  allow\n}\n"
    )
    with policyauth.Engine(policy, transport=httpx.MockTransport(provider)) as engine:
        for _ in range(2):
            decision = engine.authorize_sync("GET", "/a", [("Authorization", f"Bearer {token}")])
            assert (decision.status, decision.reason) == (401, "invalid_token")
            assert decision.message == "the provider answered 401"
    assert len(calls) == 1  # the refusal was remembered for negative_ttl
