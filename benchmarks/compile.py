"""How long `policyauth.loads` takes for 10 to 10,000 routes, where the time goes, and whether
it grows linearly.

A gateway loads its policy at start-up and on every reload, so a load that grows faster than
the policy does turns a large policy into a slow deploy. This benchmark loads generated
policies (benchmarks/_policies.py) of 10, 100, 1,000 and 10,000 routes and reports:

- the median `policyauth.loads` time with the collector off (the work itself), its per-route
  cost, and the growth from one size to the next divided by the growth in routes (1.00 is
  linear);
- the same load with the collector on, as an application sees it: the gap is what Python's
  cyclic garbage collector charges for the objects a load allocates;
- the split into the phases `loads` runs (parse, check, lint, compile), so that a phase that
  grows faster than the others stands out;
- three peers, run in the same process on the same routes, interleaved with the loads round
  by round (so a busy machine slows them alike): `json.loads` of an equivalent JSON
  document (the floor for reading a configuration of that size in Python), building a
  Starlette `Router` (each `Route` compiles a regex; what a web application pays at start-up
  for the same number of routes), and cedarpy's `PolicySet.from_str` of the same routes as
  Cedar policies (Cedar's Rust parser; the peer issue 13 measures loads against, goal 2.5x).

Every time is CPU time of this process (`time.process_time`): the machines this runs on are
shared, and wall time there counts the waits for a CPU, which swamp a load of a millisecond.

Run `python benchmarks/compile.py` (about a minute and a half) or `--quick` (seconds, 10 and
100 routes) as a smoke test; `--profile` adds a cProfile summary of a 1,000-route load.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cedarpy

import policyauth
from policyauth.compiler import compile_policy
from policyauth.language.checker import check
from policyauth.language.lints import lint
from policyauth.language.parser import parse

try:  # imported as `benchmarks.compile` from the project root
    from benchmarks import _common, _policies
except ImportError:  # run as a script: benchmarks/ itself is on sys.path
    import _common  # type: ignore[no-redef, import-not-found]
    import _policies  # type: ignore[no-redef, import-not-found]

PHASES = ("parse", "check", "lint", "compile")
# CPU time of this process: on a machine shared with other work (2 cores and several busy
# processes where this runs) wall time counts the waits for a CPU, which swamp a 1 ms load;
# the work itself is single-threaded, so on a quiet machine the two agree.
CLOCK = time.process_time_ns
POLICY_NAME = "bench.policy"


@dataclass(frozen=True)
class Plan:
    """Sizes and how many runs each gets; every measurement also stops at `budget_s`."""

    runs: dict[int, int]
    budget_s: float
    profile_size: int

    @property
    def sizes(self) -> list[int]:
        return sorted(self.runs)


# Small loads take milliseconds, so many rounds cost little; on a shared machine a median of
# 30 rounds of a 3 ms load still moved by 10% from one run to the next.
FULL = Plan(runs={10: 200, 100: 40, 1_000: 5, 10_000: 3}, budget_s=30.0, profile_size=1_000)
QUICK = Plan(runs={10: 3, 100: 3}, budget_s=2.0, profile_size=100)


@dataclass(frozen=True)
class SizeResult:
    routes: int
    text_bytes: int
    json_bytes: int
    loads: _common.Sample  # collector off
    loads_gc: _common.Sample  # collector on
    phases: dict[str, _common.Sample]
    json_loads: _common.Sample
    starlette: _common.Sample
    cedar: _common.Sample


def load_in_phases(text: str) -> tuple[dict[str, int], policyauth.Policy]:
    """One load done the way `policyauth.loader.analyze` does it, each phase timed alone
    (less the sorting of diagnostics, of which a clean policy has none)."""
    clock = CLOCK
    t0 = clock()
    tree = parse(text, POLICY_NAME)
    t1 = clock()
    model, diagnostics = check(tree, source=text, env={})
    t2 = clock()
    diagnostics += lint(tree, model, source=text)
    t3 = clock()
    if model is None:
        raise RuntimeError("the generated policy has errors")
    policy = compile_policy(model, warnings=diagnostics)
    t4 = clock()
    return {"parse": t1 - t0, "check": t2 - t1, "lint": t3 - t2, "compile": t4 - t3}, policy


def time_phases(
    text: str, *, runs: int, budget_s: float
) -> tuple[dict[str, _common.Sample], policyauth.Policy]:
    """Phase times over up to `runs` loads (collector off), with the same budget rule as
    `_common.time_runs`: stop when another load would likely overrun it. Also returns the
    last Policy, so the caller can check what was loaded without paying for another load."""
    found: dict[str, list[int]] = {name: [] for name in PHASES}
    totals: list[int] = []
    for _ in range(runs):
        with _common.gc_paused():
            times, policy = load_in_phases(text)
        for name, ns in times.items():
            found[name].append(ns)
        totals.append(sum(times.values()))
        if sum(totals) + max(totals) > budget_s * 1e9:
            break
    return {name: _common.Sample(tuple(ns)) for name, ns in found.items()}, policy


def measure_size(routes: int, runs: int, budget_s: float) -> SizeResult:
    specs = _policies.generate_routes(routes)
    text = _policies.render_policy(specs)
    document = _policies.render_json(specs)
    cedar_text = _policies.render_cedar(specs)
    phases, policy = time_phases(text, runs=runs, budget_s=budget_s)
    if len(policy.routes) != routes or policy.warnings:  # a load with warnings is not the norm
        raise RuntimeError(f"the generated {routes}-route policy does not load clean")

    def load() -> object:
        return policyauth.loads(text, POLICY_NAME, env={})

    # The peers are fast: more runs cost little and steady the median.
    samples = time_interleaved(
        {
            "loads": (load, True),
            "loads_gc": (load, False),
            "json": (lambda: json.loads(document), True),
            "starlette": (lambda: _policies.build_starlette_router(specs), True),
            "cedar": (lambda: cedarpy.PolicySet.from_str(cedar_text), True),
        },
        runs=max(runs, 5),
        budget_s=budget_s,
    )
    return SizeResult(
        routes=routes,
        text_bytes=len(text.encode()),
        json_bytes=len(document.encode()),
        loads=samples["loads"],
        loads_gc=samples["loads_gc"],
        phases=phases,
        json_loads=samples["json"],
        starlette=samples["starlette"],
        cedar=samples["cedar"],
    )


def time_interleaved(
    operations: dict[str, tuple[Callable[[], object], bool]], *, runs: int, budget_s: float
) -> dict[str, _common.Sample]:
    """Time each operation (callable, collector off?) once per round, round after round, so
    that what other processes do to the CPUs falls on all of them alike and the ratios
    between them hold even on a busy machine. Stops, like `_common.time_runs`, when another
    round would likely overrun the budget of all operations together."""
    found: dict[str, list[int]] = {name: [] for name in operations}
    spent = 0
    longest = 0
    for _ in range(runs):
        round_ns = 0
        for name, (operation, gc_off) in operations.items():
            with _common.gc_paused() if gc_off else contextlib.nullcontext():
                if not gc_off:
                    gc.collect()  # start from a collected heap, the collector left on
                start = CLOCK()
                operation()
                elapsed = CLOCK() - start
            found[name].append(elapsed)
            round_ns += elapsed
        spent += round_ns
        longest = max(longest, round_ns)
        if spent + longest > budget_s * 1e9 * len(operations):
            break
    return {name: _common.Sample(tuple(times)) for name, times in found.items()}


def header_share(runs: int, budget_s: float) -> tuple[_common.Sample, _common.Sample]:
    """Loads of the generated policy's header alone (settings, three providers, a tokens
    block, one public route) and of the whole 10-route policy, interleaved. The header is
    the same at every size and the Cedar set has no counterpart for it, so at 10 routes it
    is a fixed share of the load that the route count does not explain."""
    full = _policies.render_policy(_policies.generate_routes(10))
    header = full.split("\nroute ", 1)[0] + "\nroute GET /health {\n  public\n}\n"
    samples = time_interleaved(
        {
            "header": (lambda: policyauth.loads(header, POLICY_NAME, env={}), True),
            "full": (lambda: policyauth.loads(full, POLICY_NAME, env={}), True),
        },
        runs=runs,
        budget_s=budget_s,
    )
    return samples["header"], samples["full"]


def first_load_ns() -> tuple[int, bool]:
    """The first 10-route load in this process, and whether the LALR parser was built by it
    (a one-time cost per process that every later load skips)."""
    cache_info = getattr(
        getattr(sys.modules[parse.__module__], "_parser", None), "cache_info", None
    )
    cold = cache_info is not None and cache_info().currsize == 0
    text = _policies.render_policy(_policies.generate_routes(10))
    start = time.perf_counter_ns()
    policyauth.loads(text, POLICY_NAME, env={})
    return time.perf_counter_ns() - start, cold


def profile_load(routes: int) -> str:
    """cProfile of one load of `routes` routes."""
    text = _policies.render_policy(_policies.generate_routes(routes))
    return _common.profile(lambda: policyauth.loads(text, POLICY_NAME, env={}))


# --- the report --------------------------------------------------------------------------------


Pick = Callable[[SizeResult], float]


def _growth(results: Sequence[SizeResult], pick: Pick) -> list[str]:
    """Time ratio divided by route ratio from the previous size; 1.00 is linear."""
    cells = ["-"]
    for previous, current in itertools.pairwise(results):
        route_ratio = current.routes / previous.routes
        cells.append(f"{pick(current) / pick(previous) / route_ratio:.2f}")
    return cells


def _phase(name: str) -> Pick:
    return lambda result: result.phases[name].median


def _findings(results: Sequence[SizeResult]) -> list[str]:
    """One line on linearity between the two largest sizes: the phases that grow more than
    1.5 times faster than the route count (quadratic work shows as about 10) and take at
    least 5% of the load; smaller phases over the line are named apart, as they cost little
    and single runs of them are noisy."""
    if len(results) < 2:
        return []
    previous, last = results[-2], results[-1]
    route_ratio = last.routes / previous.routes
    total = sum(last.phases[p].median for p in PHASES)
    growth = {p: last.phases[p].median / previous.phases[p].median / route_ratio for p in PHASES}
    over = [p for p in PHASES if growth[p] > 1.5]
    major = [
        f"{p} ({growth[p]:.2f}, {last.phases[p].median / total:.0%} of the load)"
        for p in over
        if last.phases[p].median >= 0.05 * total
    ]
    minor = [f"{p} ({growth[p]:.2f})" for p in over if last.phases[p].median < 0.05 * total]
    span = f"from {previous.routes:,} to {last.routes:,} routes"
    if not major:
        line = f"**Finding:** the phases that matter grow about linearly {span}."
    else:
        line = (
            f"**Finding:** superlinear growth {span} (time ratio over route ratio; 1.00 is "
            f"linear, 10 quadratic): {', '.join(major)}."
        )
    if minor:
        line += f" Also above 1.5 but under 5% of the load: {', '.join(minor)}."
    return [line, ""]


def tables(results: Sequence[SizeResult]) -> list[str]:
    fmt = _common.format_ns
    loads_growth = _growth(results, lambda r: r.loads.median)
    loads_gc_growth = _growth(results, lambda r: r.loads_gc.median)
    rows = [
        [
            f"{r.routes:,}",
            f"{r.text_bytes / 1024:,.0f} KiB",
            str(r.loads.count),
            fmt(r.loads.median),
            fmt(r.loads.p90),
            fmt(r.loads.median / r.routes),
            growth,
            fmt(r.loads_gc.median),
            growth_gc,
        ]
        for r, growth, growth_gc in zip(results, loads_growth, loads_gc_growth, strict=True)
    ]
    load_table = _common.markdown_table(
        [
            "routes",
            "policy",
            "runs",
            "loads median",
            "loads p90",
            "per route",
            "growth/route",
            "loads, gc on",
            "growth/route, gc on",
        ],
        rows,
    )

    phase_growth = {p: _growth(results, _phase(p)) for p in PHASES}
    phase_rows = []
    for i, r in enumerate(results):
        total = sum(r.phases[p].median for p in PHASES)
        cells = [f"{r.routes:,}", str(r.phases["parse"].count)]
        for p in PHASES:
            median = r.phases[p].median
            cells.append(f"{fmt(median)} ({median / total:.0%})")
        cells.append(fmt(total))
        cells.append(" / ".join(phase_growth[p][i] for p in PHASES))
        phase_rows.append(cells)
    phase_table = _common.markdown_table(
        ["routes", "runs", *PHASES, "sum", "growth/route parse / check / lint / compile"],
        phase_rows,
    )

    peer_rows = []
    for r in results:
        peer_rows.append(
            [
                f"{r.routes:,}",
                fmt(r.loads.median),
                f"{fmt(r.json_loads.median)} ({r.json_bytes / 1024:,.0f} KiB)",
                _common.format_ratio(r.loads.median / r.json_loads.median),
                fmt(r.starlette.median),
                _common.format_ratio(r.loads.median / r.starlette.median),
                fmt(r.cedar.median),
                _common.format_ratio(r.loads.median / r.cedar.median),
                _common.format_ratio(r.loads_gc.median / r.cedar.median),
            ]
        )
    peer_table = _common.markdown_table(
        [
            "routes",
            "policyauth.loads",
            "json.loads (same routes)",
            "loads / json",
            "Starlette Router build",
            "loads / Starlette",
            "cedarpy PolicySet.from_str",
            "loads / cedarpy",
            "loads, gc on / cedarpy",
        ],
        peer_rows,
    )
    return [
        *_findings(results),
        "## policyauth.loads",
        "",
        "Median and p90 of whole loads in CPU time of the process (`time.process_time`, which "
        "leaves out the waits for a CPU on a shared machine), collector off; `per route` is the "
        "median over the "
        "route count. `growth/route` is the time ratio to the previous size divided by the "
        "route ratio (10x): 1.00 is linear, 10.00 would be quadratic. `loads, gc on` is the "
        "same load with the collector running, as an application calls it.",
        "",
        load_table,
        "",
        "## Where the time goes",
        "",
        "The phases `loads` runs, timed one by one in the same loads (collector off): "
        "parse (Lark's LALR table walked to the AST), check (semantic errors, the route "
        "index), lint (warnings), compile (rule closures, the Plan). Percentages are of the sum.",
        "",
        phase_table,
        "",
        "## Peers, same process, same routes",
        "",
        "`json.loads` of the same policy as JSON (conditions as trees) is the floor for "
        "reading that much configuration in Python; a Starlette `Router` with one `Route` "
        "per route compiles one regex each; cedarpy parses the same routes as Cedar policies "
        "(one per rule, `like` for patterns). The loads and the peers are timed in turn, round "
        "after round. Ratios are policyauth over the peer, medians, "
        "collector off, and for cedarpy also with the collector on (as applications load; "
        "issue 13's goal is 2.5x or less).",
        "",
        peer_table,
    ]


def run(plan: Plan, *, profile: bool) -> tuple[list[str], str]:
    # The machine is shared: the load when the run starts says how busy it was throughout,
    # next to the one at the end that the report's header gives.
    load_at_start = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    first_ns, cold = first_load_ns()
    for _ in range(3):  # warm-up: lazily built state, caches, specialised bytecode
        measure_size(10, 1, 1.0)
    results = []
    for routes in plan.sizes:
        started = time.perf_counter()
        result = measure_size(routes, plan.runs[routes], plan.budget_s)
        results.append(result)
        print(
            f"  {routes:>6,} routes: loads {_common.format_ns(result.loads.median)} "
            f"({result.loads.count} runs, {time.perf_counter() - started:.1f} s)",
            file=sys.stderr,
        )
    body = [
        f"Load average (1, 5, 15 min) when the run started: {load_at_start}.",
        "",
        *tables(results),
    ]
    header, full = header_share(plan.runs[min(plan.sizes)], plan.budget_s)
    cedar_10 = results[0].cedar.median
    body += [
        "",
        "## The header of the 10-route set",
        "",
        "Every generated policy starts with the same `settings`, three `provider` blocks and "
        "a `tokens` block; the Cedar set has no counterpart for them. Loaded alone (with one "
        f"public route) the header takes {_common.format_ns(header.median)}, "
        f"{header.median / full.median:.0%} of a {results[0].routes}-route load "
        f"({_common.format_ns(full.median)}) in the same rounds; the rest, "
        f"{_common.format_ns(full.median - header.median)}, is "
        f"{_common.format_ratio((full.median - header.median) / cedar_10)} cedarpy's "
        f"{results[0].routes}-route parse above. The goal's ratio stays the whole load's.",
        "",
        "## First load in a process",
        "",
        f"The first 10-route load in this process took {_common.format_ns(first_ns)}"
        + (
            ", including building the LALR parser from the grammar (once per process)."
            if cold
            else " (the parser was already built, so this is not a cold start)."
        ),
    ]
    if profile:
        body += [
            "",
            f"## Profile of one {plan.profile_size:,}-route load",
            "",
            "cProfile, collector off, sorted by own time (`tottime`); cProfile slows calls "
            "down, so compare rows with each other, not with the tables above.",
            "",
            "```",
            profile_load(plan.profile_size),
            "```",
        ]
    return body, "\n".join(tables(results))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the tables, write the report; 0 on success."""
    parser = argparse.ArgumentParser(
        prog="benchmarks/compile.py", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="10 and 100 routes, a few runs")
    parser.add_argument("--profile", action="store_true", help="add a cProfile of one load")
    parser.add_argument("--report", help="report path (default: benchmarks/reports/compile.md)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    body, printed = run(plan, profile=args.profile)
    flags = [f for f, on in (("--quick", args.quick), ("--profile", args.profile)) if on]
    path = _common.report_path(args.report, "compile", quick=args.quick)
    _common.write_report(
        path,
        "Loading policies: policyauth.loads",
        body,
        command=" ".join(["python benchmarks/compile.py", *flags]),
    )
    print(printed)
    print(f"\nreport: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
