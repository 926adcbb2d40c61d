"""The observability tests use the serve tests' session server and policy."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))

from conftest import policy, server  # noqa: F401  (the serve tests' session fixtures)
