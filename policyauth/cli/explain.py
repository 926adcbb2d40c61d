"""`policyauth explain`: why the engine decides what it decides for one request.

It builds the same Engine an integration builds and asks it for a Decision, so the answer is
the real one, not a re-implementation; it only lays the decision out: the canonical request,
the route, each rule and what it came to, the principal, and the response. Offline by default:
with `--identity FILE` the caller's userinfo document (or API token record) comes from a file,
through StaticIdentitySource, and without it every credential is "unavailable" (503), which is
what the engine says when it cannot ask anyone. With `--token` it is a live end-to-end check:
the real identity source validates the token with the provider (or the token store).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from policyauth.cli import EXIT_NEGATIVE, EXIT_OK, EXIT_USAGE, Command, UsageError, err, out
from policyauth.cli.userinfo import read_token
from policyauth.compiler import Policy, RoutePlan
from policyauth.decision import Decision, Principal
from policyauth.diagnostics import PolicyError, Span
from policyauth.engine import Engine
from policyauth.identity import IdentitySource, StaticIdentitySource, Unavailable
from policyauth.identity.source import Credential
from policyauth.loader import load
from policyauth.request import (
    BasicCredential,
    BearerCredential,
    CanonicalRequest,
    NoCredentials,
    Rejection,
    canonicalize,
    normalize_headers,
    read_credentials,
)

EXPLAIN_TOKEN = "explain-token"  # stands in for a provider's access token
EXPLAIN_API_TOKEN = "pa_explain"  # stands in for an API token of a tokens block
_MAX_DIGITS = 1000  # below Python's int conversion limit, far above any real claim

DESCRIPTION = """\
Show how the policy decides one request: the canonical request, the route that matched, each
rule evaluated and its outcome, the principal, and the decision with its response headers.

No provider is called. Give the caller's identity with --identity FILE --provider NAME: FILE
is the userinfo JSON the provider NAME would answer (claims are extracted and `success` is
applied as for a live answer), or {"username": ..., "groups": [...]} for a tokens block. It is
bound to the request's bearer token (or Basic password); without an Authorization header, one
is added for it. Without --identity, a credential cannot be validated and the decision is 503.

With --token TOKEN (or --token -, or --token-env NAME) the check is live instead: the token is
sent as a bearer token and validated exactly as the engine would, by calling the provider (or
reading the token store). The token is never printed.

examples:
  policyauth explain policies/api.policy --method GET --path /status
  policyauth explain policies/api.policy --method DELETE --path '/items/7?force=1' \\
      --identity ada.json --provider corp
  policyauth explain policies/api.policy --method GET --path /reports --token-env CORP_TOKEN

exit status: 0 allowed, 1 denied (any status but 200), 2 usage or input error"""


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("policy", metavar="POLICY", help="the policy file")
    parser.add_argument("--method", required=True, help="the request method, e.g. GET")
    parser.add_argument(
        "--path",
        required=True,
        metavar="TARGET",
        help="the raw request target, as sent: a path, optionally with a query",
    )
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar='"NAME: VALUE"',
        help="a request header; repeat for several",
    )
    parser.add_argument(
        "--identity",
        metavar="FILE",
        help="a JSON file: the caller's userinfo document, or API token record",
    )
    parser.add_argument(
        "--provider",
        metavar="NAME",
        help="the provider or tokens block that --identity comes from",
    )
    live = parser.add_mutually_exclusive_group()
    live.add_argument(
        "--token",
        help="check a real access or API token end to end: the provider is called as the "
        "engine would call it (use - to read the token from standard input)",
    )
    live.add_argument("--token-env", metavar="NAME", help="like --token, from variable NAME")
    parser.add_argument("--format", choices=("text", "json"), default="text")


def _run(args: argparse.Namespace) -> int:
    headers = [parse_header(h) for h in args.header]
    if (args.identity is None) != (args.provider is None):
        raise UsageError("--identity and --provider go together")
    token = read_token(args) if (args.token or args.token_env) else None
    if token is not None:
        if args.identity is not None:
            raise UsageError("--token checks a real token; --identity stands in for one")
        if any(name.lower() == "authorization" for name, _ in headers):
            raise UsageError("--token sets the Authorization header; do not give one too")
        headers.append(("Authorization", f"Bearer {token}"))
    try:
        policy = load(args.policy)
    except PolicyError as exc:
        err(exc.render())
        return EXIT_USAGE

    notes: list[str] = []
    documents: dict[tuple[str, str], Any] = {}
    if args.identity is not None:
        authenticator = _authenticator(policy, args.provider)
        document = read_identity(args.identity, is_tokens=authenticator in policy.tokens)
        secret = _secret(headers)
        if secret is None:
            secret = _stand_in_token(policy, authenticator)
            headers.append(("Authorization", f"Bearer {secret}"))
            notes.append(
                f"the request has no Authorization header; added `Authorization: Bearer "
                f"{secret}` to carry the identity from {args.identity}"
            )
        if secret:
            documents[(authenticator, secret)] = document

    if token is not None:
        with Engine(policy) as engine:  # the real identity source: providers and stores
            decision = engine.authorize_sync(args.method, args.path, headers)
    else:
        identities: IdentitySource = (
            StaticIdentitySource(policy, documents) if args.identity is not None else _Offline()
        )
        engine = Engine(policy, identities=identities)
        decision = engine.authorize_sync(args.method, args.path, headers)

    canonical = canonicalize(
        args.method, args.path, normalize_headers(headers), max_path=policy.settings.max_path
    )
    report = build_report(policy, args.method, args.path, canonical, decision, notes)
    if args.format == "json":
        out(json.dumps(report, indent=2, default=str))
    else:
        out(render_text(report))
    return EXIT_OK if decision.allowed else EXIT_NEGATIVE


class _Offline:
    """The identity source without --identity: it knows nobody and asks nobody.

    Every credential is unavailable (503), as it is for an engine that cannot reach a provider,
    rather than invalid (401): explain cannot tell whether the token is any good.
    """

    async def identify(self, authenticator: str, credential: Credential) -> Unavailable:
        return self.identify_sync(authenticator, credential)

    def identify_sync(self, authenticator: str, credential: Credential) -> Unavailable:
        return Unavailable(
            f"explain does not call `{authenticator}`; give the caller's identity with "
            f"--identity FILE --provider {authenticator}"
        )


# --- input ----------------------------------------------------------------------------------------

_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def parse_header(text: str) -> tuple[str, str]:
    """`Name: value` as curl writes it; the name must be an HTTP token (RFC 9110 5.1)."""
    name, colon, value = text.partition(":")
    if not colon or not name or not set(name) <= _TOKEN_CHARS:
        raise UsageError(f'invalid --header {json.dumps(text)}: write it as "Name: value"')
    return name, value.strip(" \t")


def read_identity(path: str, *, is_tokens: bool) -> Any:
    """The identity document in `path`, as strict JSON.

    Duplicate keys and NaN or Infinity are refused, as the providers' response reader refuses
    them: a document that a live provider could not have answered would explain nothing.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text") from None
    try:
        document = json.loads(
            text, object_pairs_hook=_unique_keys, parse_constant=_no_constant, parse_int=_integer
        )
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{path} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except ValueError as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise UsageError(f"{path} is nested too deeply to read") from None
    if is_tokens and not isinstance(document, dict):
        raise UsageError(f'{path}: an API token record is an object: {{"username": ..., ...}}')
    return document


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise ValueError(f"duplicate key {json.dumps(key)}")
        document[key] = value
    return document


def _integer(text: str) -> int:
    if len(text) > _MAX_DIGITS:
        raise ValueError(f"a number has more than {_MAX_DIGITS} digits")
    return int(text)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _authenticator(policy: Policy, name: str) -> str:
    if name in policy.providers or name in policy.tokens:
        return name
    declared = sorted([*policy.providers, *policy.tokens])
    known = ", ".join(declared) if declared else "none"
    raise UsageError(
        f"--provider {name}: no provider or tokens block of that name (declared: {known})"
    )


def _secret(headers: Sequence[tuple[str, str]]) -> str | None:
    """The secret the engine will show the identity source: '' when unusable, None when absent.

    Read with the engine's own credential reader so the document is bound to exactly what
    the engine extracts; an unusable header is left for the engine to reject.
    """
    credential = read_credentials(normalize_headers(headers), "")
    if isinstance(credential, NoCredentials):
        return None
    if isinstance(credential, BearerCredential):
        return credential.token
    if isinstance(credential, BasicCredential):
        return credential.secret
    return ""


def _stand_in_token(policy: Policy, authenticator: str) -> str:
    """A bearer token the engine sends to `authenticator`.

    API tokens are recognised by their `pa_` prefix. A provider's token carries the provider's
    first `token_prefix`, so that a route with several providers routes it to this one.
    """
    if authenticator in policy.tokens:
        return EXPLAIN_API_TOKEN
    prefixes = policy.providers[authenticator].spec.token_prefix
    return (prefixes[0] if prefixes else "") + EXPLAIN_TOKEN


# --- the report -----------------------------------------------------------------------------------


def build_report(
    policy: Policy,
    method: str,
    target: str,
    canonical: CanonicalRequest | Rejection,
    decision: Decision,
    notes: Sequence[str],
) -> dict[str, Any]:
    """Everything `explain` shows, as plain data: the JSON output, and what text is made from."""
    if isinstance(canonical, CanonicalRequest):
        request: dict[str, Any] = {
            "method": canonical.method,
            "target": target,
            "path": canonical.path,
            "rejected": None,
        }
    else:
        request = {"method": method, "target": target, "path": None, "rejected": canonical.detail}
    route = _route_plan(policy, decision.route)
    return {
        "request": request,
        "notes": list(notes),
        "route": None
        if decision.route is None
        else {"text": decision.route_text, **_location(decision.route)},
        "rules": _rules(decision, route),
        "principal": _principal(decision.principal),
        "decision": {
            "status": decision.status,
            "allowed": decision.allowed,
            "reason": decision.reason.value,
            "message": decision.message,
            "rule": None if decision.rule is None else _location(decision.rule),
            "rule_label": decision.rule_label,
            "headers": [{"name": n, "value": v} for n, v in decision.headers],
        },
    }


def _route_plan(policy: Policy, span: Span | None) -> RoutePlan | None:
    return next((r for r in policy.routes if span is not None and r.span == span), None)


def _rules(decision: Decision, route: RoutePlan | None) -> list[dict[str, Any]]:
    """The trace, in evaluation order, then the route's rules the evaluator did not reach."""
    rules = [
        {
            "kind": t.kind,
            "text": t.text,
            **_location(t.span),
            "outcome": t.outcome.value,
            "detail": t.detail,
        }
        for t in decision.trace
    ]
    if route is not None and decision.principal is not None:
        evaluated = {t.span for t in decision.trace}
        rules += [
            {
                "kind": r.kind.value,
                "text": r.text,
                **_location(r.span),
                "outcome": "skipped",
                "detail": "",
            }
            for r in route.rules
            if r.span not in evaluated
        ]
    return rules


def _principal(principal: Principal | None) -> dict[str, Any] | None:
    if principal is None:
        return None
    return {
        "provider": principal.provider,
        "username": principal.username,
        "groups": list(principal.groups),
        "claims": dict(principal.claims),
    }


def _location(span: Span) -> dict[str, Any]:
    return {"file": span.file, "line": span.line, "column": span.column}


def render_text(report: dict[str, Any]) -> str:
    """The report for people: one labelled line per fact, rules indented under their route."""
    lines: list[str] = []
    request = report["request"]
    if request["rejected"] is None:
        lines.append(f"request:   {request['method']} {_shown(request['path'])}")
    else:
        lines.append(f"request:   rejected: {_shown(request['rejected'])}")
    lines += [f"note:      {_shown(note)}" for note in report["notes"]]
    route = report["route"]
    lines.append(
        "route:     none" if route is None else f"route:     {route['text']}  ({_at(route)})"
    )
    if report["rules"]:
        lines.append("rules:")
        for rule in report["rules"]:
            detail = f": {_shown(rule['detail'])}" if rule["detail"] else ""
            lines.append(f"  {rule['outcome']:<8}{rule['text']}  ({_at(rule)}){detail}")
    principal = report["principal"]
    if principal is None:
        lines.append("principal: none")
    else:
        lines.append(f"principal: {_shown(principal['username'])} (via {principal['provider']})")
        groups = ", ".join(_shown(g) for g in principal["groups"]) or "none"
        lines.append(f"  groups:  {groups}")
        for name, value in sorted(principal["claims"].items()):
            if name in ("username", "groups"):
                continue  # shown above
            lines.append(f"  claim:   {name} = {json.dumps(value, default=str)}")
    decision = report["decision"]
    lines.append(
        f"decision:  {decision['status']} {decision['reason']}: {_shown(decision['message'])}"
    )
    if decision["rule"] is not None:
        label = decision.get("rule_label")
        named = f'rule "{_shown(label)}" at ' if label is not None else ""
        lines.append(f"  rule:    {named}{_at(decision['rule'])}")
    for header in decision["headers"]:
        lines.append(f"  header:  {header['name']}: {_shown(header['value'])}")
    return "\n".join(lines)


def _at(location: dict[str, Any]) -> str:
    return f"{location['file']}:{location['line']}"


def _shown(text: str) -> str:
    """`text` with control characters escaped: claims come from files, not from us."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


COMMAND = Command(
    name="explain",
    help="show how a policy decides one request",
    description=DESCRIPTION,
    configure=_configure,
    run=_run,
)
