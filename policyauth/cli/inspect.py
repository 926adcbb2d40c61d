"""`policyauth inspect`: validate a token as the engine would, and lay open what it says.

The name users of jwt.io and `kubectl auth whoami` expect. It works for every way a provider
validates tokens: for `userinfo` it is `policyauth userinfo` (the provider's answer); for `jwt`
it shows the verified header and claims (nothing is shown from a token that does not verify);
for `introspection` the introspection answer. Then every path to a string, and the value of
every claim path the provider declares (fallbacks of the preset included). The token and its
signature are never printed.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from policyauth.cli import EXIT_NEGATIVE, EXIT_OK, Command, UsageError, out
from policyauth.cli.userinfo import (
    _as_json,
    _declared_claims,
    _print_text,
    _Verdict,
    _verdict,
    read_token,
)
from policyauth.identity.remote import Inspection, RemoteIdentitySource
from policyauth.language.validation_checks import claim_paths
from policyauth.loader import load

DESCRIPTION = """\
Validate a token with a provider of the policy exactly as the engine would, and show what it
carries: for a jwt provider the verified header and claims, for an introspection provider the
introspection answer, for a userinfo provider the userinfo document; then every path to a
string value and what each declared claim resolves to. The token itself is never printed.

examples:
  policyauth inspect policies/api.policy --provider entra --token-env ENTRA_TOKEN
  pbpaste | policyauth inspect policies/api.policy --provider corp --token -

exit status: 0 the token is valid, 1 it was refused or the provider was unavailable, 2 usage
error"""


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("policy", metavar="POLICY", help="the policy file")
    parser.add_argument("--provider", required=True, help="the provider block to validate with")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--token", help="the access token, or - to read it from standard input")
    source.add_argument("--token-env", metavar="NAME", help="read the token from variable NAME")
    parser.add_argument("--format", choices=("text", "json"), default="text")


def _run(args: argparse.Namespace) -> int:
    policy = load(args.policy)
    if args.provider not in policy.providers:
        names = ", ".join(f"`{n}`" for n in policy.providers) or "none"
        raise UsageError(f"the policy has no provider `{args.provider}` (providers: {names})")
    token = read_token(args)
    spec = policy.providers[args.provider].spec
    source = RemoteIdentitySource(policy)
    try:
        inspection = source.inspect_sync(args.provider, token)
    finally:
        source.close()
    claims = _declared_claims(claim_paths(spec), inspection)
    verdict = _verdict(inspection, spec, claims, args.policy)
    if args.format == "json":
        shown = _as_json(inspection, claims, verdict)
        shown = {"provider": spec.name, "validate": spec.validate, **shown}
        if spec.validate == "jwt":
            shown["header"] = inspection.header
            del shown["endpoint"], shown["status"]
        out(json.dumps(shown, indent=2, ensure_ascii=False))
    elif spec.validate == "jwt":
        _print_jwt(spec.name, inspection, claims, verdict)
    else:
        out(f'provider: {spec.name} (validate = "{spec.validate}")')
        _print_text(inspection, claims, verdict)
    return EXIT_OK if verdict.valid else EXIT_NEGATIVE


def _print_jwt(
    name: str, inspection: Inspection, claims: list[tuple[str, str, Any]], verdict: _Verdict
) -> None:
    out(f'provider: {name} (validate = "jwt")')
    result = verdict.result.replace("the provider accepted", "the signature and claims verify for")
    out(f"result:   {result}")
    if inspection.document is None:
        return
    out("")
    out("header:")
    out(json.dumps(inspection.header, indent=2, ensure_ascii=False))
    out("")
    out("claims:")
    # Reuse the userinfo layout for the claims document, paths and declared claims.
    _print_text(Inspection("-", None, inspection.document, inspection.result), claims, verdict)


COMMAND = Command(
    name="inspect",
    help="validate a token as the engine would and show its verified claims",
    description=DESCRIPTION,
    configure=_configure,
    run=_run,
)
