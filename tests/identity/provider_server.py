"""A fake identity-provider zoo on loopback, and the plumbing that sends presets to it.

`ProviderServer` is a real HTTP server (uvicorn, raw ASGI, in a background thread) whose routes
answer like the real providers do (shared/reference/providers.md): the documented success
documents for tokens granted with `grant`, each provider's own invalid-token behaviour for any
other token (Slack's 200 `ok:false`, Okta's empty 401, Auth0's plain text, Facebook's 400, ...),
and anything a test scripts with `script` (failures: 5xx, 429, redirects, HTML, huge bodies,
slow answers). Every call is recorded, so tests count provider calls at the server.

Presets point at the real hostnames (https://api.github.com/user). `RewriteTransport` is an
httpx transport (sync and async) that records each request's original URL and headers and then
sends it to the server on 127.0.0.1, keeping the original Host header.

`WATCH` is the leak watch: every token a test uses is registered with it (`new_token`), every
log record of the identity tests is captured into it (conftest.py), and tests hand it the
objects whose repr must not show a token (decisions, principals, cache keys, exceptions).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import secrets
import socket
import ssl
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus

import httpx
import uvicorn

import policyauth

# --- documented response shapes (providers.md; values invented, field names as documented) -------

GOOGLE_USERINFO = {
    "sub": "104857392018475639201",
    "name": "Ada Lovelace",
    "given_name": "Ada",
    "family_name": "Lovelace",
    "picture": "https://lh3.googleusercontent.com/a/ACg8ocEXAMPLE=s96-c",
    "email": "ada@example.com",
    "email_verified": True,
    "hd": "example.com",
}
GOOGLE_CLIENT = "1234567890-abc123.apps.googleusercontent.com"


def google_tokeninfo(client: str = GOOGLE_CLIENT, *, azp: str | None = None) -> dict[str, str]:
    """Tokeninfo as captured in the wild: numbers come back as strings."""
    return {
        "azp": azp or client,
        "aud": client,
        "sub": "104857392018475639201",
        "scope": "openid https://www.googleapis.com/auth/userinfo.email",
        "exp": str(int(time.time()) + 3412),
        "expires_in": "3412",
        "email": "ada@example.com",
        "email_verified": "true",
        "access_type": "online",
    }


AZURE_ME = {
    "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users/$entity",
    "businessPhones": ["+1 425 555 0109"],
    "displayName": "Adele Vance",
    "givenName": "Adele",
    "jobTitle": "Retail Manager",
    "mail": "AdeleV@contoso.com",
    "mobilePhone": None,
    "officeLocation": "18/2111",
    "preferredLanguage": "en-US",
    "surname": "Vance",
    "userPrincipalName": "AdeleV@contoso.com",
    "id": "87d349ed-44d7-43e1-9a83-5f2406dee5bd",
}
KEYCLOAK_USERINFO = {
    "sub": "ccd1ab6c-0c54-4f27-82a9-092376a66cf4",
    "email_verified": True,
    "name": "Ada Lovelace",
    "preferred_username": "ada",
    "given_name": "Ada",
    "family_name": "Lovelace",
    "email": "ada@example.com",
    "groups": ["/engineering", "/engineering/backend"],
    "realm_access": {
        "roles": ["offline_access", "uma_authorization", "default-roles-myrealm", "admin"]
    },
    "resource_access": {
        "my-api": {"roles": ["reader", "writer"]},
        "account": {"roles": ["manage-account", "view-profile"]},
    },
}
OKTA_USERINFO = {
    "sub": "00uid4BxXw6I6TV4m0g3",
    "name": "John Doe",
    "nickname": "Jimmy",
    "given_name": "John",
    "middle_name": "James",
    "family_name": "Doe",
    "profile": "https://example.com/john.doe",
    "zoneinfo": "America/Los_Angeles",
    "locale": "en-US",
    "updated_at": 1311280970,
    "preferred_username": "john.doe@example.com",
    "email": "john.doe@example.com",
    "email_verified": True,
    "groups": ["Everyone", "Engineering"],
}
COGNITO_USERINFO = {
    "sub": "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111",
    "email_verified": "true",
    "email": "janedoe@example.com",
    "username": "janedoe",
    "given_name": "Jane",
    "family_name": "Doe",
    "custom:tenant_id": "acme",
    # Groups are documented only in Cognito's JWTs; a pool whose userInfo carries them (or a
    # proxy that adds them) names them like this, which needs bracket notation.
    "cognito:groups": ["admin", "billing"],
}
GITHUB_USER = {
    "login": "octocat",
    "id": 1,
    "node_id": "MDQ6VXNlcjE=",
    "avatar_url": "https://github.com/images/error/octocat_happy.gif",
    "type": "User",
    "site_admin": False,
    "name": "monalisa octocat",
    "company": "GitHub",
    "email": None,
    "twitter_username": "monatheoctocat",
    "created_at": "2008-01-14T04:33:35Z",
    "updated_at": "2008-01-14T04:33:35Z",
    "two_factor_authentication": True,
}
SLACK_USERINFO = {
    "ok": True,
    "sub": "U0R7JM",
    "https://slack.com/user_id": "U0R7JM",
    "https://slack.com/team_id": "T0R7GR",
    "email": "krane@example.com",
    "email_verified": True,
    "date_email_verified": 1622128723,
    "name": "krane",
    "picture": "https://secure.gravatar.com/avatar/EXAMPLE.png",
    "given_name": "Bront",
    "family_name": "Labradoodle",
    "locale": "en-US",
    "https://slack.com/team_name": "kraneflannel",
    "https://slack.com/team_domain": "kraneflannel",
    "https://slack.com/user_image_48": "https://secure.gravatar.com/avatar/EXAMPLE-48.png",
}
GITLAB_USERINFO = {
    "sub": "1234567",
    "sub_legacy": "2435223452345",
    "name": "Ada Lovelace",
    "nickname": "ada",
    "preferred_username": "ada",
    "email": "ada@example.com",
    "email_verified": True,
    "website": "https://example.com",
    "profile": "https://gitlab.com/ada",
    "picture": "https://gitlab.com/uploads/-/system/user/avatar/1234567/avatar.png",
    "groups": ["acme", "acme/platform", "acme/platform/infra"],
    "groups_direct": ["acme/platform"],
    "https://gitlab.org/claims/groups/owner": ["acme/platform"],
    "https://gitlab.org/claims/groups/maintainer": [],
    "https://gitlab.org/claims/groups/developer": ["acme"],
}
FACEBOOK_ME = {"id": "10224567890123456", "name": "Ada Lovelace", "email": "ada@example.com"}
AUTH0_USERINFO = {
    "sub": "auth0|5878e4cdf299cf16c0558a10",
    "name": "ada@example.com",
    "nickname": "ada",
    "picture": "https://s.gravatar.com/avatar/EXAMPLE.png",
    "updated_at": "2024-05-01T10:00:00.000Z",
    "email": "ada@example.com",
    "email_verified": True,
    "https://example.com/roles": ["admin", "billing"],
}
OIDC_USERINFO = {
    "sub": "248289761001",
    "name": "Jane Doe",
    "preferred_username": "j.doe",
    "email": "janedoe@example.com",
    "email_verified": True,
}


# --- the server -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """A scripted answer. `body` may be bytes, str, or anything JSON-serialisable; `stream`
    sends that many bytes of a JSON-looking body in 64 KiB chunks instead."""

    status: int = 200
    body: Any = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    stream: int | None = None
    content_type: str | None = None
    drip: float = 0.0  # with `body`: send it a byte at a time, this many seconds apart


@dataclass(frozen=True)
class Call:
    """One request the server received (the token as the provider would have read it)."""

    method: str
    path: str
    host: str
    query: tuple[tuple[str, str], ...]
    headers: Mapping[str, str]
    body: bytes
    token: str | None


def _json(document: Any, status: int = 200, **headers: str) -> Reply:
    return Reply(status, document, headers, content_type="application/json; charset=utf-8")


class ProviderApp:
    """The ASGI app: one handler per provider path, and a record of every call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[Call] = []
        self.grants: dict[str, Any] = {}  # token -> userinfo document
        self.tokeninfo: dict[str, Any] = {}  # token -> Google tokeninfo document
        self.scripts: dict[tuple[str, str], Reply] = {}  # (path or "*", token) -> reply
        self.delays: dict[str, float] = {}  # token -> seconds before answering

    # --- test-side API ---

    def grant(self, token: str, document: Any, *, delay: float = 0.0) -> None:
        self.grants[token] = document
        if delay:
            self.delays[token] = delay

    def script(self, token: str, reply: Reply, path: str = "*") -> None:
        self.scripts[(path, token)] = reply

    def count(self, *, path: str | None = None, token: str | None = None) -> int:
        with self._lock:
            return sum(
                1
                for c in self.calls
                if (path is None or c.path == path) and (token is None or c.token == token)
            )

    def calls_for(self, token: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.token == token]

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
        self.grants.clear()
        self.tokeninfo.clear()
        self.scripts.clear()
        self.delays.clear()

    # --- ASGI ---

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = tuple(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
        path = scope["path"]
        call = Call(
            scope["method"],
            path,
            headers.get("host", ""),
            query,
            headers,
            body,
            _token_of(headers, query, body),
        )
        with self._lock:
            self.calls.append(call)
        reply = self._reply(call)
        delay = reply.delay or self.delays.get(call.token or "", 0.0)
        if delay:
            await asyncio.sleep(delay)
        await _send(send, reply)

    def _reply(self, call: Call) -> Reply:
        token = call.token or ""
        scripted = self.scripts.get((call.path, token)) or self.scripts.get(("*", token))
        if scripted is not None:
            return scripted
        if call.path == "/.well-known/openid-configuration":
            issuer = f"https://{call.host}"
            return _json(
                {
                    "issuer": issuer,
                    "authorization_endpoint": f"{issuer}/authorize",
                    "token_endpoint": f"{issuer}/token",
                    "userinfo_endpoint": f"{issuer}/userinfo",
                    "jwks_uri": f"{issuer}/jwks",
                }
            )
        if call.path == "/tokeninfo":
            if call.method == "POST" and token in self.tokeninfo:
                return _json(self.tokeninfo[token])
            return _json({"error": "invalid_token", "error_description": "Invalid Value"}, 400)
        handler = _handler_for(call.path, call.host)
        if handler is None:
            return _json({"error": "not_found"}, 404)
        return handler(call, self.grants.get(token) if token else None)


def _token_of(
    headers: Mapping[str, str], query: Iterable[tuple[str, str]], body: bytes
) -> str | None:
    """The token as a provider reads it: header (Bearer or GitHub's `token`), query, or form."""
    authorization = headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() in ("bearer", "token") and value:
        return value
    for name, value in query:
        if name == "access_token":
            return value
    if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        for name, value in parse_qsl(body.decode("latin-1")):
            if name == "token":
                return value
    return None


async def _send(send: Any, reply: Reply) -> None:
    headers = [(k.lower().encode(), v.encode()) for k, v in reply.headers.items()]
    if reply.stream is not None:
        streamed = reply.content_type or "application/json"
        headers.append((b"content-type", streamed.encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        chunk = b"x" * 65536
        sent = 0
        try:
            await send({"type": "http.response.body", "body": b'{"a":"', "more_body": True})
            while sent < reply.stream:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sent += len(chunk)
            await send({"type": "http.response.body", "body": b'"}'})
        except OSError:  # the client hung up, as it should
            pass
        return
    if reply.drip:
        raw = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        start = {"type": "http.response.start", "status": reply.status}
        await send({**start, "headers": [*headers, (b"content-type", b"application/json")]})
        for sent, byte in enumerate(raw):
            if sent * reply.drip > 2.0:  # the client has long given up; stop dripping
                break
            await asyncio.sleep(reply.drip)
            await send({"type": "http.response.body", "body": bytes([byte]), "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    body = reply.body
    content_type: str | None = reply.content_type
    if not isinstance(body, bytes):
        if isinstance(body, str):
            body = body.encode()
            content_type = content_type or "text/plain; charset=utf-8"
        else:
            body = json.dumps(body).encode()
            content_type = content_type or "application/json"
    if content_type is not None and "content-type" not in {k.lower() for k in reply.headers}:
        headers.append((b"content-type", content_type.encode()))
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# Each provider's documented behaviour: `document` is the granted userinfo, or None.

Handler = Callable[[Call, Any], Reply]


def _google(call: Call, document: Any) -> Reply:
    if document is None:
        return _json(
            {"error": "invalid_request", "error_description": "Invalid Credentials"},
            401,
            **{
                "www-authenticate": 'Bearer realm="https://accounts.google.com/", '
                'error="invalid_token"'
            },
        )
    return _json(document)


def _azure(call: Call, document: Any) -> Reply:
    if document is None:
        error = {
            "error": {
                "code": "InvalidAuthenticationToken",
                "message": "Access token has expired or is not yet valid.",
                "innerError": {
                    "date": "2024-05-01T10:00:00",
                    "request-id": "1740feb8-b33a-4c08-a6ee-ab5cfc5a18c4",
                    "client-request-id": "1740feb8-b33a-4c08-a6ee-ab5cfc5a18c4",
                },
            }
        }
        challenge = (
            'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/'
            'oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"'
        )
        return _json(error, 401, **{"www-authenticate": challenge})
    return _json(document)


def _keycloak(call: Call, document: Any) -> Reply:
    realm = call.path.split("/")[2]
    if call.token is None:
        return Reply(401, b"", {"www-authenticate": f'Bearer realm="{realm}"'})
    if document is None:  # Keycloak >= 20: the error is in the header, the body is empty
        challenge = (
            f'Bearer realm="{realm}", error="invalid_token", '
            'error_description="Token verification failed"'
        )
        return Reply(401, b"", {"www-authenticate": challenge})
    return _json(document)


def _okta(call: Call, document: Any) -> Reply:
    if any(name == "access_token" for name, _ in call.query):
        challenge = (
            'Bearer error="invalid_request", '
            'error_description="The access token cannot be presented in a query string."'
        )
        return Reply(400, b"", {"www-authenticate": challenge})
    if document is None:
        challenge = (
            'Bearer authorization_uri="https://acme.okta.com/oauth2/v1/authorize", '
            'realm="https://acme.okta.com", error="invalid_token", '
            'error_description="The access token is invalid", resource="/oauth2/v1/userinfo"'
        )
        return Reply(401, b"", {"www-authenticate": challenge})
    return _json(document)


def _cognito(call: Call, document: Any) -> Reply:
    if document is None:
        challenge = (
            'error="invalid_token", error_description="Access token is expired, disabled, or '
            'deleted, or the user has globally signed out."'
        )
        return Reply(401, b"", {"www-authenticate": challenge})
    return _json(document)


def _github(call: Call, document: Any) -> Reply:
    if not call.headers.get("user-agent"):
        return Reply(
            403,
            "Request forbidden by administrative rules. "
            "Please make sure your request has a User-Agent header",
        )
    if document is None:
        return _json(
            {
                "message": "Bad credentials",
                "documentation_url": "https://docs.github.com/rest",
                "status": "401",
            },
            401,
        )
    return _json(
        document,
        200,
        **{
            "x-ratelimit-limit": "5000",
            "x-ratelimit-remaining": "4999",
            "x-ratelimit-reset": str(int(time.time()) + 3600),
        },
    )


def _slack(call: Call, document: Any) -> Reply:
    if call.token is None:
        return _json({"ok": False, "error": "not_authed"})
    if document is None:  # Slack reports every failure as HTTP 200
        return _json({"ok": False, "error": "invalid_auth", "warning": "superfluous_charset"})
    return _json(document)


def _gitlab(call: Call, document: Any) -> Reply:
    if document is None:
        challenge = (
            'Bearer realm="Doorkeeper", error="invalid_token", '
            'error_description="The access token is invalid"'
        )
        return _json(
            {"error": "invalid_token", "error_description": "The access token is invalid"},
            401,
            **{"www-authenticate": challenge},
        )
    return _json(document)


def _facebook(call: Call, document: Any) -> Reply:
    if document is None:
        error = {
            "error": {
                "message": "Invalid OAuth access token.",
                "type": "OAuthException",
                "code": 190,
                "fbtrace_id": "ApJxXCVdUD83QKezexApPLy",
            }
        }
        challenge = 'OAuth "Facebook Platform" "invalid_token" "Invalid OAuth access token."'
        return _json(error, 400, **{"www-authenticate": challenge})
    fields = dict(call.query).get("fields")
    if fields:
        document = {k: v for k, v in document.items() if k in fields.split(",")}
    return _json(document)


def _userinfo(call: Call, document: Any) -> Reply:
    """Auth0 (plain-text 401) and a generic OIDC provider (RFC 6750 401, JSON error)."""
    if document is None:
        if call.host.endswith("auth0.com"):
            challenge = (
                'Bearer realm="Users", error="invalid_token", '
                'error_description="The token has expired"'
            )
            return Reply(401, "Unauthorized", {"www-authenticate": challenge})
        return _json(
            {"error": "invalid_token", "error_description": "token is not active"},
            401,
            **{"www-authenticate": 'Bearer error="invalid_token"'},
        )
    return _json(document)


def _handler_for(path: str, host: str) -> Handler | None:
    if path == "/v1/userinfo":
        return _google
    if path == "/v1.0/me":
        return _azure
    parts = path.split("/")
    if (
        len(parts) == 6
        and parts[1] == "realms"
        and parts[3:]
        == [
            "protocol",
            "openid-connect",
            "userinfo",
        ]
    ):
        return _keycloak
    if path in ("/oauth2/default/v1/userinfo", "/oauth2/v1/userinfo"):
        return _okta
    if path == "/oauth2/userInfo":
        return _cognito
    if path == "/user":
        return _github
    if path == "/api/openid.connect.userInfo":
        return _slack
    if path == "/oauth/userinfo":
        return _gitlab
    if path == "/v19.0/me":
        return _facebook
    if path == "/userinfo":
        return _userinfo
    return None


class ProviderServer:
    """The app served by uvicorn on 127.0.0.1 from a daemon thread."""

    def __init__(self) -> None:
        self.app = ProviderApp()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> ProviderServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,  # access lines would carry Facebook's query-string tokens
            backlog=4096,
            timeout_keep_alive=30,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake provider server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._server.force_exit = True  # do not wait for slow answers nobody reads
            self._thread.join(10)


# --- sending presets to the server ---------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """A request as policyauth built it, before it was sent to loopback."""

    method: str
    url: httpx.URL
    headers: httpx.Headers
    body: bytes


# A new loopback connection per request: reused connections to uvicorn wait ~40 ms for delayed
# ACKs, which would make the suite ten times slower than it needs to be.
_NO_KEEPALIVE = httpx.Limits(max_keepalive_connections=0)
# Loopback is plain HTTP; one TLS context for every transport saves loading CA files each time.
_TLS = ssl.create_default_context()


class RewriteTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Sends every request to 127.0.0.1:`port` (or to `ports[host]`), keeping the Host header,
    and records what policyauth asked for. Usable by httpx.Client and httpx.AsyncClient."""

    def __init__(self, port: int, *, ports: Mapping[str, int] | None = None) -> None:
        self.port = port
        self.ports = dict(ports or {})
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._sync = httpx.HTTPTransport(verify=_TLS, limits=_NO_KEEPALIVE)
        self._async: dict[int, tuple[asyncio.AbstractEventLoop, httpx.AsyncHTTPTransport]] = {}

    def _rewrite(self, request: httpx.Request, body: bytes) -> httpx.Request:
        with self._lock:
            self.seen.append(Seen(request.method, request.url, request.headers.copy(), body))
        host = request.url.host
        target = request.url.copy_with(
            scheme="http", host="127.0.0.1", port=self.ports.get(host, self.port)
        )
        return httpx.Request(
            request.method,
            target,
            headers=request.headers,
            content=body,
            extensions=request.extensions,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._sync.handle_request(self._rewrite(request, request.read()))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        loop = asyncio.get_running_loop()
        entry = self._async.get(id(loop))
        if entry is None or entry[0] is not loop:
            entry = (loop, httpx.AsyncHTTPTransport(verify=_TLS, limits=_NO_KEEPALIVE))
            self._async[id(loop)] = entry
        return await entry[1].handle_async_request(self._rewrite(request, body))

    def close(self) -> None:
        self._sync.close()

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        entry = self._async.pop(id(loop), None)
        if entry is not None:
            await entry[1].aclose()


def closed_port() -> int:
    """A loopback port nothing listens on (connection refused)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    return port


# --- policies ----------------------------------------------------------------------------------

# Each preset as a provider block, named after the preset, with the parameters it needs. Claims
# added here are the ones a user of that provider would declare for groups where the preset has
# none (Cognito and Auth0 claim names need bracket notation).
PRESET_BLOCKS: dict[str, str] = {
    "google": 'preset = "google"',
    "google-aud": f'preset = "google"\n  client_id = "{GOOGLE_CLIENT}"',
    "azure-ad": 'preset = "azure-ad"',
    "keycloak": 'preset = "keycloak"\n  base_url = "https://sso.example.com"\n  realm = "corp"',
    "okta": 'preset = "okta"\n  domain = "acme.okta.com"\n  authorization_server = "default"',
    "okta-org": 'preset = "okta"\n  domain = "acme.okta.com"',
    "cognito": (
        'preset = "cognito"\n  domain = "auth.example.com"\n'
        "  groups = $['cognito:groups'][*]\n  tenant = $['custom:tenant_id']"
    ),
    "github": 'preset = "github"',
    "slack": 'preset = "slack"',
    "gitlab": 'preset = "gitlab"',
    "facebook": 'preset = "facebook"',
    "auth0": (
        'preset = "auth0"\n  domain = "acme.eu.auth0.com"\n'
        "  groups = $['https://example.com/roles'][*]"
    ),
    "oidc": 'preset = "oidc"\n  issuer = "https://idp.example.com"',
}


def policy_for(
    providers: Iterable[str],
    **settings: str,
) -> policyauth.Policy:
    """A policy with one provider per preset name and a route `GET /NAME` for each that allows
    any caller the provider vouches for. Policies are immutable, so equal ones are shared."""
    return _policy(tuple(providers), **settings)


@functools.cache
def _policy(
    providers: tuple[str, ...],
    *,
    cache_ttl: str = "5m",
    negative_ttl: str = "30s",
    timeout: str = "2s",
) -> policyauth.Policy:
    text = [
        "settings {",
        '  realm = "identity-tests"',
        f"  cache_ttl = {cache_ttl}",
        f"  negative_ttl = {negative_ttl}",
        f"  timeout = {timeout}",
        "}",
    ]
    for name in providers:
        text += [
            f"provider {name} {{  # policyauth: ignore[PA202]",
            f"  {PRESET_BLOCKS[name]}",
            "}",
        ]
        text += [f"route GET /{name} {{", f"  auth {name}", "  allow", "}"]
    return policyauth.loads("\n".join(text) + "\n")


# --- the leak watch ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Captured:
    logger: str
    level: str
    message: str
    args: str
    exc_text: str


class LeakWatch(logging.Handler):
    """Captures every log record (attached to the root logger by conftest.py), remembers every
    token tests used, and the reprs of the objects tests hand it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.tokens: set[str] = set()
        self.records: list[Captured] = []
        self.observed: list[tuple[str, str]] = []  # (what, repr or text)
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception as exc:  # a broken record is still evidence
            message = f"{record.msg!r} % {record.args!r} ({exc!r})"
        exc_text = record.exc_text or ""
        if record.exc_info and not exc_text:
            exc_text = "".join(traceback.format_exception(*record.exc_info))
        if record.stack_info:
            exc_text += record.stack_info
        captured = Captured(record.name, record.levelname, message, repr(record.args), exc_text)
        with self._guard:
            self.records.append(captured)

    def register(self, token: str) -> str:
        self.tokens.add(token)
        return token

    def observe(self, what: str, *objects: object) -> None:
        with self._guard:
            for obj in objects:
                text = obj if isinstance(obj, str) else repr(obj)
                self.observed.append((what, text))

    def observe_exception(self, what: str, exc: BaseException) -> None:
        self.observe(what, str(exc), repr(exc), "".join(traceback.format_exception(exc)))

    def leaks(self) -> list[str]:
        """Every place a registered token (or its URL-encoded form) shows up."""
        found = []
        needles = {t: {t, quote(t, safe=""), quote_plus(t)} for t in self.tokens}
        with self._guard:
            texts = [
                (f"log {r.logger} {r.level}", part)
                for r in self.records
                for part in (r.message, r.args, r.exc_text)
            ] + [(f"repr of {what}", text) for what, text in self.observed]
        haystack = "\0".join(text for _, text in texts)
        for token, forms in needles.items():
            if not any(form in haystack for form in forms):
                continue
            for where, text in texts:
                if any(form in text for form in forms):
                    found.append(f"{where}: token {token[:6]}... in {text[:200]!r}")
        return found


WATCH = LeakWatch()


def new_token(prefix: str = "tok-") -> str:
    """A fresh random bearer token, registered with the leak watch."""
    return WATCH.register(prefix + secrets.token_urlsafe(24))


def observe_decision(decision: policyauth.Decision) -> policyauth.Decision:
    """Hand a decision (and everything in it) to the leak watch; returns it for chaining."""
    WATCH.observe(
        "decision",
        decision,
        decision.message,
        decision.headers,
        decision.principal,
        decision.trace,
    )
    if decision.principal is not None:
        WATCH.observe("principal claims", dict(decision.principal.claims))
    return decision


def bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


# --- engines under test -------------------------------------------------------------------------


class Engines:
    """Makes Engines wired to the fake providers and, when the test ends, closes them and hands
    their identity caches (keys and entries) to the leak watch."""

    def __init__(self, server: ProviderServer) -> None:
        self.server = server
        self.made: list[tuple[policyauth.Engine, RewriteTransport]] = []

    def __call__(
        self,
        *providers: str,
        ports: Mapping[str, int] | None = None,
        **settings: str,
    ) -> tuple[policyauth.Engine, RewriteTransport]:
        transport = RewriteTransport(self.server.port, ports=ports)
        engine = policyauth.Engine(policy_for(providers, **settings), transport=transport)
        self.made.append((engine, transport))
        return engine, transport

    def observe(self) -> None:
        for engine, _ in self.made:
            remote = getattr(engine, "_remote", None)
            cache = getattr(remote, "_cache", None)
            entries = {**getattr(cache, "_entries", {}), **getattr(cache, "_negative", {})}
            WATCH.observe("identity source", remote, cache)
            WATCH.observe("cache keys", list(entries), [k.hex() for k in entries])
            WATCH.observe("cache entries", list(entries.values()))

    def close(self) -> None:
        self.observe()
        for engine, transport in self.made:
            engine.close()
            transport.close()

    async def aclose(self) -> None:
        self.observe()
        for engine, transport in self.made:
            await engine.aclose()
            await transport.aclose()
            transport.close()
