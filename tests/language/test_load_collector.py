"""A load keeps Python's cyclic collector off while it runs (issue 13: the collections a large
load triggers find nothing to free), and leaves it as it found it on every exit."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

import policyauth
from policyauth import loader

POLICY = """
route GET /health {
  public
}
"""


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bool]]:
    """Whether the collector was on when the parser ran, load by load."""
    states: list[bool] = []
    real_parse = loader.parse

    def parse(*args: Any, **kwargs: Any) -> Any:
        states.append(gc.isenabled())
        return real_parse(*args, **kwargs)

    monkeypatch.setattr(loader, "parse", parse)
    was_enabled = gc.isenabled()
    yield states
    if was_enabled:
        gc.enable()


def test_the_collector_is_off_during_a_load_and_on_again_after(seen: list[bool]) -> None:
    gc.enable()
    policy = policyauth.loads(POLICY)
    assert [route.text for route in policy.routes] == ["GET /health"]
    assert seen == [False]
    assert gc.isenabled()


def test_a_failed_load_turns_it_back_on_too(seen: list[bool]) -> None:
    gc.enable()
    with pytest.raises(policyauth.PolicyError) as caught:
        policyauth.loads("route GET /health {\n  pubic\n}\n")
    assert caught.value.diagnostics[0].code.startswith("PA0")
    assert seen == [False]
    assert gc.isenabled()


def test_a_caller_that_turned_it_off_keeps_it_off(seen: list[bool]) -> None:
    gc.disable()
    policyauth.loads(POLICY)
    assert seen == [False]
    assert not gc.isenabled()
