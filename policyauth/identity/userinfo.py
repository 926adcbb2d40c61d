"""Asking a provider who a token belongs to: the only module that talks HTTP (httpx).

What is sent and how an answer is judged are pure functions (`userinfo_request`, `judge`), so
the synchronous and asynchronous clients share every decision and differ only in I/O. The rules
are strict on purpose (section 5 step 6 of the language page, security rule 6): redirects are
not followed, bodies are capped, JSON must be one object without duplicate keys, NaN or deep
nesting, and anything unexpected is "unavailable" (503, never cached), never an identity.

The token travels only in the request to the one provider chosen for it. It is never logged:
httpx logs request URLs, so a query-string token (Facebook) is redacted by a filter on httpx's
logger before any handler sees the record.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

import attrs
import httpx

from policyauth.compiler import ProviderPlan
from policyauth.identity.source import Identity, IdentityResult, Invalid, Unavailable
from policyauth.language.model import ProviderSpec
from policyauth.language.presets import Audience, TokenTransport
from policyauth.language.urls import is_loopback

MAX_BODY = 1 << 20  # 1 MiB: no userinfo document is bigger; a bigger body is an attack or a bug
MAX_DEPTH = 32
USER_AGENT = "policyauth"

log = logging.getLogger("policyauth.identity")
_QUERY_TOKEN = re.compile(r"((?:access|input)_token=)[^&\s'\"]+")


class _RedactTokens(logging.Filter):
    """Removes query-string tokens from httpx's request log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(
                _QUERY_TOKEN.sub(r"\1[redacted]", str(a)) if "_token=" in str(a) else a
                for a in (record.args if isinstance(record.args, tuple) else (record.args,))
            )
        if isinstance(record.msg, str) and "_token=" in record.msg:
            record.msg = _QUERY_TOKEN.sub(r"\1[redacted]", record.msg)
        return True


_REDACTOR = _RedactTokens()


def _protect_logs() -> None:
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if _REDACTOR not in logger.filters:
            logger.addFilter(_REDACTOR)


@attrs.frozen
class Request:
    """One HTTP request to make; `repr` never shows the token-bearing parts."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = attrs.field(repr=False)
    params: tuple[tuple[str, str], ...] = attrs.field(default=(), repr=False)
    form: tuple[tuple[str, str], ...] = attrs.field(default=(), repr=False)
    body: bytes | None = attrs.field(default=None, repr=False)


@attrs.frozen
class Endpoints:
    """What discovery found: where userinfo is, and introspection if the provider offers it."""

    userinfo: str
    introspection: str | None


@attrs.frozen
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


class _Oversized(Exception):
    pass


# --- what to send --------------------------------------------------------------------------------


def userinfo_request(provider: ProviderPlan, url: str, token: str) -> Request:
    """The userinfo call for `token`, with the provider's method, headers and token transport."""
    spec = provider.spec
    headers = {"accept": ("Accept", "application/json"), "user-agent": ("User-Agent", USER_AGENT)}
    for name, value in spec.headers:
        headers[name.lower()] = (name, value)
    if spec.transport is TokenTransport.QUERY:
        return Request(spec.method, url, tuple(headers.values()), params=(("access_token", token),))
    if spec.transport is TokenTransport.FORM:
        return Request("POST", url, tuple(headers.values()), form=(("token", token),))
    headers["authorization"] = ("Authorization", f"Bearer {token}")
    return Request(spec.method, url, tuple(headers.values()))


def audience_request(spec: ProviderSpec, url: str, token: str) -> Request:
    """The provider's own check of which client `token` was issued to (see Audience).

    Where the check authenticates as our client (introspection, GitHub, Facebook) it uses
    `client_id` and `client_secret`; the user's token goes in a header or body wherever the
    provider allows it, and in the URL only for Facebook, whose debug_token knows no other way.
    """
    base = (("Accept", "application/json"), ("User-Agent", USER_AGENT))
    client = f"{spec.client_id}:{spec.client_secret}".encode()
    basic = ("Authorization", "Basic " + base64.b64encode(client).decode())
    kind = spec.audience
    if kind is Audience.GITHUB_APPLICATION:
        headers = (("Accept", "application/vnd.github+json"), base[1], basic)
        body = json.dumps({"access_token": token}).encode()
        return Request("POST", url, (*headers, ("Content-Type", "application/json")), body=body)
    if kind is Audience.FACEBOOK_DEBUG_TOKEN:
        app_token = f"{spec.client_id}|{spec.client_secret}"
        return Request(
            "GET", url, base, params=(("input_token", token), ("access_token", app_token))
        )
    if kind is Audience.INTROSPECTION:
        form = (("token", token), ("token_type_hint", "access_token"))
        return Request("POST", url, (*base, basic), form=form)
    # Google tokeninfo and GitLab token/info take the user's token as a bearer token.
    method = "POST" if kind is Audience.GOOGLE_TOKENINFO else "GET"
    return Request(method, url, (*base, ("Authorization", f"Bearer {token}")))


def discovery_request(issuer: str) -> Request:
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    return Request("GET", url, (("Accept", "application/json"), ("User-Agent", USER_AGENT)))


# --- how to judge what came back ----------------------------------------------------------------


def judge(provider: ProviderPlan, response: Response, now: float) -> IdentityResult:
    """A userinfo response as an identity, an invalid token, or an unavailable provider."""
    trouble = _status_trouble(response)
    if trouble is not None:
        return trouble
    document = parse_document(response)
    if isinstance(document, Unavailable):
        return document
    if not provider.accepts(document):
        return Invalid("the response does not meet the provider's `success` condition")
    return Identity(provider.claims_from(document), lifetime=_lifetime(document, now))


def judge_audience(
    spec: ProviderSpec, response: Response, now: float
) -> IdentityResult | float | None:
    """The token's remaining lifetime (or None when unknown) if it was issued to our client;
    else Invalid, or Unavailable when the check itself failed."""
    kind, client_id = spec.audience, spec.client_id
    if kind in (Audience.GITHUB_APPLICATION, Audience.INTROSPECTION, Audience.FACEBOOK_DEBUG_TOKEN):
        # These authenticate as our client: a 401 or 403 means our credentials are wrong.
        if response.status in (401, 403):
            return Unavailable(
                f"the audience check refused our client credentials ({response.status})"
            )
        if kind is Audience.GITHUB_APPLICATION and response.status in (404, 422):
            return Invalid("the token was issued to another application")
    trouble = _status_trouble(response)
    if trouble is not None:
        return trouble
    document = parse_document(response)
    if isinstance(document, Unavailable):
        return document
    if kind is Audience.GOOGLE_TOKENINFO:
        issued_to = {document.get("aud"), document.get("azp")}
        if client_id in issued_to:
            return _seconds(document.get("expires_in"))
        return _other(client_id, document.get("azp"), document.get("aud"))
    if kind is Audience.GITLAB_TOKEN_INFO:
        application = document.get("application")
        uid = application.get("uid") if isinstance(application, dict) else None
        return _seconds(document.get("expires_in")) if uid == client_id else _other(client_id, uid)
    if kind is Audience.GITHUB_APPLICATION:
        app = document.get("app")
        app_client = app.get("client_id") if isinstance(app, dict) else None
        return None if app_client in (None, client_id) else _other(client_id, app_client)
    if kind is Audience.FACEBOOK_DEBUG_TOKEN:
        data = document.get("data")
        if not isinstance(data, dict) or data.get("is_valid") is not True:
            return Invalid("the token is not valid")
        if str(data.get("app_id")) != client_id:
            return _other(client_id, data.get("app_id"))
        expires_at = data.get("expires_at")
        return _lifetime({"exp": expires_at}, now) if expires_at else None
    if document.get("active") is not True:
        return Invalid("the token is not active")
    audiences = document.get("aud")
    audiences = audiences if isinstance(audiences, list) else [audiences]
    if client_id in (document.get("client_id"), document.get("azp"), *audiences):
        return _lifetime(document, now)
    return _other(client_id, document.get("client_id"), document.get("azp"), *audiences)


def _other(ours: str | None, *theirs: object) -> Invalid:
    """Both sides, so whoever reads the decision can tell a wrong `client_id` in the policy from
    a token of another app: `the token was issued to client `web`, the policy's client_id is
    `api``. Client ids are public identifiers, never credentials."""
    named = list(dict.fromkeys(_shown(str(t)) for t in theirs if isinstance(t, str | int) and t))
    issued = ", ".join(f"`{n}`" for n in named[:3])
    to = f"client {issued}" if len(named) == 1 else f"clients {issued}" if named else "no client"
    return Invalid(
        f"the token was issued to {to}, the policy's client_id is `{_shown(ours or '')}`"
    )


def _shown(text: str) -> str:
    """Text from a provider's answer, safe for a one-line message: printable, and short."""
    text = text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= 80 else text[:77] + "..."


def _seconds(value: object) -> float | None:
    try:
        return float(value) if value is not None else None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def judge_discovery(issuer: str, response: Response) -> Endpoints | Unavailable:
    """The endpoints an OpenID Provider's discovery document names (OIDC Discovery 4)."""
    if response.status != 200:
        return Unavailable(
            f"discovery of `{_shown(issuer)}` answered {response.status}, not 200 with a document"
        )
    document = parse_document(response)
    if isinstance(document, Unavailable):
        return document
    named = document.get("issuer", "")
    if str(named).rstrip("/") != issuer.rstrip("/"):
        found = f"issuer `{_shown(str(named))}`" if named else "no issuer"
        return Unavailable(
            f"the discovery document names {found}, the policy says `{_shown(issuer)}`"
        )
    endpoint = document.get("userinfo_endpoint")
    if not isinstance(endpoint, str):
        return Unavailable("the discovery document names no `userinfo_endpoint`")
    if not _acceptable_url(endpoint):
        return Unavailable(
            f"the discovery document names `userinfo_endpoint` `{_shown(endpoint)}`; policyauth "
            "needs https (http only on loopback)"
        )
    introspection = document.get("introspection_endpoint")
    if not isinstance(introspection, str) or not _acceptable_url(introspection):
        introspection = None
    return Endpoints(endpoint, introspection)


def _status_trouble(response: Response) -> Invalid | Unavailable | None:
    status = response.status
    if status == 200:
        return None
    if status in (401, 400):
        return Invalid(f"the provider answered {status}")
    if status == 403:
        remaining = response.headers.get("x-ratelimit-remaining")
        if remaining == "0" or "retry-after" in response.headers:
            return Unavailable("the provider is rate limiting (403)")
        return Invalid("the provider answered 403")
    if 300 <= status < 400:
        return Unavailable(f"the provider redirected ({status}); redirects are not followed")
    return Unavailable(f"the provider answered {status}")


def parse_document(response: Response) -> dict[str, Any] | Unavailable:
    """One JSON object, strictly: no duplicate keys, no NaN or Infinity, bounded depth."""
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/jwt":
        return Unavailable("signed userinfo responses (application/jwt) are not supported")
    try:
        document = json.loads(
            response.body.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constants,
        )
    except (ValueError, RecursionError):
        return Unavailable("the provider's response is not valid JSON")
    if not isinstance(document, dict):
        return Unavailable("the provider's response is not a JSON object")
    if _depth(document) > MAX_DEPTH:
        return Unavailable("the provider's response is nested too deeply")
    return document


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise ValueError("duplicate key")
    return document


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _depth(document: Any) -> int:
    deepest = 0
    stack = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        children = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        )
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _lifetime(document: Mapping[str, Any], now: float) -> float | None:
    exp = document.get("exp")
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        return float(exp) - now
    return None


def _acceptable_url(url: str) -> bool:
    """https anywhere; http only on loopback, the rule the checker applies to policy URLs."""
    try:
        parts = httpx.URL(url)
    except httpx.InvalidURL:
        return False
    if parts.scheme == "https":
        return bool(parts.host)
    return parts.scheme == "http" and is_loopback(parts.host)


# --- I/O ------------------------------------------------------------------------------------


def _query(request: Request) -> httpx.QueryParams | None:
    """The request's query: the URL's own parameters (Facebook's `fields=...`) followed by
    `params`. httpx replaces a URL's query when given `params`, so they are merged here."""
    if not request.params:
        return None
    own = httpx.URL(request.url).params.multi_items()
    return httpx.QueryParams([*own, *request.params])


class UserinfoClient:
    """Pooled HTTP clients (one sync, one async per event loop) with the policy's timeout."""

    def __init__(self, timeout: float, transport: Any = None) -> None:
        _protect_logs()
        self._timeout = httpx.Timeout(timeout)
        # httpx's timeout bounds each connect, read and write; a provider dripping its answer
        # a byte at a time would never trip it. `timeout` is per call, so the whole call is
        # bounded too (the sync client checks between the chunks of the body).
        self._seconds = timeout
        self._transport = transport
        self._sync: httpx.Client | None = None
        self._sync_lock = threading.Lock()  # two threads must not each build (and leak) one
        self._async: httpx.AsyncClient | None = None
        self._async_loop: asyncio.AbstractEventLoop | None = None

    def _options(self) -> dict[str, Any]:
        return {
            "timeout": self._timeout,
            "follow_redirects": False,
            "verify": True,
            "trust_env": False,
            "limits": httpx.Limits(max_connections=100, max_keepalive_connections=20),
        }

    def send_sync(self, request: Request) -> Response | Unavailable:
        client = self._sync_client()
        deadline = time.monotonic() + self._seconds
        try:
            with client.stream(
                request.method,
                request.url,
                headers=list(request.headers),
                params=_query(request),
                data=dict(request.form) or None,
                content=request.body,
            ) as response:
                if response.status_code != 200:  # the verdict needs the status and headers only
                    return Response(response.status_code, dict(response.headers), b"")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_BODY:
                        raise _Oversized
                    if time.monotonic() > deadline:
                        raise TimeoutError
                return Response(response.status_code, dict(response.headers), bytes(body))
        except _Oversized:
            return Unavailable("the provider's response is too large")
        except (httpx.TimeoutException, TimeoutError):
            return Unavailable("the provider timed out")
        except httpx.HTTPError as exc:
            return Unavailable(f"the provider could not be reached ({type(exc).__name__})")

    async def send(self, request: Request) -> Response | Unavailable:
        client = self._async_client()
        try:
            async with (
                asyncio.timeout(self._seconds),
                client.stream(
                    request.method,
                    request.url,
                    headers=list(request.headers),
                    params=_query(request),
                    data=dict(request.form) or None,
                    content=request.body,
                ) as response,
            ):
                if response.status_code != 200:  # the verdict needs the status and headers only
                    return Response(response.status_code, dict(response.headers), b"")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_BODY:
                        raise _Oversized
                return Response(response.status_code, dict(response.headers), bytes(body))
        except _Oversized:
            return Unavailable("the provider's response is too large")
        except (httpx.TimeoutException, TimeoutError):
            return Unavailable("the provider timed out")
        except httpx.HTTPError as exc:
            return Unavailable(f"the provider could not be reached ({type(exc).__name__})")

    def _async_client(self) -> httpx.AsyncClient:
        """An AsyncClient belongs to one event loop; a new loop gets a new client."""
        loop = asyncio.get_running_loop()
        if self._async is None or self._async_loop is not loop:
            self._async = httpx.AsyncClient(transport=self._transport, **self._options())
            self._async_loop = loop
        return self._async

    def _sync_client(self) -> httpx.Client:
        with self._sync_lock:
            if self._sync is None:
                self._sync = httpx.Client(transport=self._transport, **self._options())
            return self._sync

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    async def aclose(self) -> None:
        self.close()
        if self._async is not None:
            await self._async.aclose()
            self._async = None


def now() -> float:
    """Wall-clock seconds, for comparing with `exp` claims (the cache itself uses monotonic)."""
    return time.time()
