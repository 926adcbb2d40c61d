"""Outbound settings in policies (issue 9 item 11): `ca_file`, `client_cert`, `client_key`,
`proxy` in settings and providers, and `insecure_http` per provider. A file that cannot serve
is a load error with its location (PA128), a setting that cannot work too (PA129); plain http
by opt-in warns (PA206), and so does an opt-in nothing needs (PA207).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from policyauth import analyze
from policyauth.identity.userinfo import Response, judge_discovery
from policyauth.language.formatter import format_policy
from policyauth.language.model import Outbound


def openssl(folder: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A certificate with its key, a second key, an encrypted key, and a text file."""
    folder = tmp_path_factory.mktemp("pem")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl(folder, "req", "-x509", *ec, "-keyout", "a.key", "-out", "a.pem", "-subj", "/CN=a")
    openssl(folder, "req", "-x509", *ec, "-keyout", "b.key", "-out", "b.pem", "-subj", "/CN=b")
    openssl(folder, "pkey", "-in", "a.key", "-out", "locked.key", "-aes256", "-passout", "pass:x")
    (folder / "notes.txt").write_text("not a certificate\n")
    return folder


def provider(*lines: str, url: str = "https://sso.example.com/userinfo") -> str:
    body = "\n".join(f"  {line}" for line in lines)
    return f'provider corp {{\n  userinfo = "{url}"\n  username = $.sub\n{body}\n}}\n'


def codes(text: str, folder: Path) -> list[str]:
    _, diagnostics = analyze(text, "p.policy", env={}, base_dir=folder)
    return [d.one_line() for d in diagnostics]


def spec(text: str, folder: Path) -> Outbound:
    policy, diagnostics = analyze(text, "p.policy", env={}, base_dir=folder)
    assert policy is not None, [d.one_line() for d in diagnostics]
    return policy.providers["corp"].spec.outbound


# --- files ------------------------------------------------------------------------------------


def test_a_missing_ca_file_is_a_load_error_with_its_location(tmp_path: Path) -> None:
    assert codes(provider('ca_file = "corp-ca.pem"'), tmp_path) == [
        "p.policy:4:13: PA128 `ca_file` cannot be read: `corp-ca.pem` (No such file or directory)"
    ]


def test_a_folder_is_not_a_ca_file(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    assert codes(provider('ca_file = "certs"'), tmp_path) == [
        "p.policy:4:13: PA128 `ca_file` cannot be read: `certs` (Is a directory)"
    ]


def test_a_ca_file_without_a_certificate_is_a_load_error(pem: Path) -> None:
    (line,) = codes(provider('ca_file = "notes.txt"'), pem)
    assert line.startswith("p.policy:4:13: PA128 `ca_file` holds no usable PEM certificate")


def test_paths_are_relative_to_the_policy_file(pem: Path) -> None:
    outbound = spec(
        provider('ca_file = "a.pem"', 'client_cert = "a.pem"', 'client_key = "a.key"'), pem
    )
    assert outbound == Outbound(str(pem / "a.pem"), str(pem / "a.pem"), str(pem / "a.key"))


def test_a_key_of_another_certificate_is_a_load_error(pem: Path) -> None:
    (line,) = codes(provider('client_cert = "a.pem"', 'client_key = "b.key"'), pem)
    assert line.startswith("p.policy:4:17: PA128 the client certificate cannot be loaded")


def test_an_encrypted_key_is_a_load_error_not_a_password_prompt(pem: Path) -> None:
    (line,) = codes(provider('client_cert = "a.pem"', 'client_key = "locked.key"'), pem)
    assert line.startswith("p.policy:4:17: PA128 the client certificate cannot be loaded")


def test_a_key_without_its_certificate_is_an_error(pem: Path) -> None:
    assert codes(provider('client_key = "a.key"'), pem) == [
        "p.policy:4:16: PA129 `client_key` needs `client_cert` in the same block"
    ]


# --- proxy ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "socks5://proxy.example.com:1080",
        "proxy.example.com:3128",
        "http://proxy.example.com:3128/path",
        "http://proxy.example.com:99999",
        "http://",
    ],
)
def test_a_proxy_that_cannot_work_is_an_error(url: str, tmp_path: Path) -> None:
    (line,) = codes(provider(f'proxy = "{url}"'), tmp_path)
    assert line.startswith("p.policy:4:11: PA129 `proxy` must be an http:// or https:// URL")
    assert "secret" not in line


def test_a_proxy_with_credentials_loads_and_is_never_shown(tmp_path: Path) -> None:
    outbound = spec(provider('proxy = "http://user:secret@proxy.example.com:3128"'), tmp_path)
    assert outbound.proxy == "http://user:secret@proxy.example.com:3128"
    assert "secret" not in repr(outbound)


# --- settings and providers ---------------------------------------------------------------------


def test_settings_serve_every_provider_and_a_provider_overrides(pem: Path) -> None:
    text = (
        'settings {\n  ca_file = "a.pem"\n  proxy = "http://proxy.example.com:3128"\n'
        '  client_cert = "a.pem"\n  client_key = "a.key"\n}\n'
        + provider('ca_file = "b.pem"', 'client_cert = "b.pem"', 'client_key = "b.key"')
        + provider().replace("corp", "other")
    )
    policy, diagnostics = analyze(text, "p.policy", env={}, base_dir=pem)
    assert policy is not None, [d.one_line() for d in diagnostics]
    corp, other = policy.providers["corp"].spec, policy.providers["other"].spec
    assert corp.outbound == Outbound(
        str(pem / "b.pem"), str(pem / "b.pem"), str(pem / "b.key"), "http://proxy.example.com:3128"
    )
    assert other.outbound == policy.settings.outbound
    assert other.outbound.ca_file == str(pem / "a.pem")


def test_a_provider_certificate_brings_its_own_key(pem: Path) -> None:
    """The settings' key is never paired with a provider's certificate: a certificate with the
    key inside it is written alone."""
    text = 'settings {\n  client_cert = "a.pem"\n  client_key = "a.key"\n}\n'
    (pem / "b-both.pem").write_bytes((pem / "b.pem").read_bytes() + (pem / "b.key").read_bytes())
    outbound = spec(text + provider('client_cert = "b-both.pem"'), pem)
    assert (outbound.client_cert, outbound.client_key) == (str(pem / "b-both.pem"), None)


def test_outbound_values_may_come_from_the_environment(pem: Path) -> None:
    text = provider('ca_file = env("CORP_CA")')
    policy, _ = analyze(text, "p.policy", env={"CORP_CA": str(pem / "a.pem")}, base_dir=pem)
    assert policy is not None
    assert policy.providers["corp"].spec.outbound.ca_file == str(pem / "a.pem")


# --- insecure_http ------------------------------------------------------------------------------

KEYCLOAK = "http://keycloak:8080/realms/dev/protocol/openid-connect/userinfo"


def test_plain_http_to_another_host_is_an_error_without_the_opt_in(tmp_path: Path) -> None:
    (line,) = codes(provider(url=KEYCLOAK), tmp_path)
    assert line.startswith("p.policy:2:14: PA115 `userinfo` must use https")


def test_insecure_http_allows_it_with_a_warning(tmp_path: Path) -> None:
    text = provider("insecure_http = true", url=KEYCLOAK)
    assert codes(text, tmp_path) == [
        "p.policy:2:14: PA206 `userinfo` uses plain http to `keycloak` (`insecure_http = true`)"
    ]
    assert spec(text, tmp_path).insecure_http is True


def test_insecure_http_false_changes_nothing(tmp_path: Path) -> None:
    (line,) = codes(provider("insecure_http = false", url=KEYCLOAK), tmp_path)
    assert "PA115" in line


def test_insecure_http_on_an_https_provider_is_a_warning(tmp_path: Path) -> None:
    assert codes(provider("insecure_http = true"), tmp_path) == [
        "p.policy:4:19: PA207 `insecure_http = true` is not needed: no URL of this provider "
        "uses plain http to another host"
    ]


def test_insecure_http_takes_a_boolean_in_a_provider_only(tmp_path: Path) -> None:
    found = codes(provider('insecure_http = "yes"', url=KEYCLOAK), tmp_path)
    assert [line.split(" ")[1] for line in found] == ["PA115", "PA104"]  # no opt-in was made
    assert found[1].startswith("p.policy:4:19: PA104 `insecure_http` takes `true` or `false`")
    (line,) = codes("settings {\n  insecure_http = true\n}\n", tmp_path)
    assert line.startswith("p.policy:2:3: PA102 unknown key `insecure_http` in `settings`")


def test_the_formatter_keeps_outbound_keys() -> None:
    text = provider("insecure_http = true", 'proxy = "http://proxy:3128"', url=KEYCLOAK)
    formatted = format_policy(text)
    assert "insecure_http = true" in formatted
    assert 'proxy         = "http://proxy:3128"' in formatted


def test_discovery_hands_out_plain_http_only_with_the_opt_in() -> None:
    issuer = "http://keycloak:8080/realms/dev"
    document = (
        b'{"issuer": "http://keycloak:8080/realms/dev", '
        b'"userinfo_endpoint": "http://keycloak:8080/realms/dev/userinfo"}'
    )
    response = Response(200, {"content-type": "application/json"}, document)
    refused = judge_discovery(issuer, response)
    assert getattr(refused, "detail", "") == (
        "the discovery document names `userinfo_endpoint` "
        "`http://keycloak:8080/realms/dev/userinfo`; policyauth needs https "
        "(http only on loopback, or with `insecure_http = true`)"
    )
    accepted = judge_discovery(issuer, response, insecure_http=True)
    assert getattr(accepted, "userinfo", None) == "http://keycloak:8080/realms/dev/userinfo"
