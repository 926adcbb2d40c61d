"""What the identity cache saves: decision time with a cached identity, and provider calls.

Providers rate-limit userinfo (Auth0 allows 5 calls a minute per user), so the engine must not
call them per request. This benchmark runs the real identity source (RemoteIdentitySource: the
HTTP client, the keyed-hash cache, single flight) against an in-process provider
(httpx.MockTransport) that counts the calls it receives, and reports:

- the median and p90 of one decision whose identity is in the cache, next to the same decision
  with a StaticIdentitySource (no cache, no HTTP: policyauth's own floor) as a ratio;
- provider calls for 10,000 requests spread over 100 distinct tokens (ideal: 100), for
  sequential sync requests and for concurrent async ones (`asyncio.gather` in batches of 500),
  and for 100 invalid tokens repeated within `negative_ttl` (ideal: 100).

Run `python benchmarks/cache.py` (seconds) or `--quick`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import httpx

import policyauth

try:  # imported as `benchmarks.cache` from the project root
    from benchmarks import _common
except ImportError:  # run as a script: benchmarks/ itself is on sys.path
    import _common  # type: ignore[no-redef, import-not-found]

POLICY = """
settings {
  cache_ttl    = 5m
  negative_ttl = 30s
}

provider corp {
  userinfo = "https://sso.example.com/userinfo"
  username = $.preferred_username
  groups   = $.realm_access.roles[*]
}

route GET /reports/{id} {
  auth corp
  deny  if "contractors" in groups
  allow if "reporting" in groups
}
"""

TOKENS = 100
REQUESTS = 10_000


class CountingProvider:
    """A userinfo endpoint in the same process: tokens `good-N` are valid, others are not."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if not token.startswith("good-"):
            return httpx.Response(401)
        document = {"preferred_username": token, "realm_access": {"roles": ["reporting"]}}
        return httpx.Response(200, json=document)


def _headers(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}"), ("accept", "application/json")]


def measure_decisions(quick: bool) -> list[list[str]]:
    policy = policyauth.loads(POLICY)
    provider = CountingProvider()
    engine = policyauth.Engine(policy, transport=httpx.MockTransport(provider))
    static = policyauth.Engine(
        policy,
        identities=policyauth.StaticIdentitySource(
            policy,
            {
                ("corp", "good-0"): {
                    "preferred_username": "good-0",
                    "realm_access": {"roles": ["reporting"]},
                }
            },
        ),
    )
    for candidate in (engine, static):
        decision = candidate.authorize_sync("GET", "/reports/7", _headers("good-0"))
        assert decision.status == 200, decision
    overhead = _common.timer_overhead_ns()
    calls = 2_000 if quick else 50_000
    budget = 2.0 if quick else 10.0
    cached = _common.time_calls(
        lambda: engine.authorize_sync("GET", "/reports/7", _headers("good-0")),
        max_calls=calls,
        budget_s=budget,
        warmup=200,
        overhead_ns=overhead,
    )
    floor = _common.time_calls(
        lambda: static.authorize_sync("GET", "/reports/7", _headers("good-0")),
        max_calls=calls,
        budget_s=budget,
        warmup=200,
        overhead_ns=overhead,
    )
    assert provider.calls == 1, provider.calls  # every timed decision came from the cache
    engine.close()
    return [
        [
            "cached identity (RemoteIdentitySource)",
            _common.format_ns(cached.median),
            _common.format_ns(cached.p90),
            str(cached.count),
        ],
        [
            "StaticIdentitySource (no cache, no HTTP)",
            _common.format_ns(floor.median),
            _common.format_ns(floor.p90),
            str(floor.count),
        ],
        ["ratio cached / static", _common.format_ratio(cached.median / floor.median), "", ""],
    ]


def count_calls(requests: int) -> list[list[str]]:
    policy = policyauth.loads(POLICY)
    rows = []

    provider = CountingProvider()
    with policyauth.Engine(policy, transport=httpx.MockTransport(provider)) as engine:
        for i in range(requests):
            decision = engine.authorize_sync("GET", "/reports/1", _headers(f"good-{i % TOKENS}"))
            assert decision.status == 200
    rows.append(["sync, sequential, valid tokens", str(requests), str(TOKENS), str(provider.calls)])

    provider = CountingProvider()

    async def concurrent() -> None:
        async with policyauth.Engine(policy, transport=httpx.MockTransport(provider)) as engine:
            for start in range(0, requests, 500):
                batch = [
                    engine.authorize("GET", "/reports/1", _headers(f"good-{i % TOKENS}"))
                    for i in range(start, min(start + 500, requests))
                ]
                decisions = await asyncio.gather(*batch)
                assert {d.status for d in decisions} == {200}

    asyncio.run(concurrent())
    rows.append(
        ["async, 500 at a time, valid tokens", str(requests), str(TOKENS), str(provider.calls)]
    )

    provider = CountingProvider()
    with policyauth.Engine(policy, transport=httpx.MockTransport(provider)) as engine:
        for i in range(requests):
            decision = engine.authorize_sync("GET", "/reports/1", _headers(f"bad-{i % TOKENS}"))
            assert decision.status == 401
    rows.append(
        ["sync, invalid tokens (negative_ttl)", str(requests), str(TOKENS), str(provider.calls)]
    )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Run, print, write the report; always 0 (figures are reported, not judged)."""
    parser = argparse.ArgumentParser(prog="benchmarks/cache.py", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer timed calls and requests")
    parser.add_argument("--report", help="report path (default: benchmarks/reports/cache.md)")
    args = parser.parse_args(argv)
    decisions = _common.markdown_table(
        ["decision GET /reports/7", "median", "p90", "calls timed"], measure_decisions(args.quick)
    )
    calls = _common.markdown_table(
        ["requests", "count", "distinct tokens", "provider calls"],
        count_calls(1_000 if args.quick else REQUESTS),
    )
    body = [
        "## One decision with a cached identity",
        "",
        decisions,
        "",
        "## Provider calls",
        "",
        "Ideal: one call per distinct token for the whole run (valid tokens stay cached for",
        "`cache_ttl`, invalid ones for `negative_ttl`).",
        "",
        calls,
    ]
    path = _common.report_path(args.report, "cache", quick=args.quick)
    command = "python benchmarks/cache.py" + (" --quick" if args.quick else "")
    _common.write_report(path, "The identity cache", body, command=command)
    print("\n".join(body))
    print(f"\nreport: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
