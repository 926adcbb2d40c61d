"""`policyauth token create|list|revoke`: output shapes, exit codes, and bad input."""

from __future__ import annotations

import json
import stat
from datetime import timedelta
from pathlib import Path

import attrs
import pytest

from policyauth.cli.main import COMMANDS, main
from policyauth.identity.tokens import list_records, looks_valid


@attrs.frozen
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]):
    """Run `policyauth token ARGS...` in-process; the exit code and what it printed."""

    def invoke(*argv: str) -> Result:
        code = main(["token", *argv])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "automation.tokens"


def test_token_is_a_registered_subcommand() -> None:
    assert "token" in COMMANDS


def test_create_prints_the_token_alone_and_warns_once_on_stderr(run, store: Path) -> None:
    result = run("create", "--store", str(store), "--user", "ci-bot")
    assert result.code == 0
    token = result.out.removesuffix("\n")
    assert "\n" not in token
    assert looks_valid(token)
    (record,) = list_records(store)
    assert result.err == (
        f"created token {record.id} for `ci-bot` (never expires); this is the only time it is "
        "shown: the store keeps only its digest\n"
    )
    assert token not in store.read_text(encoding="utf-8")
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert (record.user, record.groups, record.expires) == ("ci-bot", (), None)


def test_create_with_groups_and_a_language_duration(run, store: Path) -> None:
    result = run(
        "create",
        "--store",
        str(store),
        "--user",
        "bot",
        "--groups",
        "deploy, read",
        "--expires",
        "90d",
    )
    assert result.code == 0
    (record,) = list_records(store)
    assert record.groups == ("deploy", "read")
    assert record.expires is not None
    assert record.expires - record.created == timedelta(days=90)
    assert f"(expires {record.expires:%Y-%m-%dT%H:%M:%SZ})" in result.err


DURATION_HELP = (
    "`--expires` takes a duration such as `90d`: a whole number and one unit of ms, s, m, h or d"
)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--expires", "90"], f"{DURATION_HELP}, not `90`"),
        (["--expires", "3w"], f"{DURATION_HELP}, not `3w`"),
        (["--expires", "0s"], "the lifetime of a token must be positive"),
        (["--expires", "99999999999999d"], "`--expires 99999999999999d` is too long"),
        (["--groups", "a,,b"], "`--groups` has an empty group name"),
    ],
)
def test_create_refuses_bad_options_with_exit_2(
    run, store: Path, argv: list[str], message: str
) -> None:
    result = run("create", "--store", str(store), "--user", "bot", *argv)
    assert (result.code, result.out) == (2, "")
    assert result.err == f"policyauth: {message}\n"
    assert not store.exists()


def test_create_refuses_a_user_basic_credentials_cannot_carry(run, store: Path) -> None:
    result = run("create", "--store", str(store), "--user", "a:b")
    assert (result.code, result.out) == (2, "")
    assert result.err == (
        "policyauth: the user contains `:`, which Basic credentials cannot carry\n"
    )


def test_list_shows_a_table_without_digests(run, store: Path) -> None:
    run("create", "--store", str(store), "--user", "alice", "--groups", "ops,dev")
    run("create", "--store", str(store), "--user", "bob", "--expires", "1h")
    alice, bob = list_records(store)
    run("revoke", "--store", str(store), alice.id)

    result = run("list", "--store", str(store))
    assert (result.code, result.err) == (0, "")
    lines = result.out.splitlines()
    assert lines[0].split() == ["ID", "USER", "GROUPS", "CREATED", "EXPIRES", "STATUS"]
    assert lines[1].split() == [
        alice.id,
        "alice",
        "ops,dev",
        f"{alice.created:%Y-%m-%dT%H:%M:%SZ}",
        "never",
        "revoked",
    ]
    assert bob.expires is not None
    assert lines[2].split() == [
        bob.id,
        "bob",
        "-",
        f"{bob.created:%Y-%m-%dT%H:%M:%SZ}",
        f"{bob.expires:%Y-%m-%dT%H:%M:%SZ}",
        "active",
    ]
    assert len(lines) == 3
    assert alice.digest not in result.out
    assert bob.digest not in result.out


def test_list_as_json(run, store: Path) -> None:
    run("create", "--store", str(store), "--user", "alice", "--groups", "ops")
    (record,) = list_records(store)
    result = run("list", "--store", str(store), "--format", "json")
    assert (result.code, result.err) == (0, "")
    assert json.loads(result.out) == [
        {
            "id": record.id,
            "user": "alice",
            "groups": ["ops"],
            "created": f"{record.created:%Y-%m-%dT%H:%M:%SZ}",
            "expires": None,
            "revoked": None,
            "status": "active",
        }
    ]
    assert record.digest not in result.out


def test_revoke_by_id_and_by_token(run, store: Path) -> None:
    token = run("create", "--store", str(store), "--user", "alice").out.strip()
    run("create", "--store", str(store), "--user", "bob")
    alice, bob = list_records(store)

    by_id = run("revoke", "--store", str(store), bob.id)
    assert (by_id.code, by_id.err) == (0, "")
    assert by_id.out.startswith(f"token {bob.id} of `bob` is revoked (since ")

    by_token = run("revoke", "--store", str(store), token)
    assert by_token.code == 0
    assert by_token.out.startswith(f"token {alice.id} of `alice` is revoked (since ")
    assert [record.revoked is not None for record in list_records(store)] == [True, True]


def test_revoking_an_unknown_id_exits_1(run, store: Path) -> None:
    run("create", "--store", str(store), "--user", "alice")
    before = store.read_bytes()
    result = run("revoke", "--store", str(store), "0123456789ab")
    assert (result.code, result.out) == (1, "")
    assert result.err == f"policyauth: id `0123456789ab` is not in token store `{store}`\n"
    assert store.read_bytes() == before


def test_revoking_something_that_is_neither_id_nor_token_exits_2(run, store: Path) -> None:
    run("create", "--store", str(store), "--user", "alice")
    mistyped = "pa_" + "A" * 38
    result = run("revoke", "--store", str(store), mistyped)
    assert (result.code, result.out) == (2, "")
    assert result.err == (
        "policyauth: expected a token id (12 hexadecimal digits, as `token list` shows) "
        "or a whole `pa_` token\n"
    )


@pytest.mark.parametrize("action", [["list"], ["revoke", "0123456789ab"]])
def test_a_missing_store_exits_2(run, store: Path, action: list[str]) -> None:
    result = run(action[0], "--store", str(store), *action[1:])
    assert (result.code, result.out) == (2, "")
    assert result.err == f"policyauth: token store `{store}` does not exist\n"
    assert not store.exists()


def test_a_corrupt_store_exits_2_without_a_traceback(run, store: Path) -> None:
    store.write_text('{"version": 1, "tokens": [{"user": 5}]}', encoding="utf-8")
    for argv in (
        ["list", "--store", str(store)],
        ["revoke", "--store", str(store), "0123456789ab"],
        ["create", "--store", str(store), "--user", "bob"],
    ):
        result = run(*argv)
        assert (result.code, result.out) == (2, "")
        assert result.err == (
            f"policyauth: token store `{store}`: tokens[0].digest: required key is missing\n"
        )
    assert store.read_text(encoding="utf-8") == '{"version": 1, "tokens": [{"user": 5}]}'


def test_a_store_in_a_missing_folder_exits_2(run, tmp_path: Path) -> None:
    store = tmp_path / "no" / "such" / "folder.tokens"
    result = run("create", "--store", str(store), "--user", "bob")
    assert (result.code, result.out) == (2, "")
    assert result.err == (
        f"policyauth: cannot lock token store `{store}` (lock file `{store}.lock`): "
        "no such file or directory\n"
    )


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["create", "--user", "bob"],
        ["create", "--store", "x.tokens"],
        ["list"],
        ["revoke", "--store", "x.tokens"],
        ["list", "--store", "x.tokens", "--format", "yaml"],
    ],
)
def test_usage_errors_exit_2(run, argv: list[str]) -> None:
    result = run(*argv)
    assert result.code == 2
    assert result.out == ""
    assert "usage: policyauth token" in result.err
    assert "Traceback" not in result.err
