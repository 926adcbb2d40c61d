"""`load` and `loads`: policy text to a compiled Policy, or a PolicyError that says why.

The one entry point that runs the whole static pipeline (parse, check, lint, compile), so the
CLI, the engine and the tests all load a policy the same way. Warnings do not stop a load; they
stay on the Policy for whoever wants to show them.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import attrs

from policyauth.compiler import Origin, Policy, compile_policy
from policyauth.diagnostics import Diagnostic, PolicyError, Span, sort_diagnostics
from policyauth.language.checker import check
from policyauth.language.lints import lint, silence
from policyauth.language.parser import parse


def loads(
    text: str,
    name: str = "<policy>",
    *,
    env: Mapping[str, str] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> Policy:
    """Load a policy from text. `name` is used in diagnostics; relative token store paths are
    resolved against `base_dir` (default: the working directory)."""
    policy, diagnostics = analyze(text, name, env=env, base_dir=base_dir)
    if policy is None:
        raise PolicyError(diagnostics)
    return policy


def load(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> Policy:
    """Load a policy file; token store paths in it are relative to the file's folder.

    The policy remembers its file (and `env`), so that `Engine.reload` can read it again."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        span = Span(str(path), 1, 1, 1, 1)
        reason = exc.strerror or type(exc).__name__
        raise PolicyError(
            [Diagnostic.at(span, "PA010", f"cannot read the file: {reason}")]
        ) from None
    policy = loads(decode(data, str(path)), str(path), env=env, base_dir=file.parent)
    return attrs.evolve(policy, origin=Origin(str(path), env))


def decode(data: bytes, name: str) -> str:
    """Policy files are UTF-8 (a byte order mark is allowed); anything else is PA011."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        span = Span(name, line, column, line, column + 1)
        raise PolicyError([Diagnostic.at(span, "PA011", "the file is not valid UTF-8")]) from None


def analyze(
    text: str,
    name: str = "<policy>",
    *,
    env: Mapping[str, str] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> tuple[Policy | None, list[Diagnostic]]:
    """Every diagnostic for `text` (errors and warnings) and the Policy when there is no error."""
    with _collector_paused():
        return _analyze(text, name, env=env, base_dir=base_dir)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Keep Python's cyclic collector off during a load. A load allocates millions of objects
    that all stay alive (tokens, AST nodes, the plan), so every generation-0 threshold crossed
    starts a collection that finds nothing, and at 10,000 routes those scans cost a large
    share of the load (benchmarks/reports/compile.md, `gc on`). Restored on every exit, and
    only if it was on: a caller that turned it off keeps it off."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _analyze(
    text: str,
    name: str,
    *,
    env: Mapping[str, str] | None,
    base_dir: str | os.PathLike[str] | None,
) -> tuple[Policy | None, list[Diagnostic]]:
    text = text.removeprefix("\ufeff")  # a byte order mark read as text, as `load` allows
    try:
        tree = parse(text, name)
    except PolicyError as exc:
        return None, exc.diagnostics
    try:
        model, diagnostics = check(
            tree, source=text, env=env, base_dir=Path(base_dir) if base_dir is not None else None
        )
        diagnostics = sort_diagnostics(silence(tree, diagnostics) + lint(tree, model, source=text))
        if model is None:
            return None, diagnostics
        return compile_policy(model, warnings=diagnostics), diagnostics
    except RecursionError:
        span = Span(name, 1, 1, 1, 1)
        message = "the policy is nested too deeply to read"
        return None, [Diagnostic.at(span, "PA009", message, source=text)]
