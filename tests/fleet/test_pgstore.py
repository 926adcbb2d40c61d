"""Token stores in PostgreSQL (production.md section 2) against a real server.

- created with the CLI, accepted by two engines, revoked, refused by both within 2 s;
- a token written while an engine's listener was disconnected, or whose notification was
  lost, is still seen within 2 s (reconnection reload, version poll);
- `pg_dump` holds no token;
- the database stopped: tokens answered from memory within `store_grace`, then 503, and
  accepted again when it is back;
- several processes using a new database at once create the tables exactly once;
- CLI errors (refused connection, bad password, bad URL) are one line, exit 2, no password.

Each test gets a database of its own on the session's server (the `own_postgres` server for
the tests that stop it or need a password), so no test sees another's tokens.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

import policyauth
from policyauth import Engine
from policyauth.cli.main import main
from policyauth.identity.pgstore import redacted
from tests.fleet.conftest import PG_PASSWORD, PostgresServer

_NUMBERS = itertools.count()
ROOT = Path(__file__).resolve().parents[2]


def new_database(server_url: str) -> str:
    """A fresh database on the server; its URL."""
    name = f"pa_{os.getpid()}_{next(_NUMBERS)}"
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def store_url(postgres_server: PostgresServer) -> str:
    return new_database(postgres_server.url)


def own_url(server: PostgresServer) -> str:
    return f"postgresql://postgres:{PG_PASSWORD}@127.0.0.1:{server.port}/postgres"


POLICY = """\
settings {{
  store_grace = {grace}
}}

tokens automation {{
  store = env("TOKENS_STORE")
}}

route GET /deploy {{
  auth automation
  allow if "deploy" in groups
}}
"""


def engine_for(url: str, grace: str = "60s") -> Engine:
    policy = policyauth.loads(POLICY.format(grace=grace), "fleet.policy", env={"TOKENS_STORE": url})
    return Engine(policy)


def status(engine: Engine, token: str) -> tuple[int, str]:
    decision = engine.authorize_sync("GET", "/deploy", [("authorization", f"Bearer {token}")])
    return decision.status, decision.reason.value


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["token", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def wait_for(check: Callable[[], bool], within: float) -> float:
    """Seconds until `check()` held; fails after `within` seconds."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within, f"not seen within {within}s"
        time.sleep(0.02)
    return time.monotonic() - started


@pytest.fixture
def engines(store_url: str) -> Iterator[list[Engine]]:
    started = [engine_for(store_url), engine_for(store_url)]
    yield started
    for engine in started:
        engine.close()


def test_cli_token_is_accepted_by_two_engines_and_revoked_on_both_within_2s(
    capsys: pytest.CaptureFixture[str], store_url: str, engines: list[Engine]
) -> None:
    code, out, err = cli(
        capsys, "create", "--store", store_url, "--user", "ci-bot", "--groups", "deploy"
    )
    assert code == 0
    token = out.strip()
    assert err.startswith("created token ")
    for engine in engines:
        wait_for(lambda e=engine: status(e, token) == (200, "allowed"), 2.0)  # type: ignore[misc]

    code, out, _ = cli(capsys, "list", "--store", store_url, "--format", "json")
    assert code == 0
    (listed,) = json.loads(out)
    assert (listed["user"], listed["groups"], listed["status"]) == ("ci-bot", ["deploy"], "active")

    code, out, _ = cli(capsys, "revoke", "--store", store_url, listed["id"])
    assert code == 0
    assert out.startswith(f"token {listed['id']} of `ci-bot` is revoked (since ")
    for engine in engines:
        wait_for(lambda e=engine: status(e, token) == (401, "invalid_token"), 2.0)  # type: ignore[misc]
    decision = engines[0].authorize_sync("GET", "/deploy", [("authorization", f"Bearer {token}")])
    assert decision.message.endswith("token revoked")


def test_a_token_written_while_the_listener_was_disconnected_is_seen(
    capsys: pytest.CaptureFixture[str], store_url: str, engines: list[Engine]
) -> None:
    # Cut every engine connection to this database (PostgreSQL's own kill), write at once.
    database = store_url.rsplit("/", 1)[1]
    with psycopg.connect(store_url, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND application_name = 'policyauth'",
            (database,),
        ).fetchall()
    assert len(killed) == 2
    code, out, _ = cli(
        capsys, "create", "--store", store_url, "--user", "ci-bot", "--groups", "deploy"
    )
    assert code == 0
    token = out.strip()
    for engine in engines:
        wait_for(lambda e=engine: status(e, token) == (200, "allowed"), 2.0)  # type: ignore[misc]


def test_a_change_whose_notification_was_lost_is_seen_by_the_version_poll(
    capsys: pytest.CaptureFixture[str], store_url: str, engines: list[Engine]
) -> None:
    code, out, _ = cli(capsys, "create", "--store", store_url, "--user", "ci-bot")
    assert code == 0
    token = out.strip()
    for engine in engines:  # the user has no `deploy` group: a refusal, but a known token
        wait_for(lambda e=engine: status(e, token) == (403, "not_allowed"), 2.0)  # type: ignore[misc]
    # A write without its NOTIFY (as through a pooler, or while reconnecting): the trigger is
    # off for this transaction, the version is raised by hand as the trigger would.
    with psycopg.connect(store_url) as admin:
        admin.execute("ALTER TABLE policyauth_tokens DISABLE TRIGGER policyauth_tokens_changed")
        admin.execute("UPDATE policyauth_tokens SET groups = ARRAY['deploy']")
        admin.execute("UPDATE policyauth_tokens_version SET version = version + 1")
        admin.execute("ALTER TABLE policyauth_tokens ENABLE TRIGGER policyauth_tokens_changed")
    for engine in engines:
        wait_for(lambda e=engine: status(e, token) == (200, "allowed"), 2.0)  # type: ignore[misc]


def test_pg_dump_holds_no_token(
    capsys: pytest.CaptureFixture[str], postgres_server: PostgresServer, store_url: str
) -> None:
    tokens = []
    for user in ("ci-bot", "deployer"):
        code, out, _ = cli(capsys, "create", "--store", store_url, "--user", user)
        assert code == 0
        tokens.append(out.strip())
    database = store_url.rsplit("/", 1)[1]
    dump = subprocess.run(
        postgres_server.as_postgres(
            str(postgres_server.bin / "pg_dump"),
            "-h",
            "127.0.0.1",
            "-p",
            str(postgres_server.port),
            "-U",
            "postgres",
            database,
        ),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "policyauth_tokens" in dump
    assert "ci-bot" in dump  # the rows are in the dump
    for token in tokens:
        assert token not in dump
        assert token[3:] not in dump  # not even its random part


def test_a_stopped_database_serves_tokens_for_store_grace_then_503_then_recovers(
    capsys: pytest.CaptureFixture[str],
    own_postgres: PostgresServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = own_url(own_postgres)
    code, out, _ = cli(capsys, "create", "--store", url, "--user", "ci-bot", "--groups", "deploy")
    assert code == 0
    token = out.strip()
    engine = engine_for(url, grace="3s")
    try:
        assert status(engine, token) == (200, "allowed")
        caplog.set_level(logging.WARNING, logger="policyauth.tokens")
        stopping = time.monotonic()
        own_postgres.stop()
        # Within the grace: answered from memory, allowed and refused as before.
        assert status(engine, token) == (200, "allowed")
        assert status(engine, "pa_" + "0" * 38)[0] == 401
        wait_for(lambda: status(engine, token)[0] == 503, 6.0)
        # The grace runs from the last good read: at most one poll (1s) before the stop.
        assert time.monotonic() - stopping >= 3.0 - 1.1
        decision = engine.authorize_sync("GET", "/deploy", [("authorization", f"Bearer {token}")])
        assert (decision.status, decision.reason.value) == (503, "provider_unavailable")
        shown = redacted(url)
        warnings = [r.getMessage() for r in caplog.records]
        outage = [w for w in warnings if "cannot be read" in w]
        assert len(outage) == 1  # one warning per outage, however many polls failed
        assert outage[0].startswith(f"token store `{shown}` cannot be read (")
        assert outage[0].endswith(
            "keeping the 1 tokens last read for at most `store_grace` (3s), then refusing "
            "them with 503 until it can be read"
        )
        assert (
            f"token store `{shown}` has not been readable for `store_grace` (3s); its tokens "
            "are refused with 503 until it can be read again"
        ) in warnings
        assert not any(PG_PASSWORD in w for w in warnings)

        own_postgres.start()
        wait_for(lambda: status(engine, token) == (200, "allowed"), 5.0)
        assert f"token store `{shown}` can be read again" in [
            r.getMessage() for r in caplog.records
        ]
    finally:
        engine.close()


def test_a_database_down_at_start_is_unavailable_not_invalid(own_postgres: PostgresServer) -> None:
    url = own_url(own_postgres)
    own_postgres.stop()
    engine = engine_for(url)
    try:
        assert status(engine, "pa_" + "0" * 38) == (401, "invalid_token")  # checksum: no lookup
        from policyauth.identity.tokens import new_token

        assert status(engine, new_token()) == (503, "provider_unavailable")
    finally:
        engine.close()


CREATE_AT_ONCE = """\
import sys
from policyauth.identity.pgstore import create
print("ready", flush=True)
sys.stdin.readline()
token, record = create(sys.argv[1], "racer")
print(record.id)
"""


def test_concurrent_first_use_creates_the_tables_once(store_url: str) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CREATE_AT_ONCE, store_url],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for proc in procs:  # every process has imported everything; then all go at once
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = [proc.communicate(timeout=60) for proc in procs]
    assert [(proc.returncode, err) for proc, (_, err) in zip(procs, results, strict=True)] == [
        (0, "")
    ] * 4
    with psycopg.connect(store_url) as connection:
        count = connection.execute("SELECT count(*) FROM policyauth_tokens").fetchone()
        triggers = connection.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgname = 'policyauth_tokens_changed'"
        ).fetchone()
    assert count == (4,)
    assert triggers == (1,)


def test_cli_errors_are_one_line_without_the_password(
    capsys: pytest.CaptureFixture[str], own_postgres: PostgresServer
) -> None:
    port = own_postgres.port
    wrong = f"postgresql://postgres:wrong-{PG_PASSWORD}@127.0.0.1:{port}/postgres"
    right = own_url(own_postgres)
    cases: list[tuple[list[str], str]] = [
        (
            ["list", "--store", wrong],
            f"policyauth: cannot connect to token store `postgresql://postgres@127.0.0.1:{port}"
            '/postgres`: connection failed: connection to server at "127.0.0.1", port '
            f'{port} failed: FATAL: password authentication failed for user "postgres"\n',
        ),
        (
            ["list", "--store", right],
            f"policyauth: token store `postgresql://postgres@127.0.0.1:{port}/postgres` has no "
            "table `policyauth_tokens` yet: `policyauth token create` makes it\n",
        ),
        (
            ["list", "--store", right + "?nosuchoption=1"],
            f"policyauth: token store `postgresql://postgres@127.0.0.1:{port}/postgres?...` is "
            'not a valid PostgreSQL URL: invalid URI query parameter: "nosuchoption"\n',
        ),
        (
            ["revoke", "--store", f"mysql://root:{PG_PASSWORD}@127.0.0.1/db", "0" * 12],
            "policyauth: `--store` is a URL, but not a postgresql:// or postgres:// one; a "
            "token store is a file or a PostgreSQL database\n",
        ),
    ]
    for argv, expected in cases:
        code, out, err = cli(capsys, *argv)
        assert (code, out, err) == (2, "", expected)
    # The same through a real process: exit status 2, one line, no traceback, no password.
    own_postgres.stop()
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from policyauth.cli.main import main; sys.exit(main(sys.argv[1:]))",
            "token",
            "create",
            "--store",
            right,
            "--user",
            "x",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(
        f"policyauth: cannot connect to token store `postgresql://postgres@127.0.0.1:{port}"
        "/postgres`: connection failed: "
    )
    assert "Connection refused" in result.stderr
    assert result.stderr.count("\n") == 1
    assert PG_PASSWORD not in result.stderr


def test_the_store_url_never_shows_its_password() -> None:
    assert redacted("postgresql://u:p%40ss@db.example:5432/tokens?sslmode=require") == (
        "postgresql://u@db.example:5432/tokens?..."
    )
    assert redacted("postgres://db/tokens") == "postgres://db/tokens"
    assert redacted("postgresql://[::1/db") == "postgresql://..."


def test_a_lost_version_row_makes_the_store_unreadable_not_empty(
    capsys: pytest.CaptureFixture[str], store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    code, out, _ = cli(
        capsys, "create", "--store", store_url, "--user", "ci-bot", "--groups", "deploy"
    )
    assert code == 0
    token = out.strip()
    engine = engine_for(store_url, grace="1s")
    try:
        assert status(engine, token) == (200, "allowed")
        caplog.set_level(logging.WARNING, logger="policyauth.tokens")
        with psycopg.connect(store_url, autocommit=True) as admin:
            admin.execute("DELETE FROM policyauth_tokens_version")
            admin.execute("NOTIFY policyauth_tokens")
        # Never 401 (an empty store): 503 once the grace has run out.
        wait_for(lambda: status(engine, token) == (503, "provider_unavailable"), 4.0)
        assert any(
            "has lost the row of `policyauth_tokens_version`" in record.getMessage()
            for record in caplog.records
        )
    finally:
        engine.close()


def test_a_forked_worker_follows_the_store_on_its_own_connection(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    """gunicorn --preload: the engine is made before the fork. The child answers from the
    parent's map at once, then follows the store on a connection of its own; the parent's
    connection is left alone (closing it in the child would end the parent's session)."""
    code, out, _ = cli(
        capsys, "create", "--store", store_url, "--user", "ci-bot", "--groups", "deploy"
    )
    assert code == 0
    token = out.strip()
    engine = engine_for(store_url)
    try:
        assert status(engine, token) == (200, "allowed")
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report through the exit status only
            result = 9
            try:
                os.write(ready_w, b"1" if status(engine, token) == (200, "allowed") else b"0")
                os.read(go_r, 1)
                deadline = time.monotonic() + 2.0
                while time.monotonic() < deadline:
                    if status(engine, token) == (401, "invalid_token"):
                        result = 0
                        break
                    time.sleep(0.02)
                else:
                    result = 3
            finally:
                os._exit(result)
        reaped = False
        try:
            assert os.read(ready_r, 1) == b"1"  # the parent's map, before any read of its own
            database = store_url.rsplit("/", 1)[1]
            with psycopg.connect(store_url, autocommit=True) as admin:
                wait_for(
                    lambda: (
                        admin.execute(
                            "SELECT count(*) FROM pg_stat_activity "
                            "WHERE datname = %s AND application_name = 'policyauth'",
                            (database,),
                        ).fetchone()
                        == (2,)
                    ),
                    5.0,
                )
            code, _, _ = cli(capsys, "revoke", "--store", store_url, token)
            assert code == 0
            os.write(go_w, b"1")
            _, wait_status = os.waitpid(pid, 0)
            reaped = True
            assert os.waitstatus_to_exitcode(wait_status) == 0  # the child saw the revocation
        finally:  # never leave a copy of pytest behind, whatever failed
            if not reaped:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        wait_for(lambda: status(engine, token) == (401, "invalid_token"), 2.0)
    finally:
        engine.close()
