"""The direct walk for plain claim paths must answer exactly as jsonpath-ng does."""

from __future__ import annotations

from typing import Any

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
    slow = ClaimPath(path.text, path.multi, path._expr, None)  # type: ignore[call-arg]
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
    assert roles.select({"realm_access": {"roles": []}}) is MISSING
    assert roles.select({"realm_access": {"roles": {"x": "y"}}}) == ["y"]
    assert compile_claim_path("$.email").select({"email": None}) is MISSING
    assert compile_claim_path("$['cognito:groups'][*]")._keys is None
