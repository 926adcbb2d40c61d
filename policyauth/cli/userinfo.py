"""`policyauth userinfo`: ask a provider who a token belongs to, and find the claim paths.

This is the "paste a token, see the userinfo response, pick the username attribute" step of
the commercial plugins, as a command. It calls the provider exactly as the engine would (same
URL, headers, token transport, strict response handling and audience check) and then lays the
answer out: the JSON, every path to a string (marking those that look like a username or an
email), and what each claim the policy declares resolves to.

The token is read from `--token`, from standard input (`--token -`), or from an environment
variable (`--token-env NAME`), so that it need not appear in shell history. It is never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import attrs

from policyauth.cli import EXIT_NEGATIVE, EXIT_OK, Command, UsageError, out
from policyauth.diagnostics import Span
from policyauth.identity import Identity, Invalid
from policyauth.identity.remote import Inspection, RemoteIdentitySource
from policyauth.language.claimpath import MISSING, string_paths
from policyauth.language.model import ProviderSpec
from policyauth.loader import load

_USERNAME_KEYS = {
    "preferred_username",
    "username",
    "login",
    "nickname",
    "userprincipalname",
    "upn",
    "unique_name",
    "email",
    "mail",
}

DESCRIPTION = """\
Call a provider of the policy with a token, as the engine would, and show the answer: the JSON
document, every path to a string value (`username?` marks the ones that look like a user name,
`email?` those that look like an email address), and what each declared claim resolves to.

examples:
  policyauth userinfo policies/api.policy --provider corp --token-env CORP_TOKEN
  pbpaste | policyauth userinfo policies/api.policy --provider corp --token -

exit status: 0 the engine would accept the identity, 1 it would not (the provider refused the
token or was unavailable, or the declared `username` selects no name), 2 usage error"""


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("policy", metavar="POLICY", help="the policy file")
    parser.add_argument("--provider", required=True, help="the provider block to ask")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--token", help="the access token, or - to read it from standard input")
    source.add_argument("--token-env", metavar="NAME", help="read the token from variable NAME")
    parser.add_argument("--format", choices=("text", "json"), default="text")


def read_token(args: argparse.Namespace) -> str:
    """The token of `--token TOKEN`, `--token -` (standard input) or `--token-env NAME`."""
    if args.token_env:
        token = os.environ.get(args.token_env, "")
        if not token:
            raise UsageError(f"environment variable `{args.token_env}` is empty or not set")
        return token.strip()
    if args.token == "-":
        token = sys.stdin.readline().strip()
        if not token:
            raise UsageError("no token on standard input")
        return token
    return str(args.token).strip()


def _run(args: argparse.Namespace) -> int:
    policy = load(args.policy)
    if args.provider not in policy.providers:
        names = ", ".join(f"`{n}`" for n in policy.providers) or "none"
        raise UsageError(f"the policy has no provider `{args.provider}` (providers: {names})")
    token = read_token(args)
    source = RemoteIdentitySource(policy)
    try:
        inspection = source.inspect_sync(args.provider, token)
    finally:
        source.close()
    spec = policy.providers[args.provider].spec
    claims = _declared_claims(spec.claims, inspection)
    verdict = _verdict(inspection, spec, claims, args.policy)
    if args.format == "json":
        out(json.dumps(_as_json(inspection, claims, verdict), indent=2, ensure_ascii=False))
    else:
        _print_text(inspection, claims, verdict)
    return EXIT_OK if verdict.valid else EXIT_NEGATIVE


@attrs.frozen
class _Verdict:
    """What the engine would decide about this answer, not only what the provider said: an
    accepted token whose `username` selects nothing is refused (401) all the same."""

    valid: bool
    result: str
    help: str | None = None


def _verdict(
    inspection: Inspection, spec: ProviderSpec, claims: list[tuple[str, str, Any]], file: str
) -> _Verdict:
    result = inspection.result
    where = f"provider `{spec.name}` ({file}:{spec.span.line})"
    if isinstance(result, Identity):
        if result.principal(spec.name) is not None:
            return _Verdict(True, _outcome(inspection))
        path, value = next(((p, v) for n, p, v in claims if n == "username"), ("", MISSING))
        found = "selects nothing" if value is MISSING else f"selects {_kind(value)}"
        return _Verdict(
            False,
            "invalid: the provider accepted the token, but the engine would refuse it "
            f"(401 invalid_token): `username = {path}` {found}",
            f"`username` of {where} must select a non-empty string or a number; pick one of "
            "the paths to strings below (those marked `username?` or `email?`)",
        )
    if isinstance(result, Invalid) and spec.success is not None and "`success`" in result.detail:
        condition = _source_of(file, spec.success.span)
        return _Verdict(
            False,
            _outcome(inspection),
            f"`success = {condition}` of {where} does not hold for the response below",
        )
    return _Verdict(False, _outcome(inspection))


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return "an empty string"
    if isinstance(value, bool):
        return f"the boolean {json.dumps(value)}"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    return "an object" if isinstance(value, dict) else f"`{json.dumps(value)}`"


def _source_of(file: str, span: Span) -> str:
    """The text of `span` in the policy file, for pointing at a condition as it is written."""
    try:
        lines = Path(file).read_text(encoding="utf-8-sig").splitlines()
    except OSError:  # pragma: no cover - it was loaded a moment ago
        return "..."
    if span.line != span.end_line or not 0 < span.line <= len(lines):
        return "..."
    return lines[span.line - 1][span.column - 1 : span.end_column - 1]


def _declared_claims(declared: Any, inspection: Inspection) -> list[tuple[str, str, Any]]:
    document = inspection.document
    rows = []
    for name, path in declared:
        value = path.select(document) if document is not None else MISSING
        rows.append((name, path.text, value))
    return rows


def _hint(path: str, value: object) -> str:
    if not isinstance(value, str):
        return "groups?" if isinstance(value, list) else ""
    key = path.rsplit(".", 1)[-1].strip("[]'").lower()
    if "@" in value and "." in value.split("@")[-1]:
        return "email?"
    return "username?" if key in _USERNAME_KEYS else ""


def _outcome(inspection: Inspection) -> str:
    result = inspection.result
    if isinstance(result, Identity):
        return "valid: the provider accepted the token"
    kind = "invalid" if isinstance(result, Invalid) else "unavailable"
    return f"{kind}: {result.detail}"


def _print_text(
    inspection: Inspection, claims: list[tuple[str, str, Any]], verdict: _Verdict
) -> None:
    out(f"endpoint: {inspection.url or '-'}")
    out(f"status:   {inspection.status if inspection.status is not None else '-'}")
    out(f"result:   {verdict.result}")
    if verdict.help is not None:
        out(f"help:     {verdict.help}")
    if inspection.document is None:
        return
    out("")
    out(json.dumps(inspection.document, indent=2, ensure_ascii=False))
    out("")
    out("paths to strings:")
    for path, value in string_paths(inspection.document):
        shown = json.dumps(value, ensure_ascii=False)
        hint = _hint(path, value)
        out(f"  {path} = {shown}" + (f"    <- {hint}" if hint else ""))
    out("")
    out("declared claims:")
    for name, path, value in claims:
        shown = "(missing)" if value is MISSING else json.dumps(value, ensure_ascii=False)
        out(f"  {name} = {path}  ->  {shown}")


def _as_json(
    inspection: Inspection, claims: list[tuple[str, str, Any]], verdict: _Verdict
) -> dict[str, Any]:
    document = inspection.document
    return {
        "endpoint": inspection.url,
        "status": inspection.status,
        "valid": verdict.valid,
        "result": verdict.result,
        "help": verdict.help,
        "document": document,
        "paths": [
            {"path": path, "value": value, "hint": _hint(path, value) or None}
            for path, value in (string_paths(document) if document is not None else [])
        ],
        "claims": {
            name: {"path": path, "value": None if value is MISSING else value}
            for name, path, value in claims
        },
    }


COMMAND = Command(
    name="userinfo",
    help="ask a provider who a token belongs to, and find the claim paths",
    description=DESCRIPTION,
    configure=_configure,
    run=_run,
)
