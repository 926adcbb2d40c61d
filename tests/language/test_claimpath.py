"""The direct walk for plain claim paths must answer exactly as jsonpath-ng does."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policyauth.language.claimpath import MISSING, ClaimPath, compile_claim_path

KEYS = st.sampled_from(["a", "b", "groups", "roles"])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=12,
)
PATHS = st.builds(
    lambda keys, star: "$." + ".".join(keys) + ("[*]" if star else ""),
    st.lists(KEYS, min_size=1, max_size=3),
    st.booleans(),
)


def _by_jsonpath(path: ClaimPath, document: Any) -> Any:
    """The same path without the fast walk: what jsonpath-ng alone answers."""
    slow = ClaimPath(path.text, path.multi, path._expr, None, path._container)  # type: ignore[call-arg]
    return slow.select(document)


@settings(max_examples=400, deadline=None)
@given(PATHS, JSON)
def test_plain_paths_agree_with_jsonpath_ng(text: str, document: Any) -> None:
    path = compile_claim_path(text)
    assert path._keys is not None  # the fast walk is in use for these paths
    assert path.select(document) == _by_jsonpath(path, document)


def test_examples() -> None:
    roles = compile_claim_path("$.realm_access.roles[*]")
    assert roles.select({"realm_access": {"roles": ["a", None, "b"]}}) == ["a", "b"]
    assert roles.select({"realm_access": {"roles": []}}) == []
    assert roles.select({"realm_access": {"roles": {"x": "y"}}}) == ["y"]
    assert compile_claim_path("$.email").select({"email": None}) is MISSING
    assert compile_claim_path("$['cognito:groups'][*]")._keys is None


# A path that can select several values always yields a list (docs/language.md, Claims): `[]`
# for an existing container that gives nothing, missing for an absent, null or non-container
# one. Each row is checked on the fast walk and on jsonpath-ng alone where both apply.
MULTI_CASES = [
    ("$.groups[*]", {"groups": []}, []),
    ("$.groups[*]", {"groups": {}}, []),
    ("$.groups[*]", {"groups": [None]}, []),
    ("$.groups[*]", {"groups": ["a", None]}, ["a"]),
    ("$.groups[*]", {}, MISSING),
    ("$.groups[*]", {"groups": None}, MISSING),
    ("$.groups[*]", {"groups": "suspended"}, MISSING),
    ("$.groups[*]", {"groups": 3}, MISSING),
    ("$.realm_access.roles[*]", {"realm_access": None}, MISSING),
    ("$.realm_access.roles[*]", {"realm_access": {"roles": []}}, []),
    ("$['cognito:groups'][*]", {"cognito:groups": []}, []),
    ("$['cognito:groups'][*]", {"cognito:groups": "admins"}, MISSING),
    ("$['cognito:groups'][*]", {}, MISSING),
    ("$.data.teams[*].slug", {"data": {"teams": []}}, []),
    ("$.data.teams[*].slug", {"data": {"teams": [{"slug": "a"}, {}]}}, ["a"]),
    ("$.data.teams[*].slug", {"data": {"teams": None}}, MISSING),
    ("$.data.teams[*].slug", {"data": {}}, MISSING),
    ("$.groups[?(@.active == true)].name", {"groups": [{"active": False, "name": "x"}]}, []),
    ("$.groups[?(@.active == true)].name", {"groups": "x"}, MISSING),
    ("$.groups[0:2]", {"groups": []}, []),
    ("$.groups[0:2]", {}, MISSING),
    ("$.org.*", {"org": {}}, []),
    ("$.org.*", {"org": "x"}, MISSING),
    ("$..roles", {"a": 1}, []),  # the container is the document itself
    ("$.realm_access..roles", {"realm_access": 5}, MISSING),
    ("$.realm_access..roles", {"realm_access": {"x": {"roles": "a"}}}, ["a"]),
]


@pytest.mark.parametrize(("text", "document", "expected"), MULTI_CASES)
def test_a_multi_valued_path_always_yields_a_list(
    text: str, document: dict[str, Any], expected: Any
) -> None:
    path = compile_claim_path(text)
    assert path.multi
    assert path.select(document) == expected
    assert _by_jsonpath(path, document) == expected


def test_single_paths_still_select_one_value_or_nothing() -> None:
    email = compile_claim_path("$.email")
    assert email.select({"email": "a@b"}) == "a@b"
    assert email.select({"email": None}) is MISSING
    assert email.select({}) is MISSING
    first = compile_claim_path("$.value[0].id")
    assert not first.multi
    assert first.select({"value": []}) is MISSING
    assert first.select({"value": [{"id": 7}]}) == 7
