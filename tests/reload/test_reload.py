"""Hot reload (production.md section 2): `engine.reload()` swaps a policy in whole, keeps the old
one when the new file is broken, never mixes two plans in one decision, and keeps the cached
identities of providers whose settings did not change.

The provider is an httpx.MockTransport that counts userinfo calls: a cached identity is one
that costs no call.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import httpx
import pytest

import policyauth
from policyauth import Reason

USERINFO = "https://sso.example.com/userinfo"
TOKEN = "reload-token-5150"
AUTH = [("Authorization", f"Bearer {TOKEN}")]


def policy_text(group: str, *, padding: int = 0, userinfo: str = USERINFO) -> str:
    """One provider and one route whose allow rule names `group`; `padding` blank lines move the
    route, so a decision's route line tells which policy made it."""
    return (
        "provider corp {  # policyauth: ignore[PA202]\n"
        f'  userinfo = "{userinfo}"\n'
        "  username = $.login\n"
        "  groups   = $.teams[*]\n"
        "}\n" + "\n" * padding + "route GET /r {\n"
        "  auth corp\n"
        f'  allow if "{group}" in groups\n'
        "}\n"
    )


class Provider:
    """Answers every userinfo call for alice in team `a`; counts the calls."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.calls += 1
        return httpx.Response(200, json={"login": "alice", "teams": ["a"]})


def write(path: Path, text: str) -> None:
    """Write and move the mtime forward, so a watcher sees the change whatever the clock step."""
    path.write_text(text)
    later = time.time_ns() + 2_000_000_000
    os.utime(path, ns=(later, later))


@pytest.fixture
def provider() -> Provider:
    return Provider()


def test_reload_swaps_the_policy_and_forgets_the_old_decisions(
    tmp_path: Path, provider: Provider
) -> None:
    file = tmp_path / "p.policy"
    write(file, policy_text("a"))
    with policyauth.Engine(policyauth.load(file), httpx.MockTransport(provider)) as engine:
        first = engine.authorize_sync("GET", "/r", AUTH)
        assert (first.status, first.reason, first.rule.line) == (200, Reason.ALLOWED, 8)
        write(file, policy_text("b"))
        assert engine.reload() is True
        # Same route index, same cached identity: a decision memo of the old plan would say 200.
        second = engine.authorize_sync("GET", "/r", AUTH)
        assert (second.status, second.reason) == (403, Reason.NOT_ALLOWED)
        assert engine.policy.origin is not None
        assert engine.policy.origin.path == str(file)
    assert provider.calls == 1  # the provider did not change: its cached identity stayed


def test_a_changed_provider_loses_its_cached_identities(tmp_path: Path, provider: Provider) -> None:
    file = tmp_path / "p.policy"
    write(file, policy_text("a"))
    with policyauth.Engine(policyauth.load(file), httpx.MockTransport(provider)) as engine:
        assert engine.authorize_sync("GET", "/r", AUTH).status == 200
        assert engine.authorize_sync("GET", "/r", AUTH).status == 200
        assert provider.calls == 1
        write(file, policy_text("a", userinfo="https://other.example.com/userinfo"))
        assert engine.reload() is True
        assert engine.authorize_sync("GET", "/r", AUTH).status == 200
        assert provider.calls == 2  # asked again: the identity came from another provider


def test_a_broken_file_keeps_the_old_policy_and_logs_why(
    tmp_path: Path, provider: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    file = tmp_path / "p.policy"
    write(file, policy_text("a"))
    with policyauth.Engine(policyauth.load(file), httpx.MockTransport(provider)) as engine:
        before = engine.policy
        write(file, policy_text("a") + "route GET /x {\n  auth nobody\n  allow\n}\n")
        with caplog.at_level(logging.ERROR, logger="policyauth.engine"):
            assert engine.reload() is False
        assert engine.policy is before
        assert "PA110" in caplog.text or "nobody" in caplog.text
        assert str(file) in caplog.text
        decision = engine.authorize_sync("GET", "/r", AUTH)
        assert (decision.status, decision.reason) == (200, Reason.ALLOWED)


def test_reload_needs_a_file() -> None:
    policy = policyauth.loads(policy_text("a"))
    with pytest.raises(ValueError, match="not loaded from a file"):
        policyauth.Engine(policy, identities=policyauth.StaticIdentitySource(policy, {})).reload()
    with pytest.raises(ValueError, match="reload=True needs a policy loaded from a file"):
        policyauth.Engine(
            policy, identities=policyauth.StaticIdentitySource(policy, {}), reload=True
        )


def test_the_watcher_reloads_a_changed_file_and_skips_a_broken_one(
    tmp_path: Path, provider: Provider
) -> None:
    file = tmp_path / "p.policy"
    write(file, policy_text("a"))
    engine = policyauth.Engine(
        policyauth.load(file), httpx.MockTransport(provider), reload=True, reload_interval=0.05
    )
    with engine:
        write(file, policy_text("b"))
        assert wait_for(lambda: engine.authorize_sync("GET", "/r", AUTH).status == 403)
        in_force = engine.policy
        write(file, "route {")
        time.sleep(0.5)
        assert engine.policy is in_force
        write(file, policy_text("a"))
        assert wait_for(lambda: engine.authorize_sync("GET", "/r", AUTH).status == 200)


def test_a_reload_storm_never_mixes_two_policies(tmp_path: Path, provider: Provider) -> None:
    """8 threads reload while the file flips between two policies and 4 threads decide. Policy
    A (route at line 6) allows alice, policy B (route at line 10) does not: every decision is
    (200, line 6) or (403, line 10), and when the storm ends the file's policy is in force."""
    file = tmp_path / "p.policy"
    texts = [policy_text("a", padding=0), policy_text("b", padding=4)]
    write(file, texts[0])
    seen: set[tuple[int, int]] = set()
    errors: list[BaseException] = []
    stop = threading.Event()
    with policyauth.Engine(policyauth.load(file), httpx.MockTransport(provider)) as engine:

        def reloader(n: int) -> None:
            try:
                for i in range(15):
                    if n == 0:  # atomically, as docs/serve.md says to deploy a policy
                        temporary = file.with_suffix(".new")
                        temporary.write_text(texts[i % 2])
                        temporary.replace(file)
                    assert isinstance(engine.reload(), bool)
            except BaseException as exc:
                errors.append(exc)

        def decider() -> None:
            try:
                while not stop.is_set():
                    d = engine.authorize_sync("GET", "/r", AUTH)
                    assert d.route is not None
                    seen.add((d.status, d.route.line))
            except BaseException as exc:
                errors.append(exc)

        deciders = [threading.Thread(target=decider) for _ in range(4)]
        reloaders = [threading.Thread(target=reloader, args=(n,)) for n in range(8)]
        for t in deciders + reloaders:
            t.start()
        for t in reloaders:
            t.join()
        stop.set()
        for t in deciders:
            t.join()
        assert not errors
        assert seen <= {(200, 6), (403, 10)}
        assert seen  # the deciders did decide
        file.write_text(texts[1])
        assert engine.reload() is True
        assert (
            engine.authorize_sync("GET", "/r", AUTH).status,
            engine.policy.routes[0].span.line,
        ) == (403, 10)


def wait_for(condition: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False
