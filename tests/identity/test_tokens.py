"""API tokens: the format and its checksum, the store file, and `TokenStore.verify` over time."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import re
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from policyauth.evaluator import TOKEN_PREFIX as ROUTING_PREFIX
from policyauth.identity import Identity, Invalid, Unavailable
from policyauth.identity import tokens as tokens_module
from policyauth.identity.tokens import (
    TOKEN_LENGTH,
    TOKEN_PREFIX,
    Record,
    TokenLookupError,
    TokenStore,
    TokenStoreError,
    create,
    digest_of,
    list_records,
    looks_valid,
    new_token,
    revoke,
)
from policyauth.request import BasicCredential, BearerCredential

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
START = datetime(2026, 11, 29, 1, 2, 3, tzinfo=UTC)
LOCK_NAME = "automation.tokens.lock"  # the writers' lock file, beside the store, kept
GRACE = "for at most `store_grace` (60s), then refusing them with 503 until it can be read"


class FakeClock:
    """A settable clock shared by `create`, `revoke` and `TokenStore`."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class SpyIndex(dict[bytes, Record]):
    """The store's digest index, counting lookups."""

    lookups = 0

    def get(self, key: bytes, default: Record | None = None) -> Record | None:  # type: ignore[override]
        self.lookups += 1
        return super().get(key, default)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "automation.tokens"


@pytest.fixture
def warnings(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="policyauth.tokens")
    return caplog


def tokens_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "policyauth.tokens"]


# --- format ------------------------------------------------------------------------------------


def test_prefix_is_the_one_the_evaluator_routes_on() -> None:
    assert TOKEN_PREFIX == ROUTING_PREFIX == "pa_"


def test_a_new_token_has_prefix_random_part_and_checksum() -> None:
    token = new_token()
    assert len(token) == TOKEN_LENGTH == 41
    assert token.startswith("pa_")
    assert set(token[3:]) <= set(ALPHABET)
    assert looks_valid(token)


def test_tokens_carry_at_least_128_bits_of_randomness() -> None:
    samples = [new_token()[3:35] for _ in range(3000)]
    assert len(set(samples)) == len(samples)
    # Every position of the random part takes every one of the 62 symbols (the chance that
    # a fair generator misses one in 3000 draws is below 1e-20), so the random part carries
    # 32 * log2(62) bits, about 190.
    for position in range(32):
        assert {sample[position] for sample in samples} == set(ALPHABET)
    assert 32 * math.log2(62) >= 128


def test_every_one_character_typo_is_rejected_by_the_checksum() -> None:
    token = new_token()
    typos = 0
    for position in range(len(token)):
        for replacement in ALPHABET + "_":
            if replacement == token[position]:
                continue
            mistyped = token[:position] + replacement + token[position + 1 :]
            assert not looks_valid(mistyped), (position, replacement)
            typos += 1
    assert typos == 41 * 62


@pytest.mark.parametrize(
    "candidate",
    [
        "",
        "pa_",
        "pa_" + "A" * 38,  # right shape, wrong checksum
        "pb_" + "A" * 38,
        "PA_" + "A" * 38,
        "pa_" + "é" * 38,
        "pa_" + "\uff21" * 38,  # fullwidth letters: not ASCII
        "pa_" + "A" * 37 + "\x00",
    ],
)
def test_looks_valid_refuses_what_is_not_a_token(candidate: str) -> None:
    assert looks_valid(candidate) is False


def test_looks_valid_refuses_truncated_and_extended_tokens() -> None:
    token = new_token()
    assert looks_valid(token)
    assert not looks_valid(token[:-1])
    assert not looks_valid(token + "0")
    assert not looks_valid(" " + token)


# --- the store file ----------------------------------------------------------------------------


def test_store_file_holds_only_the_digest_with_mode_0600(
    store_path: Path, clock: FakeClock
) -> None:
    token, record = create(
        store_path, "ci-bot", ["deploy", "read"], timedelta(days=90), clock=clock
    )
    text = store_path.read_text(encoding="utf-8")
    assert token not in text
    assert token[3:35] not in text  # not even the random part
    assert hashlib.sha256(token.encode()).hexdigest() == record.digest == digest_of(token)
    assert json.loads(text) == {
        "version": 1,
        "tokens": [
            {
                "digest": record.digest,
                "user": "ci-bot",
                "groups": ["deploy", "read"],
                "created": "2026-11-29T01:02:03Z",
                "expires": "2027-02-27T01:02:03Z",
                "revoked": None,
            }
        ],
    }
    assert stat.S_IMODE(store_path.stat().st_mode) == 0o600
    assert record.id == record.digest[:12]


def test_create_appends_and_list_returns_records_in_order(
    store_path: Path, clock: FakeClock
) -> None:
    _, first = create(store_path, "alice", clock=clock)
    clock.advance(minutes=1)
    _, second = create(store_path, "bob", ["ops", "ops", "dev"], clock=clock)
    assert list_records(store_path) == (first, second)
    assert second.groups == ("ops", "dev")  # duplicates dropped, order kept
    assert first.expires is None
    assert second.created == START + timedelta(minutes=1)


@pytest.mark.parametrize(
    ("user", "groups", "expires", "message"),
    [
        ("", (), None, "the user is empty"),
        ("a:b", (), None, "contains `:`"),
        ("bot\n", (), None, "control character"),
        ("bot", ("ok", ""), None, "a group name is empty"),
        ("bot", (), timedelta(0), "must be positive"),
        ("bot", (), timedelta(seconds=-1), "must be positive"),
    ],
)
def test_create_refuses_unusable_input_without_writing(
    store_path: Path,
    user: str,
    groups: tuple[str, ...],
    expires: timedelta | None,
    message: str,
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        create(store_path, user, groups, expires)
    assert not store_path.exists()


def test_writes_leave_no_temporary_files(store_path: Path, clock: FakeClock) -> None:
    ids = [create(store_path, f"user{n}", clock=clock)[1].id for n in range(5)]
    revoke(store_path, ids[2], clock=clock)
    assert sorted(os.listdir(store_path.parent)) == [store_path.name, LOCK_NAME]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(
    store_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    create(store_path, "alice", clock=clock)
    before = store_path.read_bytes()

    def failing_replace(source: str, target: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tokens_module.os, "replace", failing_replace)
    with pytest.raises(TokenStoreError, match=r"cannot write token store .*: no space left"):
        create(store_path, "bob", clock=clock)
    assert store_path.read_bytes() == before
    assert sorted(os.listdir(store_path.parent)) == [store_path.name, LOCK_NAME]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"version": 1, "tokens": [], "extra": 1}', ": extra: unknown key"),
        ('{"version": 2, "tokens": []}', "has version 2; this policyauth reads version 1"),
        ('{"version": "1", "tokens": []}', ": version: expected an integer, found a string"),
        ('{"version": 1, "version": 1, "tokens": []}', "duplicate key `version`"),
        ('{"version": 1, "tokens": [NaN]}', "`NaN` is not a json number"),
        ("[]", ": expected an object, found a list"),
        ("{", "is not valid json (line 1, column 2)"),
        (
            '{"version": 1, "tokens": [{"digest": "00", "user": "a", "groups": [], '
            '"created": "2026-11-29T01:02:03Z", "expires": null, "revoked": null}]}',
            ": tokens[0].digest: expected 64 lower-case hexadecimal digits",
        ),
        (
            '{"version": 1, "tokens": [{"digest": "' + "a" * 64 + '", "user": "a", '
            '"groups": [], "created": "2026-11-29", "expires": null, "revoked": null}]}',
            ": tokens[0].created: expected a UTC timestamp",
        ),
        (
            '{"version": 1, "tokens": [{"digest": "' + "a" * 64 + '", "user": "a", '
            '"groups": [], "created": "2026-11-29T01:02:03Z", "expires": null}]}',
            ": tokens[0].revoked: required key is missing",
        ),
    ],
)
def test_store_files_are_read_strictly(store_path: Path, content: str, message: str) -> None:
    store_path.write_text(content, encoding="utf-8")
    with pytest.raises(TokenStoreError) as caught:
        list_records(store_path)
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"token store `{store_path}`")


def test_duplicate_tokens_in_a_store_are_refused(store_path: Path, clock: FakeClock) -> None:
    create(store_path, "alice", clock=clock)
    data = json.loads(store_path.read_text(encoding="utf-8"))
    data["tokens"].append(data["tokens"][0])
    store_path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(TokenStoreError, match=r"tokens\[1\]\.digest: the same token is already"):
        list_records(store_path)


def test_listing_a_missing_store_is_an_error_not_an_empty_list(store_path: Path) -> None:
    with pytest.raises(TokenStoreError, match="does not exist"):
        list_records(store_path)


# --- revoke ------------------------------------------------------------------------------------


def test_revoke_by_id_by_upper_case_id_and_by_token(store_path: Path, clock: FakeClock) -> None:
    token_a, a = create(store_path, "alice", clock=clock)
    _, b = create(store_path, "bob", clock=clock)
    token_c, c = create(store_path, "carol", clock=clock)
    clock.advance(hours=1)
    assert revoke(store_path, a.id, clock=clock).revoked == START + timedelta(hours=1)
    assert revoke(store_path, b.id.upper(), clock=clock).user == "bob"
    assert revoke(store_path, token_c, clock=clock).digest == c.digest
    assert [r.status(clock.now) for r in list_records(store_path)] == ["revoked"] * 3
    assert looks_valid(token_a)


def test_revoking_twice_keeps_the_first_time(store_path: Path, clock: FakeClock) -> None:
    _, record = create(store_path, "alice", clock=clock)
    revoke(store_path, record.id, clock=clock)
    clock.advance(days=1)
    again = revoke(store_path, record.id, clock=clock)
    assert again.revoked == START
    assert list_records(store_path)[0].revoked == START


def test_revoke_reports_unknown_ambiguous_and_malformed_input(
    store_path: Path, clock: FakeClock
) -> None:
    create(store_path, "alice", clock=clock)
    with pytest.raises(TokenLookupError, match="id `0123456789ab` is not in token store"):
        revoke(store_path, "0123456789ab")
    with pytest.raises(TokenLookupError, match="the given token is not in token store"):
        revoke(store_path, new_token())
    mistyped = "pa_" + "A" * 38
    with pytest.raises(ValueError, match="expected a token id") as caught:
        revoke(store_path, mistyped)
    assert mistyped not in str(caught.value)

    # Two records whose digests share the first 12 digits (only a hand-edited file has that).
    data = json.loads(store_path.read_text(encoding="utf-8"))
    twin = dict(data["tokens"][0], digest="abcdef012345" + "0" * 52)
    data["tokens"] = [twin, dict(twin, digest="abcdef012345" + "1" * 52)]
    store_path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(TokenLookupError, match=r"matches 2 tokens .*revoke by the token itself"):
        revoke(store_path, "abcdef012345")


# --- verify ------------------------------------------------------------------------------------


def test_bearer_token_gives_username_and_groups(store_path: Path, clock: FakeClock) -> None:
    token, _ = create(store_path, "ci-bot", ["deploy", "read"], clock=clock)
    store = TokenStore(store_path, clock=clock)
    result = store.verify(BearerCredential(token))
    assert result == Identity({"username": "ci-bot", "groups": ["deploy", "read"]})


def test_basic_credentials_need_the_token_s_user(store_path: Path, clock: FakeClock) -> None:
    token, _ = create(store_path, "ci-bot", ["deploy"], clock=clock)
    store = TokenStore(store_path, clock=clock)
    assert store.verify(BasicCredential("ci-bot", token)) == Identity(
        {"username": "ci-bot", "groups": ["deploy"]}
    )
    assert store.verify(BasicCredential("admin", token)) == Invalid(
        "the Basic user is `admin`, the token belongs to `ci-bot`"
    )
    assert store.verify(BasicCredential("ad\nmin", token)) == Invalid(
        "the Basic user is `ad\\nmin`, the token belongs to `ci-bot`"
    )
    assert store.verify(BasicCredential("ci-bot", "password")) == Invalid("malformed token")


def test_an_unknown_well_formed_token_is_invalid(store_path: Path, clock: FakeClock) -> None:
    create(store_path, "ci-bot", clock=clock)
    store = TokenStore(store_path, clock=clock)
    assert store.verify(BearerCredential(new_token())) == Invalid("unknown token")


def test_a_typo_is_refused_without_a_lookup(store_path: Path, clock: FakeClock) -> None:
    token, _ = create(store_path, "ci-bot", clock=clock)
    store = TokenStore(store_path, clock=clock)
    spy = SpyIndex(store._by_digest)
    store._by_digest = spy
    typo = token[:20] + ("B" if token[20] == "A" else "A") + token[21:]
    result = store.verify(BearerCredential(typo))
    assert result == Invalid("malformed token")
    assert typo not in result.detail
    assert spy.lookups == 0
    assert isinstance(store.verify(BearerCredential(token)), Identity)
    assert spy.lookups == 1


def test_digests_are_compared_as_bytes(
    store_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    token, record = create(store_path, "ci-bot", clock=clock)
    store = TokenStore(store_path, clock=clock)
    seen: list[tuple[object, object]] = []
    compare = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(tokens_module.hmac, "compare_digest", spy)
    assert isinstance(store.verify(BearerCredential(token)), Identity)
    assert seen == [(bytes.fromhex(record.digest), hashlib.sha256(token.encode()).digest())]


@pytest.mark.parametrize(
    "secret",
    [
        "pa_" + "é" * 38,
        "pä" + "A" * 39,
        "pa_" + "A" * 37 + "\udcff",  # a lone surrogate: cannot even be encoded
        "ünïcödé",
    ],
)
def test_non_ascii_tokens_are_invalid_not_an_exception(
    store_path: Path, clock: FakeClock, secret: str
) -> None:
    create(store_path, "ci-bot", clock=clock)
    store = TokenStore(store_path, clock=clock)
    # Basic credentials may carry any UTF-8 (security reference, A09).
    assert store.verify(BasicCredential("ci-bot", secret)) == Invalid("malformed token")
    assert store.verify(BearerCredential(secret)) == Invalid("malformed token")


def test_an_internal_failure_is_a_refusal(
    store_path: Path,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    warnings: pytest.LogCaptureFixture,
) -> None:
    token, _ = create(store_path, "ci-bot", clock=clock)
    store = TokenStore(store_path, clock=clock)

    def broken(data: bytes) -> object:
        raise RuntimeError(f"cannot hash {data!r}")

    monkeypatch.setattr(tokens_module.hashlib, "sha256", broken)
    assert store.verify(BearerCredential(token)) == Invalid("the token could not be checked")
    messages = tokens_warnings(warnings)
    assert messages == [f"token store `{store_path}`: token check failed (RuntimeError)"]


def test_expired_tokens_are_refused_at_their_expiry(store_path: Path, clock: FakeClock) -> None:
    token, record = create(store_path, "ci-bot", expires=timedelta(hours=1), clock=clock)
    store = TokenStore(store_path, clock=clock)
    clock.advance(minutes=59, seconds=59)
    assert isinstance(store.verify(BearerCredential(token)), Identity)
    clock.advance(seconds=1)
    assert clock.now == record.expires
    assert store.verify(BearerCredential(token)) == Invalid("token expired")


def test_a_revocation_takes_effect_without_a_restart(store_path: Path, clock: FakeClock) -> None:
    token, record = create(store_path, "ci-bot", clock=clock)
    other, _ = create(store_path, "other", clock=clock)
    store = TokenStore(store_path, clock=clock)
    assert isinstance(store.verify(BearerCredential(token)), Identity)

    revoke(store_path, record.id, clock=clock)
    clock.advance(milliseconds=999)  # the file is looked at no more than once a second
    assert isinstance(store.verify(BearerCredential(token)), Identity)
    clock.advance(milliseconds=1)
    assert store.verify(BearerCredential(token)) == Invalid("token revoked")
    assert store.verify(BasicCredential("ci-bot", token)) == Invalid("token revoked")
    assert isinstance(store.verify(BearerCredential(other)), Identity)


def test_a_clock_set_back_does_not_freeze_the_store(store_path: Path, clock: FakeClock) -> None:
    token, record = create(store_path, "ci-bot", clock=clock)
    store = TokenStore(store_path, clock=clock)
    revoke(store_path, record.id, clock=clock)
    clock.advance(hours=-1)
    assert store.verify(BearerCredential(token)) == Invalid("token revoked")


def test_tokens_created_after_startup_are_accepted(store_path: Path, clock: FakeClock) -> None:
    create(store_path, "alice", clock=clock)
    store = TokenStore(store_path, clock=clock)
    token, _ = create(store_path, "bob", ["ops"], clock=clock)
    clock.advance(seconds=1)
    assert store.verify(BearerCredential(token)) == Identity({"username": "bob", "groups": ["ops"]})


def test_a_missing_store_is_empty_with_a_warning_until_it_appears(
    store_path: Path, clock: FakeClock, warnings: pytest.LogCaptureFixture
) -> None:
    store = TokenStore(store_path, clock=clock)
    assert tokens_warnings(warnings) == [
        f"token store `{store_path}` does not exist; no token is accepted"
    ]
    assert store.verify(BearerCredential(new_token())) == Invalid("unknown token")
    clock.advance(seconds=5)
    store.verify(BearerCredential(new_token()))
    assert len(tokens_warnings(warnings)) == 1  # warned once, not once a second

    token, _ = create(store_path, "alice", clock=clock)
    clock.advance(seconds=1)
    assert isinstance(store.verify(BearerCredential(token)), Identity)


def test_a_corrupt_store_keeps_the_last_good_contents_and_warns_once(
    store_path: Path, clock: FakeClock, warnings: pytest.LogCaptureFixture
) -> None:
    token, record = create(store_path, "ci-bot", clock=clock)
    good = store_path.read_text(encoding="utf-8")
    store = TokenStore(store_path, clock=clock)

    store_path.write_text(good[: len(good) // 2], encoding="utf-8")  # a half-written edit
    clock.advance(seconds=1)
    assert isinstance(store.verify(BearerCredential(token)), Identity)
    clock.advance(seconds=1)
    assert isinstance(store.verify(BearerCredential(token)), Identity)
    messages = tokens_warnings(warnings)
    assert len(messages) == 1
    assert messages[0].startswith(f"token store `{store_path}` is not valid json (line ")
    assert messages[0].endswith(f"; keeping the 1 tokens last read {GRACE}")
    assert token not in messages[0]

    # Valid JSON that is not a valid store: the same, and the warning says where.
    store_path.write_text(good.replace('"revoked"', '"revokd"'), encoding="utf-8")
    clock.advance(seconds=1)
    assert isinstance(store.verify(BearerCredential(token)), Identity)
    assert "tokens[0].revokd: unknown key" in tokens_warnings(warnings)[1]

    # Once the file is good again, it counts again.
    store_path.write_text(good, encoding="utf-8")
    revoke(store_path, record.id, clock=clock)
    clock.advance(seconds=1)
    assert store.verify(BearerCredential(token)) == Invalid("token revoked")
    assert tokens_warnings(warnings)[2:] == [f"token store `{store_path}` can be read again"]


def test_a_deleted_store_keeps_the_last_good_contents(
    store_path: Path, clock: FakeClock, warnings: pytest.LogCaptureFixture
) -> None:
    token, _ = create(store_path, "ci-bot", clock=clock)
    store = TokenStore(store_path, clock=clock)
    store_path.unlink()
    clock.advance(seconds=1)
    assert isinstance(store.verify(BearerCredential(token)), Identity)
    assert tokens_warnings(warnings) == [
        f"token store `{store_path}` has disappeared; keeping the 1 tokens last read {GRACE}"
    ]


def test_concurrent_verification_while_the_store_changes(store_path: Path) -> None:
    token, _ = create(store_path, "steady", ["ops"])
    revoked_token, revoked_record = create(store_path, "gone")
    revoke(store_path, revoked_record.id)
    store = TokenStore(store_path, reload_interval=timedelta(0))  # look at the file every time
    expected = Identity({"username": "steady", "groups": ["ops"]})
    results: list[object] = []
    results_lock = threading.Lock()
    start = threading.Barrier(9)

    def reader() -> None:
        start.wait()
        local = [
            (
                store.verify(BearerCredential(token)),
                store.verify(BasicCredential("steady", token)),
                store.verify(BearerCredential(revoked_token)),
            )
            for _ in range(200)
        ]
        with results_lock:
            results.extend(local)

    def writer() -> None:
        start.wait()
        for n in range(20):
            create(store_path, f"user{n}")

    threads = [threading.Thread(target=reader) for _ in range(8)]
    threads.append(threading.Thread(target=writer))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 8 * 200
    assert all(result == (expected, expected, Invalid("token revoked")) for result in results)
    assert len(list_records(store_path)) == 22
    assert sorted(os.listdir(store_path.parent)) == [store_path.name, LOCK_NAME]


def test_no_log_record_carries_a_token(
    store_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token, _ = create(store_path, "ci-bot", expires=timedelta(hours=1), clock=clock)
    store = TokenStore(store_path, clock=clock, grace=timedelta(hours=3))
    typo = token[:-1] + ("0" if token[-1] != "0" else "1")
    for credential in (
        BearerCredential(token),
        BearerCredential(typo),
        BasicCredential("intruder", token),
        BasicCredential("ci-bot", typo),
    ):
        store.verify(credential)
    store_path.write_text("{" + token, encoding="utf-8")  # someone pasted a token into the file
    clock.advance(hours=2)
    assert store.verify(BearerCredential(token)) == Invalid("token expired")
    clock.advance(hours=2)  # past store_grace
    assert store.verify(BearerCredential(token)) == Unavailable("the token store cannot be read")
    assert len(caplog.records) == 2  # the corrupt file, then the end of its grace
    for logged in caplog.records:
        text = logged.getMessage()
        assert token[3:35] not in text
        assert typo[3:35] not in text
