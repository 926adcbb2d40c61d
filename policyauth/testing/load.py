"""Reading policy test files: JSON to a checked `CaseFile`, or one error that says where.

A test file is edited by hand, so reading it refuses what it does not understand (an unknown
key is a typo that would silently skip an assertion) and says where the problem is as
`file:line`. The shape is checked by `policyauth.serde` (strict keys, no coercion); the rest
(unique case names, a reason that goes with the status, identities that name an authenticator of
the policy) here. `json` gives no positions, so a small scanner over the raw text maps each
key and list item to the offset where it is written; it never decides what the JSON means,
only where a value that `json` already parsed stands.
"""

from __future__ import annotations

import ast
import bisect
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from policyauth.compiler import Policy
from policyauth.decision import Reason
from policyauth.diagnostics import PolicyError
from policyauth.loader import decode, loads
from policyauth.serde import SerdeError, structure
from policyauth.testing.model import Case, CaseFile, CaseRequest, Expectation, IdentityEntry

SUFFIX = ".policytest.json"
_MAX_DIGITS = 100  # numbers in a test file are statuses and line numbers

# Every reason belongs to exactly one status (language.md, section 5): a case that pairs a
# reason with another status can never pass, so it is refused when read.
STATUS_OF: Mapping[Reason, int] = {
    Reason.ALLOWED: 200,
    Reason.MALFORMED_REQUEST: 400,
    Reason.INVALID_REQUEST: 400,
    Reason.NO_CREDENTIALS: 401,
    Reason.INVALID_TOKEN: 401,
    Reason.NO_ROUTE: 403,
    Reason.DENIED: 403,
    Reason.NOT_ALLOWED: 403,
    Reason.PROVIDER_UNAVAILABLE: 503,
}

_Fail = Callable[[Sequence[str | int], str], "CaseFileError"]

__all__ = [
    "STATUS_OF",
    "SUFFIX",
    "CaseFileError",
    "check_identities",
    "implied_policy",
    "load_case_file",
    "load_policy",
    "parse",
]


class CaseFileError(Exception):
    """A test file that cannot be read or does not follow the format; `line` is 1-based.

    The message is lower case and names keys and values in backticks, like every diagnostic.
    """

    def __init__(self, file: str, line: int | None, message: str) -> None:
        super().__init__(file, line, message)
        self.file = file
        self.line = line
        self.message = message

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}"


# --- the file's shape, as serde reads it ------------------------------------------------------


class _Absent:
    """The default of `document`: `null` is a document (a provider can answer `null`)."""


_ABSENT: Any = _Absent()


@attrs.frozen
class _IdentityData:
    authenticator: str
    token: str
    document: Any = _ABSENT
    unavailable: bool = False
    note: str = ""


@attrs.frozen
class _RequestData:
    method: str
    target: str
    headers: tuple[tuple[str, ...], ...] = ()


@attrs.frozen
class _ExpectData:
    status: int
    reason: str
    rule_line: int | None = None
    route_line: int | None = None
    headers: tuple[tuple[str, ...], ...] | None = None
    rule: str | None = None
    username: str | None = None
    provider: str | None = None
    asked: tuple[str, ...] | None = None


@attrs.frozen
class _CaseData:
    name: str
    request: _RequestData
    expect: _ExpectData
    note: str = ""


@attrs.frozen
class _FileData:
    cases: tuple[_CaseData, ...]
    policy: str | None = None
    env: dict[str, str] = attrs.Factory(dict)
    identities: tuple[_IdentityData, ...] = ()
    description: str = ""


# --- reading ------------------------------------------------------------------------------------


def implied_policy(name: str) -> str | None:
    """`api.policy` (beside it) for `policies/api.policytest.json`; None for other names."""
    base = os.path.basename(name)
    if not base.endswith(SUFFIX) or len(base) == len(SUFFIX):
        return None
    return base[: -len(SUFFIX)] + ".policy"


def load_case_file(
    path: str | os.PathLike[str], name: str | None = None, *, require_cases: bool = True
) -> CaseFile:
    """Read and check the test file at `path`; `name` is how messages show it (default: path).

    Raises `CaseFileError` for anything unreadable or not in the format; never another error.
    `require_cases=False` accepts a file without cases (one that only lists identities, for
    tools that send their own requests); a test run refuses it, since it would test nothing.
    """
    shown = str(path) if name is None else name
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CaseFileError(shown, None, f"cannot read the file: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CaseFileError(shown, line, "the file is not valid UTF-8") from None
    return parse(
        text, shown, base_dir=os.path.dirname(os.fspath(path)), require_cases=require_cases
    )


def parse(
    text: str, name: str, *, base_dir: str | None = None, require_cases: bool = True
) -> CaseFile:
    """A `CaseFile` from the text of a test file named `name`.

    The policy path in it is relative to `base_dir`, the folder the file is in (default: the
    folder of `name`); messages show it relative to the folder of `name`.
    """
    document = _decode(text, name)
    where = _Locator(text)
    try:
        data = structure(document, _FileData)
    except SerdeError as exc:
        raise CaseFileError(name, where.line(_path_parts(exc.path)), str(exc)) from None
    except RecursionError:
        raise CaseFileError(name, 1, "the file is nested too deeply to read") from None
    folder = os.path.dirname(name) if base_dir is None else base_dir
    return _build(data, document, name, folder, where, require_cases)


def load_policy(file: CaseFile) -> Policy:
    """The policy `file` tests, loaded with the file's `env`, and checked against the file.

    Identities must name a provider or tokens block of the policy: a typo there would make
    every case that uses the token fail as "unknown token" for a reason that is not the
    policy's. Raises `CaseFileError` (located at the `policy` key) when the policy does not load.
    """
    try:
        data = Path(file.policy_path).read_bytes()
    except OSError as exc:
        raise CaseFileError(
            file.name,
            file.policy_line,
            f"cannot read policy `{file.policy_name}`: {exc.strerror or exc}",
        ) from None
    try:
        policy = loads(
            decode(data, file.policy_name),
            file.policy_name,
            env=file.env,
            base_dir=Path(file.policy_path).parent,
        )
    except PolicyError as exc:
        raise CaseFileError(
            file.name, file.policy_line, f"policy `{file.policy_name}` does not load: {exc}"
        ) from None
    check_identities(file, policy)
    return policy


def check_identities(file: CaseFile, policy: Policy) -> None:
    """Refuse identities whose authenticator `policy` does not declare (`CaseFileError`)."""
    declared = {*policy.providers, *policy.tokens}
    for index, entry in enumerate(file.identities):
        if entry.authenticator not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise CaseFileError(
                file.name,
                entry.line,
                f"identities[{index}].authenticator: `{_shown(entry.authenticator)}` is not a "
                f"provider or tokens block of `{file.policy_name}` (declared: {known})",
            )


def _decode(text: str, name: str) -> Any:
    try:
        return json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constant,
            parse_int=_integer,
        )
    except json.JSONDecodeError as exc:
        raise CaseFileError(name, exc.lineno, f"invalid JSON: {exc.msg}") from None
    except _DuplicateKey as exc:
        line = _Locator(text).duplicate_line()
        raise CaseFileError(name, line, f"duplicate key `{exc.key}`") from None
    except ValueError as exc:
        raise CaseFileError(name, None, f"invalid JSON: {exc}") from None
    except RecursionError:
        raise CaseFileError(name, 1, "the file is nested too deeply to read") from None


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Objects without repeated keys: `json` keeps the last, which would hide the first case."""
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise _DuplicateKey(key)
        document[key] = value
    return document


def _integer(text: str) -> int:
    if len(text) > _MAX_DIGITS:
        raise ValueError(f"a number has more than {_MAX_DIGITS} digits")
    return int(text)


def _no_constant(name: str) -> Any:
    raise ValueError(f"`{name}` is not a JSON number")


def _build(
    data: _FileData,
    document: dict[str, Any],
    name: str,
    folder: str,
    where: _Locator,
    require_cases: bool,
) -> CaseFile:
    """The checks serde cannot make, then the model; `document` is the same data, raw."""

    def fail(path: Sequence[str | int], message: str) -> CaseFileError:
        return CaseFileError(name, where.line(path), message)

    policy = data.policy if data.policy is not None else implied_policy(name)
    if policy is None:
        raise fail(
            [],
            f"`policy` is missing: name the policy file, or name this file NAME{SUFFIX} "
            "beside NAME.policy",
        )
    policy_path = os.path.join(folder, policy)
    identities = tuple(
        _identity(data.identities, index, fail, where) for index in range(len(data.identities))
    )
    if require_cases and not data.cases:
        raise fail(["cases"], "`cases` is empty: a test file must test something")
    cases: list[Case] = []
    first: dict[str, int] = {}
    for index, raw in enumerate(data.cases):
        line = where.line(["cases", index, "name"])
        if raw.name in first:
            raise fail(
                ["cases", index, "name"],
                f"cases[{index}].name: duplicate case name `{_shown(raw.name)}` "
                f"(first at line {first[raw.name]})",
            )
        first[raw.name] = line
        stated = frozenset(document["cases"][index]["expect"])
        cases.append(
            Case(
                name=raw.name,
                line=line,
                request=_request(raw.request, index, fail),
                expect=_expectation(raw.expect, stated, index, fail),
                note=raw.note,
            )
        )
    return CaseFile(
        name=name,
        policy_name=os.path.normpath(os.path.join(os.path.dirname(name), policy)),
        policy_path=policy_path,
        policy_line=where.line(["policy"]) if data.policy is not None else 1,
        env=dict(data.env),
        identities=identities,
        cases=tuple(cases),
        description=data.description,
    )


def _identity(
    entries: Sequence[_IdentityData], index: int, fail: _Fail, where: _Locator
) -> IdentityEntry:
    entry = entries[index]
    path: list[str | int] = ["identities", index]
    raw_document = None if entry.document is _ABSENT else entry.document
    if not entry.unavailable and entry.document is _ABSENT:
        raise fail(path, f"identities[{index}]: needs a `document`, or `unavailable: true`")
    for earlier in range(index):
        other = entries[earlier]
        if (other.authenticator, other.token) == (entry.authenticator, entry.token):
            raise fail(
                path,
                f"identities[{index}]: this token is already listed for "
                f"`{_shown(entry.authenticator)}` (identities[{earlier}])",
            )
    return IdentityEntry(
        entry.authenticator,
        entry.token,
        raw_document,
        entry.unavailable,
        entry.note,
        line=where.line([*path, "authenticator"]),
    )


def _pairs(
    value: tuple[tuple[str, ...], ...], path: list[str | int], fail: _Fail
) -> tuple[tuple[str, str], ...]:
    pairs = []
    for position, pair in enumerate(value):
        if len(pair) != 2:
            where = _path_text([*path, position])
            raise fail([*path, position], f"{where}: expected a [name, value] pair")
        pairs.append((pair[0], pair[1]))
    return tuple(pairs)


def _request(data: _RequestData, index: int, fail: _Fail) -> CaseRequest:
    headers = _pairs(data.headers, ["cases", index, "request", "headers"], fail)
    return CaseRequest(data.method, data.target, headers)


def _expectation(data: _ExpectData, stated: frozenset[str], index: int, fail: _Fail) -> Expectation:
    path: list[str | int] = ["cases", index, "expect"]
    try:
        reason = Reason(data.reason)
    except ValueError:
        known = ", ".join(r.value for r in Reason)
        raise fail(
            [*path, "reason"],
            f"cases[{index}].expect.reason: unknown reason `{_shown(data.reason)}` "
            f"(one of {known})",
        ) from None
    if data.status != STATUS_OF[reason]:
        raise fail(
            [*path, "status"],
            f"cases[{index}].expect.status: reason `{reason.value}` comes with status "
            f"{STATUS_OF[reason]}, not {data.status}",
        )
    for key in ("rule_line", "route_line"):
        value = getattr(data, key)
        if value is not None and value < 1:
            raise fail([*path, key], f"cases[{index}].expect.{key}: expected a line number")
    for key in ("headers", "asked"):
        if key in stated and getattr(data, key) is None:
            raise fail([*path, key], f"cases[{index}].expect.{key}: expected a list, found null")
    headers = None
    if data.headers is not None:
        headers = _pairs(data.headers, [*path, "headers"], fail)
    return Expectation(
        status=data.status,
        reason=reason,
        rule_line=data.rule_line,
        rule=data.rule,
        route_line=data.route_line,
        headers=headers,
        username=data.username,
        provider=data.provider,
        asked=data.asked,
        stated=stated,
    )


def _shown(text: str) -> str:
    """User text for a one-line message: control characters escaped, long values cut."""
    text = text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= 80 else text[:77] + "..."


def _path_text(parts: Sequence[str | int]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


# --- where things are written -------------------------------------------------------------------

_PATH_PART = re.compile(
    r"""\.?([A-Za-z_][A-Za-z0-9_]*)|\[(-?[0-9]+)\]|\[("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')\]"""
)


def _path_parts(path: str) -> list[str | int]:
    """`cases[3].expect["a b"]` as `["cases", 3, "expect", "a b"]`: serde's locations, parsed."""
    parts: list[str | int] = []
    position = 0
    while position < len(path):
        match = _PATH_PART.match(path, position)
        if match is None:
            break
        name, index, quoted = match.groups()
        if name is not None:
            parts.append(name)
        elif index is not None:
            parts.append(int(index))
        else:
            try:
                parts.append(str(ast.literal_eval(quoted)))
            except (ValueError, SyntaxError):
                break
        position = match.end()
    return parts


@attrs.define
class _Node:
    """A JSON object or array in the raw text: where it starts, where its members are written."""

    start: int
    is_object: bool
    keys: dict[str, tuple[int, _Node | None]] = attrs.Factory(dict)
    items: list[tuple[int, _Node | None]] = attrs.Factory(list)
    duplicate: int | None = None  # the offset of the first key written twice


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_SCALAR = re.compile(r"[^\s,:\]}]+")


class _Locator:
    """Offsets of the keys and items of a JSON text, found by scanning it once.

    Only used to say where something is, so it is lenient: on text that is not JSON it stops
    early and lines fall back to the nearest container that was found, or to line 1.
    """

    def __init__(self, text: str) -> None:
        self._newlines = [index for index, char in enumerate(text) if char == "\n"]
        self.root: _Node | None = None
        self._nodes: list[_Node] = []
        self._scan(text)

    def line(self, path: Sequence[str | int]) -> int:
        """The line where the value at `path` is written (its key, for a member of an object),
        or where its nearest written ancestor is."""
        node = self.root
        offset = 0 if node is None else node.start
        for part in path:
            if node is None:
                break
            member: tuple[int, _Node | None] | None = None
            if node.is_object and isinstance(part, str):
                member = node.keys.get(part)
            elif not node.is_object and isinstance(part, int) and 0 <= part < len(node.items):
                member = node.items[part]
            if member is None:
                break
            offset, node = member
        return self._line_at(offset)

    def duplicate_line(self) -> int | None:
        """The line of the first key written twice in one object, if any."""
        found = [node.duplicate for node in self._nodes if node.duplicate is not None]
        return self._line_at(min(found)) if found else None

    def _line_at(self, offset: int) -> int:
        return bisect.bisect_right(self._newlines, offset - 1) + 1

    def _scan(self, text: str) -> None:
        stack: list[_Node] = []
        pending_key: tuple[str, int] | None = None  # an object key waiting for its value
        expect_key = False
        position = 0
        while position < len(text):
            char = text[position]
            if char.isspace() or char in ",:":
                if char == "," and stack and stack[-1].is_object:
                    expect_key = True
                position += 1
                continue
            if char in "}]":
                if stack:
                    stack.pop()
                expect_key = False
                position += 1
                continue
            if char == '"' and expect_key and stack:
                match = _STRING.match(text, position)
                if match is None:
                    return
                try:
                    key = json.loads(match.group())
                except ValueError:
                    return
                pending_key = (key, position)
                expect_key = False
                position = match.end()
                continue
            # A value: a container, a string or a scalar, starting at `position`.
            node: _Node | None = None
            if char in "{[":
                node = _Node(position, char == "{")
                self._nodes.append(node)
            if not stack:
                if self.root is None and node is not None:
                    self.root = node
            elif stack[-1].is_object and pending_key is not None:
                key, key_offset = pending_key
                parent = stack[-1]
                if key in parent.keys and parent.duplicate is None:
                    parent.duplicate = key_offset
                parent.keys.setdefault(key, (key_offset, node))
                pending_key = None
            elif not stack[-1].is_object:
                stack[-1].items.append((position, node))
            if node is not None:
                stack.append(node)
                expect_key = node.is_object
                position += 1
                continue
            match = (_STRING if char == '"' else _SCALAR).match(text, position)
            if match is None:
                return
            position = match.end()
