"""One process of a fleet: `python fleet_worker.py POLICY START_AT THREADS TOKEN...`.

At wall time START_AT (so that every process starts together), THREADS threads each decide
`GET /x` with every TOKEN in turn; prints one JSON line: the statuses, in order, per thread.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import policyauth


def main() -> None:
    policy, start_at, threads, tokens = (
        sys.argv[1],
        float(sys.argv[2]),
        int(sys.argv[3]),
        sys.argv[4:],
    )
    engine = policyauth.Engine(policyauth.load(policy))
    results: list[list[int]] = [[] for _ in range(threads)]

    def run(index: int) -> None:
        time.sleep(max(0.0, start_at - time.time()))
        for token in tokens:
            decision = engine.authorize_sync("GET", "/x", [("authorization", f"Bearer {token}")])
            results[index].append(decision.status)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
