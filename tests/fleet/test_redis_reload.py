"""A reload that changes `cache` or `cache_secret` (production.md section 2, hot reload).

The reloaded engine shares identities under the new secret's keys from then on (an engine
with the old secret cannot read them), `cache = "memory"` stops writing to Redis, a secret
that is too short keeps the old policy, and through all of it the provider's cached
identities stay (its settings did not change).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

sys.path.insert(0, str(Path(__file__).parent))
from redis_parts import SECRET, Userinfo, policy_text

import policyauth

OTHER_SECRET = "t" * 40


@pytest.fixture
def userinfo() -> Iterator[Userinfo]:
    server = Userinfo()
    yield server
    server.close()


def write(path: Path, text: str) -> None:
    path.write_text(text)
    later = time.time_ns() + 2_000_000_000
    os.utime(path, ns=(later, later))


def decide(engine: policyauth.Engine, token: str) -> int:
    return engine.authorize_sync("GET", "/x", [("authorization", f"Bearer {token}")]).status


def test_a_reload_that_changes_the_cache_settings(
    redis_server: Any, userinfo: Userinfo, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = redis.Redis.from_url(redis_server.url)

    def entries() -> int:
        return len([k for k in store.keys("policyauth:*") if not k.endswith(b":lock")])

    old_file, new_file = tmp_path / "old.policy", tmp_path / "new.policy"
    write(old_file, policy_text(redis_server.url, userinfo.url))
    write(new_file, policy_text(redis_server.url, userinfo.url).replace(SECRET, OTHER_SECRET))
    file = tmp_path / "p.policy"
    write(file, old_file.read_text())
    try:
        with policyauth.Engine(policyauth.load(file)) as engine:
            before = entries()
            assert decide(engine, "good-reload-1") == 200
            assert entries() == before + 1

            write(file, new_file.read_text())
            assert engine.reload() is True
            assert decide(engine, "good-reload-1") == 200  # the provider's identities stay
            assert userinfo.calls["good-reload-1"] == 1
            assert decide(engine, "good-reload-2") == 200
            assert entries() == before + 2
            with policyauth.Engine(policyauth.load(new_file)) as same_secret:
                assert decide(same_secret, "good-reload-2") == 200
            assert userinfo.calls["good-reload-2"] == 1  # read under the new secret's key
            with policyauth.Engine(policyauth.load(old_file)) as old_secret:
                assert decide(old_secret, "good-reload-2") == 200
            assert userinfo.calls["good-reload-2"] == 2  # not readable under the old one

            short = new_file.read_text().replace(OTHER_SECRET, "short")
            write(file, short)
            with caplog.at_level(logging.ERROR, logger="policyauth.engine"):
                assert engine.reload() is False
            assert "PA162" in caplog.text
            assert engine.policy.settings.cache_secret == OTHER_SECRET

            write(file, new_file.read_text().replace(redis_server.url, "memory"))
            assert engine.reload() is True
            settled = entries()
            assert decide(engine, "good-reload-3") == 200
            assert entries() == settled  # nothing written to Redis any more
            assert decide(engine, "good-reload-1") == 200
            assert userinfo.calls == {"good-reload-1": 1, "good-reload-2": 2, "good-reload-3": 1}
    finally:
        store.close()
