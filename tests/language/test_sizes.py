"""Size literals and `settings { cache_size = 64MB }` (issue 13): KB, MB and GB are powers of
1024; malformed sizes, env() values that are not sizes and a zero size are diagnosed with their
place, and the policy's size reaches the identity cache unless `Engine(cache_size=)` says
otherwise."""

from __future__ import annotations

import pytest

import policyauth
from policyauth.language.formatter import format_policy
from policyauth.language.parser import parse

PROVIDER = """
provider corp {
  userinfo = "https://sso.example.com/userinfo"
  username = $.sub
}
"""


def settings(value: str) -> str:
    return f"settings {{\n  cache_size = {value}\n}}\n"


@pytest.mark.parametrize(
    ("text", "size"),
    [("64MB", 64 * 1024**2), ("1KB", 1024), ("2GB", 2 * 1024**3), ("1536KB", 1536 * 1024)],
)
def test_a_size_is_a_number_of_bytes_in_powers_of_1024(text: str, size: int) -> None:
    assert policyauth.loads(settings(text)).settings.cache_size == size


def test_without_a_size_the_default_applies() -> None:
    assert policyauth.loads(PROVIDER).settings.cache_size is None


@pytest.mark.parametrize("text", ["64mb", "64Mb", "1.5GB", "512B", "1kib", "3TB"])
def test_a_malformed_size_is_pa170_at_its_place(text: str) -> None:
    with pytest.raises(policyauth.PolicyError) as caught:
        policyauth.loads(settings(text), "t.policy")
    [diagnostic] = caught.value.diagnostics
    assert (diagnostic.code, diagnostic.line, diagnostic.column, diagnostic.message) == (
        "PA170",
        2,
        16,
        f"invalid size `{text}`",
    )
    assert diagnostic.help == "a size is a whole number and KB, MB or GB (powers of 1024): `64MB`"


def test_a_malformed_duration_is_still_pa006() -> None:
    with pytest.raises(policyauth.PolicyError) as caught:
        policyauth.loads("settings {\n  cache_ttl = 5min\n}\n")
    assert [d.code for d in caught.value.diagnostics] == ["PA006"]


def test_an_env_value_is_read_as_a_size() -> None:
    policy = policyauth.loads(settings('env("SIZE")'), env={"SIZE": "32MB"})
    assert policy.settings.cache_size == 32 * 1024**2


def test_an_env_value_that_is_not_a_size_is_pa171() -> None:
    with pytest.raises(policyauth.PolicyError) as caught:
        policyauth.loads(settings('env("SIZE")'), "t.policy", env={"SIZE": "lots"})
    [diagnostic] = caught.value.diagnostics
    assert (diagnostic.code, diagnostic.line, diagnostic.message) == (
        "PA171",
        2,
        "`cache_size` takes a size; environment value `lots` is not one",
    )


def test_a_zero_size_is_pa172() -> None:
    with pytest.raises(policyauth.PolicyError) as caught:
        policyauth.loads(settings("0MB"), "t.policy")
    [diagnostic] = caught.value.diagnostics
    assert (diagnostic.code, diagnostic.line, diagnostic.column, diagnostic.message) == (
        "PA172",
        2,
        16,
        "`cache_size` must be larger than zero",
    )


@pytest.mark.parametrize(("value", "kind"), [('"64MB"', "a string"), ("64", "a number")])
def test_another_kind_of_value_is_pa104(value: str, kind: str) -> None:
    with pytest.raises(policyauth.PolicyError) as caught:
        policyauth.loads(settings(value))
    [diagnostic] = caught.value.diagnostics
    assert (diagnostic.code, diagnostic.message) == (
        "PA104",
        f"`cache_size` takes a size such as `64MB`, not {kind}",
    )


def test_a_size_given_to_another_setting_is_named_as_a_size() -> None:
    with pytest.raises(policyauth.PolicyError) as caught:
        policyauth.loads("settings {\n  timeout = 64MB\n}\n")
    [diagnostic] = caught.value.diagnostics
    assert diagnostic.message == "`timeout` takes a duration such as `30s`, not a size"


def test_the_formatter_keeps_a_size_as_written() -> None:
    text = "settings {\n  cache_size   =   64MB\n}\n"
    formatted = format_policy(text)
    assert formatted == "settings {\n  cache_size = 64MB\n}\n"
    assert parse(formatted).declarations[0].entries[0].value.text == "64MB"  # type: ignore[union-attr]


def test_the_policy_bounds_the_identity_cache_and_the_engine_argument_wins() -> None:
    policy = policyauth.loads(settings("1MB") + PROVIDER)
    with policyauth.Engine(policy) as engine:
        assert engine._state.remote is not None
        assert engine._state.remote._cache._max_bytes == 1024**2
    with policyauth.Engine(policy, cache_size=2 * 1024**2) as engine:
        assert engine._state.remote is not None
        assert engine._state.remote._cache._max_bytes == 2 * 1024**2
