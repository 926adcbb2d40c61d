"""`policyauth token create|list|revoke`: manage the API tokens of a `tokens` store (a file, or
a PostgreSQL database given by its postgresql:// URL).

A token is shown once, when it is created, and never again: the store keeps only its digest.
So `create` prints the token alone on stdout (for `TOKEN=$(policyauth token create ...)`) and
says so on stderr; `list` shows ids, never digests; `revoke` takes the id that `list` shows (or
the token itself), and a running server refuses the token within about a second.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timedelta
from types import ModuleType
from typing import Any

from policyauth.cli import EXIT_NEGATIVE, EXIT_OK, Command, UsageError, err, out
from policyauth.identity import tokens
from policyauth.identity.tokens import (
    ID_LENGTH,
    Record,
    TokenLookupError,
    TokenStoreError,
    utc_now,
)
from policyauth.language.durations import parse_duration
from policyauth.language.fleet_checks import STORE_SCHEMES, is_store_url
from policyauth.serde import unstructure

DESCRIPTION = """\
Issue, list and revoke API tokens for a `tokens` block. The store file holds only SHA-256
digests of tokens, with the user, groups, creation time, expiry and revocation time of each;
`create` makes the file (mode 0600) when it does not exist. Every change keeps the file's
owner, group and mode (or warns that it could not), and takes the lock file `FILE.lock`
beside the store, so that concurrent changes never undo one another.

  policyauth token create --store automation.tokens --user ci-bot --groups deploy --expires 90d
  policyauth token list   --store automation.tokens [--format json]
  policyauth token revoke --store automation.tokens ID

`--store` may instead be a PostgreSQL URL, postgresql://USER@HOST:5432/DATABASE (the password
from PGPASSWORD or ~/.pgpass rather than the command line): the tables are created by the first
`create`, hold the same digests and fields, and every engine sees a change within 2 seconds.

exit status: 0 done, 1 no such token, 2 usage or I/O error"""

_COLUMNS = ("ID", "USER", "GROUPS", "CREATED", "EXPIRES", "STATUS")


def _configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    create_parser = actions.add_parser(
        "create",
        help="issue a token and print it once",
        description="Issue a token for a user; the token is printed once on stdout.",
        allow_abbrev=False,
    )
    _store_argument(create_parser)
    create_parser.add_argument("--user", required=True, help="the user the token acts as")
    create_parser.add_argument(
        "--groups",
        default="",
        metavar="A,B",
        help="comma-separated groups of the token's principal (default: none)",
    )
    create_parser.add_argument(
        "--expires",
        metavar="DURATION",
        help="lifetime, a duration of the policy language such as `90d` or `12h` "
        "(default: never expires)",
    )

    list_parser = actions.add_parser(
        "list",
        help="show the tokens of a store (ids, never digests)",
        description="Show every token of a store with its status.",
        allow_abbrev=False,
    )
    _store_argument(list_parser)
    list_parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text: a table; json: one array of objects",
    )

    revoke_parser = actions.add_parser(
        "revoke",
        help="revoke a token by its id or by the token itself",
        description="Revoke a token; a running server refuses it within about a second.",
        allow_abbrev=False,
    )
    _store_argument(revoke_parser)
    revoke_parser.add_argument(
        "token_or_id",
        metavar="TOKEN_OR_ID",
        help=f"the {ID_LENGTH}-digit id that `list` shows (preferred: a token on the command "
        "line ends up in shell history), or the token",
    )


def _store_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        required=True,
        metavar="FILE|URL",
        help="the token store: a file, or a postgresql:// URL",
    )


def _run(args: argparse.Namespace) -> int:
    """Run one action; store and argument problems become `UsageError`, a miss exit 1."""
    try:
        if args.action == "create":
            return _create(args)
        if args.action == "list":
            return _list(args)
        return _revoke(args)
    except TokenStoreError as problem:
        raise UsageError(str(problem)) from None
    except TokenLookupError as problem:
        err(f"policyauth: {problem}")
        return EXIT_NEGATIVE


def _create(args: argparse.Namespace) -> int:
    groups = _groups(args.groups)
    expires = None if args.expires is None else _lifetime(args.expires)
    try:
        if is_store_url(args.store):
            token, record = _database(args.store).create(args.store, args.user, groups, expires)
        else:
            token, record = tokens.create(args.store, args.user, groups, expires, warn=_warn)
    except ValueError as problem:
        raise UsageError(str(problem)) from None
    out(token)
    until = "never expires" if record.expires is None else f"expires {_time(record.expires)}"
    err(
        f"created token {record.id} for `{record.user}` ({until}); this is the only time "
        "it is shown: the store keeps only its digest"
    )
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    store = _database(args.store) if is_store_url(args.store) else tokens
    records: tuple[Record, ...] = store.list_records(args.store)
    now = utc_now()
    if args.format == "json":
        out(json.dumps([_as_json(record, now) for record in records], indent=2))
        return EXIT_OK
    rows = [_COLUMNS, *(_as_row(record, now) for record in records)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(_COLUMNS))]
    for row in rows:
        out("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return EXIT_OK


def _revoke(args: argparse.Namespace) -> int:
    try:
        if is_store_url(args.store):
            record = _database(args.store).revoke(args.store, args.token_or_id)
        else:
            record = tokens.revoke(args.store, args.token_or_id, warn=_warn)
    except ValueError as problem:
        raise UsageError(str(problem)) from None
    assert record.revoked is not None
    out(f"token {record.id} of `{record.user}` is revoked (since {_time(record.revoked)})")
    return EXIT_OK


def _database(url: str) -> ModuleType:
    """The PostgreSQL store module, for a `--store` URL; psycopg is needed only then.

    The URL is never repeated in a message: it may hold a password.
    """
    if url.partition("://")[0].lower() not in STORE_SCHEMES:
        raise UsageError(
            "`--store` is a URL, but not a postgresql:// or postgres:// one; "
            "a token store is a file or a PostgreSQL database"
        )
    try:
        from policyauth.identity import pgstore
    except ImportError:
        raise UsageError(
            "a PostgreSQL token store needs psycopg: pip install 'policyauth[postgres]'"
        ) from None
    return pgstore


def _warn(message: str) -> None:
    """A write that succeeded but could not keep the store's owner, group or mode: the change
    is made, and whoever ran it must know that a server may no longer read the store."""
    err(f"policyauth: warning: {message}")


def _groups(text: str) -> list[str]:
    """Groups from `--groups a,b`: spaces around names are dropped, empty names refused."""
    if not text.strip():
        return []
    groups = [group.strip() for group in text.split(",")]
    if "" in groups:
        raise UsageError("`--groups` has an empty group name")
    return groups


def _lifetime(text: str) -> timedelta:
    """`--expires` in the policy language's duration syntax, so `90d` means what it does there."""
    milliseconds = parse_duration(text)
    if milliseconds is None:
        raise UsageError(
            f"`--expires` takes a duration such as `90d`: a whole number and one unit of "
            f"ms, s, m, h or d, not `{text}`"
        )
    try:
        return timedelta(milliseconds=milliseconds)
    except OverflowError:
        raise UsageError(f"`--expires {text}` is too long") from None


def _as_json(record: Record, now: datetime) -> dict[str, Any]:
    data: dict[str, Any] = unstructure(record)
    del data["digest"]
    return {"id": record.id, **data, "status": record.status(now)}


def _as_row(record: Record, now: datetime) -> tuple[str, ...]:
    return (
        record.id,
        record.user,
        ",".join(record.groups) or "-",
        _time(record.created),
        "never" if record.expires is None else _time(record.expires),
        record.status(now),
    )


def _time(moment: datetime) -> str:
    text: str = unstructure(moment)
    return text


COMMAND = Command(
    name="token",
    help="issue, list and revoke API tokens of a token store",
    description=DESCRIPTION,
    configure=_configure,
    run=_run,
)
