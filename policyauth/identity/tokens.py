"""API tokens issued by policyauth itself: their format, the store file, and checking them.

A `tokens` block names a store file (language.md, section 3). The store holds only SHA-256
digests of tokens, with the user, groups, creation time, expiry and revocation time of each,
so a leaked store file does not leak a usable token (security reference, design rule 10).

Token format: `pa_`, 32 base62 characters from `secrets` (62**32 is about 2**190), and 6 base62
characters of the CRC32 of those 32 (GitHub's token format). The prefix lets the engine route
the token here without a network call and lets secret scanners find leaked ones; the checksum
lets `looks_valid` refuse a mistyped or made-up token without reading the store. CRC32 detects
every change confined to 32 consecutive bits, so every one-character typo in the random part
is caught, and one in the checksum or prefix trivially is.

The store file is JSON, `{"version": 1, "tokens": [record, ...]}`, read strictly through
`policyauth.serde` and written atomically (a temporary file in the same folder, then
`os.replace`). Every change (`create`, `revoke`) is a read-modify-write done under an exclusive
advisory lock on `<store>.lock` beside the store, reading the file again once the lock is held:
without it, two writers that read the same version each replace it with their own change, and
one change is lost (a revocation reported as done, and undone). A rewrite keeps the file's
owner, group and mode, so a server that reads it through its group can still read it; a new
store is created with mode 0600. A running `TokenStore` re-reads the file when it changes, so
`policyauth token revoke` takes effect without a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
import string
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import attrs

from policyauth.identity.source import Credential, Identity, Invalid, Unavailable
from policyauth.language.model import DEFAULT_STORE_GRACE_MS
from policyauth.request import BasicCredential
from policyauth.serde import SerdeError, structure, unstructure

log = logging.getLogger("policyauth.tokens")

TOKEN_PREFIX = "pa_"
_ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
_ALPHABET_SET = frozenset(_ALPHABET)
_RANDOM_LENGTH = 32
_CHECKSUM_LENGTH = 6  # 62**6 > 2**32, so every CRC32 value fits
TOKEN_LENGTH = len(TOKEN_PREFIX) + _RANDOM_LENGTH + _CHECKSUM_LENGTH
ID_LENGTH = 12  # hex digits of the digest: 48 bits, unique in a store (create makes sure)
STORE_VERSION = 1
RELOAD_INTERVAL = timedelta(seconds=1)
STORE_GRACE = timedelta(milliseconds=DEFAULT_STORE_GRACE_MS)  # `store_grace` unless set
NEW_STORE_MODE = 0o600  # a store created by `create`: only its owner may read the digests
LOCK_SUFFIX = ".lock"

_DIGEST = re.compile(r"[0-9a-f]{64}")
_ID = re.compile(r"[0-9a-fA-F]{12}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

Clock = Callable[[], datetime]  # aware UTC datetimes
Warn = Callable[[str], None]  # where a write reports what it could not do (the CLI: stderr)
Status = Literal["active", "expired", "revoked"]

__all__ = [
    "ID_LENGTH",
    "LOCK_SUFFIX",
    "NEW_STORE_MODE",
    "RELOAD_INTERVAL",
    "STORE_GRACE",
    "STORE_VERSION",
    "TOKEN_LENGTH",
    "TOKEN_PREFIX",
    "Clock",
    "Record",
    "Status",
    "TokenLookupError",
    "TokenStore",
    "TokenStoreError",
    "Warn",
    "create",
    "digest_of",
    "identify",
    "list_records",
    "looks_valid",
    "new_token",
    "revoke",
    "utc_now",
]


class TokenStoreError(Exception):
    """The store file cannot be read or written, or is not a valid store.

    Messages name the file and the place in it, never a token.
    """


class TokenLookupError(LookupError):
    """No single token in the store matches what was asked for (unknown, or an ambiguous id)."""


def utc_now() -> datetime:
    """The default clock: aware UTC time, so that expiry never depends on the local zone."""
    return datetime.now(UTC)


# --- the token format -------------------------------------------------------------------------


def new_token() -> str:
    """A fresh token: prefix, 32 random base62 characters, 6 characters of checksum."""
    random = "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_LENGTH))
    return TOKEN_PREFIX + random + _checksum(random)


def looks_valid(token: str) -> bool:
    """Whether `token` has the prefix, length, alphabet and checksum of a policyauth token.

    Looks nothing up, so a typo or a guess costs no store access. Never raises, whatever the
    input: a non-ASCII character is simply outside the alphabet (security reference, A09).
    """
    if not isinstance(token, str) or len(token) != TOKEN_LENGTH:
        return False
    if not token.startswith(TOKEN_PREFIX):
        return False
    body = token[len(TOKEN_PREFIX) :]
    if not _ALPHABET_SET.issuperset(body):
        return False
    return body[_RANDOM_LENGTH:] == _checksum(body[:_RANDOM_LENGTH])


def digest_of(token: str) -> str:
    """The hex SHA-256 digest under which the store keeps `token`.

    A plain (unkeyed, unsalted) hash is enough: the token has about 190 bits of randomness,
    so neither a dictionary nor a brute-force search over digests can recover it.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _checksum(random: str) -> str:
    value = zlib.crc32(random.encode("ascii"))
    digits = []
    for _ in range(_CHECKSUM_LENGTH):
        value, digit = divmod(value, len(_ALPHABET))
        digits.append(_ALPHABET[digit])
    return "".join(reversed(digits))


# --- records and the store file ---------------------------------------------------------------


@attrs.frozen
class Record:
    """One issued token as the store keeps it: its digest, never the token itself.

    `created`, `expires` and `revoked` are aware UTC datetimes; `expires` None means the token
    never expires, `revoked` None means it has not been revoked.
    """

    digest: str
    user: str
    groups: tuple[str, ...]
    created: datetime
    expires: datetime | None
    revoked: datetime | None

    @property
    def id(self) -> str:
        """What `list` shows and `revoke` accepts: the first 12 hex digits of the digest.

        Derived rather than stored, so that it can never disagree with the digest.
        """
        return self.digest[:ID_LENGTH]

    def status(self, now: datetime) -> Status:
        """`revoked`, `expired` or `active` at `now`; revocation wins over expiry."""
        if self.revoked is not None:
            return "revoked"
        if self.expires is not None and self.expires <= now:
            return "expired"
        return "active"


@attrs.frozen
class _StoreFile:
    version: int
    tokens: tuple[Record, ...]


def list_records(path: str | os.PathLike[str]) -> tuple[Record, ...]:
    """The records of an existing store, in the order they were created.

    Raises `TokenStoreError` when the file is missing, unreadable or not a valid store: a
    typo in `--store` should not look like an empty store.
    """
    return _read_records(Path(path), missing_ok=False)


def token_terms(
    user: str, groups: Iterable[str], expires: timedelta | None, clock: Clock
) -> tuple[list[str], datetime, datetime | None]:
    """The groups, issue time and expiry of a new token, checked: one rule for every store.
    Raises `ValueError` for an unusable user, group or lifetime."""
    problem = _user_problem(user)
    if problem is not None:
        raise ValueError(problem)
    group_list = _unique(groups)
    for group in group_list:
        problem = _group_problem(group)
        if problem is not None:
            raise ValueError(problem)
    if expires is not None and expires <= timedelta(0):
        raise ValueError("the lifetime of a token must be positive")
    now = clock().astimezone(UTC).replace(microsecond=0)
    try:
        end = None if expires is None else now + expires
    except OverflowError:
        raise ValueError("the lifetime of a token is too long") from None
    return group_list, now, end


def create(
    path: str | os.PathLike[str],
    user: str,
    groups: Iterable[str] = (),
    expires: timedelta | None = None,
    *,
    clock: Clock = utc_now,
    warn: Warn = log.warning,
) -> tuple[str, Record]:
    """Issue a token for `user`, add its record to the store (created if missing), return both.

    The token is returned once and never stored. Raises `ValueError` for an unusable user,
    group or lifetime, and `TokenStoreError` when the store cannot be read or written; `warn`
    hears when the rewritten store could not keep its owner, group or mode.
    """
    group_list, now, end = token_terms(user, groups, expires, clock)
    shown = Path(path)
    with _locked(shown) as target:
        records = _read_records(target, missing_ok=True, shown=shown)
        taken = {record.id for record in records}
        token = new_token()
        while digest_of(token)[:ID_LENGTH] in taken:  # keeps ids unambiguous for `revoke`
            token = new_token()
        record = Record(digest_of(token), user, tuple(group_list), now, end, None)
        _write(target, shown, (*records, record), warn)
    return token, record


def revoke(
    path: str | os.PathLike[str],
    token_or_id: str,
    *,
    clock: Clock = utc_now,
    warn: Warn = log.warning,
) -> Record:
    """Mark the token given by itself or by its id as revoked, and return its record.

    Revoking a revoked token changes nothing and returns the record with its first
    revocation time. Raises `ValueError` when `token_or_id` is neither a well-formed token
    nor an id (the value is not echoed: it may be a mistyped token), `TokenLookupError`
    when no single record matches, `TokenStoreError` when the store cannot be used; `warn`
    hears when the rewritten store could not keep its owner, group or mode.
    """
    if looks_valid(token_or_id):
        wanted = digest_of(token_or_id).encode("ascii")
        described = "the given token"

        def matches(record: Record) -> bool:
            return hmac.compare_digest(record.digest.encode("ascii"), wanted)

    elif _ID.fullmatch(token_or_id):
        token_id = token_or_id.lower()
        described = f"id `{token_id}`"

        def matches(record: Record) -> bool:
            return record.id == token_id

    else:
        raise ValueError(
            f"expected a token id ({ID_LENGTH} hexadecimal digits, as `token list` shows) "
            f"or a whole `{TOKEN_PREFIX}` token"
        )
    shown = Path(path)
    list_records(shown)  # a missing store is an error before any lock file is made for it
    with _locked(shown) as target:
        records = _read_records(target, missing_ok=False, shown=shown)
        found = [index for index, record in enumerate(records) if matches(record)]
        if not found:
            raise TokenLookupError(f"{described} is not in token store `{shown}`")
        if len(found) > 1:
            raise TokenLookupError(
                f"{described} matches {len(found)} tokens in token store `{shown}`; "
                "revoke by the token itself"
            )
        index = found[0]
        if records[index].revoked is not None:
            return records[index]
        now = clock().astimezone(UTC).replace(microsecond=0)
        revoked = attrs.evolve(records[index], revoked=now)
        _write(target, shown, (*records[:index], revoked, *records[index + 1 :]), warn)
    return revoked


def _read_records(path: Path, *, missing_ok: bool, shown: Path | None = None) -> tuple[Record, ...]:
    """The records of the file at `path`; messages name it as `shown` (what the user typed)."""
    shown = path if shown is None else shown
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if missing_ok:
            return ()
        raise TokenStoreError(f"token store `{shown}` does not exist") from None
    except OSError as error:
        raise TokenStoreError(_os_problem("cannot read", shown, error)) from None
    return _parse(raw, shown)


def _parse(raw: bytes, path: Path) -> tuple[Record, ...]:
    """Records from the bytes of a store file, or `TokenStoreError` saying what is wrong where."""
    where = f"token store `{path}`"
    try:
        text = raw.decode("utf-8")
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise TokenStoreError(f"{where} is not valid utf-8") from None
    except json.JSONDecodeError as error:
        raise TokenStoreError(
            f"{where} is not valid json (line {error.lineno}, column {error.colno})"
        ) from None
    except (ValueError, RecursionError) as error:
        raise TokenStoreError(f"{where} is not valid json ({error})") from None
    version = data.get("version") if isinstance(data, dict) else None
    if type(version) is int and version != STORE_VERSION:  # before its other keys are judged
        raise TokenStoreError(
            f"{where} has version {version}; this policyauth reads version {STORE_VERSION}"
        )
    try:
        store = structure(data, _StoreFile)
    except SerdeError as error:
        raise TokenStoreError(f"{where}: {error}") from None
    problem = _records_problem(store.tokens)
    if problem is not None:
        raise TokenStoreError(f"{where}: {problem}")
    return store.tokens


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Refuse duplicate keys: which one wins differs between readers, so neither may."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key `{key}`")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"`{name}` is not a json number")


def _records_problem(records: tuple[Record, ...]) -> str | None:
    """What structure cannot check: digest shape, user and group rules, unique tokens."""
    seen: dict[str, int] = {}
    for index, record in enumerate(records):
        where = f"tokens[{index}]"
        if _DIGEST.fullmatch(record.digest) is None:
            return f"{where}.digest: expected 64 lower-case hexadecimal digits"
        if record.digest in seen:
            return f"{where}.digest: the same token is already tokens[{seen[record.digest]}]"
        seen[record.digest] = index
        problem = _user_problem(record.user)
        if problem is not None:
            return f"{where}.user: {problem}"
        for number, group in enumerate(record.groups):
            problem = _group_problem(group)
            if problem is not None:
                return f"{where}.groups[{number}]: {problem}"
    return None


def _user_problem(user: str) -> str | None:
    """Why `user` cannot own a token, if it cannot: it must be usable as a Basic user."""
    if not user:
        return "the user is empty"
    if ":" in user:
        return "the user contains `:`, which Basic credentials cannot carry"
    if _CONTROL.search(user) is not None:
        return "the user contains a control character"
    return None


def _group_problem(group: str) -> str | None:
    if not group:
        return "a group name is empty"
    if _CONTROL.search(group) is not None:
        return "a group name contains a control character"
    return None


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


@contextlib.contextmanager
def _locked(shown: Path) -> Iterator[Path]:
    """Hold the store's write lock; yields the store's real path (symbolic links resolved).

    The lock is `flock` on `<store>.lock` beside the real file, so every name of the store
    shares one lock; the store itself cannot carry it, as each write replaces it with a new
    file. The lock file is made once and never removed (removing it would let a writer lock a
    file that the next writer no longer sees). It is opened read-only, so whoever may read it
    may lock it; a new one gets the store's owner, group and mode, which lets whoever may
    rewrite the store take its lock. The lock is released when the file is closed, so a writer
    that dies holds nothing. Waiting is unbounded: a write holds the lock for milliseconds.
    """
    target = Path(os.path.realpath(shown))
    lock = target.with_name(target.name + LOCK_SUFFIX)
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW  # a planted link cannot redirect it
    try:
        try:
            handle = os.open(lock, flags | os.O_CREAT | os.O_EXCL, NEW_STORE_MODE)
        except FileExistsError:
            handle = os.open(lock, flags)
        else:
            with contextlib.suppress(OSError):  # best effort: 0600 and our owner otherwise
                _give(handle, os.stat(target))
    except OSError as error:
        reason = (error.strerror or "input/output error").lower()
        hint = ""
        if isinstance(error, PermissionError):
            hint = "; whoever changes the store must be able to read its lock file"
        raise TokenStoreError(
            f"cannot lock token store `{shown}` (lock file `{lock}`): {reason}{hint}"
        ) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield target
    finally:
        os.close(handle)


def _write(target: Path, shown: Path, records: tuple[Record, ...], warn: Warn) -> None:
    """Replace the store atomically: a reader sees the old file or the new one, never a mix.

    The temporary file lives in the store's folder (os.replace is atomic only within one
    file system) and is removed if anything fails. `target` is the real path, so a symbolic
    link to the store keeps pointing at the store. The new file gets the old one's owner,
    group and mode before it takes its place (a store read by a server through its group stays
    readable); what could not be given is reported to `warn`. The caller holds the lock.
    """
    text = json.dumps(unstructure(_StoreFile(STORE_VERSION, records)), indent=2) + "\n"
    try:
        before: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        before = None
    except OSError as error:
        raise TokenStoreError(_os_problem("cannot write", shown, error)) from None
    try:
        handle, temporary = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
        )
    except OSError as error:
        raise TokenStoreError(_os_problem("cannot write", shown, error)) from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            os.fchmod(file.fileno(), NEW_STORE_MODE)
            if before is not None:
                _give(file.fileno(), before)
            after = os.fstat(file.fileno())
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except OSError as error:
        _remove(temporary)
        raise TokenStoreError(_os_problem("cannot write", shown, error)) from None
    except BaseException:
        _remove(temporary)
        raise
    _sync_folder(target.parent)
    if before is not None and _owner_and_mode(after) != _owner_and_mode(before):
        warn(_not_kept(shown, before, after))


def _give(handle: int, model: os.stat_result) -> None:
    """Give the open file `model`'s owner, group and mode, as far as this process may.

    Changing the owner takes privilege; a member of the file's group may still keep the group.
    When the group could not be kept, the group bits are not given either: they were meant for
    the old group, not for this process's. The mode is set last, as changing the owner clears
    the set-id bits. Failures are left for the caller to see by comparing the result (fstat)
    with `model`.
    """
    current = os.fstat(handle)
    if (current.st_uid, current.st_gid) != (model.st_uid, model.st_gid):
        try:
            os.fchown(handle, model.st_uid, model.st_gid)
        except OSError:
            with contextlib.suppress(OSError):
                os.fchown(handle, -1, model.st_gid)
    mode = stat.S_IMODE(model.st_mode)
    if os.fstat(handle).st_gid != model.st_gid:
        mode &= ~stat.S_IRWXG
    with contextlib.suppress(OSError):
        os.fchmod(handle, mode)


def _owner_and_mode(status: os.stat_result) -> tuple[int, int, int]:
    return (status.st_uid, status.st_gid, stat.S_IMODE(status.st_mode))


def _not_kept(shown: Path, before: os.stat_result, after: os.stat_result) -> str:
    """The warning for a rewrite that changed the store's owner, group or mode."""
    uid, gid, mode = _owner_and_mode(before)
    new_uid, new_gid, new_mode = _owner_and_mode(after)
    return (
        f"token store `{shown}` was rewritten, but the new file could not be given the old "
        f"one's owner, group and mode (they were {uid}:{gid} {mode:04o}, they are now "
        f"{new_uid}:{new_gid} {new_mode:04o}): a server that read it through them may no "
        f"longer be able to, and refuses its tokens with 503 after `store_grace`; run this "
        f"as the file's owner or as root, or restore them with "
        f"`chown {uid}:{gid} {shown} && chmod {mode:04o} {shown}`"
    )


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _sync_folder(folder: Path) -> None:
    """Make the rename durable; best effort, as not every platform can open a folder."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(handle)
    finally:
        os.close(handle)


def _os_problem(action: str, path: Path, error: OSError) -> str:
    reason = error.strerror or "input/output error"
    return f"{action} token store `{path}`: {reason.lower()}"


# --- checking tokens at request time ----------------------------------------------------------

# What identifies one version of the store file: (device, inode, mtime_ns, ctime_ns, size).
# os.replace always brings a new inode, and a file system may hand a freed inode number to the
# next file, but a write by `create` or `revoke` always grows the file (a record is added, or a
# `null` becomes a timestamp), so no write by them can bring back the signature last read. The
# ctime catches what keeps the contents: chmod, chown, an in-place copy that keeps the mtime.
# A string stands for a file that could not be examined ("missing", "error 13", ...).
_Signature = tuple[int, int, int, int, int] | str


class TokenStore:
    """The tokens of one store file, checked per request; safe to share between threads.

    The file is read at construction, and then re-read when its signature changes, looked at
    most once per `reload_interval` of `clock`, so a revocation takes effect within about a
    second without a restart.

    If the file becomes unreadable (permissions, gone, invalid), the last good contents stay
    in force for at most `grace` after they were last confirmed, with a warning: failing over
    to "no tokens" at once would turn a bad edit into an outage, and any token is out of the
    question. After `grace` every token of the store is "unavailable" (503, never 401, never
    cached) until the file can be read again, so a revocation written to a file that this
    process cannot read is never kept alive for ever: it is in force, or the store's tokens are
    refused, at most `grace` and one `reload_interval` after it was made. A store that could
    not be read at construction is unavailable at once. A store missing at construction is an
    empty store (every token invalid: none was issued yet), with a warning.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Clock = utc_now,
        reload_interval: timedelta = RELOAD_INTERVAL,
        grace: timedelta = STORE_GRACE,
    ) -> None:
        self._path = Path(path)
        self._clock = clock
        self._interval = reload_interval
        self._grace = grace
        self._lock = threading.Lock()
        self._by_digest: dict[bytes, Record] = {}
        self._signature: _Signature | None = None  # the file as last looked at
        self._good = False  # whether `_by_digest` is what that file holds
        self._loaded = False  # whether the file has ever been read
        self._confirmed: datetime | None = None  # when `_good` was last found true
        self._trouble = False  # whether a warning said the file cannot be read
        self._lapsed = False  # whether the grace ran out (warned once per outage)
        self._checked: datetime | None = None
        with self._lock:
            self._checked = clock()
            self._refresh(self._checked)

    @property
    def path(self) -> Path:
        return self._path

    def verify(self, credential: Credential) -> Identity | Invalid | Unavailable:
        """The identity a token belongs to, why it is refused, or why it cannot be checked.

        Never raises. Bearer: the token itself. Basic: the secret is the token and the user
        must be the token's user. Details never contain the token.
        """
        try:
            return self._verify(credential)
        except Exception as error:  # fail closed (security reference, design rule 6)
            log.error("token store `%s`: token check failed (%s)", self._path, type(error).__name__)
            return Invalid("the token could not be checked")

    def _verify(self, credential: Credential) -> Identity | Invalid | Unavailable:
        if isinstance(credential, BasicCredential):
            token, user = credential.secret, credential.user
        else:
            token, user = credential.token, None
        if not looks_valid(token):
            return Invalid("malformed token")
        now = self._clock()
        self._maybe_refresh(now)
        if not self._usable(now):
            return Unavailable("the token store cannot be read")
        return identify(self._by_digest, token, user, now)

    def _usable(self, now: datetime) -> bool:
        """Whether the records in memory may decide: the file's own, or confirmed within grace.

        A clock set back past the confirmation counts as the grace having run out.
        """
        if self._good:
            return True
        confirmed = self._confirmed
        if confirmed is not None and timedelta(0) <= now - confirmed <= self._grace:
            return True
        if not self._lapsed:
            with self._lock:
                if not self._lapsed and not self._good:
                    self._lapsed = True
                    log.warning(
                        "token store `%s` has not been readable for `store_grace` (%s); its "
                        "tokens are refused with 503 until it can be read again",
                        self._path,
                        _seconds(self._grace),
                    )
        return False

    def _maybe_refresh(self, now: datetime) -> None:
        if self._fresh(now):
            return
        with self._lock:
            if self._fresh(now):  # another thread looked while this one waited
                return
            self._checked = now
            self._refresh(now)

    def _fresh(self, now: datetime) -> bool:
        """Whether the file was looked at less than one interval ago (a clock set back: no)."""
        checked = self._checked
        return checked is not None and timedelta(0) <= now - checked < self._interval

    def _refresh(self, now: datetime) -> None:
        """Re-read the file if its signature changed; the caller holds the lock."""
        try:
            status = os.stat(self._path)
        except FileNotFoundError:
            self._unreadable(now, "missing", None)
            return
        except OSError as error:
            self._unreadable(now, f"error {error.errno}", error)
            return
        if _signature(status) == self._signature:
            self._confirm(now, good=self._good)
            return
        try:
            with open(self._path, "rb") as file:
                signature = _signature(os.fstat(file.fileno()))
                raw = file.read()
        except OSError as error:
            self._unreadable(now, f"error {error.errno}", error)
            return
        self._signature = signature
        try:
            records = _parse(raw, self._path)
        except TokenStoreError as problem:
            self._confirm(now, good=False)
            self._trouble = True
            log.warning("%s; %s", problem, self._keeping())
            return
        self._by_digest = {bytes.fromhex(record.digest): record for record in records}
        self._loaded = True
        self._confirm(now, good=True)

    def _confirm(self, now: datetime, *, good: bool) -> None:
        """Record what the last look found; say so when a store that was in trouble is back."""
        if good and self._trouble:
            log.warning("token store `%s` can be read again", self._path)
            self._trouble = self._lapsed = False
        self._good = good
        if good:
            self._confirmed = now

    def _unreadable(self, now: datetime, signature: str, error: OSError | None) -> None:
        """Note a file that cannot be examined, warning once per new condition.

        A store that has never been read and does not exist is empty, not unreadable: none of
        its tokens can have been issued yet, so refusing them (401) loses nothing.
        """
        empty = error is None and not self._loaded
        if signature == self._signature:
            self._confirm(now, good=empty)
            return
        self._signature = signature
        self._confirm(now, good=empty)
        if empty:
            log.warning("token store `%s` does not exist; no token is accepted", self._path)
            return
        self._trouble = True
        if error is None:
            log.warning("token store `%s` has disappeared; %s", self._path, self._keeping())
        else:
            problem = _os_problem("cannot read", self._path, error)
            log.warning("%s; %s", problem, self._keeping())

    def _keeping(self) -> str:
        """What the store does while it cannot be read, for the warning that says so."""
        if self._confirmed is None:
            return "its tokens are refused with 503 until it can be read"
        return (
            f"keeping the {len(self._by_digest)} tokens last read for at most `store_grace` "
            f"({_seconds(self._grace)}), then refusing them with 503 until it can be read"
        )


def identify(
    by_digest: dict[bytes, Record], token: str, user: str | None, now: datetime
) -> Identity | Invalid:
    """The identity of a well-formed `token` among the records of a store, keyed by the raw
    SHA-256 digest; `user` is the Basic user, None for a bearer token.

    Shared by every kind of store (a file here, PostgreSQL in pgstore.py), so that a token is
    judged the same wherever it is kept.
    """
    presented = hashlib.sha256(token.encode("ascii")).digest()
    record = by_digest.get(presented)
    # The dictionary finds the candidate; the decision is a constant-time comparison of
    # bytes (str arguments would raise TypeError on non-ASCII, security reference A09).
    if record is None or not hmac.compare_digest(bytes.fromhex(record.digest), presented):
        return Invalid("unknown token")
    if user is not None and user != record.user:
        # Both sides (the Basic user, the owner), so a script sending the wrong user name
        # is told which one the token needs; user names are not secrets, tokens are.
        return Invalid(
            f"the Basic user is `{_escaped(user)}`, the token belongs to `{record.user}`"
        )
    status = record.status(now)
    if status != "active":
        return Invalid(f"token {status}")
    return Identity({"username": record.user, "groups": list(record.groups)})


def _signature(status: os.stat_result) -> tuple[int, int, int, int, int]:
    return (status.st_dev, status.st_ino, status.st_mtime_ns, status.st_ctime_ns, status.st_size)


def _seconds(duration: timedelta) -> str:
    """`60s`, `1.5s`: a duration as a warning shows it."""
    return f"{duration.total_seconds():g}s"


def _escaped(text: str) -> str:
    """A caller's text for a one-line message: printable, at most 80 characters."""
    text = text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= 80 else text[:77] + "..."
