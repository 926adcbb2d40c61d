"""Checks for how a provider validates tokens: `validate = "jwt" | "introspection"`.

Kept apart from checker.py, which calls these functions at three points: when it reads a
provider block's mode (which decides the preset's parameters and claim map), when it builds the
ProviderSpec, and when it checks a route with several providers. Codes PA130-PA137; the
warnings PA208 and PA209 are lint rules below. production.md section 1 is the contract.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

import attrs

from policyauth.diagnostics import Severity, Span
from policyauth.language import ast
from policyauth.language.claimpath import ClaimPath, compile_claim_path
from policyauth.language.model import DEFAULT_ALGORITHMS, CheckedPolicy, ProviderSpec
from policyauth.language.presets import Audience, Preset, fill_template

MODES = ("userinfo", "jwt", "introspection")
# Every asymmetric JWS algorithm PyJWT verifies; HMAC and `none` are refused by name.
KNOWN_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_JWT_KEYS = ("validate", "issuer", "jwks", "audience", "algorithms", "token_type")
_INTROSPECTION_KEYS = (
    "validate",
    "issuer",
    "introspection",
    "audience",
    "client_id",
    "client_secret",
)
_ALL_KEYS = frozenset(_JWT_KEYS + _INTROSPECTION_KEYS)


class _Checker(Protocol):
    """The parts of the checker these checks use (checker.py cannot be imported here)."""

    @property
    def invalid(self) -> type[Exception]:
        """Raised by the value readers once they have reported."""

    def report(
        self,
        span: Span,
        code: str,
        message: str,
        help: str | None = None,
        severity: Severity = Severity.ERROR,
    ) -> None: ...

    def _string(self, value: ast.Value, key: str) -> str: ...

    def _strings(self, value: ast.Value, key: str) -> tuple[str, ...]: ...

    def _url(self, value: ast.Value, key: str) -> str: ...


def mode(checker: _Checker, entries: Mapping[str, ast.Setting]) -> str:
    """The block's `validate`; "userinfo" when absent (or wrong, which is reported)."""
    if "validate" not in entries:
        return "userinfo"
    value = entries["validate"].value
    try:
        text = checker._string(value, "validate")
    except checker.invalid:  # already reported by the checker
        return "userinfo"
    if text not in MODES:
        checker.report(
            value.span,
            "PA130",
            f'`validate` is "userinfo", "jwt" or "introspection", not "{text[:40]}"',
            'JWT access tokens: `validate = "jwt"`; opaque tokens of an RFC 7662 server: '
            '`validate = "introspection"`',
        )
        return "userinfo"
    return text


def preset_in_mode(
    checker: _Checker, decl: ast.ProviderDecl, preset: Preset | None, mode: str
) -> Preset | None:
    """The preset as this mode sees it: in jwt mode its jwt parameters and claim map; in
    introspection mode its introspection endpoint. A preset without that mode is PA137."""
    if preset is None or mode == "userinfo":
        return preset
    if mode == "jwt":
        if preset.jwt is None:
            checker.report(
                decl.name.span,
                "PA137",
                f"preset `{preset.name}` has no jwt mode: its access tokens are not JWTs",
                "presets with a jwt mode: azure-ad, cognito, okta, auth0, keycloak, oidc",
            )
            return None
        return attrs.evolve(
            preset,
            userinfo=(),
            required=preset.jwt.required,
            optional=preset.jwt.optional,
            claims=preset.jwt.claims,
            audience=Audience.NONE,
            discovery=False,
        )
    if preset.audience is not Audience.INTROSPECTION:
        checker.report(
            decl.name.span,
            "PA137",
            f"preset `{preset.name}` has no introspection mode (no RFC 7662 endpoint)",
            "presets with an introspection mode: keycloak, okta, oidc",
        )
        return None
    optional = tuple(p for p in preset.optional if p not in ("client_id", "client_secret"))
    return attrs.evolve(
        preset, userinfo=(), optional=optional, audience=Audience.NONE, discovery=False
    )


def extra_keys(mode: str, parameters: tuple[str, ...]) -> tuple[str, ...]:
    """Provider keys this mode adds to the preset's parameters."""
    keys = {"userinfo": ("validate",), "jwt": _JWT_KEYS, "introspection": _INTROSPECTION_KEYS}
    return tuple(k for k in keys[mode] if k not in parameters)


def is_validation_key(key: str) -> bool:
    return key in _ALL_KEYS


def spec_fields(
    checker: _Checker,
    decl: ast.ProviderDecl,
    entries: Mapping[str, ast.Setting],
    original: Preset | None,
    preset: Preset | None,
    mode: str,
    values: Mapping[str, str],
    declared_claims: Mapping[str, Any],
) -> dict[str, Any]:
    """The ProviderSpec fields of the block's mode (empty for userinfo)."""
    if mode == "userinfo":
        return {}
    block = f"provider `{decl.name.text}`"
    if "userinfo" in entries:
        checker.report(
            entries["userinfo"].key.span,
            "PA136",
            f'`userinfo` is not used with `validate = "{mode}"`',
            "remove it, or validate with userinfo",
        )
    audiences = _strings(checker, entries, "audience")
    fields: dict[str, Any] = {"validate": mode, "audiences": audiences}
    if mode == "jwt":
        fields.update(_jwt_fields(checker, decl, entries, original, preset, values, block))
        fields["fallbacks"] = tuple(
            (name, compile_claim_path(path))
            for name, path in (original.jwt.fallbacks if original and original.jwt else ())
            if name not in declared_claims
        )
    else:
        fields.update(_introspection_fields(checker, decl, entries, preset, values, block))
    return fields


def _jwt_fields(
    checker: _Checker,
    decl: ast.ProviderDecl,
    entries: Mapping[str, ast.Setting],
    original: Preset | None,
    preset: Preset | None,
    values: Mapping[str, str],
    block: str,
) -> dict[str, Any]:
    jwt = original.jwt if original is not None else None
    issuers: tuple[str, ...] = ()
    if "issuer" in entries and (preset is None or "issuer" not in preset.parameters):
        issuers = _urls(checker, entries["issuer"].value, "issuer")
    elif jwt is not None and preset is not None:
        issuers = tuple(
            url for template in jwt.issuers if (url := _fill(template, dict(values))) is not None
        )
    if not issuers and "issuer" not in entries and "preset" not in entries:
        checker.report(
            decl.name.span,
            "PA132",
            f"{block} validates JWTs but names no `issuer`",
            'add the exact `iss` of its tokens: `issuer = "https://sso.example.com/realms/x"`',
        )
    if "audience" not in entries:
        checker.report(
            decl.name.span,
            "PA131",
            f"{block} validates JWTs and needs `audience`",
            'name the audience your API\'s tokens carry, e.g. `audience = "reports-api"`; '
            "without it a token minted for any other application would pass",
        )
    jwks: str | None = None
    if "jwks" in entries:
        urls = _urls(checker, entries["jwks"].value, "jwks")
        jwks = urls[0] if urls else None
    elif jwt is not None and jwt.jwks:
        jwks = fill_template(jwt.jwks, dict(values))
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    if "algorithms" in entries:
        algorithms = _strings(checker, entries, "algorithms")
        for name in algorithms:
            if name not in KNOWN_ALGORITHMS:
                symmetric = name.upper() == "NONE" or name.upper().startswith("HS")
                checker.report(
                    entries["algorithms"].value.span,
                    "PA133",
                    f"`algorithms` cannot include `{name}`",
                    "`none` and HMAC algorithms are never accepted (a public key would be the "
                    "secret)"
                    if symmetric
                    else "known: " + ", ".join(sorted(KNOWN_ALGORITHMS)),
                )
    token_type = next(iter(_strings(checker, entries, "token_type")), None)
    return {
        "issuers": issuers,
        "issuer": issuers[0] if issuers else None,
        "jwks": jwks,
        "algorithms": algorithms,
        "audience_claim": jwt.audience_claim if jwt else "aud",
        "required_claims": jwt.required_claims if jwt else (),
        "token_type": token_type,
    }


def _introspection_fields(
    checker: _Checker,
    decl: ast.ProviderDecl,
    entries: Mapping[str, ast.Setting],
    preset: Preset | None,
    values: Mapping[str, str],
    block: str,
) -> dict[str, Any]:
    endpoint: str | None = None
    issuer = values.get("issuer")
    if "introspection" in entries:
        urls = _urls(checker, entries["introspection"].value, "introspection")
        endpoint = urls[0] if urls else None
    elif preset is not None and preset.audience_url:
        endpoint = fill_template(preset.audience_url, dict(values))
    if "issuer" in entries and issuer is None:
        urls = _urls(checker, entries["issuer"].value, "issuer")
        issuer = urls[0] if urls else None
    client: dict[str, str] = {}
    for key in ("client_id", "client_secret"):
        if key in entries:
            found = _strings(checker, entries, key)
            if found:
                client[key] = found[0]
    missing = [k for k in ("client_id", "client_secret") if k not in entries]
    if endpoint is None and "issuer" not in entries and (preset is None or not preset.required):
        missing.insert(0, "introspection")
    if missing:
        checker.report(
            decl.name.span,
            "PA135",
            f"{block} uses introspection and needs " + ", ".join(f"`{m}`" for m in missing),
            "RFC 7662 introspection authenticates as your client: set `client_id` and "
            "`client_secret`, and the endpoint (`introspection`, or `issuer` for discovery)",
        )
    return {
        "introspection": endpoint,
        "issuer": issuer,
        "client_id": client.get("client_id"),
        "client_secret": client.get("client_secret"),
    }


def _fill(template: str, values: dict[str, str]) -> str | None:
    """An issuer template filled in; `{issuer}` is taken as written, since `iss` is compared
    exactly (a trailing slash is part of it)."""
    if template == "{issuer}":
        return values.get("issuer")
    return fill_template((template,), values)


def _strings(checker: _Checker, entries: Mapping[str, ast.Setting], key: str) -> tuple[str, ...]:
    if key not in entries:
        return ()
    try:
        return checker._strings(entries[key].value, key)
    except checker.invalid:  # reported by the checker
        return ()


def _urls(checker: _Checker, value: ast.Value, key: str) -> tuple[str, ...]:
    items = value.items if isinstance(value, ast.ListValue) else (value,)
    urls = []
    for item in items:
        with contextlib.suppress(checker.invalid):  # reported by the checker
            urls.append(checker._url(item, key))
    return tuple(urls)


def route_issuer_clashes(
    names: Iterable[str], providers: Mapping[str, ProviderSpec]
) -> Iterator[tuple[str, str, str]]:
    """PA134 (code, message, help) for a route that accepts `names`: a JWT goes to the jwt
    provider whose issuer is its `iss`; two such providers on one route with a shared issuer
    could not be told apart."""
    owners: dict[str, str] = {}
    for name in dict.fromkeys(names):
        spec = providers.get(name)
        if spec is None or spec.validate != "jwt":
            continue
        for issuer in spec.issuers:
            if issuer in owners and owners[issuer] != name:
                yield (
                    "PA134",
                    f"jwt providers `{owners[issuer]}` and `{name}` on this route share the "
                    f"issuer `{issuer[:80]}`",
                    "a JWT goes to the one provider whose `issuer` is its `iss`; merge the two "
                    "providers (`audience` takes a list), or split the route",
                )
            owners.setdefault(issuer, name)


def non_jwt(specs: list[ProviderSpec]) -> list[ProviderSpec]:
    """The providers routed by prefix: jwt providers are routed by issuer instead."""
    return [s for s in specs if s.validate != "jwt"]


# --- lint rules (warnings) ---------------------------------------------------------------------

Finding = tuple[Span, str, str, str | None]


def introspection_without_audience(
    policy: ast.Policy, model: CheckedPolicy | None
) -> Iterator[Finding]:
    """PA208: an introspection provider without `audience`.

    Introspection says a token is active, not that it was issued for this API: any client of
    the server could present its own token. Name the audience (`aud`) your API's tokens carry.
    """
    if model is None:
        return
    for spec in model.providers.values():
        if spec.validate == "introspection" and not spec.audiences:
            yield (
                spec.span,
                "PA208",
                f"provider `{spec.name}` accepts active tokens issued for any audience",
                'set `audience = "..."` to the `aud` your API\'s tokens carry',
            )


def id_tokens_accepted(policy: ast.Policy, model: CheckedPolicy | None) -> Iterator[Finding]:
    """PA209: a jwt provider that would take an ID token as an access token.

    An ID token is issued to a client (its `aud` is the client id); sent to an API whose
    `audience` is that client id it would pass. Issuers that follow RFC 9068 mark access tokens
    with the header `typ: at+jwt`: set `token_type = "at+jwt"`. Presets whose provider marks
    them otherwise (Cognito's `token_use`, Keycloak's `typ` claim) check that themselves; for
    Entra ID, Okta and Auth0 nothing in the token tells them apart reliably, so no warning.
    """
    if model is None:
        return
    for spec in model.providers.values():
        if (
            spec.validate == "jwt"
            and spec.token_type is None
            and not spec.required_claims
            and spec.preset in (None, "oidc")
        ):
            yield (
                spec.span,
                "PA209",
                f"provider `{spec.name}` would accept an ID token as an access token",
                'if the issuer marks access tokens (RFC 9068), set `token_type = "at+jwt"`',
            )


def claim_paths(spec: ProviderSpec) -> tuple[tuple[str, ClaimPath], ...]:
    """Every claim path of a provider, its fallbacks included (for `inspect`)."""
    return spec.claims + spec.fallbacks
