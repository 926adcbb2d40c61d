"""The tables a load used to rebuild every time, now built once per process or once per load
(issue 13: loads of small policies paid for them on every call). Each test shows that what a
load reads from such a table is still what that load's own text and env say."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

import attrs
import pytest

import policyauth
from policyauth.language import checker
from policyauth.language.checker import check
from policyauth.language.model import Settings
from policyauth.language.parser import parse
from policyauth.language.presets import PRESETS

SETTINGS = 'settings {\n  realm   = env("REALM", "fallback")\n  timeout = env("T", "3s")\n}\n'
ROUTE = "route GET /a {\n  public\n}\n"


def test_settings_read_each_loads_own_env() -> None:
    """The reader table is shared by every load; the values come from each load's env."""
    first = policyauth.loads(SETTINGS + ROUTE, env={"REALM": "one", "T": "5s"})
    second = policyauth.loads(SETTINGS + ROUTE, env={"REALM": "two"})
    third = policyauth.loads(SETTINGS + ROUTE, env={})
    assert (first.settings.realm, first.settings.timeout_ms) == ("one", 5000)
    assert (second.settings.realm, second.settings.timeout_ms) == ("two", 3000)
    assert (third.settings.realm, third.settings.timeout_ms) == ("fallback", 3000)


def test_settings_reader_table_is_read_only() -> None:
    assert isinstance(checker._SETTING_READERS, MappingProxyType)
    with pytest.raises(TypeError):
        checker._SETTING_READERS["realm"] = checker._Checker._string  # type: ignore[index]


def test_unknown_settings_key_lists_the_keys_in_their_order() -> None:
    with pytest.raises(policyauth.PolicyError) as info:
        policyauth.loads('settings {\n  colour = "red"\n}\n' + ROUTE, "p.policy", env={})
    (diagnostic,) = info.value.diagnostics
    assert (diagnostic.code, diagnostic.line, diagnostic.column) == ("PA102", 2, 3)
    assert diagnostic.message == "unknown key `colour` in `settings`"
    assert diagnostic.help is not None
    assert diagnostic.help.startswith("settings are realm, cache_ttl, negative_ttl, timeout,")
    assert diagnostic.help.endswith("clock_skew, decision_log, cache_size, cache, cache_secret")


def test_preset_name_sets_match_the_presets_and_are_frozen() -> None:
    parameters = {p for preset in PRESETS.values() for p in preset.parameters}
    claims = {"username", "groups"} | {n for preset in PRESETS.values() for n, _ in preset.claims}
    assert checker._all_parameters() == parameters
    assert checker._claim_names() == claims
    assert isinstance(checker._all_parameters(), frozenset)
    assert isinstance(checker._claim_names(), frozenset)


def test_claim_named_like_a_preset_parameter_is_still_pa104() -> None:
    text = (
        'provider corp {\n  userinfo = "https://sso.example.com/userinfo"\n'
        "  username = $.sub\n  client_id = $.aud\n}\n" + ROUTE
    )
    with pytest.raises(policyauth.PolicyError) as info:
        policyauth.loads(text, "p.policy", env={})
    (diagnostic,) = info.value.diagnostics
    assert (diagnostic.code, diagnostic.line, diagnostic.column) == ("PA104", 4, 15)
    assert diagnostic.message == "`client_id` is a setting, not a claim: it takes a string"


PROVIDERS = """\
provider corp {
  userinfo = "https://sso.example.com/userinfo"
  token_prefix = "c."
  username = $.sub
  groups   = $.groups[*]
}

provider team {
  userinfo = "https://team.example.com/userinfo"
  token_prefix = "t."
  username = $.login
  groups   = $.team
}

"""  # eight lines, a blank one after: the first route starts on line 15


def test_routes_with_the_same_auth_list_each_report_their_own_claims() -> None:
    """The claims of an `auth` list are worked out once per load and shared by its routes;
    every route still reports its own problems, and another list gets its own claims."""
    text = PROVIDERS + (
        'route GET /a {\n  auth corp\n  allow if emial == "x"\n}\n'  # lines 15-18
        'route GET /b {\n  auth corp\n  allow if emial == "y"\n}\n'  # lines 19-22
    )
    with pytest.raises(policyauth.PolicyError) as info:
        policyauth.loads(text, "p.policy", env={})
    found = [(d.code, d.line, d.column, d.message) for d in info.value.diagnostics]
    assert found == [
        ("PA111", 17, 12, "claim `emial` is not declared by `corp`"),
        ("PA111", 21, 12, "claim `emial` is not declared by `corp`"),
    ]


def test_each_auth_list_gets_its_own_claim_kinds() -> None:
    """`groups` is a list from corp and a single value from team: `==` on it is PA112 on
    every `auth corp` route (the first and the third share one answer), not on `auth team`."""
    rule = '  allow if groups == "x"\n}\n'
    text = PROVIDERS + "".join(
        f"route GET /{path} {{\n  auth {auth}\n{rule}"
        for path, auth in (("a", "corp"), ("b", "team"), ("c", "corp"), ("d", "team"))
    )
    with pytest.raises(policyauth.PolicyError) as info:
        policyauth.loads(text, "p.policy", env={})
    found = [(d.code, d.line, d.column, d.message) for d in info.value.diagnostics]
    message = "`groups` is a list and is never `==` a single value"
    assert found == [("PA112", 17, 12, message), ("PA112", 25, 12, message)]


def test_insecure_http_only_where_written() -> None:
    text = (
        'provider a {\n  userinfo = "http://sso.internal/userinfo"\n  insecure_http = true\n'
        "  username = $.sub\n}\n"
        'provider b {\n  userinfo = "https://sso.example.com/userinfo"\n'
        "  username = $.sub\n}\n" + ROUTE
    )
    model, diagnostics = check(parse(text, "p.policy"), source=text, env={})
    assert model is not None
    assert [d.code for d in diagnostics] == ["PA206"]  # plain http, allowed, still a warning
    assert model.providers["a"].outbound.insecure_http is True
    assert model.providers["b"].outbound.insecure_http is False
    assert model.providers["b"].outbound == model.settings.outbound


def test_token_store_paths_follow_each_loads_base_dir(tmp_path: Path) -> None:
    """The store path is cached per (store, base_dir): loads from two folders, and one with
    the store's name in an env variable, each get their own path."""
    text = 'tokens api {\n  store = env("STORE", "api.tokens")\n}\n' + ROUTE

    def store(env: dict[str, str], base_dir: Path | None) -> str:
        model, _ = check(parse(text, "p.policy"), source=text, env=env, base_dir=base_dir)
        assert model is not None
        return model.tokens["api"].store

    one, two = tmp_path / "one", tmp_path / "two"
    assert store({}, one) == str(one / "api.tokens")
    assert store({}, two) == str(two / "api.tokens")
    assert store({"STORE": "other.tokens"}, one) == str(one / "other.tokens")
    assert store({"STORE": "/etc/pa/api.tokens"}, one) == "/etc/pa/api.tokens"
    assert store({"STORE": "./x//api.tokens"}, None) == "x/api.tokens"


def test_routes_sharing_an_auth_list_each_get_its_provider_findings() -> None:
    """PA118 is worked out once per `auth` list in a load; every route with that list still
    gets it at its own line, and a route with another list gets only its own findings."""
    providers = "".join(
        f'provider {name} {{\n  userinfo = "https://sso.example.com/{name}"\n'
        "  username = $.sub\n}\n"
        for name in ("a", "b", "c")
    )
    routes = (
        "route GET /one {\n  auth a, b\n  allow\n}\n"  # lines 13-16
        "route GET /two {\n  auth a, b\n  allow\n}\n"  # lines 17-20
        "route GET /three {\n  auth c\n  allow\n}\n"
        "route GET /four {\n  auth b, c\n  allow\n}\n"  # lines 25-28
    )
    with pytest.raises(policyauth.PolicyError) as info:
        policyauth.loads(providers + routes, "p.policy", env={})
    assert [(d.code, d.line, d.column, d.message) for d in info.value.diagnostics] == [
        (
            "PA118",
            14,
            3,
            "providers `a` and `b` on this route cannot be told apart by token prefix",
        ),
        (
            "PA118",
            18,
            3,
            "providers `a` and `b` on this route cannot be told apart by token prefix",
        ),
        (
            "PA118",
            26,
            3,
            "providers `b` and `c` on this route cannot be told apart by token prefix",
        ),
    ]


def test_default_settings_are_shared_frozen_values_no_load_changes() -> None:
    """The defaults a `settings` block falls back to are made once per process: a load that
    sets values gets its own, and later loads still see the defaults."""
    plain = policyauth.loads(ROUTE, env={})
    assert plain.settings == Settings()
    custom = policyauth.loads('settings {\n  timeout = 5s\n  realm = "r"\n}\n' + ROUTE, env={})
    assert (custom.settings.timeout_ms, custom.settings.realm) == (5000, "r")
    again = policyauth.loads(ROUTE, env={})
    assert again.settings == Settings()
    assert (again.settings.timeout_ms, again.settings.realm) == (3000, "policyauth")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        again.settings.outbound.insecure_http = True  # type: ignore[misc]
