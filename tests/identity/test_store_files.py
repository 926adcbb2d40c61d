"""The store file's lock, owner and mode, and what a `TokenStore` does when it cannot read it.

Writers: every change holds `flock` on `<store>.lock` beside the real file, and a rewrite keeps
the old file's owner, group and mode (a new store: 0600). Readers: the last good contents
serve for at most `store_grace` after the file stops being readable, then every token of the
store is unavailable (503), never invalid, until the file can be read again. Time is a fake
clock here; tests/identity/test_store_processes.py does the same with real processes, real
permissions and the real clock.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import policyauth
from policyauth.identity import Identity, Invalid, Unavailable
from policyauth.identity.tokens import TokenStore, create, list_records, new_token, revoke
from policyauth.request import BasicCredential, BearerCredential

START = datetime(2026, 11, 29, 1, 2, 3, tzinfo=UTC)
GRACE = timedelta(seconds=60)
UNAVAILABLE = Unavailable("the token store cannot be read")


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "automation.tokens"


@pytest.fixture
def caplog_tokens(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="policyauth.tokens")
    return caplog


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "policyauth.tokens"]


def owner_and_mode(path: Path) -> tuple[int, int, int]:
    status = path.stat()
    return status.st_uid, status.st_gid, stat.S_IMODE(status.st_mode)


def bearer(token: str) -> BearerCredential:
    return BearerCredential(token)


# --- writers: the lock -------------------------------------------------------------------------


def test_a_new_store_and_its_lock_file_are_0600(store_path: Path) -> None:
    create(store_path, "alice")
    lock = store_path.with_name("automation.tokens.lock")
    assert stat.S_IMODE(store_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    assert lock.read_bytes() == b""


def test_a_change_waits_for_the_lock_and_then_reads_the_store_again(store_path: Path) -> None:
    create(store_path, "alice")
    done = threading.Event()

    def change() -> None:
        create(store_path, "bob")
        done.set()

    with (store_path.parent / "automation.tokens.lock").open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        writer = threading.Thread(target=change)
        writer.start()
        assert not done.wait(0.5)  # waiting for the lock, not writing
        # Meanwhile the lock's holder changes the store: the waiting writer must keep it.
        other = store_path.with_name("other.tokens")
        other.write_bytes(store_path.read_bytes())
        create(other, "carol")
        os.replace(other, store_path)
        fcntl.flock(held, fcntl.LOCK_UN)
        writer.join(timeout=30)
    assert done.is_set()
    assert [record.user for record in list_records(store_path)] == ["alice", "carol", "bob"]


def test_a_store_reached_through_a_link_is_locked_and_written_beside_its_real_file(
    tmp_path: Path,
) -> None:
    real = tmp_path / "real" / "automation.tokens"
    real.parent.mkdir()
    create(real, "alice")
    link = tmp_path / "link.tokens"
    link.symlink_to(real)
    _, record = create(link, "bob")
    revoke(link, record.id)
    assert link.is_symlink()
    assert sorted(os.listdir(tmp_path)) == ["link.tokens", "real"]
    assert sorted(os.listdir(real.parent)) == ["automation.tokens", "automation.tokens.lock"]
    assert [r.user for r in list_records(real)] == ["alice", "bob"]


# --- writers: owner, group and mode ------------------------------------------------------------


@pytest.mark.skipif(
    os.geteuid() != 0 and os.environ.get("CI") != "true",  # CI runs as root: never skipped
    reason="giving a file to another user takes root",
)
def test_a_rewrite_keeps_owner_group_and_mode(store_path: Path) -> None:
    create(store_path, "alice")
    os.chown(store_path, 65534, 65534)
    store_path.chmod(0o640)
    heard: list[str] = []
    _, record = create(store_path, "bob", warn=heard.append)
    assert owner_and_mode(store_path) == (65534, 65534, 0o640)
    revoke(store_path, record.id, warn=heard.append)
    assert owner_and_mode(store_path) == (65534, 65534, 0o640)
    assert heard == []


def test_a_new_lock_file_takes_the_owner_group_and_mode_of_an_existing_store(
    store_path: Path,
) -> None:
    create(store_path, "alice")
    lock = store_path.with_name("automation.tokens.lock")
    lock.unlink()
    store_path.chmod(0o640)
    create(store_path, "bob")
    assert owner_and_mode(lock) == owner_and_mode(store_path)
    assert stat.S_IMODE(lock.stat().st_mode) == 0o640


# --- readers: store_grace ----------------------------------------------------------------------


def test_a_corrupt_store_serves_its_last_contents_for_store_grace_then_is_unavailable(
    store_path: Path, clock: FakeClock, caplog_tokens: pytest.LogCaptureFixture
) -> None:
    token, _ = create(store_path, "alice", clock=clock)
    gone, gone_record = create(store_path, "bob", clock=clock)
    revoke(store_path, gone_record.id, clock=clock)
    store = TokenStore(store_path, clock=clock, grace=GRACE)
    good = store_path.read_bytes()

    clock.advance(seconds=1)
    assert isinstance(store.verify(bearer(token)), Identity)  # the file is confirmed good
    store_path.write_text("{", encoding="utf-8")
    clock.advance(seconds=1)
    assert isinstance(store.verify(bearer(token)), Identity)
    clock.advance(seconds=59)  # 60s since the contents were last confirmed: still within
    assert isinstance(store.verify(bearer(token)), Identity)
    assert store.verify(bearer(gone)) == Invalid("token revoked")  # revocations stay in force
    assert store.verify(bearer(new_token())) == Invalid("unknown token")
    clock.advance(milliseconds=1)
    assert store.verify(bearer(token)) == UNAVAILABLE
    assert store.verify(BasicCredential("alice", token)) == UNAVAILABLE
    assert store.verify(bearer(gone)) == UNAVAILABLE
    assert store.verify(bearer(new_token())) == UNAVAILABLE  # it may be a new one
    assert store.verify(bearer("pa_typo")) == Invalid("malformed token")  # needs no store
    clock.advance(hours=5)
    assert store.verify(bearer(token)) == UNAVAILABLE

    store_path.write_bytes(good)
    clock.advance(seconds=1)
    assert isinstance(store.verify(bearer(token)), Identity)
    assert store.verify(bearer(gone)) == Invalid("token revoked")
    path = f"token store `{store_path}`"
    assert messages(caplog_tokens) == [
        f"{path} is not valid json (line 1, column 2); keeping the 2 tokens last read for at "
        "most `store_grace` (60s), then refusing them with 503 until it can be read",
        f"{path} has not been readable for `store_grace` (60s); its tokens are refused with "
        "503 until it can be read again",
        f"{path} can be read again",
    ]


def test_a_store_that_cannot_be_opened_is_unavailable_after_store_grace(
    store_path: Path, clock: FakeClock, caplog_tokens: pytest.LogCaptureFixture
) -> None:
    token, _ = create(store_path, "alice", clock=clock)
    store = TokenStore(store_path, clock=clock, grace=timedelta(seconds=10))
    store_path.unlink()
    store_path.mkdir()  # stat works, open fails: what EACCES does to a reader, even for root
    clock.advance(seconds=1)
    assert isinstance(store.verify(bearer(token)), Identity)
    clock.advance(seconds=10)
    assert store.verify(bearer(token)) == UNAVAILABLE
    assert messages(caplog_tokens)[0] == (
        f"cannot read token store `{store_path}`: is a directory; keeping the 1 tokens last "
        "read for at most `store_grace` (10s), then refusing them with 503 until it can be read"
    )


def test_a_store_that_disappears_is_unavailable_after_store_grace(
    store_path: Path, clock: FakeClock
) -> None:
    token, _ = create(store_path, "alice", clock=clock)
    store = TokenStore(store_path, clock=clock, grace=timedelta(seconds=10))
    store_path.unlink()
    clock.advance(seconds=10)
    assert isinstance(store.verify(bearer(token)), Identity)
    clock.advance(seconds=1)
    assert store.verify(bearer(token)) == UNAVAILABLE


def test_a_store_unreadable_at_start_is_unavailable_at_once(
    store_path: Path, clock: FakeClock, caplog_tokens: pytest.LogCaptureFixture
) -> None:
    token, _ = create(store_path, "alice", clock=clock)
    store_path.write_text("[]", encoding="utf-8")
    store = TokenStore(store_path, clock=clock, grace=GRACE)
    assert store.verify(bearer(token)) == UNAVAILABLE
    assert messages(caplog_tokens)[0] == (
        f"token store `{store_path}`: expected an object, found a list; its tokens are "
        "refused with 503 until it can be read"
    )


def test_zero_grace_refuses_at_the_first_look_that_fails(
    store_path: Path, clock: FakeClock
) -> None:
    token, _ = create(store_path, "alice", clock=clock)
    store = TokenStore(store_path, clock=clock, grace=timedelta(0))
    clock.advance(seconds=5)
    assert isinstance(store.verify(bearer(token)), Identity)  # a healthy store needs no grace
    store_path.write_text("{", encoding="utf-8")
    clock.advance(seconds=1)
    assert store.verify(bearer(token)) == UNAVAILABLE


def test_a_clock_set_back_ends_the_grace(store_path: Path, clock: FakeClock) -> None:
    token, _ = create(store_path, "alice", clock=clock)
    store = TokenStore(store_path, clock=clock, grace=GRACE)
    store_path.write_text("{", encoding="utf-8")
    clock.advance(seconds=1)
    assert isinstance(store.verify(bearer(token)), Identity)
    clock.advance(hours=-1)
    assert store.verify(bearer(token)) == UNAVAILABLE


def test_a_change_that_keeps_inode_size_and_mtime_is_seen(
    store_path: Path, clock: FakeClock
) -> None:
    """A write in place that restores the mtime (as `cp -p` or `touch -r` do) and keeps the
    size changes the ctime, which the store looks at too."""
    token, _ = create(store_path, "alice", ["aaa"], clock=clock)
    store = TokenStore(store_path, clock=clock)
    before = store_path.stat()
    text = store_path.read_text(encoding="utf-8").replace('"aaa"', '"bbb"')
    with store_path.open("r+", encoding="utf-8") as file:
        file.write(text)
    os.utime(store_path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = store_path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    clock.advance(seconds=1)
    assert store.verify(bearer(token)) == Identity({"username": "alice", "groups": ["bbb"]})


# --- the setting -------------------------------------------------------------------------------


def test_store_grace_is_a_setting_with_a_default_of_60s() -> None:
    default = policyauth.loads("route GET /a {\n  public\n}\n", "a.policy")
    assert default.settings.store_grace_ms == 60_000
    policy = policyauth.loads(
        "settings {\n  store_grace = 5s\n}\n\nroute GET /a {\n  public\n}\n", "a.policy"
    )
    assert policy.settings.store_grace_ms == 5_000
    zero = policyauth.loads(
        "settings {\n  store_grace = 0s\n}\n\nroute GET /a {\n  public\n}\n", "a.policy"
    )
    assert zero.settings.store_grace_ms == 0


def test_store_grace_must_be_a_duration() -> None:
    with pytest.raises(policyauth.PolicyError) as raised:
        policyauth.loads(
            'settings {\n  store_grace = "5s"\n}\n\nroute GET /a {\n  public\n}\n', "a.policy"
        )
    [diagnostic] = raised.value.diagnostics
    assert (diagnostic.code, diagnostic.line, diagnostic.column) == ("PA104", 2, 17)
    assert "store_grace" in diagnostic.message
