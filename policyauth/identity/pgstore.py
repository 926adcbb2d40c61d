"""API tokens kept in PostgreSQL: `tokens NAME { store = "postgresql://..." }` (production.md
section 2), so that every host of a fleet sees the same tokens.

The database holds what the store file holds and nothing more: the SHA-256 digest of each token
(the same digest as tokens.py, so a token means the same in either store), its user, groups,
creation, expiry and revocation times. A dump of the database yields no usable token.

Two tables in the connection's schema, created on first use by whoever comes first (the CLI or
an engine) inside one transaction that holds a PostgreSQL advisory lock, because concurrent
`CREATE TABLE IF NOT EXISTS` statements can still fail on the catalog's unique index:

- `policyauth_tokens`, one row per token;
- `policyauth_tokens_version`, one row whose `version` a statement-level trigger on the first
  table increments, in the writing transaction, and which then sends `NOTIFY policyauth_tokens`.
  The trigger covers every writer, `policyauth token` as much as a hand-written `UPDATE`.

A running store never queries per request: a background thread owns one connection, LISTENs,
and reloads the whole table into an in-memory map when notified. Notifications are lost while
that connection is down or replaced (and never arrive through a transaction-pooling proxy), so
the thread also reads the version row about once a second and reloads when it changed; a
reconnection always reloads. A change is therefore in force on every engine within about a
second, two at the most.

A database that cannot be read is treated as tokens.py treats a file that cannot be read
(`store_grace`): the last good map serves for at most `grace` after it was last confirmed, then
every token of the store is "unavailable" (503, never 401, never cached) until the database
answers again. One warning when an outage starts, one when the grace runs out, one on recovery.

The password of the connection string is a secret: it is never logged or put into a message;
messages name the store by its URL without the password.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from policyauth.identity.source import Credential, Identity, Invalid, Unavailable
from policyauth.identity.tokens import (  # the file store's own rules, so both judge alike
    _ID,
    ID_LENGTH,
    STORE_GRACE,
    TOKEN_PREFIX,
    Clock,
    Record,
    TokenLookupError,
    TokenStoreError,
    _records_problem,
    digest_of,
    identify,
    looks_valid,
    new_token,
    token_terms,
    utc_now,
)
from policyauth.request import BasicCredential

log = logging.getLogger("policyauth.tokens")

TABLE = "policyauth_tokens"
VERSION_TABLE = "policyauth_tokens_version"
POLL_INTERVAL = 1.0  # seconds between version reads; with LISTEN, changes come sooner
# pg_advisory_xact_lock's key: "policyau" in ASCII, a constant every policyauth agrees on.
_LOCK_KEY = 0x706F6C6963796175
# Connection defaults, each used only when the URL does not set it: a dead server or network
# must fail a read within seconds, not after the kernel's TCP timeouts (minutes), so that the
# outage (and store_grace) starts when it really does.
_CONNECT_DEFAULTS = {
    "connect_timeout": "3",
    "tcp_user_timeout": "5000",
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "2",
    "application_name": "policyauth",
}
_FIRST_READ_WAIT = 6.0  # seconds a new store waits for its first read (connect_timeout and more)

# The SQL is written out in full (no formatting), so that no value can ever become SQL.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS policyauth_tokens (
    digest   text PRIMARY KEY CHECK (digest ~ '^[0-9a-f]{64}$'),
    username text NOT NULL,
    groups   text[] NOT NULL DEFAULT '{}',
    created  timestamptz NOT NULL,
    expires  timestamptz,
    revoked  timestamptz
);
CREATE TABLE IF NOT EXISTS policyauth_tokens_version (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    version bigint NOT NULL
);
INSERT INTO policyauth_tokens_version (one, version) VALUES (true, 0) ON CONFLICT DO NOTHING;
CREATE OR REPLACE FUNCTION policyauth_tokens_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE policyauth_tokens_version SET version = version + 1;
    PERFORM pg_notify('policyauth_tokens', '');
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS policyauth_tokens_changed ON policyauth_tokens;
CREATE TRIGGER policyauth_tokens_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON policyauth_tokens
    FOR EACH STATEMENT EXECUTE FUNCTION policyauth_tokens_changed();
"""
_SCHEMA_PRESENT = """
SELECT to_regclass('policyauth_tokens') IS NOT NULL
   AND to_regclass('policyauth_tokens_version') IS NOT NULL
   AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'policyauth_tokens_changed'
               AND tgrelid = to_regclass('policyauth_tokens'))
"""
# One statement, so one snapshot: the version read is the version of the rows read.
_LOAD = """
SELECT v.version, t.digest, t.username, t.groups, t.created, t.expires, t.revoked
FROM policyauth_tokens_version v LEFT JOIN policyauth_tokens t ON true
ORDER BY t.created, t.digest
"""
_VERSION = "SELECT version FROM policyauth_tokens_version"
_LIST = """
SELECT digest, username, groups, created, expires, revoked FROM policyauth_tokens
ORDER BY created, digest
"""
_INSERT = """
INSERT INTO policyauth_tokens (digest, username, groups, created, expires, revoked)
VALUES (%s, %s, %s, %s, %s, NULL)
"""
_ID_TAKEN = "SELECT 1 FROM policyauth_tokens WHERE left(digest, 12) = %s"
_BY_DIGEST = """
SELECT digest, username, groups, created, expires, revoked FROM policyauth_tokens
WHERE digest = %s FOR UPDATE
"""
_BY_ID = """
SELECT digest, username, groups, created, expires, revoked FROM policyauth_tokens
WHERE left(digest, 12) = %s FOR UPDATE
"""
_REVOKE = "UPDATE policyauth_tokens SET revoked = %s WHERE digest = %s"
_LISTEN = "LISTEN policyauth_tokens"

__all__ = [
    "POLL_INTERVAL",
    "TABLE",
    "VERSION_TABLE",
    "PgTokenStore",
    "create",
    "list_records",
    "redacted",
    "revoke",
]


def redacted(url: str) -> str:
    """The store URL as messages show it: without its password (or anything unparseable)."""
    try:
        parts = urlsplit(url)
        hosts = parts.netloc.rpartition("@")[2]
        user = parts.username
    except ValueError:
        return f"{url.partition('://')[0]}://..."
    netloc = hosts if not user else f"{user}@{hosts}"
    query = "?..." if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")) + query


def _secrets_of(url: str) -> list[str]:
    """What must never appear in a message: the URL's password, plain and percent-encoded."""
    found: list[str] = []
    with suppress(ValueError):
        raw = urlsplit(url).netloc.rpartition("@")[0].partition(":")[2]
        if raw:
            found.append(raw)
    with suppress(psycopg.Error, ValueError):
        password = conninfo_to_dict(url).get("password")
        if password:
            found.append(str(password))
    return sorted(found, key=len, reverse=True)


def _reason(error: BaseException, url: str) -> str:
    """psycopg's message in one line, scrubbed of the URL's password."""
    text = " ".join(str(error).split()) or type(error).__name__
    for secret in _secrets_of(url):
        text = text.replace(secret, "***")
    return text


def _connect(url: str, *, autocommit: bool) -> psycopg.Connection[Any]:
    try:
        given = conninfo_to_dict(url)
    except psycopg.Error as error:
        raise TokenStoreError(
            f"token store `{redacted(url)}` is not a valid PostgreSQL URL: {_reason(error, url)}"
        ) from None
    extra = {key: value for key, value in _CONNECT_DEFAULTS.items() if key not in given}
    try:
        return psycopg.connect(make_conninfo(url, **extra), autocommit=autocommit)
    except psycopg.Error as error:
        raise TokenStoreError(
            f"cannot connect to token store `{redacted(url)}`: {_reason(error, url)}"
        ) from None


def _ensure_schema(connection: psycopg.Connection[Any]) -> None:
    """Create the tables and the trigger unless they exist, under the advisory lock.

    Checked first without the lock, so that a role that may only read never needs CREATE once
    the schema is there; checked again with it, so that only the first of racing processes
    creates anything.
    """
    if _present(connection):
        return
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        if not _present(connection):
            connection.execute(_SCHEMA)


def _present(connection: psycopg.Connection[Any]) -> bool:
    row = connection.execute(_SCHEMA_PRESENT).fetchone()
    return bool(row and row[0])


def _record(row: tuple[Any, ...]) -> Record:
    digest, user, groups, created, expires, revoked = row
    return Record(
        digest,
        user,
        tuple(groups),
        _utc(created),
        None if expires is None else _utc(expires),
        None if revoked is None else _utc(revoked),
    )


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def _checked(records: tuple[Record, ...], url: str) -> tuple[Record, ...]:
    problem = _records_problem(records)
    if problem is not None:
        raise TokenStoreError(f"token store `{redacted(url)}` holds an invalid row: {problem}")
    return records


@contextmanager
def _session(url: str, *, create_schema: bool) -> Iterator[psycopg.Connection[Any]]:
    """A connection for one CLI action; every database error becomes a one-line
    `TokenStoreError` naming the store without its password."""
    connection = _connect(url, autocommit=True)
    try:
        if create_schema:
            _ensure_schema(connection)
        elif not _present(connection):
            raise TokenStoreError(
                f"token store `{redacted(url)}` has no table `{TABLE}` yet: "
                "`policyauth token create` makes it"
            )
        yield connection
    except psycopg.Error as error:
        raise TokenStoreError(f"token store `{redacted(url)}`: {_reason(error, url)}") from None
    finally:
        connection.close()


# --- the CLI's actions, as tokens.py has them for files ---------------------------------------


def list_records(url: str) -> tuple[Record, ...]:
    """The records of the store, oldest first. A store whose table does not exist is an
    error, as a missing file is: a typo in `--store` should not look like an empty store."""
    with _session(url, create_schema=False) as connection:
        rows = connection.execute(_LIST).fetchall()
    return _checked(tuple(_record(row) for row in rows), url)


def create(
    url: str,
    user: str,
    groups: Iterable[str] = (),
    expires: timedelta | None = None,
    *,
    clock: Clock = utc_now,
) -> tuple[str, Record]:
    """Issue a token for `user`, insert its record (creating the tables on first use), and
    return both; the token is never stored. Errors as tokens.create."""
    group_list, now, end = token_terms(user, groups, expires, clock)
    with _session(url, create_schema=True) as connection, connection.transaction():
        # Serialises writers, so that the id check below and the insert are one step.
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        token = new_token()
        while _taken(connection, digest_of(token)[:ID_LENGTH]):  # ids stay unambiguous
            token = new_token()
        record = Record(digest_of(token), user, tuple(group_list), now, end, None)
        connection.execute(_INSERT, (record.digest, record.user, list(record.groups), now, end))
    return token, record


def _taken(connection: psycopg.Connection[Any], token_id: str) -> bool:
    return connection.execute(_ID_TAKEN, (token_id,)).fetchone() is not None


def revoke(url: str, token_or_id: str, *, clock: Clock = utc_now) -> Record:
    """Revoke the token given by itself or by its id; errors and idempotence as
    tokens.revoke."""
    if looks_valid(token_or_id):
        query, argument = _BY_DIGEST, digest_of(token_or_id)
        described = "the given token"
    elif _ID.fullmatch(token_or_id):
        query, argument = _BY_ID, token_or_id.lower()
        described = f"id `{argument}`"
    else:
        raise ValueError(
            f"expected a token id ({ID_LENGTH} hexadecimal digits, as `token list` shows) "
            f"or a whole `{TOKEN_PREFIX}` token"
        )
    shown = redacted(url)
    with _session(url, create_schema=False) as connection, connection.transaction():
        rows = connection.execute(query, (argument,)).fetchall()
        found = [_record(row) for row in rows]
        if looks_valid(token_or_id):  # the index found it; the decision is constant-time
            wanted = argument.encode("ascii")
            found = [r for r in found if hmac.compare_digest(r.digest.encode("ascii"), wanted)]
        if not found:
            raise TokenLookupError(f"{described} is not in token store `{shown}`")
        if len(found) > 1:
            raise TokenLookupError(
                f"{described} matches {len(found)} tokens in token store `{shown}`; "
                "revoke by the token itself"
            )
        record = found[0]
        if record.revoked is not None:
            return record
        now = clock().astimezone(UTC).replace(microsecond=0)
        connection.execute(_REVOKE, (now, record.digest))
    return attrs.evolve(record, revoked=now)


# --- checking tokens at request time ----------------------------------------------------------


class _Follower:
    """The background side of a store: its thread, its connection, the map, the outage state.

    Kept apart from `PgTokenStore` so that the thread holds no reference to the store: a store
    that nobody uses any more (replaced by a reload) is collected, and its finalizer stops
    the thread.
    """

    def __init__(self, url: str, grace: timedelta, interval: float) -> None:
        self.url = url
        self.shown = redacted(url)
        self.grace = grace.total_seconds()
        self.interval = interval
        self.by_digest: dict[bytes, Record] = {}  # replaced whole, never changed in place
        self.version: int | None = None
        self.good = False  # whether the last read succeeded
        self.confirmed: float | None = None  # time.monotonic() of the last successful read
        self.trouble = False  # whether a warning said the store cannot be read
        self.lapsed = False  # whether the grace ran out (warned once per outage)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.first_read = threading.Event()
        self.thread = threading.Thread(target=self.run, name="policyauth-pgstore", daemon=True)

    def start(self, *, wait: bool) -> None:
        self.thread.start()
        if wait:
            self.first_read.wait(_FIRST_READ_WAIT)

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        connection: psycopg.Connection[Any] | None = None
        while not self.stopping.is_set():
            try:
                if connection is None:
                    connection = _connect(self.url, autocommit=True)
                    _ensure_schema(connection)
                    connection.execute(_LISTEN)
                    self.load(connection)  # whatever happened while disconnected
                else:
                    notified = any(True for _ in connection.notifies(timeout=self.interval))
                    if self.stopping.is_set():
                        break
                    if notified:
                        self.load(connection)
                    else:
                        self.poll(connection)
            except (psycopg.Error, TokenStoreError, OSError) as error:
                self.failed(error)
                if connection is not None:
                    with suppress(Exception):
                        connection.close()
                    connection = None
                self.stopping.wait(self.interval)
            except Exception as error:  # fail closed: the store lapses, the thread lives on
                log.error("token store `%s`: reader failed (%s)", self.shown, type(error).__name__)
                self.failed(error)
                self.stopping.wait(self.interval)
            finally:
                self.first_read.set()
        if connection is not None:
            with suppress(Exception):
                connection.close()

    def poll(self, connection: psycopg.Connection[Any]) -> None:
        row = connection.execute(_VERSION).fetchone()
        if row is None or row[0] != self.version:  # load() judges a missing row
            self.load(connection)
        else:
            self.confirm()

    def load(self, connection: psycopg.Connection[Any]) -> None:
        rows = connection.execute(_LOAD).fetchall()
        if not rows:  # never "no tokens": a store whose version row is gone is broken
            raise TokenStoreError(
                f"token store `{self.shown}` has lost the row of `{VERSION_TABLE}`; "
                "its tokens cannot be trusted until that row (true, 0) is restored"
            )
        version = rows[0][0]
        records = _checked(tuple(_record(row[1:]) for row in rows if row[1] is not None), self.url)
        self.by_digest = {bytes.fromhex(record.digest): record for record in records}
        self.version = version
        self.confirm()

    def confirm(self) -> None:
        with self.lock:
            if self.trouble:
                log.warning("token store `%s` can be read again", self.shown)
            self.trouble = self.lapsed = False
            self.good = True
            self.confirmed = time.monotonic()

    def failed(self, error: BaseException) -> None:
        """Note a failed read; the first of an outage is logged, with what happens next."""
        reason = str(error) if isinstance(error, TokenStoreError) else _reason(error, self.url)
        with self.lock:
            self.good = False
            if self.trouble:
                return
            self.trouble = True
            if self.confirmed is None:
                keeping = "its tokens are refused with 503 until it can be read"
            else:
                keeping = (
                    f"keeping the {len(self.by_digest)} tokens last read for at most "
                    f"`store_grace` ({self.grace:g}s), then refusing them with 503 until it "
                    "can be read"
                )
        log.warning("token store `%s` cannot be read (%s); %s", self.shown, reason, keeping)

    def usable(self) -> bool:
        """Whether the map may decide: just read, or last read within the grace."""
        if self.good:
            return True
        confirmed = self.confirmed
        if confirmed is not None and time.monotonic() - confirmed <= self.grace:
            return True
        with self.lock:
            if self.lapsed or self.good:
                return self.good
            self.lapsed = True
        log.warning(
            "token store `%s` has not been readable for `store_grace` (%gs); its tokens are "
            "refused with 503 until it can be read again",
            self.shown,
            self.grace,
        )
        return False


# Stores alive in this process, so that a forked child (gunicorn --preload) gives each its own
# connection and thread: threads do not survive fork, and a connection must not be shared.
_LIVE: weakref.WeakSet[PgTokenStore] = weakref.WeakSet()
# The parent's followers, kept referenced in a child and never closed there: closing a libpq
# connection sends a Terminate message on the socket the parent still uses.
_INHERITED: list[_Follower] = []


class PgTokenStore:
    """The tokens of one PostgreSQL store, checked per request from memory; thread-safe.

    Construction starts the background reader and waits (a few seconds at most) for its first
    read; a store that could not be read then answers "unavailable" until it can.
    """

    def __init__(
        self,
        url: str,
        *,
        grace: timedelta = STORE_GRACE,
        poll_interval: float = POLL_INTERVAL,
        clock: Clock = utc_now,
    ) -> None:
        self._url = url
        self._grace = grace
        self._interval = poll_interval
        self._clock = clock
        self._follower = self._follow()
        _LIVE.add(self)

    def _follow(self, inherited: _Follower | None = None) -> _Follower:
        follower = _Follower(self._url, self._grace, self._interval)
        weakref.finalize(self, follower.stop)
        if inherited is None:
            follower.start(wait=True)
        else:  # a forked child serves the parent's map while its own reader connects
            follower.by_digest, follower.version = inherited.by_digest, inherited.version
            follower.good, follower.confirmed = inherited.good, inherited.confirmed
            follower.start(wait=False)
        return follower

    @property
    def path(self) -> str:
        """The store as messages name it (the URL without its password)."""
        return self._follower.shown

    def __repr__(self) -> str:
        return f"PgTokenStore({self.path!r})"

    def close(self) -> None:
        """Stop the reader and close its connection (within one poll interval)."""
        self._follower.stop()

    def verify(self, credential: Credential) -> Identity | Invalid | Unavailable:
        """As `TokenStore.verify`: never raises, never a query, details never the token."""
        try:
            if isinstance(credential, BasicCredential):
                token, user = credential.secret, credential.user
            else:
                token, user = credential.token, None
            if not looks_valid(token):
                return Invalid("malformed token")
            follower = self._follower
            if not follower.usable():
                return Unavailable("the token store cannot be read")
            return identify(follower.by_digest, token, user, self._clock())
        except Exception as error:  # fail closed (security reference, design rule 6)
            log.error("token store `%s`: token check failed (%s)", self.path, type(error).__name__)
            return Invalid("the token could not be checked")

    def _forked(self) -> None:
        _INHERITED.append(self._follower)
        self._follower = self._follow(self._follower)


def _after_fork() -> None:
    for store in list(_LIVE):
        store._forked()


os.register_at_fork(after_in_child=_after_fork)
