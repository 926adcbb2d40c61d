"""Fixtures of the adapter tests; the helpers behind them are in adapter_servers.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from adapter_servers import Deployment, deploy


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    """adapters.policy in a folder of its own, with real API tokens in its store."""
    return deploy(tmp_path_factory.mktemp("deployment"))
