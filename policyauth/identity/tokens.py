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
`os.replace`) with mode 0600. A running `TokenStore` re-reads it when it changes, so
`policyauth token revoke` takes effect without a restart.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import string
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import attrs

from policyauth.identity.source import Credential, Identity, Invalid
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

_DIGEST = re.compile(r"[0-9a-f]{64}")
_ID = re.compile(r"[0-9a-fA-F]{12}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

Clock = Callable[[], datetime]  # aware UTC datetimes
Status = Literal["active", "expired", "revoked"]

__all__ = [
    "ID_LENGTH",
    "RELOAD_INTERVAL",
    "STORE_VERSION",
    "TOKEN_LENGTH",
    "TOKEN_PREFIX",
    "Clock",
    "Record",
    "Status",
    "TokenLookupError",
    "TokenStore",
    "TokenStoreError",
    "create",
    "digest_of",
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


def create(
    path: str | os.PathLike[str],
    user: str,
    groups: Iterable[str] = (),
    expires: timedelta | None = None,
    *,
    clock: Clock = utc_now,
) -> tuple[str, Record]:
    """Issue a token for `user`, add its record to the store (created if missing), return both.

    The token is returned once and never stored. Raises `ValueError` for an unusable user,
    group or lifetime, and `TokenStoreError` when the store cannot be read or written.
    """
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
    target = Path(path)
    records = _read_records(target, missing_ok=True)
    now = clock().astimezone(UTC).replace(microsecond=0)
    try:
        end = None if expires is None else now + expires
    except OverflowError:
        raise ValueError("the lifetime of a token is too long") from None
    taken = {record.id for record in records}
    token = new_token()
    while digest_of(token)[:ID_LENGTH] in taken:  # keeps ids unambiguous for `revoke`
        token = new_token()
    record = Record(digest_of(token), user, tuple(group_list), now, end, None)
    _write(target, (*records, record))
    return token, record


def revoke(path: str | os.PathLike[str], token_or_id: str, *, clock: Clock = utc_now) -> Record:
    """Mark the token given by itself or by its id as revoked, and return its record.

    Revoking a revoked token changes nothing and returns the record with its first
    revocation time. Raises `ValueError` when `token_or_id` is neither a well-formed token
    nor an id (the value is not echoed: it may be a mistyped token), `TokenLookupError`
    when no single record matches, `TokenStoreError` when the store cannot be used.
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
    target = Path(path)
    records = list_records(target)
    found = [index for index, record in enumerate(records) if matches(record)]
    if not found:
        raise TokenLookupError(f"{described} is not in token store `{target}`")
    if len(found) > 1:
        raise TokenLookupError(
            f"{described} matches {len(found)} tokens in token store `{target}`; "
            "revoke by the token itself"
        )
    index = found[0]
    if records[index].revoked is not None:
        return records[index]
    revoked = attrs.evolve(records[index], revoked=clock().astimezone(UTC).replace(microsecond=0))
    _write(target, (*records[:index], revoked, *records[index + 1 :]))
    return revoked


def _read_records(path: Path, *, missing_ok: bool) -> tuple[Record, ...]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if missing_ok:
            return ()
        raise TokenStoreError(f"token store `{path}` does not exist") from None
    except OSError as error:
        raise TokenStoreError(_os_problem("cannot read", path, error)) from None
    return _parse(raw, path)


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


def _write(path: Path, records: tuple[Record, ...]) -> None:
    """Replace the store atomically, mode 0600: a reader sees the old file or the new one.

    The temporary file lives in the store's folder (os.replace is atomic only within one
    file system) and is removed if anything fails. A symbolic link to the store is followed,
    so the link keeps pointing at the store.
    """
    target = Path(os.path.realpath(path))
    text = json.dumps(unstructure(_StoreFile(STORE_VERSION, records)), indent=2) + "\n"
    try:
        handle, temporary = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
        )
    except OSError as error:
        raise TokenStoreError(_os_problem("cannot write", path, error)) from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            os.fchmod(file.fileno(), 0o600)
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except OSError as error:
        _remove(temporary)
        raise TokenStoreError(_os_problem("cannot write", path, error)) from None
    except BaseException:
        _remove(temporary)
        raise
    _sync_folder(target.parent)


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

# What identifies one version of the store file: (device, inode, mtime_ns, size). os.replace
# always brings a new inode, so every write by `create` and `revoke` is noticed even within one
# timestamp tick. A string stands for a file that could not be examined ("missing", ...).
_Signature = tuple[int, int, int, int] | str


class TokenStore:
    """The tokens of one store file, checked per request; safe to share between threads.

    The file is read at construction, and then re-read when its signature (inode, mtime,
    size) changes, looked at most once per `reload_interval` of `clock`, so a revocation
    takes effect within about a second without a restart. If the file becomes unreadable or
    invalid, the last good contents stay in force and a warning is logged (once per change
    of the file): failing over to "no tokens" would turn a bad edit into an outage, failing
    over to "any token" is out of the question, and keeping what was last known to be right
    keeps revocations made so far. A file missing at construction is an empty store (every
    token invalid), with a warning.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Clock = utc_now,
        reload_interval: timedelta = RELOAD_INTERVAL,
    ) -> None:
        self._path = Path(path)
        self._clock = clock
        self._interval = reload_interval
        self._lock = threading.Lock()
        self._by_digest: dict[bytes, Record] = {}
        self._signature: _Signature | None = None
        self._checked: datetime | None = None
        with self._lock:
            self._checked = clock()
            self._refresh()

    @property
    def path(self) -> Path:
        return self._path

    def verify(self, credential: Credential) -> Identity | Invalid:
        """The identity a token belongs to, or why it is refused. Never raises.

        Bearer: the token itself. Basic: the secret is the token and the user must be the
        token's user. Details never contain the token.
        """
        try:
            return self._verify(credential)
        except Exception as error:  # fail closed (security reference, design rule 6)
            log.error("token store `%s`: token check failed (%s)", self._path, type(error).__name__)
            return Invalid("the token could not be checked")

    def _verify(self, credential: Credential) -> Identity | Invalid:
        if isinstance(credential, BasicCredential):
            token, user = credential.secret, credential.user
        else:
            token, user = credential.token, None
        if not looks_valid(token):
            return Invalid("malformed token")
        now = self._clock()
        self._maybe_refresh(now)
        presented = hashlib.sha256(token.encode("ascii")).digest()
        record = self._by_digest.get(presented)
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

    def _maybe_refresh(self, now: datetime) -> None:
        if self._fresh(now):
            return
        with self._lock:
            if self._fresh(now):  # another thread looked while this one waited
                return
            self._checked = now
            self._refresh()

    def _fresh(self, now: datetime) -> bool:
        """Whether the file was looked at less than one interval ago (a clock set back: no)."""
        checked = self._checked
        return checked is not None and timedelta(0) <= now - checked < self._interval

    def _refresh(self) -> None:
        """Re-read the file if its signature changed; the caller holds the lock."""
        try:
            stat = os.stat(self._path)
        except FileNotFoundError:
            self._changed("missing", None)
            return
        except OSError as error:
            self._changed(f"error {error.errno}", error)
            return
        if _signature(stat) == self._signature:
            return
        try:
            with open(self._path, "rb") as file:
                signature = _signature(os.fstat(file.fileno()))
                raw = file.read()
        except OSError as error:
            self._changed(f"error {error.errno}", error)
            return
        self._signature = signature
        try:
            records = _parse(raw, self._path)
        except TokenStoreError as problem:
            log.warning("%s; keeping the %d tokens last read", problem, len(self._by_digest))
            return
        self._by_digest = {bytes.fromhex(record.digest): record for record in records}

    def _changed(self, signature: str, error: OSError | None) -> None:
        """Note a file that cannot be examined, warning once per new condition."""
        if signature == self._signature:
            return
        first = self._signature is None
        self._signature = signature
        if first and error is None:
            log.warning("token store `%s` does not exist; no token is accepted", self._path)
        elif error is None:
            log.warning(
                "token store `%s` has disappeared; keeping the %d tokens last read",
                self._path,
                len(self._by_digest),
            )
        else:
            log.warning(
                "%s; keeping the %d tokens last read",
                _os_problem("cannot read", self._path, error),
                len(self._by_digest),
            )


def _signature(stat: os.stat_result) -> tuple[int, int, int, int]:
    return (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)


def _escaped(text: str) -> str:
    """A caller's text for a one-line message: printable, at most 80 characters."""
    text = text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= 80 else text[:77] + "..."
