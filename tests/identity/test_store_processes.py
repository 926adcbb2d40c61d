"""Token stores under real processes and real file permissions (issue 9, items 1 and 2).

- Many `policyauth token create|revoke` processes at once lose no change: every printed token
  is in the store and every revoked one is refused by an Engine.
- A store that a server reads through its group (0640, group `nogroup`) stays readable by that
  server (`nobody`) after a revoke by root, so the revocation is seen.
- A store that becomes unreadable keeps its last contents for at most `store_grace`, then its
  tokens get 503 `provider_unavailable` (never 401) until it is readable again.
- A writer that cannot give the new file the old owner says so on stderr.

Root ignores permission bits, so the reader and the unprivileged writer run as `nobody`
(tests/identity/store_worker.py explains how); these tests need root, which CI has. Off CI a
run without root skips them; on CI (CI=true) it fails, so a broken setup cannot pass as green.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import policyauth
from policyauth.identity.tokens import create, digest_of, list_records

WORKER = Path(__file__).with_name("store_worker.py")
DEADLINE = 30.0  # seconds for a change to be seen; it takes about one (the reload interval)
GRACE_SECONDS = 5
WRITERS = 12
REVOKERS = 6


def _need_root() -> None:
    if os.geteuid() == 0:
        return
    message = "needs root: real file permissions are tested with a reader running as `nobody`"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture
def folder() -> Iterator[Path]:
    """A folder `nobody` may enter and write (pytest's own tmp_path is root's alone), with no
    sticky bit, so that `nobody` may replace a file that root owns in it."""
    with tempfile.TemporaryDirectory(prefix="policyauth-store-") as name:
        path = Path(name)
        path.chmod(0o777)
        yield path


class Worker:
    """A store_worker.py process, running as `nobody`."""

    def __init__(self, folder: Path) -> None:
        probe = folder / "root-only"
        probe.write_bytes(b"")
        probe.chmod(0o600)
        self.log = folder / "worker.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(WORKER), str(probe)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        nobody = pwd.getpwnam("nobody")
        assert self._read() == {"ready": [nobody.pw_uid, nobody.pw_gid]}

    def ask(self, **request: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._read()

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"the worker ended: {self.log.read_text(encoding='utf-8', errors='replace')}"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture
def worker(folder: Path) -> Iterator[Worker]:
    _need_root()
    started = Worker(folder)
    try:
        yield started
    finally:
        started.close()


def policy_file(folder: Path, store: Path) -> Path:
    policy = folder / "api.policy"
    policy.write_text(
        f"settings {{\n  store_grace = {GRACE_SECONDS}s\n}}\n\n"
        f'tokens ci {{\n  store = "{store.name}"\n}}\n\n'
        "route GET /x {\n  auth ci\n  allow\n}\n",
        encoding="utf-8",
    )
    policy.chmod(0o644)
    return policy


def group_readable_store(folder: Path, *users: str) -> tuple[Path, list[str]]:
    """A store owned by root, readable by the group `nogroup` (the server's), mode 0640."""
    store = folder / "api.tokens"
    tokens = [create(store, user)[0] for user in users]
    os.chown(store, 0, grp.getgrnam("nogroup").gr_gid)
    store.chmod(0o640)
    return store, tokens


def answers_until(worker: Worker, token: str, done: Any) -> list[tuple[int, str, str]]:
    """Decisions for `token`, asked again and again until `done(answer)` or the deadline."""
    seen: list[tuple[int, str, str]] = []
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        answer = worker.ask(op="decide", token=token)
        seen.append((answer["status"], answer["reason"], answer["message"]))
        if done(seen[-1]):
            return seen
        time.sleep(0.05)
    pytest.fail(f"no change within {DEADLINE}s; the answers were {sorted(set(seen))}")


def owner_and_mode(path: Path) -> tuple[int, int, int]:
    status = path.stat()
    return status.st_uid, status.st_gid, stat.S_IMODE(status.st_mode)


# --- item 2: a revoke keeps the store readable by the server -----------------------------------


def test_a_revoke_by_root_keeps_the_servers_group_access_and_is_seen(
    worker: Worker, folder: Path, run: Any
) -> None:
    store, (revoked, kept) = group_readable_store(folder, "ci-bot", "deploy-bot")
    before = owner_and_mode(store)
    assert worker.ask(op="load", policy=str(policy_file(folder, store))) == {"loaded": True}
    assert worker.ask(op="decide", token=revoked)["status"] == 200

    result = run("token", "revoke", "--store", str(store), revoked)
    assert (result.code, "warning" in result.err) == (0, False)
    assert owner_and_mode(store) == before == (0, grp.getgrnam("nogroup").gr_gid, 0o640)

    seen = answers_until(worker, revoked, lambda answer: answer[0] != 200)
    assert seen[-1] == (401, "invalid_token", "token revoked")
    assert {answer[0] for answer in seen[:-1]} <= {200}
    assert worker.ask(op="decide", token=kept)["status"] == 200


# --- item 2: store_grace -----------------------------------------------------------------------


def test_an_unreadable_store_serves_for_store_grace_then_503_until_readable(
    worker: Worker, folder: Path
) -> None:
    store, (kept, later_revoked) = group_readable_store(folder, "ci-bot", "deploy-bot")
    policy = policy_file(folder, store)
    assert worker.ask(op="load", policy=str(policy)) == {"loaded": True}
    assert worker.ask(op="decide", token=later_revoked)["status"] == 200

    # What the old `token revoke` did: the revocation lands in a new file, 0600, root's alone.
    data = json.loads(store.read_text(encoding="utf-8"))
    for entry in data["tokens"]:
        if entry["digest"] == digest_of(later_revoked):
            entry["revoked"] = "2026-12-01T00:00:00Z"
    replacement = folder / "replacement"
    replacement.write_text(json.dumps(data), encoding="utf-8")
    replacement.chmod(0o600)
    os.replace(replacement, store)

    seen = answers_until(worker, later_revoked, lambda answer: answer[0] == 503)
    assert seen[0][0] == 200  # the last good contents serve during store_grace
    assert seen[-1] == (503, "provider_unavailable", "the token store cannot be read")
    assert {answer[0] for answer in seen} <= {200, 503}  # never 401: the store is unknown
    assert worker.ask(op="decide", token=kept)["status"] == 503  # every token of the store
    assert worker.ask(op="decide", token="pa_x")["reason"] == "invalid_token"  # malformed

    # Readable again: the revocation it holds is in force, the other token is back.
    os.chown(store, 0, grp.getgrnam("nogroup").gr_gid)
    store.chmod(0o640)
    seen = answers_until(worker, later_revoked, lambda answer: answer[0] != 503)
    assert seen[-1] == (401, "invalid_token", "token revoked")
    assert worker.ask(op="decide", token=kept)["status"] == 200
    assert "can be read again" in worker.log.read_text(encoding="utf-8")


# --- item 2: a writer that cannot keep the owner says so --------------------------------------


def test_a_writer_that_cannot_keep_the_owner_warns_on_stderr(worker: Worker, folder: Path) -> None:
    store, _ = group_readable_store(folder, "ci-bot")
    nogroup = grp.getgrnam("nogroup").gr_gid
    nobody = pwd.getpwnam("nobody").pw_uid
    argv = ["token", "create", "--store", str(store), "--user", "x"]
    result = worker.ask(op="cli", argv=argv)
    assert (result["code"], result["out"]) == (2, "")
    assert result["err"] == (
        f"policyauth: cannot lock token store `{store}` (lock file `{store}.lock`): permission "
        "denied; whoever changes the store must be able to read its lock file\n"
    )

    # The group may change the store (as the administrator sets it up); only root may give a
    # file to root.
    store.chmod(0o660)
    lock = folder / "api.tokens.lock"
    os.chown(lock, 0, nogroup)
    lock.chmod(0o640)
    result = worker.ask(op="cli", argv=argv)
    assert result["code"] == 0
    token = result["out"].strip()
    assert digest_of(token) in {record.digest for record in list_records(store)}
    assert owner_and_mode(store) == (nobody, nogroup, 0o660)  # the group and mode were kept
    warnings = [line for line in result["err"].splitlines() if "warning" in line]
    assert warnings == [
        f"policyauth: warning: token store `{store}` was rewritten, but the new file could not "
        f"be given the old one's owner, group and mode (they were 0:{nogroup} 0660, they are "
        f"now {nobody}:{nogroup} 0660): a server that read it through them may no longer be "
        "able to, and refuses its tokens with 503 after `store_grace`; run this as the file's "
        f"owner or as root, or restore them with `chown 0:{nogroup} {store} && chmod 0660 "
        f"{store}`"
    ]

    # A group this writer is not in cannot be kept, and its bits are not given to the
    # writer's own group instead.
    for path in (store, lock):
        os.chown(path, 0, 0)
        path.chmod(0o644)
    result = worker.ask(op="cli", argv=argv)
    assert result["code"] == 0
    assert owner_and_mode(store) == (nobody, nogroup, 0o604)
    assert f"(they were 0:0 0644, they are now {nobody}:{nogroup} 0604)" in result["err"]


# --- item 1: concurrent writers ---------------------------------------------------------------

# Each writer imports the whole CLI, says it is ready, and waits for one line on stdin before
# running `policyauth token ...`: all of them then run their read-modify-write at the same
# moment, instead of one after another as their start-up times would spread them.
LAUNCHER = """\
import sys
from policyauth.cli.main import build_parser, main
build_parser()  # imports every subcommand's module
print("ready", file=sys.stderr, flush=True)
sys.stdin.readline()
sys.exit(main(sys.argv[1:]))
"""


def test_concurrent_creates_and_revokes_lose_no_change(folder: Path) -> None:
    store = folder / "api.tokens"
    old = [create(store, f"old{n}") for n in range(REVOKERS)]
    argvs = [
        ["token", "create", "--store", str(store), "--user", f"new{n}"] for n in range(WRITERS)
    ]
    argvs += [["token", "revoke", "--store", str(store), record.id] for _, record in old]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in argvs
    ]
    for process in processes:
        assert process.stderr is not None
        assert process.stderr.readline() == "ready\n"
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    results = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0] * len(processes), results

    printed = [out.strip() for out, _ in results[:WRITERS]]
    records = {record.digest: record for record in list_records(store)}
    assert len(records) == REVOKERS + WRITERS
    assert all(digest_of(token) in records for token in printed)
    assert all(records[record.digest].revoked is not None for _, record in old)

    with policyauth.Engine(policyauth.load(policy_file(folder, store))) as engine:
        for token in printed:
            decision = engine.authorize_sync("GET", "/x", [("authorization", f"Bearer {token}")])
            assert (decision.status, decision.reason) == (200, "allowed")
        for token, _ in old:
            decision = engine.authorize_sync("GET", "/x", [("authorization", f"Bearer {token}")])
            assert (decision.status, decision.reason, decision.message) == (
                401,
                "invalid_token",
                "token revoked",
            )
