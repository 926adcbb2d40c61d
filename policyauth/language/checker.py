"""Semantic checks: everything about a policy that parses but cannot mean what it says.

The checker walks the AST once, collects every error (it never stops at the first), and on the
way builds the CheckedPolicy the compiler needs: settings and env() values resolved, presets
merged into provider blocks, claim paths compiled, expression types checked, and routes entered
into the route index (which is how duplicate and unreachable routes are found in linear time).

Codes are stable (PA1xx); docs/language.md lists them with an example each.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import attrs

from policyauth.diagnostics import Diagnostic, Severity, Span
from policyauth.language import ast, fleet_checks, validation_checks
from policyauth.language.claimpath import ClaimPath, ClaimPathError, compile_claim_path
from policyauth.language.durations import parse_duration
from policyauth.language.labels import label_problems
from policyauth.language.model import CheckedPolicy, Outbound, ProviderSpec, Settings, TokensSpec
from policyauth.language.observe_settings import decision_log
from policyauth.language.outbound import OUTBOUND_KEYS, resolve_outbound
from policyauth.language.presets import (
    PRESETS,
    Audience,
    Preset,
    TokenTransport,
    fill_template,
    userinfo_url,
)
from policyauth.language.regex import RegexError, compile_regex
from policyauth.language.routing import RouteIndex, method_set
from policyauth.language.shadowing import OverlapCollector, public_shadowing
from policyauth.language.sizes import parse_size
from policyauth.language.urls import is_loopback

# Types of expression operands, as far as they are known at load time.
STRING, NUMBER, BOOL, LIST = "string", "number", "boolean", "list"
SCALAR = "single value"  # a claim that is not a list: its JSON type is only known at run time
ANY = "value"  # a claim that is a list for one authenticator and a single value for another

_KNOWN_SCALARS = {STRING, NUMBER, BOOL}
_PROVIDER_KEYS = ("preset", "userinfo", "headers", "token_prefix")
_RESERVED_HEADERS = {"authorization", "host", "content-length", "transfer-encoding", "cookie"}
_RESERVED_CLAIMS = ("provider", "method", "path", "param")
_TOKENS_DECLARES = (("username", STRING), ("groups", LIST))

_OUTBOUND_PROVIDER_KEYS = (*OUTBOUND_KEYS, "insecure_http")  # outbound.py


class _Invalid(Exception):
    """A value that could not be resolved; already reported."""


@attrs.frozen
class _RouteContext:
    claims: Mapping[str, str]
    authenticators: tuple[str, ...]
    params: frozenset[str]
    success: bool = False  # checking a provider's `success`, which reads the raw response
    # False when an authenticator of the route is unknown or failed its own checks: its claims
    # cannot be known, and an undeclared claim would only repeat that error.
    complete: bool = True


def check(
    policy: ast.Policy,
    *,
    source: str,
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> tuple[CheckedPolicy | None, list[Diagnostic]]:
    """Check `policy`; the model is None when any error was found."""
    checker = _Checker(policy, source, os.environ if env is None else env, base_dir)
    model = checker.run()
    return (None if checker.failed else model), checker.diagnostics


class _Checker:
    invalid = _Invalid  # for validation_checks, which reads values through this checker

    def __init__(
        self, policy: ast.Policy, source: str, env: Mapping[str, str], base_dir: Path | None
    ) -> None:
        self.policy = policy
        self.source = source
        self.env = env
        self.base_dir = base_dir
        self.diagnostics: list[Diagnostic] = []
        self.overlaps = OverlapCollector()
        self.outbound = _NO_OUTBOUND  # the settings' outbound values, every provider's defaults
        # The claims a route's rules can read depend only on its `auth` list: routes that
        # share one share the (read-only) answer. One load only, never across loads.
        self.route_claims: dict[tuple[str, ...], Mapping[str, str]] = {}
        # The same for PA134 and PA118, which depend only on the `auth` list (one load only).
        self.route_auth_findings: dict[tuple[str, ...], tuple[tuple[str, str, str], ...]] = {}

    @property
    def failed(self) -> bool:
        return any(d.is_error for d in self.diagnostics)

    def report(
        self,
        span: Span,
        code: str,
        message: str,
        help: str | None = None,
        severity: Severity = Severity.ERROR,
    ) -> None:
        self.diagnostics.append(
            Diagnostic.at(span, code, message, help=help, severity=severity, source=self.source)
        )

    # --- the whole policy ------------------------------------------------------------------------

    def run(self) -> CheckedPolicy:
        settings_blocks = [d for d in self.policy.declarations if isinstance(d, ast.SettingsDecl)]
        for extra in settings_blocks[1:]:
            self.report(
                extra.span,
                "PA119",
                "a policy has at most one `settings` block",
                "merge this block into the first one",
            )
        settings = self._settings(settings_blocks[0]) if settings_blocks else _DEFAULTS

        seen: dict[str, Span] = {}
        providers: dict[str, ProviderSpec] = {}
        tokens: dict[str, TokensSpec] = {}
        for decl in self.policy.declarations:
            if not isinstance(decl, ast.ProviderDecl | ast.TokensDecl):
                continue
            name = decl.name
            if name.text in seen:
                self.report(
                    name.span,
                    "PA101",
                    f"`{name.text}` is already declared at line {seen[name.text].line}",
                    "providers and tokens blocks share one namespace; rename one of them",
                )
                continue
            seen[name.text] = name.span
            if isinstance(decl, ast.ProviderDecl):
                provider = self._provider(decl)
                if provider is not None:
                    providers[name.text] = provider
            else:
                store = self._tokens(decl)
                if store is not None:
                    tokens[name.text] = store

        routes = tuple(d for d in self.policy.declarations if isinstance(d, ast.RouteDecl))
        index = RouteIndex()
        declared = set(seen)  # read by every route, changed by none
        for route in routes:
            self._route(route, index, providers, tokens, declared)
        for span, code, message, help in public_shadowing(routes, self.overlaps.overlaps):
            self.report(span, code, message, help)
        return CheckedPolicy(
            self.policy.file,
            settings,
            providers,
            tokens,
            routes,
            index,
            self.source,
            self.policy.comments,
            tuple(self.overlaps.overlaps),
        )

    # --- values ----------------------------------------------------------------------------------

    def _string(self, value: ast.Value, key: str) -> str:
        if isinstance(value, ast.StringValue):
            return value.value
        if isinstance(value, ast.EnvValue):
            name = value.name.value
            if name in self.env:
                return self.env[name]
            if value.default is not None:
                return value.default.value
            self.report(
                value.span,
                "PA107",
                f"environment variable `{name}` is not set",
                f'set it, or give a default: env("{name}", "...")',
            )
            raise _Invalid
        return self._wrong_type(value, key, "a string")  # type: ignore[no-any-return]

    def _wrong_type(self, value: ast.Value, key: str, expected: str) -> Any:
        self.report(value.span, "PA104", f"`{key}` takes {expected}, not {_describe(value)}")
        raise _Invalid

    def _duration(self, value: ast.Value, key: str, *, zero: bool) -> int:
        if isinstance(value, ast.DurationValue):
            milliseconds = value.milliseconds
        elif isinstance(value, ast.EnvValue):
            text = self._string(value, key)
            parsed = parse_duration(text)
            if parsed is None:
                self.report(
                    value.span,
                    "PA104",
                    f"`{key}` takes a duration; environment value `{text[:40]}` is not one",
                    "write a whole number and a unit: `30s`, `5m`",
                )
                raise _Invalid
            milliseconds = parsed
        else:
            self._wrong_type(value, key, "a duration such as `30s`")
        if milliseconds == 0 and not zero:
            self.report(value.span, "PA104", f"`{key}` must be longer than zero")
            raise _Invalid
        return milliseconds

    def _size(self, value: ast.Value, key: str) -> int:
        """Bytes for a size setting: a `64MB` literal, or an env() value written the same way."""
        if isinstance(value, ast.SizeValue):
            size = value.bytes
        elif isinstance(value, ast.EnvValue):
            text = self._string(value, key)
            parsed = parse_size(text)
            if parsed is None:
                self.report(
                    value.span,
                    "PA171",
                    f"`{key}` takes a size; environment value `{text[:40]}` is not one",
                    "write a whole number and KB, MB or GB: `64MB`",
                )
                raise _Invalid
            size = parsed
        else:
            self._wrong_type(value, key, "a size such as `64MB`")
        if size == 0:
            self.report(value.span, "PA172", f"`{key}` must be larger than zero")
            raise _Invalid
        return size

    def _count(self, value: ast.Value, key: str) -> int:
        if isinstance(value, ast.NumberValue) and isinstance(value.value, int) and value.value > 0:
            return value.value
        if isinstance(value, ast.NumberValue):  # "not a number" would say the opposite
            self.report(
                value.span, "PA104", f"`{key}` takes a whole number above zero, not {value.text}"
            )
            raise _Invalid
        return self._wrong_type(value, key, "a whole number above zero")  # type: ignore[no-any-return]

    def _url(self, value: ast.Value, key: str, *, insecure: bool = False) -> str:
        url = self._string(value, key)
        try:
            parts = urlsplit(url)
            host = parts.hostname
            parts.port  # noqa: B018 - raises ValueError for a port out of range
        except ValueError:
            host = None
        if not host or parts.scheme not in ("http", "https"):
            self.report(
                value.span,
                "PA122",
                f"`{key}` is not a valid URL: `{url[:80]}`",
                "write an absolute URL: `https://host/path`",
            )
            raise _Invalid
        if parts.scheme == "http":
            if not is_loopback(host) and insecure:
                self.report(
                    value.span,
                    "PA206",
                    f"`{key}` uses plain http to `{host}` (`insecure_http = true`)",
                    "tokens cross the network in clear text: keep this to a private network, "
                    "and prefer https",
                    Severity.WARNING,
                )
                return url
            if not is_loopback(host):
                self.report(
                    value.span,
                    "PA115",
                    f"`{key}` must use https: `{url[:80]}`",
                    "tokens must never cross the network in clear text; http is allowed only "
                    "for loopback test providers",
                )
                raise _Invalid
            self.report(
                value.span,
                "PA201",
                f"`{key}` uses http on a loopback address",
                "fine for a local test provider; use https everywhere else",
                Severity.WARNING,
            )
        return url

    def _strings(self, value: ast.Value, key: str) -> tuple[str, ...]:
        if isinstance(value, ast.ListValue):
            return tuple(self._string(item, key) for item in value.items)
        return (self._string(value, key),)

    def _header_map(self, value: ast.Value, key: str) -> tuple[tuple[str, str], ...]:
        if not isinstance(value, ast.MapValue):
            return self._wrong_type(value, key, 'a map such as `{ "Accept": "application/json" }`')  # type: ignore[no-any-return]
        headers = []
        for name, item in value.items:
            if name.value.lower() in _RESERVED_HEADERS or not _is_token(name.value):
                self.report(
                    name.span,
                    "PA104",
                    f"`headers` cannot set `{name.value}`",
                    "policyauth sends the token itself; other headers must be valid names",
                )
                raise _Invalid
            headers.append((name.value, self._string(item, f"headers.{name.value}")))
        return tuple(headers)

    # --- blocks ----------------------------------------------------------------------------------

    def _entries(
        self, entries: Iterable[ast.ProviderEntry], block: str
    ) -> tuple[dict[str, ast.Setting], dict[str, ast.ClaimDecl], ast.SuccessDecl | None]:
        settings: dict[str, ast.Setting] = {}
        claims: dict[str, ast.ClaimDecl] = {}
        success: ast.SuccessDecl | None = None
        for entry in entries:
            if isinstance(entry, ast.SuccessDecl):
                if success is not None:
                    self.report(entry.span, "PA120", f"`success` is set twice in {block}")
                success = entry
                continue
            key = entry.key if isinstance(entry, ast.Setting) else entry.name
            if key.text in settings or key.text in claims:
                self.report(key.span, "PA120", f"`{key.text}` is set twice in {block}")
                continue
            if isinstance(entry, ast.Setting):
                settings[key.text] = entry
            else:
                claims[key.text] = entry
        return settings, claims, success

    def _unknown_key(self, key: ast.Name, block: str, known: Iterable[str], help: str) -> None:
        guess = difflib.get_close_matches(key.text, list(known), n=1)
        self.report(
            key.span,
            "PA102",
            f"unknown key `{key.text}` in {block}",
            f"did you mean `{guess[0]}`?" if guess else help,
        )

    def _settings(self, decl: ast.SettingsDecl) -> Settings:
        entries, _claims, _ = self._entries(decl.entries, "`settings`")
        keys = _SETTING_READERS
        values: dict[str, Any] = {}
        for key, setting in entries.items():
            if key not in keys:
                self._unknown_key(
                    setting.key, "`settings`", keys, "settings are " + ", ".join(keys)
                )
                continue
            with contextlib.suppress(_Invalid):
                values[key] = keys[key](self, setting.value, key)
        defaults = _DEFAULTS
        self.outbound = self._outbound(entries, values, _NO_OUTBOUND)
        realm = values.get("realm", defaults.realm)
        if '"' in realm or "\\" in realm or not realm.isprintable():
            self.report(
                entries["realm"].value.span,
                "PA104",
                "`realm` cannot hold quotes, "
                "backslashes or control characters (it is sent in a header)",
            )
        return Settings(
            realm=realm,
            cache_ttl_ms=values.get("cache_ttl", defaults.cache_ttl_ms),
            negative_ttl_ms=values.get("negative_ttl", defaults.negative_ttl_ms),
            timeout_ms=values.get("timeout", defaults.timeout_ms),
            max_path=values.get("max_path", defaults.max_path),
            store_grace_ms=values.get("store_grace", defaults.store_grace_ms),
            outbound=self.outbound,
            clock_skew_ms=values.get("clock_skew", defaults.clock_skew_ms),
            decision_log=decision_log(self, entries, values.get("decision_log", "off")),
            cache_size=values.get("cache_size", defaults.cache_size),
            **fleet_checks.cache_settings(self, decl, entries, values),
        )

    def _tokens(self, decl: ast.TokensDecl) -> TokensSpec | None:
        block = f"tokens `{decl.name.text}`"
        entries, _, _ = self._entries(decl.entries, block)
        for key, setting in entries.items():
            if key != "store":
                self._unknown_key(setting.key, block, ["store"], "a tokens block has only `store`")
        if "store" not in entries:
            self.report(
                decl.name.span,
                "PA103",
                f"{block} needs a `store`",
                'add `store = "NAME.tokens"`, a file managed with `policyauth token`',
            )
            return None
        try:
            store = self._string(entries["store"].value, "store")
        except _Invalid:
            return None
        if fleet_checks.is_store_url(store):  # a database, not a file (production.md 2)
            if not fleet_checks.token_store_url(self, entries["store"].value, store):
                return None
            return TokensSpec(decl.name.text, decl.name.span, store)
        return TokensSpec(decl.name.text, decl.name.span, _store_path(store, self.base_dir))

    def _provider(self, decl: ast.ProviderDecl) -> ProviderSpec | None:
        block = f"provider `{decl.name.text}`"
        entries, claim_decls, success_decl = self._entries(decl.entries, block)
        errors_before = len(self.diagnostics)
        mode = validation_checks.mode(self, entries)
        original = self._preset(entries)
        preset = validation_checks.preset_in_mode(self, decl, original, mode)
        parameters = preset.parameters if preset else ()
        known = (
            _PROVIDER_KEYS
            + _OUTBOUND_PROVIDER_KEYS
            + parameters
            + validation_checks.extra_keys(mode, parameters)
        )
        for key, setting in entries.items():
            if key not in known:
                self._unknown_provider_key(setting, block, known, preset)
        for name, claim in claim_decls.items():
            if name in _RESERVED_CLAIMS:
                self.report(
                    claim.name.span,
                    "PA125",
                    f"`{name}` cannot be a claim name: in rules it reads the request",
                    "rename the claim, e.g. `"
                    + ("home_" if name == "path" else "user_")
                    + f"{name} = {claim.path.text}`",
                )
            elif name in known or name in _all_parameters():
                self.report(
                    claim.path.span,
                    "PA104",
                    f"`{name}` is a setting, not a claim: it takes a string",
                    f'write `{name} = "..."`',
                )

        values: dict[str, str] = {}
        for key in parameters:
            if key in entries:
                with contextlib.suppress(_Invalid):
                    values[key] = self._string(entries[key].value, key)
        if preset is not None:
            missing = [p for p in preset.required if p not in entries]
            for parameter in missing:
                self.report(
                    decl.name.span,
                    "PA106",
                    f"preset `{preset.name}` needs `{parameter}` in {block}",
                    f"required parameters: {', '.join(preset.required)}",
                )

        insecure = self._insecure_http(entries)
        userinfo, issuer = None, None
        if mode == "userinfo" or preset is not None:
            userinfo, issuer = self._endpoint(decl, entries, preset, values, insecure=insecure)
        outbound = self._provider_outbound(entries, insecure, (userinfo, issuer, *values.values()))
        headers = self._headers(entries, preset)
        # `username` written with a value that is not a path, or an unknown preset (whose
        # claims cannot be known), is already an error; PA116 would only repeat it.
        username_reported = "username" in entries or ("preset" in entries and preset is None)
        claims = self._claims(decl, claim_decls, preset, username_reported)
        success = self._success(success_decl, preset)
        token_prefix: tuple[str, ...] = preset.token_prefix if preset else ()
        if "token_prefix" in entries:
            with contextlib.suppress(_Invalid):
                token_prefix = self._strings(entries["token_prefix"].value, "token_prefix")
            for prefix in token_prefix:
                if not prefix or prefix.startswith("pa_"):
                    self.report(
                        entries["token_prefix"].value.span,
                        "PA104",
                        f"`token_prefix` cannot be `{prefix}`",
                        "prefixes must be non-empty; `pa_` belongs to policyauth's API tokens",
                    )
        audience, audience_url = (
            self._audience(decl, preset, values) if mode == "userinfo" else (Audience.NONE, None)
        )
        validation = validation_checks.spec_fields(
            self, decl, entries, original, preset, mode, values, claim_decls
        )
        if len(self.diagnostics) > errors_before and any(
            d.is_error for d in self.diagnostics[errors_before:]
        ):
            return None
        spec = ProviderSpec(
            name=decl.name.text,
            span=decl.name.span,
            preset=preset.name if preset else None,
            userinfo=userinfo,
            issuer=issuer,
            method=preset.method if preset else "GET",
            transport=preset.transport if preset else TokenTransport.HEADER,
            headers=headers,
            success=success,
            claims=claims,
            token_prefix=token_prefix,
            client_id=values.get("client_id"),
            client_secret=values.get("client_secret"),
            audience=audience,
            audience_url=audience_url,
            outbound=outbound,
        )
        # A userinfo provider (the usual one) has no mode fields: no copy of the spec.
        return attrs.evolve(spec, **validation) if validation else spec

    def _audience(
        self, decl: ast.ProviderDecl, preset: Preset | None, values: Mapping[str, str]
    ) -> tuple[Audience, str | None]:
        """The audience check in force: the preset's, once `client_id` (and, where the check
        authenticates as the client, `client_secret`) is given."""
        if preset is None or preset.audience is Audience.NONE or "client_id" not in values:
            return Audience.NONE, None
        if preset.audience_needs_secret and "client_secret" not in values:
            self.report(
                decl.name.span,
                "PA106",
                f"preset `{preset.name}` needs `client_secret` with `client_id` to check "
                "which client a token was issued to",
                'add `client_secret = env("...")`, or remove `client_id`',
            )
            return Audience.NONE, None
        return preset.audience, fill_template(preset.audience_url, dict(values))

    def _preset(self, entries: Mapping[str, ast.Setting]) -> Preset | None:
        if "preset" not in entries:
            return None
        value = entries["preset"].value
        try:
            name = self._string(value, "preset")
        except _Invalid:
            return None
        if name in PRESETS:
            return PRESETS[name]
        guess = difflib.get_close_matches(name, list(PRESETS), n=1)
        self.report(
            value.span,
            "PA105",
            f"unknown preset `{name}`",
            f"did you mean `{guess[0]}`?" if guess else "presets: " + ", ".join(sorted(PRESETS)),
        )
        return None

    def _unknown_provider_key(
        self, setting: ast.Setting, block: str, known: tuple[str, ...], preset: Preset | None
    ) -> None:
        key = setting.key.text
        owners = sorted(p.name for p in PRESETS.values() if key in p.parameters)
        if owners and preset is not None:
            help = (
                f"`{key}` is a parameter of preset {', '.join(owners)}; `{preset.name}` takes "
                + (", ".join(preset.parameters) or "no parameters")
            )
        elif owners:
            help = f"`{key}` is a parameter of preset {', '.join(owners)}; set `preset` first"
        elif isinstance(setting.value, ast.StringValue) and setting.value.value.startswith("$"):
            # `username = "$.sub"`: a claim whose path was quoted, not an unknown key.
            self.report(
                setting.value.span,
                "PA104",
                f"claim `{key}` takes a claim path, not a string",
                f"claim paths are written without quotes: `{key} = {setting.value.value}`",
            )
            return
        elif key in _claim_names():
            self.report(
                setting.value.span,
                "PA104",
                f"claim `{key}` takes a claim path, not {_describe(setting.value)}",
                f"write the path of the field in the userinfo response: `{key} = $.field`",
            )
            return
        else:
            help = f"claims are declared with a path: `{key} = $.field`"
        self._unknown_key(setting.key, block, known, help)

    def _endpoint(
        self,
        decl: ast.ProviderDecl,
        entries: Mapping[str, ast.Setting],
        preset: Preset | None,
        values: dict[str, str],
        *,
        insecure: bool = False,
    ) -> tuple[str | None, str | None]:
        for key in ("base_url", "issuer"):
            if key in values:
                try:
                    values[key] = self._url(entries[key].value, key, insecure=insecure)
                except _Invalid:
                    values.pop(key)
        if "userinfo" in entries:
            try:
                userinfo = self._url(entries["userinfo"].value, "userinfo", insecure=insecure)
                return userinfo, values.get("issuer")
            except _Invalid:
                return None, None
        if preset is None:
            if "preset" not in entries:
                self.report(
                    decl.name.span,
                    "PA103",
                    f"provider `{decl.name.text}` needs `preset` or `userinfo`",
                    'name a preset (`preset = "keycloak"`) or the userinfo URL',
                )
            return None, None
        if preset.discovery:
            return None, values.get("issuer")
        return userinfo_url(preset, values), None

    def _outbound(
        self, entries: Mapping[str, ast.Setting], values: Mapping[str, Any], defaults: Outbound
    ) -> Outbound:
        """The outbound keys of `settings` (outbound.py checks the files and the proxy)."""
        written = {k: (values[k], entries[k].value.span) for k in OUTBOUND_KEYS if k in values}
        return resolve_outbound(
            written, defaults=defaults, base_dir=self.base_dir, report=self.report
        )

    def _provider_outbound(
        self, entries: Mapping[str, ast.Setting], insecure: bool, urls: Iterable[str | None]
    ) -> Outbound:
        """A provider's outbound keys over the settings' ones; PA207 when its `insecure_http`
        lets no URL of the block use plain http (it would only let discovery downgrade)."""
        values: dict[str, str] = {}
        for key in OUTBOUND_KEYS:
            if key in entries:
                with contextlib.suppress(_Invalid):
                    values[key] = self._string(entries[key].value, key)
        outbound = self._outbound(entries, values, self.outbound)
        plain = [u for u in urls if u and urlsplit(u).scheme == "http"]
        if insecure and not any(not is_loopback(urlsplit(u).hostname or "") for u in plain):
            self.report(
                entries["insecure_http"].value.span,
                "PA207",
                "`insecure_http = true` is not needed: no URL of this provider uses plain http "
                "to another host",
                "remove it; it would also let a discovery document hand out plain-http endpoints",
                Severity.WARNING,
            )
        if outbound.insecure_http == insecure:  # frozen: the same value, without a copy
            return outbound
        return attrs.evolve(outbound, insecure_http=insecure)

    def _insecure_http(self, entries: Mapping[str, ast.Setting]) -> bool:
        if "insecure_http" not in entries:
            return False
        value = entries["insecure_http"].value
        if isinstance(value, ast.BoolValue):
            return value.value
        with contextlib.suppress(_Invalid):
            self._wrong_type(value, "insecure_http", "`true` or `false`")
        return False

    def _headers(
        self, entries: Mapping[str, ast.Setting], preset: Preset | None
    ) -> tuple[tuple[str, str], ...]:
        merged = {name.lower(): (name, value) for name, value in (preset.headers if preset else ())}
        if "headers" in entries:
            try:
                for name, value in self._header_map(entries["headers"].value, "headers"):
                    merged[name.lower()] = (name, value)
            except _Invalid:
                pass
        return tuple(merged.values())

    def _claims(
        self,
        decl: ast.ProviderDecl,
        claim_decls: Mapping[str, ast.ClaimDecl],
        preset: Preset | None,
        username_reported: bool = False,
    ) -> tuple[tuple[str, ClaimPath], ...]:
        claims: dict[str, ClaimPath] = {}
        for name, text in preset.claims if preset else ():
            claims[name] = compile_claim_path(text)
        for name, claim in claim_decls.items():
            path = self._claim_path(claim.path.text, claim.path.span)
            if path is not None:
                claims[name] = path
        if "username" not in claims and "username" not in claim_decls and not username_reported:
            self.report(
                decl.name.span,
                "PA116",
                f"provider `{decl.name.text}` declares no `username` claim",
                "add the field that holds the user name, e.g. `username = $.preferred_username`",
            )
        return tuple(claims.items())

    def _claim_path(self, text: str, span: Span) -> ClaimPath | None:
        try:
            return compile_claim_path(text)
        except ClaimPathError as exc:
            self.report(
                span,
                "PA108",
                f"invalid claim path `{text[:80]}`: {exc}",
                "claim paths look like `$.email`, `$.roles[*]` or `$['cognito:groups'][*]`",
            )
            return None

    def _success(self, decl: ast.SuccessDecl | None, preset: Preset | None) -> ast.Expr | None:
        if decl is not None:
            self._expr(decl.condition, _RouteContext({}, (), frozenset(), success=True))
            return decl.condition
        if preset is not None and preset.success is not None:
            path, expected = preset.success
            return ast.Compare(
                ast.CompareOp.EQ,
                ast.JsonPathRef(path, _NOWHERE),
                ast.Literal(expected, _NOWHERE),
                _NOWHERE,
            )
        return None

    # --- routes ----------------------------------------------------------------------------------

    def _route(
        self,
        route: ast.RouteDecl,
        index: RouteIndex,
        providers: Mapping[str, ProviderSpec],
        tokens: Mapping[str, TokensSpec],
        declared: set[str],
    ) -> None:
        methods = method_set([m.text for m in route.methods])
        covering = index.first_covering(route.pattern.segments, methods)
        if covering is not None:
            earlier = self._routes_in_order()[covering]
            if _same_route(earlier, route):
                self.report(
                    route.pattern.span,
                    "PA113",
                    f"duplicate route: line {earlier.span.line} has the same methods and pattern",
                    "remove one of them",
                )
            else:
                self.report(
                    route.pattern.span,
                    "PA114",
                    f"route is unreachable: the route at line {earlier.span.line} "
                    f"(`{_route_text(earlier)}`) matches every request it would",
                    "routes are tried in file order; move the more specific route first",
                )
        self.overlaps.visit(index, route.pattern.segments, methods, covered=covering is not None)
        index.add(route.pattern.segments, methods)

        if isinstance(route.body, ast.Public):
            return
        body = route.body
        names: list[str] = []
        for name in body.authenticators:
            if name.text in names:
                self.report(name.span, "PA121", f"`{name.text}` is listed twice in `auth`")
                continue
            names.append(name.text)
            if name.text not in declared:
                guess = difflib.get_close_matches(name.text, sorted(declared), n=1)
                if name.text in ("allow", "deny", "public"):
                    help = "`auth` is followed by the providers or tokens blocks it accepts, then "
                    help += "the rules: `auth NAME, ...` then `allow ...`"
                elif guess:
                    help = f"did you mean `{guess[0]}`?"
                else:
                    help = "declare it with `provider NAME { ... }` or `tokens NAME { ... }`"
                self.report(
                    name.span, "PA110", f"unknown provider or tokens block `{name.text}`", help
                )
        if ast.RuleKind.ALLOW not in [rule.kind for rule in body.rules]:
            self.report(
                route.span,
                "PA117",
                f"route `{_route_text(route)}` has no `allow` rule, so nothing can pass",
                "add `allow` (any authenticated caller) or `allow if ...`",
            )
        self._distinguishable(body, providers)
        for span, code, message, help in label_problems(route):
            self.report(span, code, message, help)

        context = _RouteContext(
            complete=all([n in providers or n in tokens for n in names]),
            claims=self._claims_of(names, providers, tokens),
            authenticators=tuple(names),
            params=frozenset(
                [s.text for s in route.pattern.segments if s.kind is ast.Segment.PARAM]
            ),
        )
        for rule in body.rules:
            if rule.condition is not None:
                self._expr(rule.condition, context)

    def _routes_in_order(self) -> tuple[ast.RouteDecl, ...]:
        return tuple(d for d in self.policy.declarations if isinstance(d, ast.RouteDecl))

    def _distinguishable(self, body: ast.Auth, providers: Mapping[str, ProviderSpec]) -> None:
        names = tuple(n.text for n in body.authenticators)
        found = self.route_auth_findings.get(names)
        if found is None:
            found = self.route_auth_findings[names] = self._auth_findings(names, providers)
        for code, message, help in found:
            self.report(body.span, code, message, help)

    def _auth_findings(
        self, names: tuple[str, ...], providers: Mapping[str, ProviderSpec]
    ) -> tuple[tuple[str, str, str], ...]:
        """PA134 and PA118 for a route that accepts `names`: whether a token finds its one
        provider among them."""
        found = list(validation_checks.route_issuer_clashes(names, providers))
        remote = [providers[n] for n in names if n in providers]
        remote = validation_checks.non_jwt(list({p.name: p for p in remote}.values()))
        for i, first in enumerate(remote):
            for second in remote[i + 1 :]:
                if _prefixes_overlap(first.token_prefix, second.token_prefix):
                    found.append(
                        (
                            "PA118",
                            f"providers `{first.name}` and `{second.name}` on this route "
                            "cannot be told apart by token prefix",
                            "a token is sent to one provider only; give each a distinct "
                            "`token_prefix`, or split the route",
                        )
                    )
        return tuple(found)

    def _claims_of(
        self,
        names: list[str],
        providers: Mapping[str, ProviderSpec],
        tokens: Mapping[str, TokensSpec],
    ) -> Mapping[str, str]:
        key = tuple(names)
        claims = self.route_claims.get(key)
        if claims is None:
            claims = self.route_claims[key] = self._route_claims(names, providers, tokens)
        return claims

    def _route_claims(
        self,
        names: list[str],
        providers: Mapping[str, ProviderSpec],
        tokens: Mapping[str, TokensSpec],
    ) -> dict[str, str]:
        kinds: dict[str, set[str]] = {}
        for name in names:
            if name in providers:
                for claim, path in providers[name].claims:
                    # A single `username` reaches rules as a string (identity/source.py).
                    kind = LIST if path.multi else STRING if claim == "username" else SCALAR
                    kinds.setdefault(claim, set()).add(kind)
            elif name in tokens:
                for claim, kind in _TOKENS_DECLARES:
                    kinds.setdefault(claim, set()).add(kind)
        result = {}
        for claim, found in kinds.items():
            if len(found) == 1:
                result[claim] = next(iter(found))
            elif LIST in found:
                result[claim] = ANY
            else:
                result[claim] = SCALAR
        return result

    # --- expressions -----------------------------------------------------------------------------

    def _expr(self, expr: ast.Expr, ctx: _RouteContext) -> None:
        if isinstance(expr, ast.Logical):
            for operand in expr.operands:
                self._expr(operand, ctx)
        elif isinstance(expr, ast.Not):
            self._expr(expr.operand, ctx)
        elif isinstance(expr, ast.Truth):
            kind = self._operand(expr.operand, ctx)
            if kind in (STRING, NUMBER, LIST):
                self.report(
                    expr.span,
                    "PA112",
                    f"a condition must be true or false; {_what(expr.operand)} is a {kind}",
                    'compare it: `claim == true`, `"x" in groups`',
                )
        elif isinstance(expr, ast.Has):
            self._has(expr, ctx)
        elif isinstance(expr, ast.Matches):
            kind = self._operand(expr.subject, ctx)
            if kind in (NUMBER, BOOL, LIST):
                self.report(
                    expr.span,
                    "PA112",
                    f"`matches` needs a string on the left; {_what(expr.subject)} is a {kind}",
                    "for a list, test membership with `in`" if kind == LIST else None,
                )
            try:
                compile_regex(expr.pattern)
            except RegexError as exc:
                self.report(
                    expr.pattern_span,
                    "PA109",
                    f"invalid regex `/{expr.pattern[:60]}/`: {exc}",
                    "regexes use RE2 syntax: no back-references or look-around",
                )
        else:
            self._compare(expr, ctx)

    def _has(self, expr: ast.Has, ctx: _RouteContext) -> None:
        """`has` takes a claim name; anything else is always present, or never a claim."""
        if isinstance(expr.operand, ast.ClaimRef):
            self._operand(expr.operand, ctx)  # undeclared (PA111) or outside rules (PA123)
            return
        self.report(
            expr.operand.span,
            "PA127",
            f"`has` tests whether the caller has a claim; {_what(expr.operand)} is not a claim",
            "write a claim name declared by this route's providers or tokens blocks: `has groups`",
        )

    def _compare(self, expr: ast.Compare, ctx: _RouteContext) -> None:
        left = self._operand(expr.left, ctx)
        right = self._operand(expr.right, ctx)
        op = expr.op

        def error(message: str, help: str | None = None) -> None:
            self.report(expr.span, "PA112", message, help)

        if op in (ast.CompareOp.EQ, ast.CompareOp.NE):
            if LIST in (left, right):
                listed, other = (expr.left, expr.right) if left == LIST else (expr.right, expr.left)
                error(
                    f"{_what(listed)} is a list and is never `{op.value}` a single value",
                    f"test membership instead: `{_source(other)} in {_source(listed)}`",
                )
            elif left in _KNOWN_SCALARS and right in _KNOWN_SCALARS and left != right:
                error(
                    f"{_what(expr.left)} is a {left} and {_what(expr.right)} is a {right}; "
                    f"they are never equal",
                    "policyauth never converts between types",
                )
            else:
                self._provider_name(expr, ctx)
        elif op in (ast.CompareOp.IN, ast.CompareOp.NOT_IN):
            if left == LIST:
                error(
                    f"the left side of `{op.value}` must be a single value; "
                    f"{_what(expr.left)} is a list"
                )
            if right in (STRING, NUMBER, BOOL, SCALAR):
                error(
                    f"`{op.value}` needs a list on the right; {_what(expr.right)} is a "
                    f"{right if right != SCALAR else 'single value'}",
                    self._list_path_help(expr.right, ctx)
                    or "`in` never searches inside strings; use `==`, `startswith`, `endswith` "
                    "or `matches`",
                )
        else:
            if left in (NUMBER, BOOL, LIST):
                error(f"`{op.value}` needs a string on the left; {_what(expr.left)} is a {left}")
            if right in (NUMBER, BOOL, LIST):
                error(f"`{op.value}` needs a string on the right; {_what(expr.right)} is a {right}")

    def _list_path_help(self, operand: ast.Operand, ctx: _RouteContext) -> str | None:
        """For a claim declared by a path without `[*]`: the newcomer's usual mistake is the
        path (it selects the list as one value), not the operator, so the help says `[*]`."""
        if not isinstance(operand, ast.ClaimRef):
            return None
        for decl in self.policy.declarations:
            if not isinstance(decl, ast.ProviderDecl) or decl.name.text not in ctx.authenticators:
                continue
            for entry in decl.entries:
                if isinstance(entry, ast.ClaimDecl) and entry.name.text == operand.name:
                    path = entry.path.text
                    if path.endswith("[*]"):
                        return None
                    return (
                        f"`{operand.name}` is declared `{path}`, which selects one value; if it "
                        f"holds a list, select its items: `{operand.name} = {path}[*]`"
                    )
        return None

    def _provider_name(self, expr: ast.Compare, ctx: _RouteContext) -> None:
        for ref, other in ((expr.left, expr.right), (expr.right, expr.left)):
            if (
                isinstance(ref, ast.BuiltinRef)
                and ref.builtin is ast.Builtin.PROVIDER
                and isinstance(other, ast.Literal)
                and isinstance(other.value, str)
                and other.value not in ctx.authenticators
            ):
                self.report(
                    other.span,
                    "PA112",
                    f"`provider` is never `{other.value}` on this route",
                    "this route authenticates with "
                    + ", ".join(f"`{a}`" for a in ctx.authenticators),
                )

    def _operand(self, operand: ast.Operand, ctx: _RouteContext) -> str:
        if isinstance(operand, ast.Literal):
            return _literal_type(operand.value)
        if isinstance(operand, ast.ListLiteral):
            return LIST
        if isinstance(operand, ast.JsonPathRef):
            if not ctx.success:
                self.report(
                    operand.span,
                    "PA123",
                    "claim paths can only be used in a provider's `success`",
                    "declare a claim in the provider block (`name = $.path`) and use its name",
                )
            else:
                self._claim_path(operand.text, operand.span)
            return ANY
        if ctx.success:
            self.report(
                operand.span,
                "PA123",
                f"`success` reads the userinfo response; {_what(operand)} is not available there",
                "use claim paths such as `$.ok` and literals",
            )
            return ANY
        if isinstance(operand, ast.BuiltinRef):
            return STRING
        if isinstance(operand, ast.ParamRef):
            if operand.name not in ctx.params:
                self.report(
                    operand.span,
                    "PA124",
                    f"`param.{operand.name}` is not captured by this route's pattern",
                    "capture it with `{" + operand.name + "}` in the pattern"
                    if not ctx.params
                    else "the pattern captures " + ", ".join(f"`{p}`" for p in sorted(ctx.params)),
                )
            return STRING
        if operand.name in ctx.claims:
            return ctx.claims[operand.name]
        if not ctx.complete:
            return ANY
        guess = difflib.get_close_matches(operand.name, list(ctx.claims), n=1)
        declared_by = ", ".join(f"`{a}`" for a in ctx.authenticators) or "no authenticator"
        self.report(
            operand.span,
            "PA111",
            f"claim `{operand.name}` is not declared by {declared_by}",
            f"did you mean `{guess[0]}`?"
            if guess
            else f"declare it in a provider block (`{operand.name} = $.path`), or write a "
            f'string in quotes: `"{operand.name}"`',
        )
        return ANY


# --- helpers --------------------------------------------------------------------------------------

_NOWHERE = Span("<preset>", 1, 1, 1, 1)
# Frozen values, made once: the defaults a `settings` block falls back to (a load used to
# build them anew to read them).
_DEFAULTS = Settings()
_NO_OUTBOUND = Outbound()


def _literal_type(value: object) -> str:
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int | float):
        return NUMBER
    return STRING


def _describe(value: ast.Value) -> str:
    names = {
        ast.StringValue: "a string",
        ast.NumberValue: "a number",
        ast.BoolValue: "a boolean",
        ast.DurationValue: "a duration",
        ast.SizeValue: "a size",
        ast.EnvValue: "an env() value",
        ast.JsonPathValue: "a claim path",
        ast.ListValue: "a list",
        ast.MapValue: "a map",
    }
    return names[type(value)]


def _what(operand: ast.Operand) -> str:
    return f"`{_source(operand)}`"


def _source(operand: ast.Operand) -> str:
    if isinstance(operand, ast.Literal):
        if isinstance(operand.value, bool):
            return "true" if operand.value else "false"
        if isinstance(operand.value, str):
            return '"' + operand.value + '"'
        return str(operand.value)
    if isinstance(operand, ast.ListLiteral):
        return "[" + ", ".join(_source(i) for i in operand.items) + "]"
    if isinstance(operand, ast.ClaimRef):
        return operand.name
    if isinstance(operand, ast.BuiltinRef):
        return operand.builtin.value
    if isinstance(operand, ast.ParamRef):
        return f"param.{operand.name}"
    return operand.text


def _route_text(route: ast.RouteDecl) -> str:
    methods = ", ".join(m.text for m in route.methods) or "*"
    return f"{methods} {route.pattern.text}"


def _same_route(a: ast.RouteDecl, b: ast.RouteDecl) -> bool:
    def shape(route: ast.RouteDecl) -> tuple[object, ...]:
        return tuple(
            (s.kind, s.text if s.kind is ast.Segment.LITERAL else "")
            for s in route.pattern.segments
        )

    methods_a = method_set([m.text for m in a.methods])
    methods_b = method_set([m.text for m in b.methods])
    return methods_a == methods_b and shape(a) == shape(b)


def _prefixes_overlap(first: tuple[str, ...], second: tuple[str, ...]) -> bool:
    if not first or not second:
        return True
    return any(a.startswith(b) or b.startswith(a) for a in first for b in second)


# Built once per process, not on every check: PRESETS is a constant table (issue 13: a load
# pays only for what its policy holds).
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
_ALL_PARAMETERS = frozenset(p for preset in PRESETS.values() for p in preset.parameters)
_CLAIM_NAMES = frozenset({"username", "groups"}) | frozenset(
    name for preset in PRESETS.values() for name, _ in preset.claims
)


# How each `settings` key is read, in the order the help lists them; a table built once per
# process rather than on every load (issue 13).
_SETTING_READERS: Mapping[str, Callable[[_Checker, ast.Value, str], Any]] = MappingProxyType(
    {
        "realm": _Checker._string,
        "cache_ttl": lambda c, v, k: c._duration(v, k, zero=True),
        "negative_ttl": lambda c, v, k: c._duration(v, k, zero=True),
        "timeout": lambda c, v, k: c._duration(v, k, zero=False),
        "max_path": _Checker._count,
        "store_grace": lambda c, v, k: c._duration(v, k, zero=True),
        **dict.fromkeys(OUTBOUND_KEYS, _Checker._string),
        "clock_skew": lambda c, v, k: c._duration(v, k, zero=True),
        "decision_log": _Checker._string,
        "cache_size": _Checker._size,
        "cache": _Checker._string,
        "cache_secret": _Checker._string,
    }
)


@functools.lru_cache(maxsize=256)
def _store_path(store: str, base_dir: Path | None) -> str:
    """A token store file's path: relative ones under `base_dir` when there is one. Cached
    (strings in, a string out): a policy reloaded from the same folder names the same stores,
    and the Path operations cost more than the rest of a tokens block's check."""
    path = Path(store)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return str(path)


def _is_token(name: str) -> bool:
    """An HTTP header name (RFC 9110 token)."""
    return bool(name) and _TOKEN_CHARS.issuperset(name)


def _all_parameters() -> frozenset[str]:
    return _ALL_PARAMETERS


def _claim_names() -> frozenset[str]:
    """Names that are claims wherever they appear: `username`, `groups`, the presets' claims."""
    return _CLAIM_NAMES
