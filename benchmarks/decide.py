"""How long one decision takes, and whether it stays flat from 10 to 10,000 routes.

policyauth sits in front of every request, so its per-request cost is added to every response,
and it must not grow with the size of the policy: the compiler puts routes in a segment trie
precisely so that finding a route does not scan them. This benchmark builds an Engine with a
StaticIdentitySource (the identity is already known, so no network and no cache is timed: only
policyauth's own work) over the generated policies of benchmarks/_policies.py, and times:

- `engine.authorize_sync(method, target, headers)`, whole decisions, for requests that hit the
  first route, one in the middle of the file, the last one, and no route at all;
- `policy.route_for(method, segments)`, the route lookup alone, for the same requests;
- the peer: Starlette's routing for the same paths, done as `Router` does it (call
  `route.matches(scope)` on each route in order until a full match), in the same process.

Every call is timed on its own (median and p90 per call, collector off, timer overhead
subtracted) after a warm-up. Before timing, each request is checked to reach the expected route
and decision in both policyauth and Starlette, so the two always do comparable work.

The acceptance targets it reports: the 10,000-route median within 1.5x of the 10-route median,
and the 1,000-route median under 20 microseconds, for every request. When one is missed, the
report gets a cProfile of the slow decisions (also on demand with `--profile`).

Run `python benchmarks/decide.py` (under a minute plus the time to load a 10,000-route policy)
or `--quick` (seconds, 10 and 100 routes) as a smoke test.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from starlette.routing import Match

import policyauth
from policyauth.evaluator import Pending, finish, prepare
from policyauth.request import (
    CanonicalRequest,
    canonicalize,
    normalize_headers,
    read_credentials,
)

try:  # imported as `benchmarks.decide` from the project root
    from benchmarks import _common, _policies
except ImportError:  # run as a script: benchmarks/ itself is on sys.path
    import _common  # type: ignore[no-redef, import-not-found]
    import _policies  # type: ignore[no-redef, import-not-found]

TARGET_FLATNESS = 1.5  # largest / smallest policy, median decision time
TARGET_1000_NS = 20_000  # median decision time at 1,000 routes


@dataclass(frozen=True)
class Plan:
    sizes: tuple[int, ...]
    max_calls: int
    budget_s: float  # per measured operation and request
    warmup: int
    profile_size: int


FULL = Plan(
    sizes=(10, 1_000, 10_000), max_calls=20_000, budget_s=1.0, warmup=1_000, profile_size=1_000
)
QUICK = Plan(sizes=(10, 100), max_calls=1_000, budget_s=0.1, warmup=100, profile_size=100)


@dataclass(frozen=True)
class ProbeResult:
    routes: int
    probe: _policies.Probe
    status: int
    authorize: _common.Sample
    route_for: _common.Sample
    starlette: _common.Sample


@dataclass(frozen=True)
class Stages:
    """One hit request's decision taken apart into the steps `Engine.authorize_sync` runs."""

    routes: int
    label: str
    medians: dict[str, float]
    whole: float


# The steps `Engine.authorize_sync` runs for a hit, and, inside `prepare`, the three that do
# most of its work (choosing the authenticator is the rest).
STAGES = ("normalize_headers", "prepare", "identify", "finish")
PREPARE_STEPS = ("canonicalize", "route_for", "read_credentials")


def starlette_match(routes: Sequence[Any], scope: dict[str, Any]) -> Any:
    """Starlette's `Router` loop without the dispatch, statement for statement: the first route
    that fully matches, trying each in order (a method mismatch is a partial match: go on)."""
    for route in routes:
        match, _child_scope = route.matches(scope)
        if match is Match.FULL:
            return route
    return None


def _scope(probe: _policies.Probe) -> dict[str, Any]:
    path, _, query = probe.target.partition("?")
    return {
        "type": "http",
        "method": probe.method,
        "path": path,
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(n.encode(), v.encode()) for n, v in probe.headers],
    }


def _canonical(policy: policyauth.Policy, probe: _policies.Probe) -> CanonicalRequest:
    request = canonicalize(
        probe.method,
        probe.target,
        normalize_headers(probe.headers),
        max_path=policy.settings.max_path,
    )
    if not isinstance(request, CanonicalRequest):
        raise RuntimeError(f"probe {probe.label} was rejected: {request.detail}")
    return request


def _check(
    policy: policyauth.Policy,
    engine: policyauth.Engine,
    router_routes: list[Any],
    probe: _policies.Probe,
) -> int:
    """Fail loudly unless policyauth and Starlette both reach the route the probe aims at."""
    decision = engine.authorize_sync(probe.method, probe.target, probe.headers)
    request = _canonical(policy, probe)
    found = policy.route_for(request.method, request.segments)
    index = None if found is None else found.index
    matched = starlette_match(router_routes, _scope(probe))
    starlette_index = None if matched is None else router_routes.index(matched)
    if decision.status != probe.status or index != probe.route or starlette_index != probe.route:
        raise RuntimeError(
            f"probe {probe.label}: policyauth {decision.status} {decision.reason} route {index}, "
            f"Starlette route {starlette_index}; expected {probe.status} route {probe.route}"
        )
    return decision.status


@dataclass(frozen=True)
class Setup:
    """One policy size, ready to decide: the Engine and its parts, and the Starlette peer."""

    specs: list[_policies.RouteSpec]
    policy: policyauth.Policy
    identities: policyauth.StaticIdentitySource
    engine: policyauth.Engine
    router_routes: list[Any]


def set_up(routes: int) -> Setup:
    specs = _policies.generate_routes(routes)
    policy = policyauth.loads(_policies.render_policy(specs), "bench.policy", env={})
    identities = policyauth.StaticIdentitySource(policy, _policies.IDENTITY_DOCUMENTS)
    return Setup(
        specs=specs,
        policy=policy,
        identities=identities,
        engine=policyauth.Engine(policy, identities=identities),
        router_routes=list(_policies.build_starlette_router(specs).routes),
    )


def measure_size(setup: Setup, plan: Plan, overhead_ns: float) -> list[ProbeResult]:
    policy, engine, router_routes = setup.policy, setup.engine, setup.router_routes
    routes = len(setup.specs)

    timed = partial(
        _common.time_calls,
        max_calls=plan.max_calls,
        budget_s=plan.budget_s,
        warmup=plan.warmup,
        overhead_ns=overhead_ns,
    )
    results = []
    for probe in _policies.probes(setup.specs):
        status = _check(policy, engine, router_routes, probe)
        request = _canonical(policy, probe)
        # functools.partial rather than lambdas: a C-level call adds less to each sample
        results.append(
            ProbeResult(
                routes=routes,
                probe=probe,
                status=status,
                authorize=timed(
                    partial(engine.authorize_sync, probe.method, probe.target, probe.headers)
                ),
                route_for=timed(partial(policy.route_for, request.method, request.segments)),
                starlette=timed(partial(starlette_match, router_routes, _scope(probe))),
            )
        )
    return results


def measure_stages(setup: Setup, plan: Plan, overhead_ns: float) -> list[Stages]:
    """Each step of every hit decision timed alone; see `stage_calls`."""
    timed = partial(
        _common.time_calls,
        max_calls=plan.max_calls,
        budget_s=plan.budget_s / 2,
        warmup=plan.warmup,
        overhead_ns=overhead_ns,
    )
    found = []
    for probe in _policies.probes(setup.specs):
        if probe.route is None:
            continue
        medians = {name: timed(call).median for name, call in stage_calls(setup, probe).items()}
        whole = timed(
            partial(setup.engine.authorize_sync, probe.method, probe.target, probe.headers)
        )
        found.append(Stages(len(setup.specs), probe.label, medians, whole.median))
    return found


def stage_calls(setup: Setup, probe: _policies.Probe) -> dict[str, Callable[[], object]]:
    """The steps of `Engine.authorize_sync` for a hit, each bound to the inputs the step
    before it produced: `normalize_headers`, `evaluator.prepare` (and inside it
    `canonicalize`, `Policy.route_for`, `read_credentials`), the identity source, and
    `evaluator.finish` (principal, rules, Decision).

    `identify` is the StaticIdentitySource: for a provider it applies the claim paths to the
    userinfo document exactly as for a live response; a real source adds its cache.
    These are internal functions whose signatures may change; `run` reports a failure here
    instead of failing the whole benchmark.
    """
    policy, identities = setup.policy, setup.identities
    headers = normalize_headers(probe.headers)
    pending = prepare(policy, probe.method, probe.target, headers)
    if not isinstance(pending, Pending):
        raise RuntimeError(f"probe {probe.label} is decided before its credential is checked")
    request = pending.request
    authenticator = pending.authenticators[0]
    result = identities.identify_sync(authenticator, pending.credential)
    return {
        "normalize_headers": partial(normalize_headers, probe.headers),
        "prepare": partial(prepare, policy, probe.method, probe.target, headers),
        "canonicalize": partial(
            canonicalize, probe.method, probe.target, headers, max_path=policy.settings.max_path
        ),
        "route_for": partial(policy.route_for, request.method, request.segments),
        "read_credentials": partial(read_credentials, headers, request.query),
        "identify": partial(identities.identify_sync, authenticator, pending.credential),
        "finish": partial(finish, policy, pending, authenticator, result),
    }


# --- the report ------------------------------------------------------------------------------


def results_table(results: Sequence[ProbeResult]) -> str:
    fmt, ratio = _common.format_ns, _common.format_ratio
    rows = [
        [
            f"{r.routes:,}",
            f"{r.probe.label} ({r.probe.method}, {r.status})",
            str(r.authorize.count),
            fmt(r.authorize.median),
            fmt(r.authorize.p90),
            fmt(r.route_for.median),
            fmt(r.route_for.p90),
            fmt(r.starlette.median),
            fmt(r.starlette.p90),
            ratio(r.authorize.median / r.starlette.median),
            ratio(r.route_for.median / r.starlette.median),
        ]
        for r in results
    ]
    return _common.markdown_table(
        [
            "routes",
            "request",
            "calls",
            "authorize median",
            "authorize p90",
            "route_for median",
            "route_for p90",
            "Starlette median",
            "Starlette p90",
            "authorize / Starlette",
            "route_for / Starlette",
        ],
        rows,
    )


def targets(results: Sequence[ProbeResult]) -> tuple[str, bool | None]:
    """The targets' table, and whether all are met (None: the run lacks the sizes they need)."""
    by_key = {(r.routes, r.probe.label): r.authorize.median for r in results}
    sizes = sorted({r.routes for r in results})
    labels = list(dict.fromkeys(r.probe.label for r in results))
    smallest, largest = sizes[0], sizes[-1]
    rows = []
    met: list[bool] = []
    for label in labels:
        flat = by_key[(largest, label)] / by_key[(smallest, label)]
        cells = [
            label,
            _common.format_ns(by_key[(smallest, label)]),
            _common.format_ns(by_key[(largest, label)]),
        ]
        cells.append(f"{flat:.2f}x")
        if smallest == 10 and largest == 10_000:
            met.append(flat <= TARGET_FLATNESS)
            cells.append("met" if met[-1] else "**missed**")
        else:
            cells.append("n/a (needs 10 and 10,000)")
        if (1_000, label) in by_key:
            median = by_key[(1_000, label)]
            met.append(median < TARGET_1000_NS)
            cells += [_common.format_ns(median), "met" if met[-1] else "**missed**"]
        else:
            cells += ["-", "n/a (needs 1,000)"]
        rows.append(cells)
    table = _common.markdown_table(
        [
            "request",
            f"median at {smallest:,}",
            f"median at {largest:,}",
            "ratio",
            f"<= {TARGET_FLATNESS}x",
            "median at 1,000",
            "< 20 µs",
        ],
        rows,
    )
    return table, (all(met) if met else None)


def stages_table(stages: Sequence[Stages]) -> str:
    fmt = _common.format_ns
    rows = []
    for s in stages:
        total = sum(s.medians[n] for n in STAGES)
        cells = [f"{s.routes:,}", s.label]
        for name in (*STAGES[:2], *PREPARE_STEPS, *STAGES[2:]):
            cells.append(f"{fmt(s.medians[name])} ({s.medians[name] / total:.0%})")
        cells += [fmt(total), fmt(s.whole)]
        rows.append(cells)
    headers = [
        "routes",
        "request",
        STAGES[0],
        STAGES[1],
        *(f"in prepare: {n}" for n in PREPARE_STEPS),
        *STAGES[2:],
        "sum",
        "authorize_sync",
    ]
    return _common.markdown_table(headers, rows)


def profile_decisions(setup: Setup, repeat: int) -> str:
    """cProfile of `repeat` rounds of every probe's decision."""
    engine = setup.engine
    requests = [(p.method, p.target, p.headers) for p in _policies.probes(setup.specs)]

    def round_of_decisions() -> None:
        for method, target, headers in requests:
            engine.authorize_sync(method, target, headers)

    return _common.profile(round_of_decisions, repeat=repeat)


def run(plan: Plan, *, profile: bool) -> tuple[list[str], str]:
    overhead = _common.timer_overhead_ns()
    warm_up = Plan((10,), max_calls=200, budget_s=0.05, warmup=200, profile_size=10)
    measure_size(set_up(10), warm_up, overhead)  # the whole path once, untimed in effect
    results: list[ProbeResult] = []
    setups: dict[int, Setup] = {}
    for routes in plan.sizes:
        started = time.perf_counter()
        setups[routes] = set_up(routes)
        loaded = time.perf_counter()
        results += measure_size(setups[routes], plan, overhead)
        print(
            f"  {routes:>6,} routes: loaded in {loaded - started:.1f} s, "
            f"measured in {time.perf_counter() - loaded:.1f} s",
            file=sys.stderr,
        )
    stage_size = plan.profile_size if plan.profile_size in setups else plan.sizes[-1]
    try:
        stages_section = stages_table(measure_stages(setups[stage_size], plan, overhead))
    except Exception as exc:  # internal signatures moved: keep the public figures
        stages_section = f"Not measured: the evaluator's internals changed ({exc!r})."
        print(f"  step breakdown skipped: {exc!r}", file=sys.stderr)
    target_table, all_met = targets(results)
    printed = [results_table(results), "", target_table]
    body = [
        "## Decisions",
        "",
        "Per call, collector off, after a warm-up; the timer's own overhead "
        f"({overhead:.0f} ns per sample) is subtracted. `authorize` is "
        "`engine.authorize_sync(method, target, headers)` with a StaticIdentitySource (no network, "
        "no cache: policyauth's work only); `route_for` is the route lookup alone; Starlette is "
        "`route.matches(scope)` over `router.routes` until a full match, as its `Router` does "
        "(for the miss, Starlette would then scan again for a slash redirect; not counted). "
        "Each request carries eight headers, as an API call through a load balancer does. "
        "Requests: `first` hits route 1 with a corporate JWT (`in` rule), `middle` the middle of "
        "the file with a GitHub token (`matches`), `last` the last route (`**` tail, Google, "
        "`endswith`), `miss` no route (403).",
        "",
        results_table(results),
        "",
        "## Acceptance targets",
        "",
        f"The {TARGET_FLATNESS}x target: median decision time at 10,000 routes within "
        f"{TARGET_FLATNESS}x of that at 10 routes. The second: median at 1,000 routes under "
        f"{TARGET_1000_NS / 1000:.0f} µs on this machine. Both per request.",
        "",
        target_table,
        "",
        "All targets met."
        if all_met
        else (
            "Not evaluated in a quick run."
            if all_met is None
            else "**At least one target is missed.**"
        ),
        "",
        f"## Where a decision's time goes ({stage_size:,} routes)",
        "",
        "Each step of `authorize_sync` timed alone (median per call) with the inputs the "
        "previous step produced. `prepare` is steps 1 to 5 of a decision; the three `in "
        "prepare` columns are parts of it, shown for where its time goes, and are not added "
        "again to the sum. `identify` is the StaticIdentitySource, which runs the provider's "
        "claim paths over the userinfo document as it would over a live response; `finish` "
        "builds the principal, runs the rules and builds the Decision. Percentages are of the "
        "sum of the four steps; the last column is the whole call, measured alongside.",
        "",
        stages_section,
    ]
    if profile or all_met is False:
        repeat = 2_000 if plan is FULL else 100
        body += [
            "",
            f"## Profile of decisions at {stage_size:,} routes",
            "",
            f"cProfile of {repeat:,} rounds of the four requests, collector off"
            + (", added because a target is missed" if all_met is False else "")
            + ". cProfile slows calls down: compare rows with each other.",
            "",
            "```",
            profile_decisions(setups[stage_size], repeat),
            "```",
        ]
    return body, "\n".join(printed)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the tables, write the report; 0 on success (a missed target is
    reported, not an error: benchmarks never fail CI on an absolute time)."""
    parser = argparse.ArgumentParser(
        prog="benchmarks/decide.py", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="10 and 100 routes, few calls")
    parser.add_argument("--profile", action="store_true", help="add a cProfile of decisions")
    parser.add_argument("--report", help="report path (default: benchmarks/reports/decide.md)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    body, printed = run(plan, profile=args.profile)
    flags = [f for f, on in (("--quick", args.quick), ("--profile", args.profile)) if on]
    path = _common.report_path(args.report, "decide", quick=args.quick)
    _common.write_report(
        path,
        "Deciding requests: Engine.authorize_sync",
        body,
        command=" ".join(["python benchmarks/decide.py", *flags]),
    )
    print(printed)
    print(f"\nreport: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
