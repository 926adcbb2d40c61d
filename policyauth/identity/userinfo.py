"""Asking a provider who a token belongs to: the only module that talks HTTP (httpx as the
API; our own pooled transport from transport.py below it, or, through a proxy, httpx's own
with its network layer httpcore bounded by the sync deadline), with the outbound settings (CA,
client certificate, proxy) of each provider.

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
import contextlib
import email.utils
import functools
import json
import logging
import math
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import httpcore
import httpx

from policyauth.compiler import ProviderPlan
from policyauth.identity.source import Identity, IdentityResult, Invalid, Unavailable
from policyauth.identity.transport import DEADLINE, AsyncPoolTransport, PoolTransport
from policyauth.identity.transport import budget as _budget
from policyauth.language.model import Outbound, ProviderSpec
from policyauth.language.outbound import no_password
from policyauth.language.presets import Audience, TokenTransport
from policyauth.language.urls import is_loopback

MAX_BODY = 1 << 20  # 1 MiB: no userinfo document is bigger; a bigger body is an attack or a bug
MAX_DEPTH = 32
MAX_RETRY_AFTER = 300  # seconds: the most a provider's own hint may ask our clients to wait
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


def judge_discovery(
    issuer: str, response: Response, *, insecure_http: bool = False
) -> Endpoints | Unavailable:
    """The endpoints an OpenID Provider's discovery document names (OIDC Discovery 4); plain
    http ones only on loopback, or anywhere when the provider opted in with `insecure_http`."""
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
    if not _acceptable_url(endpoint, insecure_http):
        return Unavailable(
            f"the discovery document names `userinfo_endpoint` `{_shown(endpoint)}`; policyauth "
            "needs https (http only on loopback, or with `insecure_http = true`)"
        )
    introspection = document.get("introspection_endpoint")
    if not isinstance(introspection, str) or not _acceptable_url(introspection, insecure_http):
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
            return Unavailable("the provider is rate limiting (403)", retry_after(response))
        return Invalid("the provider answered 403")
    if 300 <= status < 400:
        return Unavailable(f"the provider redirected ({status}); redirects are not followed")
    return Unavailable(f"the provider answered {status}", retry_after(response))


def retry_after(response: Response, wall_clock: float | None = None) -> int | None:
    """When the provider says it will answer again, in whole seconds from now, for our own
    `Retry-After`: its `Retry-After` (seconds or an HTTP date, RFC 9110 10.2.3), else the reset
    time of its rate limit (`X-RateLimit-Reset` of GitHub and GitLab, `X-Rate-Limit-Reset` of
    Okta: epoch seconds). Kept within 1 s to MAX_RETRY_AFTER: a provider's hint must not tell
    our clients to stay away for a day. None when the provider gave no usable hint."""
    current = time.time() if wall_clock is None else wall_clock
    headers = response.headers
    seconds: float | None = None
    value = headers.get("retry-after", "").strip()
    if value.isdigit():
        seconds = float(value)
    elif value:
        with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - current
    if seconds is None:
        reset = headers.get("x-ratelimit-reset") or headers.get("x-rate-limit-reset") or ""
        if reset.strip().isdigit():
            seconds = float(reset) - current
    if seconds is None:
        return None
    return max(1, min(MAX_RETRY_AFTER, math.ceil(seconds)))


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


def _acceptable_url(url: str, insecure_http: bool) -> bool:
    """https anywhere; http only on loopback or with `insecure_http`, the rule the checker
    applies to policy URLs."""
    try:
        parts = httpx.URL(url)
    except httpx.InvalidURL:
        return False
    if parts.scheme == "https":
        return bool(parts.host)
    return (
        parts.scheme == "http" and bool(parts.host) and (insecure_http or is_loopback(parts.host))
    )


# --- I/O ------------------------------------------------------------------------------------


def _query(request: Request) -> httpx.QueryParams | None:
    """The request's query: the URL's own parameters (Facebook's `fields=...`) followed by
    `params`. httpx replaces a URL's query when given `params`, so they are merged here."""
    if not request.params:
        return None
    own = httpx.URL(request.url).params.multi_items()
    return httpx.QueryParams([*own, *request.params])


# One pool per provider host (UserinfoClient keys its clients by origin), sized for the
# concurrency a process sees: every connection it opens may stay open. A keep-alive bound below
# the connection bound makes connections churn (closed after each burst, reopened with a new
# handshake by the next one) exactly when a server is busiest.
POOL_SIZE = 100
_LIMITS = httpx.Limits(max_connections=POOL_SIZE, max_keepalive_connections=POOL_SIZE)
_NO_OUTBOUND = Outbound()


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read, write and TLS handshake ends by the call's deadline, so
    a provider sending its answer a byte at a time cannot hold a thread past `timeout`."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _budget(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _budget(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        budget = _budget(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, budget))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        budget = _budget(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._inner.connect_tcp(host, port, budget, local_address, socket_options)
        )

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:  # pragma: no cover - providers are reached over TCP
        budget = _budget(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_unix_socket(path, budget, socket_options))

    def sleep(self, seconds: float) -> None:  # pragma: no cover - retries are off
        self._inner.sleep(seconds)


def _sync_transport(outbound: Outbound) -> httpx.BaseTransport:
    """Our pooled transport (transport.py), or through a proxy httpx's own one."""
    if outbound.proxy is None:
        return PoolTransport(ssl_context(outbound), POOL_SIZE)
    return _deadline_transport(outbound)


def _async_transport(outbound: Outbound) -> httpx.AsyncBaseTransport:
    """Our pooled transport (transport.py), or through a proxy httpx's own one."""
    if outbound.proxy is None:
        return AsyncPoolTransport(ssl_context(outbound), POOL_SIZE)
    return httpx.AsyncHTTPTransport(
        verify=ssl_context(outbound), proxy=outbound.proxy, limits=_LIMITS
    )


def _deadline_transport(outbound: Outbound) -> httpx.HTTPTransport:
    """httpx's own transport, with the provider's TLS and proxy settings, whose connections
    obey the call's deadline. httpx has no total timeout (its timeouts bound each operation),
    and its transport takes no network backend, so the pool's backend is wrapped in place;
    should httpcore rename it, this fails at once rather than leaving calls unbounded."""
    transport = httpx.HTTPTransport(
        verify=ssl_context(outbound), proxy=outbound.proxy, limits=_LIMITS
    )
    pool = transport._pool
    inner = getattr(pool, "_network_backend", None)
    if not isinstance(inner, httpcore.NetworkBackend):  # pragma: no cover - a newer httpcore
        raise RuntimeError("httpcore's connection pool has no network backend to bound")
    pool._network_backend = _DeadlineBackend(inner)
    return transport


def ssl_context(outbound: Outbound) -> ssl.SSLContext:
    """certifi's trust store (httpx's default), or `ca_file` instead; with the client
    certificate for mutual TLS when one is set."""
    if outbound.ca_file is not None:
        context = ssl.create_default_context(cafile=outbound.ca_file)
    else:
        context = httpx.create_ssl_context(trust_env=False)
    if outbound.client_cert is not None:
        context.load_cert_chain(outbound.client_cert, outbound.client_key, password=no_password)
    return context


def _host_port(url: str) -> str:
    """`host:port` of a URL: never its path, query or credentials."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:  # pragma: no cover - the URLs were checked at load time
        return "the provider"
    return f"{parsed.host}:{parsed.port or (443 if parsed.scheme == 'https' else 80)}"


def failure(exc: BaseException, url: str, proxy: str | None = None) -> Unavailable:
    """Why a call failed, in words a person can act on: certificate verification, DNS, a
    refused connection, a timeout, the proxy. Names the host and port, never the URL's path or
    query (a Facebook token travels in the query), and never the exception's own text, which
    could quote the request. Through a proxy, connecting (DNS, refused, connect timeout) is
    the proxy's part, and the message names it; TLS is still the provider's (CONNECT)."""
    where = _host_port(url)
    hop = f"the proxy {_host_port(proxy)}" if proxy else where
    causes: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in causes and len(causes) < 8:
        causes.append(current)
        current = current.__cause__ or current.__context__
    for cause in causes:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return Unavailable(
                f"certificate verification failed for {where}: {cause.verify_message} "
                "(a company CA? set `ca_file`)"
            )
        if isinstance(cause, ssl.SSLError):
            reason = (cause.reason or type(cause).__name__).replace("_", " ").lower()
            hint = " (mutual TLS? set `client_cert`)" if "certificate required" in reason else ""
            return Unavailable(f"the TLS handshake with {where} failed: {reason}{hint}")
        if isinstance(cause, socket.gaierror):
            return Unavailable(f"DNS lookup failed for {hop}: {cause.strerror}")
        if isinstance(cause, ConnectionRefusedError):
            return Unavailable(f"connection refused by {hop}")
    if isinstance(exc, httpx.ProxyError):
        return Unavailable(f"the proxy would not connect to {where}")
    if isinstance(exc, httpx.ConnectTimeout):
        return Unavailable(f"timed out connecting to {hop}")
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return Unavailable(f"the provider at {where} timed out")
    errors = [c for c in causes if isinstance(c, OSError) and c.strerror]
    if errors:
        return Unavailable(f"{where} could not be reached: {errors[0].strerror}")
    return Unavailable(f"{where} could not be reached ({type(exc).__name__})")


def _unloadable(exc: Exception) -> Unavailable:
    """The CA or client certificate files were checked at load time, and have changed since;
    each call tries again, so that fixing the files heals the provider."""
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None)
    return Unavailable(f"the TLS files cannot be loaded: {reason or type(exc).__name__}")


@functools.lru_cache(maxsize=256)
def _origin(url: str) -> str:
    """`scheme://host:port` of a provider URL, the key of its connection pool. httpcore's pool
    scans every connection it holds on each request, so one pool shared by several providers
    makes each call pay for the others' connections. Cached: the URLs are the policy's and
    discovery's, a handful per provider (tokens travel in headers, params or forms, never in
    `url`)."""
    return url.partition(":")[0].lower() + "://" + _host_port(url)


class UserinfoClient:
    """Pooled HTTP clients with the policy's timeout: per outbound setting (CA, client
    certificate, proxy) and provider host, one sync client and one async client per event
    loop.

    `timeout` bounds each call as a whole (section 3 of the language page: "per call"). httpx's
    timeouts bound each connect, read and write, so a provider dripping its answer a byte at a
    time would never trip them: the async call runs under asyncio.timeout, the sync one under a
    deadline that every network operation of its connection obeys (_DeadlineStream). A
    `transport` (tests) replaces the network; the sync deadline is then checked between the
    chunks of the body only.
    """

    def __init__(self, timeout: float, transport: Any = None) -> None:
        _protect_logs()
        self._timeout = httpx.Timeout(timeout)
        self._seconds = timeout
        self._transport = transport
        self._sync: dict[tuple[Outbound, str], httpx.Client] = {}
        self._sync_lock = threading.Lock()  # two threads must not each build (and leak) one
        self._async: dict[tuple[Outbound, str], httpx.AsyncClient] = {}
        self._async_loop: asyncio.AbstractEventLoop | None = None

    def _options(self) -> dict[str, Any]:
        return {"timeout": self._timeout, "follow_redirects": False, "trust_env": False}

    def send_sync(
        self, request: Request, outbound: Outbound = _NO_OUTBOUND
    ) -> Response | Unavailable:
        client = self._sync_client(outbound, _origin(request.url))
        if isinstance(client, Unavailable):
            return client
        deadline = time.monotonic() + self._seconds
        token = DEADLINE.set(deadline)
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
                    if time.monotonic() > deadline:  # a given `transport` knows no deadline
                        raise TimeoutError
                return Response(response.status_code, dict(response.headers), bytes(body))
        except _Oversized:
            return Unavailable("the provider's response is too large")
        except (httpx.HTTPError, OSError) as exc:  # OSError: ssl.SSLError, TimeoutError
            return failure(exc, request.url, outbound.proxy)
        finally:
            DEADLINE.reset(token)

    async def send(
        self, request: Request, outbound: Outbound = _NO_OUTBOUND
    ) -> Response | Unavailable:
        client = self._async_client(outbound, _origin(request.url))
        if isinstance(client, Unavailable):
            return client
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
        except (httpx.HTTPError, OSError) as exc:  # OSError: ssl.SSLError, TimeoutError
            return failure(exc, request.url, outbound.proxy)

    def _async_client(self, outbound: Outbound, origin: str) -> httpx.AsyncClient | Unavailable:
        """An AsyncClient belongs to one event loop; a new loop gets new clients (the old
        loop's are dropped with it)."""
        loop = asyncio.get_running_loop()
        if self._async_loop is not loop:
            self._async = {}
            self._async_loop = loop
        client = self._async.get((outbound, origin))
        if client is None:
            try:
                transport = self._transport or _async_transport(outbound)
            except (OSError, ValueError) as exc:
                return _unloadable(exc)
            client = self._async[outbound, origin] = httpx.AsyncClient(
                transport=transport, **self._options()
            )
        return client

    def _sync_client(self, outbound: Outbound, origin: str) -> httpx.Client | Unavailable:
        with self._sync_lock:
            client = self._sync.get((outbound, origin))
            if client is None:
                try:
                    transport = self._transport or _sync_transport(outbound)
                except (OSError, ValueError) as exc:
                    return _unloadable(exc)
                client = httpx.Client(transport=transport, **self._options())
                self._sync[outbound, origin] = client
            return client

    def close(self) -> None:
        with self._sync_lock:
            clients, self._sync = list(self._sync.values()), {}
        for client in clients:
            client.close()

    async def aclose(self) -> None:
        self.close()
        clients, self._async = list(self._async.values()), {}
        for client in clients:
            await client.aclose()


def now() -> float:
    """Wall-clock seconds, for comparing with `exp` claims (the cache itself uses monotonic)."""
    return time.time()
