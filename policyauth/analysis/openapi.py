"""`policyauth lint --openapi SPEC`: does the policy cover the API the service describes?

With default deny, an endpoint added to the service and forgotten in the policy answers 403
`no_route` in production; one that only a `public` route takes is open to anyone, which a
reviewer should see; a route that takes no operation is dead or a typo. Operations are matched
with the same set algebra as routes (language/routing.py): a path template `{x}` is a segment
any value fills, so `*` and `{param}` take it, a literal does not take all of it.

PA220 (warning): an operation no route takes. PA221 (info): an operation only a public route
takes. PA222 (warning): a route that takes no operation of the description.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

from policyauth.diagnostics import Diagnostic, Severity, Span
from policyauth.language import ast
from policyauth.language.model import CheckedPolicy
from policyauth.language.routing import intersects, method_set, shared_methods

PUBLIC_ONLY = "PA221"  # an info line, not a Diagnostic: it never changes the exit status
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


class SpecError(ValueError):
    """The API description cannot be read: one line, with the file."""


@attrs.frozen
class Operation:
    method: str  # upper case
    template: str  # as the description writes it, base path included
    operation_id: str | None

    @property
    def segments(self) -> tuple[ast.PatternSegment, ...]:
        parts = [p for p in self.template.split("/") if p]
        return tuple(
            ast.PatternSegment(ast.Segment.PARAM, p[1:-1])
            if p.startswith("{") and p.endswith("}")
            else ast.PatternSegment(ast.Segment.LITERAL, p)
            for p in parts
        )

    @property
    def name(self) -> str:
        suffix = f" ({self.operation_id})" if self.operation_id else ""
        return f"{self.method} {self.template}{suffix}"


def load_spec(path: str | os.PathLike[str]) -> dict[str, Any]:
    """An OpenAPI 3.0 or 3.1 description from JSON or YAML (YAML needs the `openapi` extra)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if str(path).endswith(".json") or text.lstrip().startswith("{"):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
    else:
        document = _yaml(text, str(path))
    if not isinstance(document, dict) or not str(document.get("openapi", "")).startswith("3."):
        raise SpecError(f"{path}: not an OpenAPI 3.0 or 3.1 description (no `openapi: 3.x`)")
    if not isinstance(document.get("paths", {}), dict):
        raise SpecError(f"{path}: `paths` is not an object")
    return document


def _yaml(text: str, name: str) -> Any:
    try:  # the one module that reads YAML; optional: `pip install policyauth[openapi]`
        yaml: Any = importlib.import_module("yaml")
    except ImportError:
        raise SpecError(
            f"{name}: reading YAML needs PyYAML: pip install 'policyauth[openapi]' "
            "(or give the description as JSON)"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise SpecError(f"{name}{where}: not valid YAML") from None


def base_path(spec: dict[str, Any]) -> str:
    """The path of the first `servers[].url` (templated or absent: none)."""
    servers = spec.get("servers") or []
    if isinstance(servers, list) and servers and isinstance(servers[0], dict):
        url = str(servers[0].get("url", ""))
        if "{" not in url:
            return urlsplit(url).path.rstrip("/")
    return ""


def operations(spec: dict[str, Any], base: str) -> list[Operation]:
    found = []
    for template, item in (spec.get("paths") or {}).items():
        if not isinstance(item, dict):
            continue
        for method in HTTP_METHODS:
            operation = item.get(method)
            if isinstance(operation, dict):
                identifier = operation.get("operationId")
                found.append(
                    Operation(
                        method.upper(),
                        base.rstrip("/") + "/" + str(template).lstrip("/"),
                        str(identifier) if identifier else None,
                    )
                )
    return found


def check_coverage(
    model: CheckedPolicy, ops: Sequence[Operation], spec_name: str
) -> tuple[list[Diagnostic], list[str]]:
    """PA220 and PA222 findings (warnings) and PA221 info lines."""
    findings: list[Diagnostic] = []
    infos: list[str] = []
    spec_span = Span(spec_name, 1, 1, 1, 1)
    for op in ops:
        methods = method_set([op.method])
        taken = model.index.first_covering(op.segments, methods)
        if taken is None:
            findings.append(
                Diagnostic.at(
                    spec_span,
                    "PA220",
                    f"operation {op.name} is taken by no route of {model.file}: "
                    f"it would answer 403 no_route",
                    help="add a route for it (or narrow the API description)",
                    severity=Severity.WARNING,
                )
            )
        elif isinstance(model.routes[taken].body, ast.Public):
            route = model.routes[taken]
            infos.append(
                f"{spec_name}: info {PUBLIC_ONLY} operation {op.name} is taken only by the "
                f"public route at {route.span.file}:{route.span.line}"
            )
    for decl, index in zip(model.routes, range(len(model.routes)), strict=True):
        route_methods = model.index.methods(index)
        if not any(_overlaps(decl, route_methods, op) for op in ops):
            findings.append(
                Diagnostic.at(
                    decl.pattern.span,
                    "PA222",
                    f"route `{_text(decl)}` takes no operation of {spec_name}: dead or a typo",
                    help="fix the pattern, or add the operation to the API description",
                    severity=Severity.WARNING,
                    source=model.source,
                )
            )
    return findings, infos


def _overlaps(decl: ast.RouteDecl, methods: Any, op: Operation) -> bool:
    shared = shared_methods(methods, method_set([op.method]))
    return (shared is None or bool(shared)) and intersects(decl.pattern.segments, op.segments)


def _text(decl: ast.RouteDecl) -> str:
    return (", ".join(m.text for m in decl.methods) or "*") + " " + decl.pattern.text
