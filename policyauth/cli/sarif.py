"""Lint findings as SARIF 2.1.0, the format GitHub code scanning and editors' SARIF viewers read.

One run, tool `policyauth`, with a rule for every diagnostic code (not only the codes found: a
viewer that shows a rule's help should show it for any result, and the set of rules is then the
same from run to run). The rules' descriptions and help are the Diagnostics section of
docs/language.md, kept in `sarif_rules.json` beside this module because the documentation is
not installed with the package; tests/tooling/test_sarif.py regenerates that file and fails
while it differs from the page.

Locations are relative to the working directory where possible (`uriBaseId` %SRCROOT%), since
code scanning matches them against paths in the repository, and columns count code points.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import metadata, resources
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from policyauth.diagnostics import Diagnostic

SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
PYPI_URI = "https://pypi.org/project/policyauth/"
SOURCE_ROOT = "%SRCROOT%"
RULES_FILE = "sarif_rules.json"

__all__ = ["RULES_FILE", "SCHEMA_URI", "artifact_path", "information_uri", "rules", "to_sarif"]


def to_sarif(findings: Sequence[Diagnostic]) -> dict[str, Any]:
    """The SARIF log for `findings`: one run, every rule, one result per finding."""
    known = rules()
    # A code newer than the rules file still gets a rule, so that the log stays valid.
    missing = sorted({d.code for d in findings} - {rule["id"] for rule in known})
    table = [*known, *(_unknown_rule(code) for code in missing)]
    index = {rule["id"]: position for position, rule in enumerate(table)}
    driver: dict[str, Any] = {
        "name": "policyauth",
        "informationUri": information_uri(),
        "rules": table,
    }
    version = _version()
    if version is not None:
        driver["version"] = version
        driver["semanticVersion"] = version
    return {
        "$schema": SCHEMA_URI,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": driver},
                "originalUriBaseIds": {
                    SOURCE_ROOT: {"uri": Path.cwd().resolve().as_uri().rstrip("/") + "/"}
                },
                "columnKind": "unicodeCodePoints",
                "results": [_result(d, index[d.code]) for d in findings],
            }
        ],
    }


def _result(diagnostic: Diagnostic, rule_index: int) -> dict[str, Any]:
    text = diagnostic.message
    if diagnostic.help:
        text += f"\nhelp: {diagnostic.help}"
    return {
        "ruleId": diagnostic.code,
        "ruleIndex": rule_index,
        "level": "error" if diagnostic.is_error else "warning",
        "message": {"text": text},
        "locations": [{"physicalLocation": _physical_location(diagnostic)}],
    }


def _physical_location(diagnostic: Diagnostic) -> dict[str, Any]:
    path = artifact_path(diagnostic.file)
    artifact: dict[str, Any] = {"uri": _uri(path)}
    if not os.path.isabs(path):
        artifact["uriBaseId"] = SOURCE_ROOT
    region: dict[str, Any] = {
        "startLine": max(diagnostic.line, 1),
        "startColumn": max(diagnostic.column, 1),
    }
    end_line, end_column = diagnostic.end_line, diagnostic.end_column
    if end_line > region["startLine"] or (
        end_line == region["startLine"] and end_column > region["startColumn"]
    ):
        region["endLine"] = end_line
        region["endColumn"] = max(end_column, 1)
    return {"artifactLocation": artifact, "region": region}


def artifact_path(file: str) -> str:
    """`file` as a repository path: relative to the working directory when inside it, with `/`
    separators and without `./`; an absolute path elsewhere stays absolute."""
    path = Path(file)
    if path.is_absolute():
        try:
            path = path.resolve().relative_to(Path.cwd().resolve())
        except (ValueError, OSError):
            return path.as_posix()
    return PurePosixPath(*path.parts).as_posix() if path.parts else file


def _uri(path: str) -> str:
    if os.path.isabs(path):
        return Path(path).as_uri()
    return quote(path, safe="/-._~")


def rules() -> list[dict[str, Any]]:
    """A SARIF reportingDescriptor for every documented diagnostic code, in code order."""
    return [_descriptor(entry) for entry in _rule_entries()]


@cache
def _rule_entries() -> tuple[dict[str, str], ...]:
    text = resources.files("policyauth.cli").joinpath(RULES_FILE).read_text("utf-8")
    return tuple(json.loads(text)["rules"])


def _descriptor(entry: Mapping[str, str]) -> dict[str, Any]:
    return {
        "id": entry["id"],
        "name": entry["name"],
        "shortDescription": {"text": entry["title"]},
        "fullDescription": {"text": entry["description"]},
        "help": {"text": entry["help_text"], "markdown": entry["help_markdown"]},
        "defaultConfiguration": {"level": entry["level"]},
        "properties": {"tags": [entry["category"]]},
    }


def _unknown_rule(code: str) -> dict[str, Any]:
    return {
        "id": code,
        "name": re.sub(r"\W", "", code),
        "shortDescription": {"text": f"policyauth diagnostic {code}"},
        "fullDescription": {"text": f"policyauth diagnostic {code}; see docs/language.md."},
        "defaultConfiguration": {"level": "error"},
    }


def information_uri() -> str:
    """Where to read about the tool: the project's own URL when its metadata has one."""
    try:
        urls = metadata.metadata("policyauth").get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        urls = []
    for entry in urls:
        label, _, url = entry.partition(",")
        if label.strip().lower() in {"documentation", "homepage", "home", "source"}:
            return str(url).strip()
    return PYPI_URI


def _version() -> str | None:
    try:
        return metadata.version("policyauth")
    except metadata.PackageNotFoundError:
        return None
