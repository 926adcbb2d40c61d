"""What tests of every folder share: running the `policyauth` command in-process."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import pytest

from policyauth.cli.main import main


class CliResult(NamedTuple):
    """Compares equal to the plain tuple `(code, out, err)`, which is how tests write it."""

    code: int
    out: str
    err: str


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run `policyauth ARGS...` in-process: the exit code and what it printed. No command may
    ever print a traceback, whatever the input, so every run checks that too."""

    def invoke(*argv: str) -> CliResult:
        code = main(list(argv))
        captured = capsys.readouterr()
        assert "Traceback" not in captured.out + captured.err
        return CliResult(code, captured.out, captured.err)

    return invoke
