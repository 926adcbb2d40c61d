"""Fixtures of the identity tests: the fake provider server, engines wired to it, and the
leak watch that captures every log record at DEBUG for the whole of tests/identity/.

Every token a test uses is registered with the watch (`new_token`); test_zz_no_token_leaks.py,
which runs last, asserts that none of them appears in any captured record or in the reprs the
tests handed over. The same check runs again when the session finishes, so a test that runs
after it (a different order, `-p randomly`) still cannot leak unnoticed.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from provider_server import WATCH, Engines, ProviderApp, ProviderServer


@pytest.fixture(scope="session", autouse=True)
def leak_watch() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(WATCH)
    try:
        yield
    finally:
        root.removeHandler(WATCH)
        root.setLevel(level)


@pytest.fixture(scope="session")
def provider_server() -> Iterator[ProviderServer]:
    server = ProviderServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(provider_server: ProviderServer) -> ProviderApp:
    provider_server.app.reset()
    return provider_server.app


@pytest.fixture
def engines(provider_server: ProviderServer, server: ProviderApp) -> Iterator[Engines]:
    """For synchronous tests: `engine, transport = engines("github", timeout="1s")`."""
    made = Engines(provider_server)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
async def aengines(provider_server: ProviderServer, server: ProviderApp) -> AsyncIterator[Engines]:
    """For async tests: the same, closed on the test's own event loop."""
    made = Engines(provider_server)
    try:
        yield made
    finally:
        await made.aclose()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaks = WATCH.leaks()
    if leaks:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"TOKEN LEAKS ({len(leaks)}):", red=True)
            for leak in leaks[:20]:
                reporter.write_line("  " + leak, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
