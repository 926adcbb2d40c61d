"""Realistic benchmark policies of any size, from one data model rendered three ways.

Both benchmarks must measure the same routes, and the peers they are compared with (a JSON
document, a Starlette router) must describe the same routes too, or the ratios mean nothing.
So the generator builds a list of RouteSpec values once and renders it as policy text, as an
equivalent JSON document, and as Starlette routes; the rule conditions are small trees that
render to both the policy syntax and JSON.

The policy resembles a large internal API gateway: three providers (Google with an audience,
GitHub, a corporate Keycloak-style SSO issuing JWTs) and an API tokens block; resources under
`/api/v1`, `/api/v2` and `/internal/admin`, each with ten routes that mix literal segments,
`{id}` parameters, `*`, `**` tails, several methods and public routes, and rules using `in`,
`==`, `endswith` and `matches`. Within a resource the routes are ordered so that none is a
duplicate of, or made unreachable by, an earlier one (the checker reports both as errors);
resources never share a path prefix, so routes of different resources cannot cover each other.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.responses import PlainTextResponse
from starlette.routing import Route, Router

ROUTES_PER_RESOURCE = 10

# Lower-case words, as resource names in real APIs are; a counter makes each one unique.
_WORDS = (
    "orders",
    "invoices",
    "customers",
    "projects",
    "repositories",
    "tickets",
    "builds",
    "deployments",
    "reports",
    "documents",
    "teams",
    "webhooks",
    "subscriptions",
    "payments",
    "shipments",
    "contracts",
)
_AREAS = (("api", "v1"), ("api", "v2"), ("internal", "admin"))

# Values used to fill pattern segments when a concrete request path is needed.
_PARAM_VALUE = "0badc0ffee42"
_STAR_VALUE = "2024-05-01"
_REST_VALUE = ("docs", "spec.pdf")

Expr = dict[str, Any]  # {"op": ..., ...}: a condition tree, JSON-ready


def lit(value: str | bool | int) -> Expr:
    return {"literal": value}


def claim(name: str) -> Expr:
    return {"claim": name}


def param(name: str) -> Expr:
    return {"param": name}


def builtin(name: str) -> Expr:
    return {"builtin": name}


def compare(op: str, left: Expr, right: Expr) -> Expr:
    return {"op": op, "left": left, "right": right}


def matches(subject: Expr, pattern: str) -> Expr:
    return {"op": "matches", "subject": subject, "pattern": pattern}


def both(*operands: Expr) -> Expr:
    return {"op": "and", "operands": list(operands)}


def either(*operands: Expr) -> Expr:
    return {"op": "or", "operands": list(operands)}


def render_expr(expr: Expr) -> str:
    """The policy syntax for a condition tree (parenthesising nested `and`/`or`)."""
    if "literal" in expr:
        value = expr["literal"]
        if isinstance(value, bool):
            return "true" if value else "false"
        return json.dumps(value)  # the generator only uses ASCII strings without escapes
    if "claim" in expr:
        return str(expr["claim"])
    if "param" in expr:
        return f"param.{expr['param']}"
    if "builtin" in expr:
        return str(expr["builtin"])
    op = expr["op"]
    if op in ("and", "or"):
        parts = [render_expr(e) for e in expr["operands"]]
        parts = [
            f"({p})" if e.get("op") in ("and", "or") else p
            for p, e in zip(parts, expr["operands"], strict=True)
        ]
        return f" {op} ".join(parts)
    if op == "matches":
        return f"{render_expr(expr['subject'])} matches /{expr['pattern']}/"
    return f"{render_expr(expr['left'])} {op} {render_expr(expr['right'])}"


@dataclass(frozen=True)
class RuleSpec:
    kind: str  # "allow" or "deny"
    condition: Expr | None = None  # None: a bare `allow`

    def text(self) -> str:
        if self.condition is None:
            return self.kind
        return f"{self.kind} if {render_expr(self.condition)}"


@dataclass(frozen=True)
class RouteSpec:
    """One route. `segments` are written as in the policy: literal, `{name}`, `*`, `**`."""

    methods: tuple[str, ...]
    segments: tuple[str, ...]
    auth: tuple[str, ...]  # empty: a public route
    rules: tuple[RuleSpec, ...] = ()

    @property
    def pattern(self) -> str:
        return "/" + "/".join(self.segments)

    def example_path(self) -> str:
        """A concrete request path this route matches (used to build probe requests)."""
        parts: list[str] = []
        for segment in self.segments:
            if segment == "**":
                parts.extend(_REST_VALUE)
            elif segment == "*":
                parts.append(_STAR_VALUE)
            elif segment.startswith("{"):
                parts.append(_PARAM_VALUE)
            else:
                parts.append(segment)
        return "/" + "/".join(parts)


def _resource_routes(prefix: tuple[str, ...]) -> list[RouteSpec]:
    """Ten routes for one resource, ordered so that no route covers a later one.

    `GET .../health` precedes `GET .../{id}` (which would cover it), and the `**` routes come
    after every route they could cover or only cover other methods.
    """
    readers = compare("in", lit("readers"), claim("groups"))
    writers = compare("in", lit("writers"), claim("groups"))
    contractors = compare("in", lit("contractors"), claim("groups"))
    company = compare("endswith", claim("username"), lit("@example.com"))
    p = prefix
    return [
        RouteSpec(("GET",), p, ("corp", "automation"), (RuleSpec("allow", readers),)),
        RouteSpec(
            ("POST",),
            p,
            ("corp",),
            (RuleSpec("deny", contractors), RuleSpec("allow", writers)),
        ),
        RouteSpec(("GET",), (*p, "health"), ()),
        RouteSpec(
            ("GET",),
            (*p, "{id}"),
            ("google", "github", "automation"),
            (RuleSpec("allow", company), RuleSpec("allow", readers)),
        ),
        RouteSpec(
            ("PUT", "PATCH"),
            (*p, "{id}"),
            ("corp",),
            (RuleSpec("allow", both(writers, matches(param("id"), "[0-9a-f]{8,32}"))),),
        ),
        RouteSpec(
            ("DELETE",),
            (*p, "{id}"),
            ("corp",),
            (
                RuleSpec("deny", contractors),
                RuleSpec(
                    "allow",
                    either(
                        compare("in", lit("admins"), claim("groups")),
                        compare("==", claim("username"), lit("root")),
                    ),
                ),
            ),
        ),
        RouteSpec(
            ("GET",),
            (*p, "{id}", "history", "*"),
            ("corp", "automation"),
            (RuleSpec("allow", compare("in", lit("auditors"), claim("groups"))),),
        ),
        RouteSpec(
            ("POST",),
            (*p, "{id}", "comments"),
            ("github", "corp"),
            (RuleSpec("allow", matches(claim("username"), "[a-z][a-z0-9-]{0,38}")),),
        ),
        RouteSpec(("OPTIONS",), (*p, "**"), ()),
        RouteSpec(
            ("GET",),
            (*p, "{id}", "attachments", "**"),
            ("google", "corp"),
            (
                RuleSpec("deny", compare("==", claim("email_verified"), lit(False))),
                RuleSpec("allow", compare("endswith", claim("email"), lit("@example.com"))),
                RuleSpec("allow", both(compare("==", builtin("provider"), lit("corp")), readers)),
            ),
        ),
    ]


def generate_routes(count: int) -> list[RouteSpec]:
    """`count` routes (a multiple of ten): ten per resource, resources spread over three areas."""
    if count <= 0 or count % ROUTES_PER_RESOURCE:
        raise ValueError(f"route count must be a positive multiple of {ROUTES_PER_RESOURCE}")
    routes: list[RouteSpec] = []
    for k in range(count // ROUTES_PER_RESOURCE):
        area = _AREAS[k % len(_AREAS)]
        name = f"{_WORDS[k % len(_WORDS)]}-{k}"
        routes.extend(_resource_routes((*area, name)))
    return routes


# --- the declarations every generated policy shares ------------------------------------------

_HEADER = """\
# generated by benchmarks/_policies.py: {count} routes

settings {{
  realm     = "bench"
  cache_ttl = 5m
  timeout   = 3s
}}

provider google {{
  preset    = "google"
  client_id = "123456789.apps.googleusercontent.com"
}}

provider github {{  # policyauth: ignore[PA202]
  preset = "github"
}}

provider corp {{
  userinfo     = "https://sso.example.com/realms/corp/protocol/openid-connect/userinfo"
  token_prefix = "eyJ"
  username     = $.preferred_username
  groups       = $.realm_access.roles[*]
  email        = $.email
  email_verified = $.email_verified
}}

tokens automation {{
  store = "automation.tokens"
}}
"""

_JSON_HEADER: dict[str, Any] = {
    "settings": {"realm": "bench", "cache_ttl": "5m", "timeout": "3s"},
    "providers": {
        "google": {"preset": "google", "client_id": "123456789.apps.googleusercontent.com"},
        "github": {"preset": "github"},
        "corp": {
            "userinfo": "https://sso.example.com/realms/corp/protocol/openid-connect/userinfo",
            "token_prefix": "eyJ",
            "claims": {
                "username": "$.preferred_username",
                "groups": "$.realm_access.roles[*]",
                "email": "$.email",
                "email_verified": "$.email_verified",
            },
        },
    },
    "tokens": {"automation": {"store": "automation.tokens"}},
}


def render_policy(routes: Sequence[RouteSpec]) -> str:
    """The routes as a policy file, in the layout of the language page's examples."""
    out = [_HEADER.format(count=len(routes))]
    for route in routes:
        out.append(f"\nroute {', '.join(route.methods)} {route.pattern} {{\n")
        if not route.auth:
            out.append("  public\n}\n")
            continue
        out.append(f"  auth {', '.join(route.auth)}\n")
        out.extend(f"  {rule.text()}\n" for rule in route.rules)
        out.append("}\n")
    return "".join(out)


def render_json(routes: Sequence[RouteSpec]) -> str:
    """The same policy as a JSON document with conditions as trees (what a JSON-configured
    authorizer would have to load): the fair peer for "how long does reading it take"."""
    document = dict(_JSON_HEADER)
    document["routes"] = [
        {"methods": list(r.methods), "pattern": r.pattern, "public": True}
        if not r.auth
        else {
            "methods": list(r.methods),
            "pattern": r.pattern,
            "auth": list(r.auth),
            "rules": [
                {"kind": rule.kind}
                if rule.condition is None
                else {"kind": rule.kind, "if": rule.condition}
                for rule in r.rules
            ],
        }
        for r in routes
    ]
    return json.dumps(document, indent=2)


def starlette_path(route: RouteSpec) -> str:
    """The route's pattern in Starlette's syntax: `*` and `{name}` become `{name}` (one
    segment), a `**` tail becomes `{rest:path}`. Starlette's `/a/{rest:path}` matches `/a/`
    and `/a/x/y` but not `/a`, a difference the probes never exercise."""
    parts: list[str] = []
    for position, segment in enumerate(route.segments):
        if segment == "**":
            parts.append("{rest:path}")
        elif segment == "*":
            parts.append(f"{{star{position}}}")
        else:
            parts.append(segment)
    return "/" + "/".join(parts)


def _endpoint(request: Any) -> PlainTextResponse:
    return PlainTextResponse("ok")


def build_starlette_router(routes: Sequence[RouteSpec]) -> Router:
    """A Starlette Router with one Route per RouteSpec (each compiles its path regex)."""

    return Router(
        routes=[Route(starlette_path(r), _endpoint, methods=list(r.methods)) for r in routes]
    )


# --- requests and identities for the decision benchmark --------------------------------------

CORP_TOKEN = "eyJhbGciOiJSUzI1NiJ9.bench-corp-alice"
GOOGLE_TOKEN = "ya29.a0AfB_bench-google-alice"
GITHUB_TOKEN = "gho_16C7e42F292c6912E7710c838347Ae178B4a"

# What each provider's userinfo endpoint would answer for the tokens above.
IDENTITY_DOCUMENTS: dict[tuple[str, str], Any] = {
    ("corp", CORP_TOKEN): {
        "sub": "f7c3a2b0",
        "preferred_username": "alice",
        "email": "alice@example.com",
        "email_verified": True,
        "realm_access": {"roles": ["readers", "writers", "offline_access"]},
    },
    ("google", GOOGLE_TOKEN): {
        "sub": "110169484474386276334",
        "email": "alice@example.com",
        "email_verified": True,
        "hd": "example.com",
    },
    ("github", GITHUB_TOKEN): {"login": "alice-dev", "id": 583231, "email": "alice@example.com"},
}

# What an API request carries after a load balancer: eight headers with the credential.
# The count matters: header handling is per header, so a decision's cost grows with it.
_COMMON_HEADERS = (
    ("host", "api.example.com"),
    ("user-agent", "python-httpx/0.27.0"),
    ("accept", "application/json"),
    ("accept-encoding", "gzip, deflate"),
    ("x-request-id", "5f0c6a2e-1b7d-4d0e-9a51-2f1b9c3d7e80"),
    ("x-forwarded-for", "203.0.113.7"),
    ("x-forwarded-proto", "https"),
)


@dataclass(frozen=True)
class Probe:
    """One request the decision benchmark sends; `route` is the index it must match (None:
    no route) and `status` the decision it must get, both checked before timing."""

    label: str
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    route: int | None
    status: int

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (*_COMMON_HEADERS, ("authorization", f"Bearer {token}"))


def probes(routes: Sequence[RouteSpec]) -> list[Probe]:
    """Requests that hit the first route, one in the middle, the last one, and none at all.

    Each authenticated probe goes through a different provider and rule operator (`in` for the
    first, `matches` on a GitHub login in the middle, `endswith` on a `**` route at the end),
    so the per-request work is comparable but not identical; the miss walks the index under an
    existing prefix before it fails.
    """
    middle = (len(routes) // ROUTES_PER_RESOURCE // 2) * ROUTES_PER_RESOURCE + 7
    last = len(routes) - 1
    first_route, middle_route, last_route = routes[0], routes[middle], routes[last]
    if middle_route.methods != ("POST",) or last_route.segments[-1] != "**":
        raise RuntimeError("the route templates changed: update `probes`")
    return [
        Probe(
            "first",
            "GET",
            first_route.example_path() + "?page=2&per_page=50",
            _bearer(CORP_TOKEN),
            0,
            200,
        ),
        Probe("middle", "POST", middle_route.example_path(), _bearer(GITHUB_TOKEN), middle, 200),
        Probe("last", "GET", last_route.example_path(), _bearer(GOOGLE_TOKEN), last, 200),
        Probe(
            "miss",
            "GET",
            "/api/v1/no-such-resource/" + _PARAM_VALUE,
            _bearer(CORP_TOKEN),
            None,
            403,
        ),
    ]


def _cedar_expr(expr: Expr) -> str:
    """A condition tree in Cedar: claims are attributes of the principal, params and built-ins
    of the context; `in` becomes `.contains`, `endswith` a `like "*..."`, and `matches` (Cedar
    has no regex) a `like` on the pattern's literal characters, which costs Cedar the same to
    read."""
    if "literal" in expr:
        value = expr["literal"]
        if isinstance(value, bool):
            return "true" if value else "false"
        return json.dumps(value)
    if "claim" in expr:
        return f"principal.{expr['claim']}"
    if "param" in expr:
        return f"context.params.{expr['param']}"
    if "builtin" in expr:
        return f"context.{expr['builtin']}"
    op = expr["op"]
    if op in ("and", "or"):
        joiner = " && " if op == "and" else " || "
        return joiner.join(f"({_cedar_expr(e)})" for e in expr["operands"])
    if op == "matches":
        literal = re.sub(r"[^A-Za-z0-9_-]+", "*", expr["pattern"])
        return f'{_cedar_expr(expr["subject"])} like "{literal}"'
    if op == "in":
        return f"{_cedar_expr(expr['right'])}.contains({_cedar_expr(expr['left'])})"
    if op == "endswith":
        return f'{_cedar_expr(expr["left"])} like "*{expr["right"]["literal"]}"'
    return f"{_cedar_expr(expr['left'])} {op} {_cedar_expr(expr['right'])}"


def render_cedar(routes: Sequence[RouteSpec]) -> str:
    """The same routes as a Cedar policy set, for cedarpy's parser: one policy per rule (a
    public route is one `permit`), the methods as actions, the pattern as a `like` on
    `context.path` and the providers as a condition on `context.provider`."""
    out: list[str] = []
    for route in routes:
        actions = ", ".join(f'Action::"{m}"' for m in route.methods)
        scope = f"permit (principal, action in [{actions}], resource)"
        path = "/" + "/".join("*" if s.startswith(("{", "*")) else s for s in route.segments)
        where = f'context.path like "{path}"'
        if not route.auth:
            out.append(f"{scope}\nwhen {{ {where} }};\n")
            continue
        providers = " || ".join(f'context.provider == "{p}"' for p in route.auth)
        for rule in route.rules:
            effect = "permit" if rule.kind == "allow" else "forbid"
            condition = f"({where}) && ({providers})"
            if rule.condition is not None:
                condition += f" && ({_cedar_expr(rule.condition)})"
            out.append(f"{effect} (principal, action in [{actions}], resource)\n")
            out.append(f"when {{ {condition} }};\n")
    return "".join(out)
