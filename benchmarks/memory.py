"""How much memory cached identities take: RSS after 10,000 and 100,000 identities with 32
request paths each (issue 13: the per-identity memo could hold 15 KB, 300 MB at 10,000).

Each size runs in a fresh child process: an engine with the real identity source (keyed-hash
cache, memo of recent decisions) over an in-process provider (httpx.MockTransport), a first
request per token (a provider call), then 32 distinct paths per token, all allowed. The report
gives the process's resident set size before and after, the difference per identity, and how
many identities the cache kept under its bound. Run `python benchmarks/memory.py` (about a
minute) or `--quick` (1,000 and 10,000 identities).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx

import policyauth

try:  # imported as `benchmarks.memory` from the project root
    from benchmarks import _common
except ImportError:  # run as a script: benchmarks/ itself is on sys.path
    import _common  # type: ignore[no-redef, import-not-found]

PATHS = 32

POLICY = """
settings {
  cache_ttl = 1h
}

provider corp {
  userinfo = "https://sso.example.com/userinfo"
  username = $.preferred_username
  groups   = $.groups[*]
}

route GET /reports/{id} {
  auth corp
  allow if "reporting" in groups
}
"""


def _provider(request: httpx.Request) -> httpx.Response:
    token = request.headers["authorization"].removeprefix("Bearer ")
    document = {"preferred_username": token, "groups": ["reporting", "staff"], "sub": token}
    return httpx.Response(200, json=document)


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _fill(identities: int, cache_size: int | None, results: multiprocessing.Queue[object]) -> None:
    policy = policyauth.loads(POLICY)
    options = {} if cache_size is None else {"cache_size": cache_size}
    engine = policyauth.Engine(policy, transport=httpx.MockTransport(_provider), **options)
    engine.authorize_sync("GET", "/reports/0", [("authorization", "Bearer warm-up")])
    before = _rss_bytes()
    for i in range(identities):
        headers = [("authorization", f"Bearer user-{i}")]
        for path in range(PATHS):
            decision = engine.authorize_sync("GET", f"/reports/{path}", headers)
            assert decision.status == 200, decision
    after = _rss_bytes()
    kept = len(engine._state.remote._cache) if engine._state.remote is not None else 0
    results.put((before, after, kept))


def measure(identities: int, cache_size: int | None) -> tuple[int, int, int]:
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[object] = context.Queue()
    child = context.Process(target=_fill, args=(identities, cache_size, results))
    child.start()
    answer = results.get()
    child.join()
    before, after, kept = answer  # type: ignore[misc]
    return before, after, kept


def main(argv: Sequence[str] | None = None) -> int:
    """Run, print, write the report; always 0 (figures are reported, not judged)."""
    parser = argparse.ArgumentParser(prog="benchmarks/memory.py", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1,000 and 10,000 identities")
    parser.add_argument("--report", help="report path (default: benchmarks/reports/memory.md)")
    args = parser.parse_args(argv)
    mib = 1024 * 1024
    runs = [(1_000, None), (10_000, None)] if args.quick else [(10_000, None), (100_000, None)]
    runs.append((runs[-1][0], 64 * mib))  # the bound set with Engine(cache_size=...)
    rows = []
    for identities, cache_size in runs:
        before, after, kept = measure(identities, cache_size)
        rows.append(
            [
                f"{identities:,}",
                "default (128 MiB)" if cache_size is None else f"{cache_size // mib} MiB",
                f"{before / mib:,.0f} MiB",
                f"{after / mib:,.0f} MiB",
                f"{(after - before) / identities / 1024:,.1f} KiB",
                f"{kept:,}",
            ]
        )
    table = _common.markdown_table(
        [
            "identities",
            "cache_size",
            "RSS before",
            "RSS after",
            "growth per identity",
            "kept in the cache",
        ],
        rows,
    )
    body = [
        "## Cached identities, 32 paths each",
        "",
        f"One child process per size; every identity makes {PATHS} allowed requests on distinct"
        " paths (each a remembered decision). The cache charges each identity its claims and"
        " a full memo (policyauth/identity/cache.py), so RSS growth stays near `cache_size`"
        " however many identities pass through. Before issue 13 the bound was 10,000 entries"
        " whatever their size, and the memo held 64 decisions and emptied itself when full.",
        "",
        table,
    ]
    path = _common.report_path(args.report, "memory", quick=args.quick)
    command = "python benchmarks/memory.py" + (" --quick" if args.quick else "")
    _common.write_report(path, "Memory of cached identities", body, command=command)
    print("\n".join(body))
    print(f"\nreport: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
