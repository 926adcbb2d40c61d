"""Django middleware: every request is decided by the policy before any view runs.

    # settings.py
    MIDDLEWARE = [
        "policyauth.django.PolicyAuthMiddleware",     # first, so nothing runs before it
        ...
    ]
    POLICYAUTH = {"POLICY": BASE_DIR / "api.policy"}  # or POLICYAUTH_POLICY = "api.policy"

Settings, read once when Django loads its middleware (a problem stops the server there, not
at the first request):

- `POLICYAUTH["POLICY"]` or `POLICYAUTH_POLICY`: the policy file (or a loaded Policy);
- `POLICYAUTH["ENGINE"]`: an Engine instead (tests pass one with a StaticIdentitySource);
- `POLICYAUTH["SET_USER"]`: whether `request.user` is set (below). Default: set it only when
  `django.contrib.auth.middleware.AuthenticationMiddleware` is not in `MIDDLEWARE`.

An allowed request goes on with `request.policyauth_user` (a `DjangoUser`: the principal with
the parts of Django's user interface that views and templates read, `is_authenticated`,
`is_anonymous`, `get_username()`, `has_perm()` (always False), plus `groups`, `provider`,
`claims`), `request.principal` (the Principal, None on a `public` route) and
`request.policyauth_decision`. policyauth does not fight `django.contrib.auth`: where its
middleware is installed, `request.user` stays the session user, unless `SET_USER` is True,
in which case place this middleware after Django's (which would otherwise replace it).

A denial is answered at once: the decision's status, `Cache-Control: no-store`, one
`WWW-Authenticate` header per challenge (Bearer and, for API tokens, Basic; Django keeps one
value per header name, so they are added to the response's `items()`, which Django's WSGI and
ASGI handlers send) and the JSON body `{"error": reason}`.

The decision is made on the raw request target: from the ASGI scope under ASGI, from
`RAW_URI` or `REQUEST_URI` under gunicorn, waitress and uWSGI, and otherwise (Django's
`runserver`, the test client) from the decoded path, re-encoded: then `%2F` and friends have
already become what Django routes on, so the decision is still about the view that runs.
Rules apply to `request.path_info`, the path Django routes on: a script prefix
(`FORCE_SCRIPT_NAME`, ASGI `root_path`, WSGI `SCRIPT_NAME`) is cut from the raw path only
when the raw path decodes to that prefix followed by `path_info`, and a raw path that decodes
to neither that nor `path_info` itself is refused with 400 (`policyauth.request.mounts`).
Both sync and async stacks are supported.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import quote

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings  # type: ignore[import-untyped]
from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]
from django.http import HttpResponse  # type: ignore[import-untyped]

from policyauth import wsgi
from policyauth.decision import Decision
from policyauth.engine import Engine
from policyauth.middleware import (
    PolicyUser,
    build_engine,
    denial_body,
    log,
    log_decision,
)
from policyauth.request import Rejection
from policyauth.request.mounts import routed_target

__all__ = ["DjangoUser", "PolicyAuthMiddleware", "request_headers", "request_target"]

AUTH_MIDDLEWARE = "django.contrib.auth.middleware.AuthenticationMiddleware"
_SAFE = "/:@!$&'()*+,;=~"


class DjangoUser(PolicyUser):
    """The caller, shaped enough like Django's users for views, templates and decorators that
    read `request.user`; it holds no permissions (the policy is where access is decided)."""

    is_active = True
    is_staff = False
    is_superuser = False
    pk = None
    id = None

    @property
    def is_anonymous(self) -> bool:
        return not self.is_authenticated

    def get_username(self) -> str:
        return self.username

    def has_perm(self, perm: str, obj: object = None) -> bool:
        return False

    def has_perms(self, perm_list: object, obj: object = None) -> bool:
        return False

    def has_module_perms(self, app_label: str) -> bool:
        return False

    def __str__(self) -> str:
        return self.username


class PolicyAuthMiddleware:
    """`MIDDLEWARE = ["policyauth.django.PolicyAuthMiddleware", ...]`; configured in settings."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.engine, self.set_user = _configured()
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self._call_async(request)
        method = request.method
        try:
            decision = self.engine.authorize_sync(
                method, request_target(request), request_headers(request)
            )
        except Exception:
            return _failed(method, request)
        if not decision.allowed:
            return _denied(decision, method)
        self._admit(request, decision)
        return self.get_response(request)

    async def _call_async(self, request: Any) -> Any:
        method = request.method
        try:
            decision = await self.engine.authorize(
                method, request_target(request), request_headers(request)
            )
        except Exception:
            return _failed(method, request)
        if not decision.allowed:
            return _denied(decision, method)
        self._admit(request, decision)
        response: Awaitable[Any] = self.get_response(request)
        return await response

    def _admit(self, request: Any, decision: Decision) -> None:
        user = DjangoUser(decision.principal)
        request.policyauth_user = user
        request.principal = decision.principal
        request.policyauth_decision = decision
        if self.set_user:
            request.user = user


def request_target(request: Any) -> str | Rejection:
    """The raw request target of `request.path_info`, the path Django routes on; a Rejection
    when the raw path is neither that path nor that path below Django's script prefix."""
    scope = getattr(request, "scope", None)
    if isinstance(scope, MutableMapping) and scope.get("type") == "http":
        # ASGIRequest: `path_info` is `path` less the script prefix (FORCE_SCRIPT_NAME, else
        # `root_path`) when `path` starts with it, so the prefix is cut only as Django cuts it.
        decoded = str(scope.get("path", "/"))
        raw = scope.get("raw_path")
        raw_path = raw.decode("latin-1") if raw else quote(decoded, safe=_SAFE)
        routed = str(request.path_info)
        mount = decoded[: len(decoded) - len(routed)] if decoded.endswith(routed) else ""
        found = routed_target(raw_path, _utf8(routed), _utf8(mount), whole=False)
        if isinstance(found, Rejection):
            return found
        query = scope.get("query_string", b"")
        return found + ("?" + query.decode("latin-1") if query else "")
    meta = request.META
    if meta.get("RAW_URI") or meta.get("REQUEST_URI"):
        # WSGIRequest: `path_info` is PATH_INFO (Django never cuts FORCE_SCRIPT_NAME from it
        # under WSGI), below the server's SCRIPT_NAME: the WSGI middleware's rule.
        return wsgi.request_target(meta)
    # Django's path_info is already decoded (UTF-8): encode it back, as the client sent it.
    path = quote(str(request.path_info or "/"), safe=_SAFE)
    query_string = str(meta.get("QUERY_STRING", ""))
    return path + ("?" + query_string if query_string else "")


def _utf8(text: str) -> bytes:
    """Django's paths are text decoded from UTF-8; a lone surrogate matches no raw path."""
    return text.encode("utf-8", "replace")


def request_headers(request: Any) -> list[tuple[str, str]] | list[tuple[bytes, bytes]]:
    """The request's headers: the ASGI list as received, else rebuilt from `request.META`."""
    scope = getattr(request, "scope", None)
    if isinstance(scope, Mapping) and isinstance(scope.get("headers"), list):
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        return headers
    return wsgi.request_headers(request.META)


def _configured() -> tuple[Engine, bool]:
    """The engine and the `SET_USER` choice from settings; ImproperlyConfigured if unusable."""
    options = getattr(settings, "POLICYAUTH", {})
    if not isinstance(options, Mapping):
        raise ImproperlyConfigured("settings.POLICYAUTH must be a dict")
    unknown = set(options) - {"POLICY", "ENGINE", "SET_USER", "RELOAD"}
    if unknown:
        raise ImproperlyConfigured(
            f"settings.POLICYAUTH has unknown keys: {', '.join(sorted(unknown))} "
            "(known: POLICY, ENGINE, SET_USER, RELOAD)"
        )
    engine = options.get("ENGINE")
    policy = options.get("POLICY", getattr(settings, "POLICYAUTH_POLICY", None))
    if engine is not None and not isinstance(engine, Engine):
        raise ImproperlyConfigured('settings.POLICYAUTH["ENGINE"] must be a policyauth.Engine')
    if (engine is None) == (policy is None):
        raise ImproperlyConfigured(
            'policyauth needs exactly one of settings.POLICYAUTH["POLICY"] (or '
            'settings.POLICYAUTH_POLICY) and settings.POLICYAUTH["ENGINE"]'
        )
    set_user = options.get("SET_USER")
    if set_user is None:
        set_user = AUTH_MIDDLEWARE not in getattr(settings, "MIDDLEWARE", ())
    elif not isinstance(set_user, bool):
        raise ImproperlyConfigured('settings.POLICYAUTH["SET_USER"] must be True, False or None')
    reload = options.get("RELOAD", False)
    if not isinstance(reload, bool):
        raise ImproperlyConfigured('settings.POLICYAUTH["RELOAD"] must be True or False')
    if reload and engine is not None:
        raise ImproperlyConfigured(
            'settings.POLICYAUTH["RELOAD"] goes with "POLICY"; a given engine watches its '
            "file if it was made with Engine(..., reload=True)"
        )
    return build_engine(engine, policy, reload=reload), set_user


class _DenialResponse(HttpResponse):  # type: ignore[misc]
    """A denial with one `WWW-Authenticate` header per challenge, as the other integrations
    send them. Django keeps one value per header name, but its WSGI and ASGI handlers both
    write a response's headers from `items()`, so the challenges are added there."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(
            denial_body(decision), status=decision.status, content_type="application/json"
        )
        self["Cache-Control"] = "no-store"
        self.challenges: list[tuple[str, str]] = []
        for name, value in decision.headers:
            if name.lower() == "www-authenticate":
                self.challenges.append(("WWW-Authenticate", value))
            else:
                self[name] = value

    def items(self) -> list[tuple[str, str]]:
        return [*super().items(), *self.challenges]


def _denied(decision: Decision, method: str) -> Any:
    log_decision(decision, method)
    return _DenialResponse(decision)


def _failed(method: str, request: Any) -> Any:
    """An engine that raised decides nothing: refuse the request (fail closed) and log why."""
    log.exception("policyauth failed to decide %s %s", method, getattr(request, "path", "?"))
    return HttpResponse(b'{"error": "internal_error"}', status=500, content_type="application/json")
