"""Strict conversion between JSON-shaped data and frozen attrs values: the one home of cattrs.

Files that policyauth reads and writes itself (the API token store, test tables) are edited by
people too, so reading them must refuse what it does not understand rather than guess: an
unknown key is usually a typo that would otherwise be silently ignored (`expire` for
`expires`), and a coerced type (`"1"` read as `1`, a string read as a list of characters) hides
a broken file until the day it matters. Every problem is reported as one `SerdeError` with a
JSON-path-like location (`tokens[3].expires`) and a message in the file's terms (`a string`,
`a list`), never in Python's, because the person reading it edits JSON, not classes.

cattrs is imported here and nowhere else (architecture: each third-party library in one
module); its exceptions never leave this module.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar, get_origin

import attrs
import cattrs
from cattrs.cols import homogenous_tuple_structure_factory, is_sequence, list_structure_factory
from cattrs.errors import (
    BaseValidationError,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
    StructureHandlerNotFoundError,
)
from cattrs.gen import make_dict_structure_fn

T = TypeVar("T")

TIMESTAMP_EXAMPLE = "2026-11-29T01:02:03Z"
# ISO 8601 in UTC, spelled one way: `Z`, seconds, optional fraction. Local times and offsets
# are refused so that a file never means different instants on different machines.
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?Z")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

__all__ = ["TIMESTAMP_EXAMPLE", "SerdeError", "structure", "unstructure"]


class SerdeError(Exception):
    """Data that does not have the expected shape, and where: `tokens[3].expires`.

    `path` is empty when the problem is the document as a whole. `message` is lower case and
    names JSON types (`a string`, `an object`), never Python classes, and never echoes the
    offending value: these files may sit next to secrets.
    """

    def __init__(self, path: str, message: str) -> None:
        super().__init__(path, message)
        self.path = path
        self.message = message

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class _Mismatch(ValueError):
    """Raised inside structure hooks; cattrs attaches the location, `_first_problem` reads it."""


def structure(data: object, cls: type[T]) -> T:
    """Build a `cls` from JSON-shaped `data`, refusing unknown keys and wrong types.

    Raises `SerdeError` for the first problem in document order. A type with no structure
    rule is a programming error and raises `TypeError`.
    """
    try:
        return _converter.structure(data, cls)
    except StructureHandlerNotFoundError as error:
        raise TypeError(f"serde cannot structure this type: {error}") from None
    except (BaseValidationError, ForbiddenExtraKeysError, _Mismatch) as error:
        path, message = _first_problem(error, "")
        raise SerdeError(path, message) from None


def unstructure(obj: object) -> Any:
    """JSON-ready data for `obj`: dicts, lists, strings, numbers, booleans and None.

    Timestamps become ISO 8601 UTC strings (`2026-11-29T01:02:03Z`); a timestamp without a
    time zone raises `SerdeError`, since writing it would have to guess one.
    """
    return _converter.unstructure(obj)


def _first_problem(error: BaseException, path: str) -> tuple[str, str]:
    """The location and message of the first leaf problem under a cattrs exception group."""
    for leaf, leaf_path in _leaves(error, path):
        if isinstance(leaf, StructureHandlerNotFoundError):
            raise TypeError(f"serde cannot structure this type: {leaf}") from leaf
        return leaf_path, _message(leaf)
    return path, "invalid value"


def _leaves(error: BaseException, path: str) -> Iterator[tuple[BaseException, str]]:
    """Walk cattrs' exception groups depth-first, building the path from their notes."""
    if isinstance(error, ForbiddenExtraKeysError):
        for key in sorted(error.extra_fields):
            yield error, _join(path, key)
        return
    if isinstance(error, ClassValidationError):
        with_notes, others = error.group_exceptions()
        # Unknown keys first: a misspelt key also makes the intended one missing, and the
        # misspelling is the problem to show.
        unknown = [other for other in others if isinstance(other, ForbiddenExtraKeysError)]
        for extra in unknown:
            yield from _leaves(extra, path)
        for sub, note in with_notes:
            yield from _leaves(sub, _join(path, note.name))
        for other in others:
            if other not in unknown:
                yield from _leaves(other, path)
        return
    if isinstance(error, IterableValidationError):
        with_index, unindexed = error.group_exceptions()
        for sub, index_note in with_index:
            yield from _leaves(sub, _index(path, index_note))
        for sub in unindexed:
            yield from _leaves(sub, path)
        return
    if isinstance(error, BaseExceptionGroup):
        for member in error.exceptions:
            yield from _leaves(member, path)
        return
    yield error, path


def _message(leaf: BaseException) -> str:
    if isinstance(leaf, ForbiddenExtraKeysError):
        return "unknown key"
    if isinstance(leaf, KeyError):  # cattrs' way of saying a required attribute is missing
        return "required key is missing"
    if isinstance(leaf, _Mismatch):
        return str(leaf)
    return "invalid value"


def _join(path: str, key: str) -> str:
    if _IDENTIFIER.fullmatch(key):
        return f"{path}.{key}" if path else key
    quoted = '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{path}[{quoted}]"


def _index(path: str, note: IterableValidationNote) -> str:
    return f"{path}[{note.index!r}]"


def _json_type(value: object) -> str:
    """What a value is, in JSON's words, for messages that must not echo the value itself."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return "a value of another kind"


def _expected(what: str, value: object) -> _Mismatch:
    return _Mismatch(f"expected {what}, found {_json_type(value)}")


# Scalars: no coercion. cattrs' defaults call `str(x)` and `int(x)`, which would read `1` as
# `"1"`, `"1"` as `1` and `true` as `1`.


def _structure_str(value: object, _: type) -> str:
    if not isinstance(value, str):
        raise _expected("a string", value)
    return value


def _structure_int(value: object, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _expected("an integer", value)
    return value


def _structure_float(value: object, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _expected("a number", value)
    return float(value)


def _structure_bool(value: object, _: type) -> bool:
    if not isinstance(value, bool):
        raise _expected("true or false", value)
    return value


def _structure_datetime(value: object, _: type) -> datetime:
    what = f"a UTC timestamp such as `{TIMESTAMP_EXAMPLE}`"
    if not isinstance(value, str):
        raise _expected(what, value)
    if _TIMESTAMP.fullmatch(value) is None:
        raise _Mismatch(f"expected {what}, found a string in another form")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise _Mismatch(f"expected {what}, found a date or time that does not exist") from None


def _unstructure_datetime(value: datetime) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise SerdeError("", "a timestamp without a time zone cannot be written")
    utc = value.astimezone(UTC)
    spec = "seconds" if utc.microsecond == 0 else "microseconds"
    return utc.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


# Containers: check the JSON shape first, then let cattrs do the rest. Without the check a
# string structures as a tuple of its characters and a list fails deep inside cattrs.


def _object_hook(cls: type, converter: cattrs.Converter) -> Callable[[object, type], Any]:
    inner: Callable[[Any, Any], Any] = make_dict_structure_fn(cls, converter)

    def hook(value: object, type_: type) -> Any:
        if not isinstance(value, Mapping):
            raise _expected("an object", value)
        return inner(value, type_)

    return hook


def _sequence_hook(type_: type, converter: cattrs.Converter) -> Callable[[object, type], Any]:
    inner: Callable[[Any, Any], Any]
    if get_origin(type_) is tuple or type_ is tuple:
        inner = homogenous_tuple_structure_factory(type_, converter)
    else:
        inner = list_structure_factory(type_, converter)

    def hook(value: object, given: type) -> Any:
        if not isinstance(value, list | tuple):
            raise _expected("a list", value)
        return inner(value, given)

    return hook


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook(int, _structure_int)
    converter.register_structure_hook(float, _structure_float)
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook(datetime, _structure_datetime)
    converter.register_unstructure_hook(datetime, _unstructure_datetime)
    converter.register_structure_hook_factory(attrs.has, _object_hook)
    converter.register_structure_hook_factory(is_sequence, _sequence_hook)
    return converter


_converter = _make_converter()
