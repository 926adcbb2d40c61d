"""How long `policyauth diff` takes on two generated policies that differ in one rule.

A review bot runs `diff` on every pull request that touches a policy, so it must answer in
seconds for a large policy. This benchmark writes two versions of a generated policy
(benchmarks/_policies.py) of 100, 1,000 and 10,000 routes, the second with one allow rule
widened, and reports the median time of the diff itself (both policies already loaded), of
the two loads, and the growth from one size to the next divided by the growth in routes
(1.00 is linear). Target: under 2 s for 1,000 routes, loads included.

Run `python benchmarks/diff.py` (about a minute) or `--quick` (100 routes only).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _policies

from policyauth.analysis import diff_policies, load_for_diff

OLD_RULE = 'allow if "writers" in groups\n}'
NEW_RULE = 'allow if "writers" in groups or "editors" in groups\n}'


def measure(routes: int, repeat: int) -> tuple[float, float, int]:
    """Median seconds of the diff and of loading both files; the classes reported."""
    text = _policies.render_policy(_policies.generate_routes(routes))
    assert OLD_RULE in text
    changed = text.replace(OLD_RULE, NEW_RULE, 1)
    folder = Path(tempfile.mkdtemp())
    (folder / "automation.tokens").write_text("", encoding="utf-8")
    old_path, new_path = folder / "old.policy", folder / "new.policy"
    old_path.write_text(text, encoding="utf-8")
    new_path.write_text(changed, encoding="utf-8")
    diffs, loads = [], []
    classes = 0
    for _ in range(repeat):
        start = time.perf_counter()
        old, new = load_for_diff(old_path), load_for_diff(new_path)
        loaded = time.perf_counter()
        report = diff_policies(old, new)
        done = time.perf_counter()
        loads.append(loaded - start)
        diffs.append(done - loaded)
        classes = len(report.changes)
    return statistics.median(diffs), statistics.median(loads), classes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 routes only")
    args = parser.parse_args()
    sizes = (100,) if args.quick else (100, 1_000, 10_000)
    # The machine may be shared: the load average says how far the figures can be trusted.
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores\n")
    print("| routes | diff (median) | both loads | total | classes | growth / route growth |")
    print("|---:|---:|---:|---:|---:|---:|")
    previous: tuple[int, float] | None = None
    for size in sizes:
        diff, load, classes = measure(size, 3 if size < 10_000 else 1)
        growth = "" if previous is None else f"{(diff / previous[1]) / (size / previous[0]):.2f}"
        print(
            f"| {size:,} | {diff * 1000:.0f} ms | {load * 1000:.0f} ms | "
            f"{(diff + load) * 1000:.0f} ms | {classes} | {growth} |"
        )
        previous = (size, diff)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
