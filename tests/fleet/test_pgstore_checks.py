"""How a policy names a PostgreSQL token store: the URL checks (PA163-PA165) with their
locations, what stays a file, and the store a reload opens (no server needed)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import policyauth
from policyauth import Engine
from policyauth.identity.tokens import create
from policyauth.loader import analyze

POLICY = """\
tokens automation {{
  store = {store}
}}

route GET /deploy {{
  auth automation
  allow if "deploy" in groups
}}
"""


def diagnostics(store: str, env: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
    _, found = analyze(POLICY.format(store=store), "t.policy", env=env or {}, base_dir=Path("/p"))
    return [(d.code, f"{d.file}:{d.line}:{d.column}", d.message) for d in found]


def store_of(store: str, env: dict[str, str] | None = None) -> str:
    policy, found = analyze(
        POLICY.format(store=store), "t.policy", env=env or {}, base_dir=Path("/p")
    )
    assert found == []
    assert policy is not None
    return policy.tokens["automation"].store


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://policyauth@db.internal:5432/tokens",
        "postgres://db.internal/tokens?sslmode=verify-full",
        "postgresql://[::1]:5432/tokens",
        "postgresql://db1:5432,db2:5433/tokens?target_session_attrs=read-write",
        "postgresql:///tokens",
        "POSTGRESQL://db/tokens",
    ],
)
def test_a_postgresql_url_is_kept_as_written_not_made_a_path(url: str) -> None:
    assert store_of(f'"{url}"') == url


def test_env_gives_the_url_with_its_password() -> None:
    url = "postgresql://policyauth:s3cret@db/tokens"
    assert store_of('env("TOKENS_STORE")', {"TOKENS_STORE": url}) == url


def test_a_password_from_env_stays_out_of_the_policys_repr() -> None:
    """A policy is logged and shown in tracebacks; the store URL may carry a password."""
    env = {"TOKENS_STORE": "postgresql://policyauth:s3cret-pw@db.internal/policyauth"}
    policy, found = analyze(
        POLICY.format(store='env("TOKENS_STORE")'), "t.policy", env=env, base_dir=Path("/p")
    )
    assert found == []
    assert policy is not None
    assert policy.tokens["automation"].store == env["TOKENS_STORE"]
    assert "s3cret-pw" not in repr(policy)
    assert "s3cret-pw" not in repr(policy.tokens["automation"])


@pytest.mark.parametrize("name", ["automation.tokens", "tokens:v2", "C:/x", "a//b"])
def test_what_is_not_scheme_slash_slash_stays_a_file(name: str) -> None:
    assert store_of(f'"{name}"') == str(Path("/p") / name)


@pytest.mark.parametrize(
    ("store", "message"),
    [
        (
            '"mysql://db/tokens"',
            "`store` is a `mysql://` URL; a token store is a file or a PostgreSQL URL",
        ),
        (
            '"https://tokens.example/store"',
            "`store` is a `https://` URL; a token store is a file or a PostgreSQL URL",
        ),
    ],
)
def test_pa163_another_scheme(store: str, message: str) -> None:
    assert diagnostics(store) == [("PA163", "t.policy:2:11", message)]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgresql://db:five/tokens", "a port that is not a number from 1 to 65535"),
        ("postgresql://db:70000/tokens", "a port that is not a number from 1 to 65535"),
        ("postgresql://u:p%zz@db/tokens", "a `%` that does not start a %XX escape"),
        ("postgresql://db/tokens?sslmode", "a query parameter without `=`"),
        ("postgresql://[::1/tokens", "an unbalanced `[` or `]` around an IPv6 address"),
        ("postgresql://[::1]x/tokens", "text after the `]` of an IPv6 address"),
        ("postgresql://db1,/tokens", "an empty host in the host list"),
    ],
)
def test_pa164_a_malformed_url_says_why_without_repeating_it(url: str, problem: str) -> None:
    found = diagnostics('env("TOKENS_STORE")', {"TOKENS_STORE": url})
    message = f"`store` is not a valid PostgreSQL URL: {problem}"
    assert found == [("PA164", "t.policy:2:11", message)]


@pytest.mark.parametrize(
    "store",
    [
        '"postgresql://policyauth:hunter2@db/tokens"',
        '"postgresql://db/tokens?password=hunter2"',
        'env("TOKENS_STORE", "postgresql://policyauth:hunter2@db/tokens")',
    ],
)
def test_pa165_a_password_written_in_the_policy(store: str) -> None:
    found = diagnostics(store, {"TOKENS_STORE": "postgresql://db/tokens"})
    message = "the `store` URL has a password written in the policy"
    assert found == [("PA165", "t.policy:2:11", message)]
    _, diags = analyze(POLICY.format(store=store), "t.policy", env={}, base_dir=Path("/p"))
    assert diags[0].help is not None
    assert "PGPASSWORD" in diags[0].help
    assert "hunter2" not in diags[0].message + diags[0].help


def test_a_tokens_block_added_by_a_reload_gets_the_policy_s_store_grace(tmp_path: Path) -> None:
    """A store opened by a reload used the default grace (60s) instead of `store_grace`."""
    store = tmp_path / "new.tokens"
    token, _ = create(store, "ci-bot", ["deploy"])
    path = tmp_path / "p.policy"
    path.write_text(
        "settings {\n  store_grace = 0s\n}\n\nroute GET /deploy {\n  public\n}\n",
        encoding="utf-8",
    )
    engine = Engine(policyauth.load(path))
    try:
        path.write_text(
            "settings {\n  store_grace = 0s\n}\n\n" + POLICY.format(store=json.dumps(str(store))),
            encoding="utf-8",
        )
        assert engine.reload()
        headers = [("authorization", f"Bearer {token}")]
        assert engine.authorize_sync("GET", "/deploy", headers).status == 200
        store.write_text("not json", encoding="utf-8")  # unreadable from now on
        decision = None
        for _ in range(40):  # the store looks at its file once a second
            decision = engine.authorize_sync("GET", "/deploy", headers)
            if decision.status != 200:
                break
            time.sleep(0.05)
        assert decision is not None
        assert (decision.status, decision.reason.value) == (503, "provider_unavailable")
    finally:
        engine.close()
