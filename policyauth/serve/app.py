"""The forward-auth ASGI application: three endpoints for four proxies, and three for operators.

- `GET /auth`, nginx `auth_request`: `X-Original-Method` and `X-Original-URI`;
- `GET /forward-auth`, Traefik and Caddy: `X-Forwarded-Method` and `X-Forwarded-Uri`;
- `* /ext-authz/<target>`, Envoy `ext_authz`: the request's method, the rest of the path.

The original target is a raw request target and goes through the engine, hence the
canonicalizer, like any other: the proxy's request and an embedded one get the same decision.
It is believed only from a trusted peer, and only when given exactly once; anything else is
refused (400 `malformed_request`, 403 on `/auth`), never allowed. Endpoints are dispatched on
the raw path, byte for byte, so `/%61uth` is no endpoint at all.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote

from policyauth.decision import Decision, Reason
from policyauth.engine import Engine
from policyauth.middleware import denial_body
from policyauth.serve.trust import TrustedPeers

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Metrics = Callable[[], tuple[bytes, str]]  # the exposition text and its content type

log = logging.getLogger("policyauth.serve")

_EXT_AUTHZ = b"/ext-authz"
# Kept as they are in X-Auth-* values: printable ASCII but `%`, `,` and space, so that a comma
# or a control character in a name can neither forge a group nor break the header.
_SAFE = "!#$&'()*+-./:;<=>?@[]^_`{|}~"
_NO_PRINCIPAL = [(b"x-auth-user", b""), (b"x-auth-groups", b""), (b"x-auth-provider", b"")]
# The headers of an allow, by principal (username, groups, provider) or None for none.
_ALLOWED: dict[tuple[str, tuple[str, ...], str] | None, list[tuple[bytes, bytes]]] = {}


class ForwardAuthApp:
    """`ForwardAuthApp(engine)`: the ASGI app `policyauth serve` runs on uvicorn.

    `trusted` are the peers whose forwarded method and target are believed (default:
    loopback); `metrics` renders `/metrics` (None: 404, metrics are not installed).
    The engine is closed when the server shuts down (ASGI lifespan).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        trusted: TrustedPeers | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.engine = engine
        self.trusted = trusted if trusted is not None else TrustedPeers()
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            await send({"type": "websocket.close", "code": 1008})
            return
        raw = scope.get("raw_path") or scope["path"].encode("utf-8")
        if raw == b"/auth":
            await self._forward(scope, send, b"x-original-method", b"x-original-uri", nginx=True)
        elif raw == b"/forward-auth":
            await self._forward(scope, send, b"x-forwarded-method", b"x-forwarded-uri")
        elif raw.startswith(_EXT_AUTHZ + b"/"):
            await self._ext_authz(scope, send, raw[len(_EXT_AUTHZ) :])
        elif raw == b"/healthz":
            await _plain(send, 200, b"ok\n")
        elif raw == b"/readyz":
            await _plain(send, 200, b"ready\n")  # the app exists only with a policy loaded
        elif raw == b"/metrics" and self.metrics is not None:
            body, content_type = self.metrics()
            await _plain(send, 200, body, content_type)
        else:
            await _plain(send, 404, b"not found\n")

    async def _forward(
        self,
        scope: Scope,
        send: Send,
        method_name: bytes,
        target_name: bytes,
        *,
        nginx: bool = False,
    ) -> None:
        """nginx and Traefik/Caddy: the original method and target come in two headers."""
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        client = scope.get("client")
        if (client[0] if client else None) not in self.trusted:
            decision = self._refuse(scope, f"forwarded headers from {_peer(client)}, untrusted")
        else:
            found = dict(headers)  # in C; a duplicate of any header makes it shorter
            if len(found) == len(headers):
                method_value, target_value = found.get(method_name), found.get(target_name)
                methods = [] if method_value is None else [method_value]
                targets = [] if target_value is None else [target_value]
            else:  # some header is doubled: count the two that matter
                methods, targets = [], []
                for name, value in headers:  # names are lower-case in ASGI
                    if name == method_name:
                        methods.append(value)
                    elif name == target_name:
                        targets.append(value)
            problem = _count(method_name, methods) or _count(target_name, targets)
            if problem is not None:
                decision = self._refuse(scope, problem)
            else:
                method = methods[0].decode("latin-1")
                decision = await self._decide(method, targets[0].decode("latin-1"), headers)
        await _answer(send, decision, nginx=nginx)

    async def _ext_authz(self, scope: Scope, send: Send, path: bytes) -> None:
        """Envoy: the original method is the request's, the target the rest of the path (the
        query is the request's own: Envoy appends the original path, query included)."""
        client = scope.get("client")
        if (client[0] if client else None) not in self.trusted:
            decision = self._refuse(scope, f"a request from {_peer(client)}, untrusted")
        else:
            query: bytes = scope.get("query_string", b"")
            target = (path + (b"?" + query if query else b"")).decode("latin-1")
            decision = await self._decide(scope["method"], target, scope["headers"])
        await _answer(send, decision, nginx=False)

    def _refuse(self, scope: Scope, message: str) -> Decision:
        """What the service answers when it cannot know the original request: never an allow.
        Logged, and counted and written to the decision log like the engine's decisions (with
        no path: the target it was given is not believed)."""
        decision = Decision(400, Reason.MALFORMED_REQUEST, message)
        log.info("refused a forward-auth request: %s", message)
        self.engine.record(scope["method"], "", decision, 0.0)
        return decision

    async def _decide(
        self, method: str, target: str, headers: list[tuple[bytes, bytes]]
    ) -> Decision:
        try:
            return await self.engine.authorize(method, target, headers)
        except Exception:
            log.exception("policyauth failed to decide a forwarded request")
            return Decision(500, Reason.PROVIDER_UNAVAILABLE, "internal error")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.engine.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _count(name: bytes, values: list[bytes]) -> str | None:
    shown = name.decode("latin-1")
    if not values or not values[0]:
        return f"no `{shown}` header: the proxy must send the original request"
    if len(values) > 1:
        return f"`{shown}` given {len(values)} times"
    return None


def _peer(client: Any) -> str:
    return f"{client[0]}" if client else "a peer without an address"


def principal_headers(decision: Decision) -> list[tuple[bytes, bytes]]:
    """X-Auth-User, X-Auth-Groups, X-Auth-Provider: percent-encoded UTF-8, groups comma-joined;
    empty without a principal (Caddy 2.6 passes its placeholder text on when one is absent)."""
    principal = decision.principal
    if principal is None:
        return _NO_PRINCIPAL
    groups = ",".join(quote(group, safe=_SAFE) for group in principal.groups)
    return [
        (b"x-auth-user", quote(principal.username, safe=_SAFE).encode("ascii")),
        (b"x-auth-groups", groups.encode("ascii")),
        (b"x-auth-provider", quote(principal.provider, safe=_SAFE).encode("ascii")),
    ]


async def _answer(send: Send, decision: Decision, *, nginx: bool) -> None:
    """The decision as a response. For nginx 1.22, which passes on only 401 and 403 and only
    the first WWW-Authenticate: a 400 becomes 403, and all challenges go in one header.

    An allow's headers depend only on the principal, and most traffic comes from callers
    seen a moment ago: those answers are built once and kept (a bounded memory)."""
    principal = decision.principal
    if decision.allowed and not decision.headers:
        key = (principal.username, principal.groups, principal.provider) if principal else None
        headers = _ALLOWED.get(key)
        if headers is None:
            headers = _headers(decision, nginx=False)
            if len(_ALLOWED) >= 4096:
                _ALLOWED.clear()
            _ALLOWED[key] = headers
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    status = 403 if nginx and decision.status == 400 else decision.status
    body = denial_body(decision)
    headers = _headers(decision, nginx=nginx)
    headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _headers(decision: Decision, *, nginx: bool) -> list[tuple[bytes, bytes]]:
    """X-Auth-*, the reason, and the decision's own headers (challenges folded for nginx)."""
    headers = [
        *principal_headers(decision),
        (b"x-policyauth-reason", str(decision.reason).encode("ascii")),
    ]
    challenges = [v for k, v in decision.headers if k.lower() == "www-authenticate"]
    others = [(k, v) for k, v in decision.headers if k.lower() != "www-authenticate"]
    if nginx:
        if challenges:
            headers.append((b"www-authenticate", ", ".join(challenges).encode("latin-1")))
    else:
        headers += [(b"www-authenticate", c.encode("latin-1")) for c in challenges]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in others]
    if decision.allowed:  # an allow goes to the proxy only; every header costs it and us
        headers.append((b"content-length", b"0"))
    else:  # Traefik, Caddy and Envoy pass a denial on to the client
        headers.append((b"cache-control", b"no-store"))
    return headers


async def _plain(
    send: Send, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8"
) -> None:
    headers = [
        (b"content-type", content_type.encode("latin-1")),
        (b"content-length", b"%d" % len(body)),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
