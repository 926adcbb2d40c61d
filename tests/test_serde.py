"""The strict converter: what it refuses, where it says the problem is, and how it words it."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest

from policyauth.serde import SerdeError, structure, unstructure


@attrs.frozen
class Item:
    name: str
    count: int
    ratio: float
    enabled: bool
    tags: tuple[str, ...]
    when: datetime | None


@attrs.frozen
class Document:
    version: int
    items: tuple[Item, ...]
    notes: list[str]


def item(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "a",
        "count": 1,
        "ratio": 0.5,
        "enabled": True,
        "tags": ["x"],
        "when": "2026-11-29T01:02:03Z",
    }
    return {**base, **changes}


def document(*items: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {"version": 1, "items": list(items), "notes": [], **changes}


def test_a_valid_document_structures_and_round_trips() -> None:
    data = document(item(), item(name="b", ratio=2, tags=[], when=None))
    result = structure(data, Document)
    assert result == Document(
        1,
        (
            Item("a", 1, 0.5, True, ("x",), datetime(2026, 11, 29, 1, 2, 3, tzinfo=UTC)),
            Item("b", 1, 2.0, True, (), None),
        ),
        [],
    )
    assert unstructure(result) == document(item(), item(name="b", ratio=2.0, tags=[], when=None))


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        ([], "", "expected an object, found a list"),
        (document(extra=1), "extra", "unknown key"),
        (document(**{"odd key": 1}), '["odd key"]', "unknown key"),
        ({"items": [], "notes": []}, "version", "required key is missing"),
        (document(version="1"), "version", "expected an integer, found a string"),
        (document(version=True), "version", "expected an integer, found a boolean"),
        (document(version=1.0), "version", "expected an integer, found a number"),
        (document(items="ab"), "items", "expected a list, found a string"),
        (document(items={"a": 1}), "items", "expected a list, found an object"),
        (document(notes=[1]), "notes[0]", "expected a string, found a number"),
        (document(item(), 5), "items[1]", "expected an object, found a number"),
        (document(item(), item(name=None)), "items[1].name", "expected a string, found null"),
        (document(item(ratio="1.5")), "items[0].ratio", "expected a number, found a string"),
        (document(item(enabled=1)), "items[0].enabled", "expected true or false, found a number"),
        (document(item(tags="xy")), "items[0].tags", "expected a list, found a string"),
        (document(item(tags=["a", ["b"]])), "items[0].tags[1]", "expected a string, found a list"),
        (document(item(surprise=1)), "items[0].surprise", "unknown key"),
        # A misspelt key is reported as unknown rather than as the key it makes missing.
        (
            document({k if k != "when" else "whne": v for k, v in item().items()}),
            "items[0].whne",
            "unknown key",
        ),
    ],
)
def test_problems_are_located_and_worded_in_json_terms(data: Any, path: str, message: str) -> None:
    with pytest.raises(SerdeError) as caught:
        structure(data, Document)
    assert (caught.value.path, caught.value.message) == (path, message)
    assert str(caught.value) == (f"{path}: {message}" if path else message)


@pytest.mark.parametrize(
    ("value", "found"),
    [
        ("2026-11-29", "a string in another form"),
        ("2026-11-29T01:02:03", "a string in another form"),  # no zone
        ("2026-11-29T01:02:03+01:00", "a string in another form"),  # not UTC
        ("2026-11-29 01:02:03Z", "a string in another form"),
        ("2026-13-29T01:02:03Z", "a date or time that does not exist"),
        ("2026-02-30T01:02:03Z", "a date or time that does not exist"),
        (1764378123, "a number"),
    ],
)
def test_timestamps_are_iso_8601_utc_only(value: Any, found: str) -> None:
    with pytest.raises(SerdeError) as caught:
        structure(document(item(when=value)), Document)
    assert caught.value.path == "items[0].when"
    assert caught.value.message == (
        f"expected a UTC timestamp such as `2026-11-29T01:02:03Z`, found {found}"
    )


def test_messages_never_name_python_classes_or_echo_values() -> None:
    bad = [
        document(item(name=12345)),
        document(item(tags="secret-value")),
        document(item(when="secret-value")),
        document(item(), "secret-value"),
        "secret-value",
        None,
    ]
    for data in bad:
        with pytest.raises(SerdeError) as caught:
            structure(data, Document)
        text = str(caught.value)
        assert "secret" not in text
        python = re.compile(r"\b(Item|Document|tuple|str|int|float|bool|NoneType|datetime)\b")
        assert python.search(text) is None, text


def test_fractional_seconds_and_other_zones_are_written_in_utc() -> None:
    moment = datetime(2026, 11, 29, 2, 2, 3, 500000, tzinfo=timezone(timedelta(hours=1)))
    assert unstructure(moment) == "2026-11-29T01:02:03.500000Z"
    assert structure(document(item(when="2026-11-29T01:02:03.5Z")), Document).items[0].when == (
        moment
    )


def test_a_timestamp_without_a_zone_is_not_written() -> None:
    with pytest.raises(SerdeError, match="a timestamp without a time zone cannot be written"):
        unstructure(datetime(2026, 11, 29, 1, 2, 3))


class Opaque:
    """A class serde has no rule for."""


@attrs.frozen
class Holder:
    value: Opaque


def test_a_type_without_rules_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="serde cannot structure this type"):
        structure({"value": 1}, Holder)
