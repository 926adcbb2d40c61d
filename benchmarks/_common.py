"""What both benchmarks share: timing, statistics, formatting, the machine, and the report.

Timing rules, kept in one place so the two benchmarks cannot drift apart:

- `time.perf_counter_ns` only: integer nanoseconds, monotonic, the highest resolution the
  platform offers, and no float rounding in sums of many short calls.
- The garbage collector is off while timing (`gc_paused`): a collection that happens to start
  inside one sample says nothing about the code under test, and it makes medians of short calls
  jump between runs. A full collection runs before each timed block so that garbage left by
  the previous block is not paid for by the next. Where the collector's cost is itself the
  finding (loading a large policy allocates millions of objects), the caller measures it
  separately, with the collector on, and says so.
- Medians and 90th percentiles, never means: one preempted sample would move a mean; it does
  not move a median, and the p90 shows a tail without being one outlier.
- Budgets in seconds as well as counts: a 10,000-route load takes seconds where a 10-route one
  takes milliseconds, so every measurement stops at whichever comes first, and reports how many
  samples it got.
"""

from __future__ import annotations

import contextlib
import cProfile
import datetime
import gc
import io
import math
import os
import platform
import pstats
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPORTS_DIR = BENCHMARKS_DIR / "reports"


@dataclass(frozen=True)
class Sample:
    """Durations of one measured operation, in nanoseconds, one per run or per call."""

    times_ns: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.times_ns)

    @property
    def median(self) -> float:
        return percentile(self.times_ns, 50)

    @property
    def p90(self) -> float:
        return percentile(self.times_ns, 90)


def percentile(values: Sequence[int], pct: float) -> float:
    """Percentile by linear interpolation between closest ranks (numpy's default), so that the
    50th is the usual median and a small sample still gives a value inside its range."""
    if not values:
        raise ValueError("no samples")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Collect once, then keep the collector off for the block (restored even on error)."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def timer_overhead_ns(samples: int = 20_000) -> float:
    """The median cost of two back-to-back `perf_counter_ns` calls: subtracted from per-call
    samples, where it is a visible share of a microsecond-scale operation."""
    clock = time.perf_counter_ns
    pairs = []
    with gc_paused():
        for _ in range(samples):
            start = clock()
            pairs.append(clock() - start)
    return percentile(pairs, 50)


def time_runs(
    operation: Callable[[], object],
    *,
    runs: int,
    budget_s: float,
    gc_off: bool = True,
) -> Sample:
    """Time up to `runs` whole runs of a slow operation (a policy load), one sample per run.

    Stops early when another run would likely overrun `budget_s` (judged by the slowest run so
    far), but always takes at least one. `gc_off=False` measures with the collector running, as
    an application's own call would.
    """
    clock = time.perf_counter_ns
    times: list[int] = []
    spent = 0
    for _ in range(runs):
        context = gc_paused() if gc_off else _collected_first()
        with context:
            start = clock()
            operation()
            elapsed = clock() - start
        times.append(elapsed)
        spent += elapsed
        if spent + max(times) > budget_s * 1e9:
            break
    return Sample(tuple(times))


@contextlib.contextmanager
def _collected_first() -> Iterator[None]:
    """Start from a collected heap, with the collector left on."""
    gc.collect()
    yield


def time_calls(
    call: Callable[[], object],
    *,
    max_calls: int,
    budget_s: float,
    warmup: int,
    overhead_ns: float = 0.0,
) -> Sample:
    """Time each call of a fast operation on its own, so that the p90 is a real per-call tail.

    Runs `warmup` untimed calls first (caches, specialised bytecode, lazily built state), then
    up to `max_calls` timed ones within `budget_s`, with the collector off. `overhead_ns` (see
    `timer_overhead_ns`) is subtracted from every sample, floored at zero.
    """
    clock = time.perf_counter_ns
    for _ in range(warmup):
        call()
    times: list[int] = []
    deadline = clock() + int(budget_s * 1e9)
    overhead = int(overhead_ns)
    with gc_paused():
        for i in range(max_calls):
            start = clock()
            call()
            end = clock()
            times.append(max(end - start - overhead, 0))
            if i & 63 == 63 and end > deadline:
                break
    return Sample(tuple(times))


def profile(
    operation: Callable[[], object], *, repeat: int = 1, top: int = 12, focus: str = "policyauth"
) -> str:
    """A cProfile summary of `repeat` calls: the functions with the most own time, then the
    `focus` package's functions by cumulative time.

    Own time (`tottime`) names the hot leaves, often built-ins or a library's internals; the
    cumulative listing of the project's own functions names the caller to change. Paths are
    shortened to the package or project file so the listing fits a report.
    """
    profiler = cProfile.Profile()
    with gc_paused():
        profiler.enable()
        for _ in range(repeat):
            operation()
        profiler.disable()
    sections = []
    for title, order, restriction in (
        ("own time (tottime)", "tottime", ()),
        (f"{focus} functions by cumulative time", "cumulative", (focus,)),
    ):
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).sort_stats(order)
        stats.print_stats(*restriction, top)
        sections.append(f"-- {title}\n" + _trim_profile(out.getvalue()))
    return "\n\n".join(sections)


def _trim_profile(text: str) -> str:
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    prefixes = {sysconfig.get_paths()[key] + "/" for key in ("purelib", "platlib", "stdlib")}
    prefixes.add(f"{BENCHMARKS_DIR.parent}/")
    kept = []
    for line in lines[start:]:
        if not line.strip():
            continue
        for prefix in sorted(prefixes, key=len, reverse=True):
            line = line.replace(prefix, "")
        kept.append(line.rstrip())
    return "\n".join(kept)


def format_ns(ns: float) -> str:
    """A duration with a unit chosen so that it has three or four significant digits."""
    if ns < 1_000:
        return f"{ns:.0f} ns"
    if ns < 1_000_000:
        return f"{ns / 1_000:.2f} µs"
    if ns < 1_000_000_000:
        return f"{ns / 1_000_000:.2f} ms"
    return f"{ns / 1_000_000_000:.2f} s"


def format_ratio(ratio: float) -> str:
    return f"{ratio:.2f}x" if ratio < 100 else f"{ratio:.0f}x"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table, padded so that it also reads well in a terminal."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def machine_lines() -> list[str]:
    """What the figures depend on: CPUs, CPU model, Python, library versions, date."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    versions = ", ".join(
        f"{name} {_version(name)}" for name in ("policyauth", "lark", "google-re2", "starlette")
    )
    return [
        f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- nproc: {usable if usable is not None else os.cpu_count()}"
        f" (os.cpu_count: {os.cpu_count()})",
        f"- cpu: {_cpu_model()}",
        f"- python: {sys.version.split()[0]} ({platform.python_implementation()}, "
        f"{platform.machine()}, {platform.system()} {platform.release()})",
        f"- libraries: {versions}",
        f"- load average (1, 5, 15 min) at the end of the run: {_load_average()}"
        " (other processes share these CPUs; a load near or above nproc makes the figures "
        "pessimistic and noisier)",
    ]


def _load_average() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def write_report(path: Path, title: str, body: Sequence[str], *, command: str) -> None:
    """Write a markdown report: the title, how it was made, the machine, then the body."""
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [
        f"# {title}",
        "",
        f"Generated by `{command}`; regenerate rather than edit. "
        "Absolute times belong to this machine only; compare ratios.",
        "",
        "## Machine",
        "",
        *machine_lines(),
        "",
        *body,
    ]
    path.write_text("\n".join(parts).rstrip() + "\n", encoding="utf-8")


def report_path(argument: str | None, name: str, *, quick: bool) -> Path:
    """Where to write: `--report` if given; else reports/NAME.md, or reports/NAME.quick.md for
    a quick run, so a smoke test never overwrites the figures of a real run."""
    if argument:
        return Path(argument)
    return REPORTS_DIR / (f"{name}.quick.md" if quick else f"{name}.md")
