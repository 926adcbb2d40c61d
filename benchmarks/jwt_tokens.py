"""What local JWT verification costs (`validate = "jwt"`), next to what it replaces.

Three figures, from the real identity source (RemoteIdentitySource with its JWKS handling)
against an in-process issuer (httpx.MockTransport) that counts its JWKS requests:

- a decision whose JWT identity is cached, next to the same decision with a cached userinfo
  identity (target: the same cost);
- the first decision on a new JWT, keys already known, for RS256 and ES256, timed side by side
  (interleaved, token by token) with PyJWT's own `jwt.decode` of the same token with the same
  checks (signature, `iss`, `aud`, `exp` required, leeway) (target: within 1.5x);
- JWKS requests for 10,000 requests over 100 new JWTs, sync and async (target: 1).

PyJWT and cryptography are imported here as the peer being compared with, and to mint tokens.
Run `python benchmarks/jwt_tokens.py` (under a minute) or `--quick`. (Not `jwt.py`: run as a
script, a file of that name would shadow PyJWT's `jwt` package.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import httpx
import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import policyauth

try:  # imported as `benchmarks.jwt_tokens` from the project root
    from benchmarks import _common
except ImportError:  # run as a script: benchmarks/ itself is on sys.path
    import _common  # type: ignore[no-redef, import-not-found]

ISSUER = "https://sso.example.com/realms/corp"
JWKS = f"{ISSUER}/protocol/openid-connect/certs"
AUDIENCE = "reports-api"
RULES = """
route GET /reports/{id} {
  auth corp
  deny  if "contractors" in groups
  allow if "reporting" in groups
}
"""
JWT_POLICY = f"""
provider corp {{
  validate   = "jwt"
  issuer     = "{ISSUER}"
  jwks       = "{JWKS}"
  audience   = "{AUDIENCE}"
  token_type = "at+jwt"
  username   = $.preferred_username
  groups     = $.realm_access.roles[*]
}}
{RULES}"""
USERINFO_POLICY = f"""
provider corp {{
  userinfo = "https://sso.example.com/userinfo"
  username = $.preferred_username
  groups   = $.realm_access.roles[*]
}}
{RULES}"""
TOKENS = 100
REQUESTS = 10_000


class Issuer:
    """One signing key, its JWKS endpoint (counting requests) and tokens signed with it."""

    def __init__(self, alg: str) -> None:
        self.alg = alg
        self.key: Any = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if alg == "RS256"
            else ec.generate_private_key(ec.SECP256R1())
        )
        algorithm = pyjwt.get_algorithm_by_name(alg)
        self.jwk = json.loads(algorithm.to_jwk(self.key.public_key())) | {"kid": "k1"}
        self.jwks_requests = 0
        self.serial = 0

    def token(self) -> str:
        self.serial += 1
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": f"user-{self.serial}",
            "preferred_username": f"user-{self.serial}",
            "realm_access": {"roles": ["reporting"]},
            "iat": now,
            "exp": now + 3600,
            "jti": f"j{self.serial}",
        }
        return pyjwt.encode(
            claims, self.key, algorithm=self.alg, headers={"kid": "k1", "typ": "at+jwt"}
        )

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if str(request.url) != JWKS:
            return httpx.Response(404)
        self.jwks_requests += 1
        return httpx.Response(200, json={"keys": [self.jwk]})


def _headers(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}"), ("accept", "application/json")]


def cached_decisions(quick: bool) -> list[list[str]]:
    issuer = Issuer("RS256")
    jwt_engine = policyauth.Engine(policyauth.loads(JWT_POLICY), httpx.MockTransport(issuer))
    token = issuer.token()
    document = {"preferred_username": "ada", "realm_access": {"roles": ["reporting"]}}
    userinfo_engine = policyauth.Engine(
        policyauth.loads(USERINFO_POLICY),
        httpx.MockTransport(lambda request: httpx.Response(200, json=document)),
    )
    opaque = "opaque-access-token-0123456789"
    # An opaque token as long as the JWT: the request layer's work (header checks, the cache
    # key's hash) grows with the token, whatever validates it.
    as_long = "o" * len(token)
    assert jwt_engine.authorize_sync("GET", "/reports/7", _headers(token)).status == 200
    for credential in (opaque, as_long):
        decision = userinfo_engine.authorize_sync("GET", "/reports/7", _headers(credential))
        assert decision.status == 200
    overhead = _common.timer_overhead_ns()
    calls, budget = (2_000, 2.0) if quick else (50_000, 8.0)
    samples = {}
    # Alternate the two, a batch at a time, so that drift on a shared machine hits both.
    for _ in range(3):
        for name, engine, credential in (
            ("jwt", jwt_engine, token),
            ("userinfo", userinfo_engine, opaque),
            ("userinfo-long", userinfo_engine, as_long),
        ):
            headers = _headers(credential)
            sample = _common.time_calls(
                lambda e=engine, h=headers: e.authorize_sync("GET", "/reports/7", h),
                max_calls=calls // 3,
                budget_s=budget / 6,
                warmup=200,
                overhead_ns=overhead,
            )
            samples[name] = samples.get(name, ()) + sample.times_ns
    jwt_engine.close()
    userinfo_engine.close()
    jwt_sample = _common.Sample(samples["jwt"])
    userinfo_sample = _common.Sample(samples["userinfo"])
    long_sample = _common.Sample(samples["userinfo-long"])
    return [
        [f"cached JWT identity ({len(token)}-character JWT)", *_row(jwt_sample)],
        [f"cached userinfo identity ({len(as_long)}-character token)", *_row(long_sample)],
        [
            "ratio jwt / userinfo, tokens of one length",
            _common.format_ratio(jwt_sample.median / long_sample.median),
            "",
            "",
        ],
        [f"cached userinfo identity ({len(opaque)}-character token)", *_row(userinfo_sample)],
        [
            "ratio jwt / userinfo, short opaque token",
            _common.format_ratio(jwt_sample.median / userinfo_sample.median),
            "",
            "",
        ],
    ]


def _row(sample: _common.Sample) -> list[str]:
    return [_common.format_ns(sample.median), _common.format_ns(sample.p90), str(sample.count)]


def first_decisions(alg: str, quick: bool) -> list[list[str]]:
    """Each token decided once by the engine (a cache miss, keys known) and decoded once by
    PyJWT with the same checks, interleaved token by token."""
    issuer = Issuer(alg)
    engine = policyauth.Engine(policyauth.loads(JWT_POLICY), httpx.MockTransport(issuer))
    assert engine.authorize_sync("GET", "/reports/7", _headers(issuer.token())).status == 200
    public = issuer.key.public_key()
    count = 300 if quick else 3_000
    tokens = [issuer.token() for _ in range(count + 100)]
    options: Any = {"require": ["exp", "iss", "aud"]}

    def peer(token: str) -> dict[str, Any]:
        return pyjwt.decode(
            token,
            public,
            algorithms=[alg],
            audience=[AUDIENCE],
            issuer=[ISSUER],
            leeway=30,
            options=options,
        )

    for token in tokens[:100]:  # warm-up, untimed
        engine.authorize_sync("GET", "/reports/7", _headers(token))
        peer(token)
    overhead = int(_common.timer_overhead_ns())
    clock = time.perf_counter_ns
    ours: list[int] = []
    theirs: list[int] = []
    with _common.gc_paused():
        for token in tokens[100:]:
            headers = _headers(token)
            start = clock()
            decision = engine.authorize_sync("GET", "/reports/7", headers)
            middle = clock()
            peer(token)
            end = clock()
            assert decision.status == 200
            ours.append(max(middle - start - overhead, 0))
            theirs.append(max(end - middle - overhead, 0))
    assert issuer.jwks_requests == 1
    engine.close()
    our_sample, their_sample = _common.Sample(tuple(ours)), _common.Sample(tuple(theirs))
    return [
        [f"{alg}: first decision, new token (policyauth)", *_row(our_sample)],
        [f"{alg}: `jwt.decode`, same token, same checks (PyJWT)", *_row(their_sample)],
        [
            f"{alg}: ratio policyauth / PyJWT",
            _common.format_ratio(our_sample.median / their_sample.median),
            "",
            "",
        ],
    ]


def jwks_requests(requests: int) -> list[list[str]]:
    rows = []
    issuer = Issuer("ES256")
    tokens = [issuer.token() for _ in range(TOKENS)]
    with policyauth.Engine(policyauth.loads(JWT_POLICY), httpx.MockTransport(issuer)) as engine:
        for i in range(requests):
            decision = engine.authorize_sync("GET", "/reports/1", _headers(tokens[i % TOKENS]))
            assert decision.status == 200
    rows.append(["sync, sequential", str(requests), str(TOKENS), str(issuer.jwks_requests)])

    issuer = Issuer("ES256")
    tokens = [issuer.token() for _ in range(TOKENS)]

    async def concurrent() -> None:
        transport = httpx.MockTransport(issuer)
        async with policyauth.Engine(policyauth.loads(JWT_POLICY), transport) as engine:
            for start in range(0, requests, 500):
                batch = [
                    engine.authorize("GET", "/reports/1", _headers(tokens[i % TOKENS]))
                    for i in range(start, min(start + 500, requests))
                ]
                decisions = await asyncio.gather(*batch)
                assert {d.status for d in decisions} == {200}

    asyncio.run(concurrent())
    rows.append(["async, 500 at a time", str(requests), str(TOKENS), str(issuer.jwks_requests)])
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Run, print, write the report; always 0 (figures are reported, not judged)."""
    parser = argparse.ArgumentParser(prog="benchmarks/jwt_tokens.py", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer timed calls and requests")
    parser.add_argument("--report", help="report path (default: benchmarks/reports/jwt.md)")
    args = parser.parse_args(argv)
    header = ["decision GET /reports/7", "median", "p90", "calls timed"]
    cached = _common.markdown_table(header, cached_decisions(args.quick))
    first = _common.markdown_table(
        header, first_decisions("RS256", args.quick) + first_decisions("ES256", args.quick)
    )
    requests = _common.markdown_table(
        ["requests", "count", "distinct new JWTs", "JWKS requests"],
        jwks_requests(1_000 if args.quick else REQUESTS),
    )
    body = [
        "## A decision with a cached identity: JWT versus userinfo",
        "",
        "Target: the same cost (ratio about 1.00). A JWT is longer than most opaque tokens, and",
        "the request layer's work (header checks, the cache key's hash) grows with the token",
        "whatever validates it, so the like-for-like ratio is the one with tokens of one length.",
        "",
        cached,
        "",
        "## The first decision on a new JWT, keys known, next to PyJWT's `decode`",
        "",
        "Target: within 1.5x. The policyauth figure is a whole decision (canonical request,",
        "route, credential, cache lookup, verification, claims, rules, caching the identity);",
        "PyJWT's is `jwt.decode` alone with the same checks, on the same token, timed right after.",
        "",
        first,
        "",
        "## JWKS requests",
        "",
        "Target: 1 for the whole run (no discovery here: `jwks` is given).",
        "",
        requests,
    ]
    path = _common.report_path(args.report, "jwt", quick=args.quick)
    command = "python benchmarks/jwt_tokens.py" + (" --quick" if args.quick else "")
    _common.write_report(path, "JWT access tokens", body, command=command)
    print("\n".join(body))
    print(f"\nreport: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
