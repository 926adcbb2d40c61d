"""Prometheus metrics, in a registry of policyauth's own (the one module that imports
prometheus_client, an optional dependency: `pip install policyauth[metrics]`).

The request path never touches prometheus_client: a decision and a cache lookup are counted
in plain dicts under one lock, and a flusher thread moves the counts into the prometheus series
every second (and before every exposition, so this process's own figures are always current).
prometheus_client's own calls (label lookup, a lock per value, a bucket loop) cost a request
more than the rest of a cached decision. With several workers, another worker's last second
may not be in a scrape yet.

Without prometheus_client every recording call is a no-op and `exposition()` is None, so the
core works without it. With several worker processes (`policyauth serve --workers N`) the
supervisor calls `prepare_workers()` before starting them: prometheus_client's multiprocess
mode then keeps each worker's values in files, and `/metrics` in any worker adds them all up.

Series (exactly the names of section 4; more may come under the same prefix):
`policyauth_decisions_total{status,reason}`, `policyauth_decision_duration_seconds`,
`policyauth_provider_requests_total{provider,outcome}`,
`policyauth_provider_request_duration_seconds{provider}`,
`policyauth_identity_cache_total{result}` (hit, miss, negative),
`policyauth_policy_reloads_total{result}` (success, failure).
"""

from __future__ import annotations

import bisect
import os
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

try:
    import prometheus_client
    from prometheus_client import multiprocess
except ImportError:  # the `metrics` extra is not installed: record nothing
    prometheus_client = None  # type: ignore[assignment]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
FLUSH_SECONDS = 1.0
# A decision is tens of microseconds from the cache, a provider's round trip otherwise.
_DECISION_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1, 5)


class Metrics:
    """The series, and cheap recording calls for the request path: labelled children are
    looked up once per label set and kept, so a decision costs two increments."""

    def __init__(self) -> None:
        self.enabled = prometheus_client is not None
        if prometheus_client is None:
            return
        registry = prometheus_client.CollectorRegistry(auto_describe=True)
        self.registry = registry
        p = prometheus_client
        self._decisions = p.Counter(
            "policyauth_decisions_total",
            "Decisions made, by status and reason.",
            ["status", "reason"],
            registry=registry,
        )
        self._decision_seconds = p.Histogram(
            "policyauth_decision_duration_seconds",
            "Time to decide one request, identity lookup included.",
            buckets=(
                0.00005,
                0.0001,
                0.00025,
                0.0005,
                0.001,
                0.0025,
                0.005,
                0.01,
                0.05,
                0.25,
                1,
                5,
            ),
            registry=registry,
        )
        self._provider_requests = p.Counter(
            "policyauth_provider_requests_total",
            "Calls to identity providers, by outcome (identity, invalid, unavailable).",
            ["provider", "outcome"],
            registry=registry,
        )
        self._provider_seconds = p.Histogram(
            "policyauth_provider_request_duration_seconds",
            "Time of one provider validation (discovery, userinfo, audience check).",
            ["provider"],
            registry=registry,
        )
        self._cache = p.Counter(
            "policyauth_identity_cache_total",
            "Identity cache lookups: hit, miss, negative (a remembered invalid token).",
            ["result"],
            registry=registry,
        )
        self._reloads = p.Counter(
            "policyauth_policy_reloads_total",
            "Policy reloads, by result (success, failure).",
            ["result"],
            registry=registry,
        )
        self._children: dict[tuple[Any, ...], Any] = {}
        self._bounds = tuple(self._decision_seconds._upper_bounds)
        self._lock = threading.Lock()
        self._flusher: threading.Thread | None = None
        self._reset()

    def _reset(self) -> None:
        """Counts not yet in the prometheus series (call with the lock held, or in __init__)."""
        self._pending_decisions: dict[tuple[int, str], int] = {}
        self._pending_buckets = [0] * len(self._bounds)
        self._pending_sum = 0.0
        self._pending_cache: dict[str, int] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def decision(self, status: int, reason: str, seconds: float) -> None:
        """On the request path: a few dict and list updates under one lock."""
        if self.enabled:
            key = (status, reason)
            with self._lock:
                pending = self._pending_decisions
                pending[key] = pending.get(key, 0) + 1
                self._pending_buckets[bisect.bisect_left(self._bounds, seconds)] += 1
                self._pending_sum += seconds
            if self._flusher is None:
                self._start_flusher()

    def recalled(self, status: int, reason: str, seconds: float, cache: str | None) -> None:
        """A decision the engine remembered (policyauth/recall.py): what `decision` and, when
        it rests on a cached identity, `cache` count, under the lock once."""
        if self.enabled:
            key = (status, reason)
            with self._lock:
                pending = self._pending_decisions
                pending[key] = pending.get(key, 0) + 1
                self._pending_buckets[bisect.bisect_left(self._bounds, seconds)] += 1
                self._pending_sum += seconds
                if cache is not None:
                    self._pending_cache[cache] = self._pending_cache.get(cache, 0) + 1
            if self._flusher is None:
                self._start_flusher()

    def cache(self, result: str) -> None:
        if self.enabled:
            with self._lock:
                self._pending_cache[result] = self._pending_cache.get(result, 0) + 1
            if self._flusher is None:
                self._start_flusher()

    def flush(self) -> None:
        """Move the pending counts into the prometheus series."""
        if not self.enabled:
            return
        with self._lock:
            decisions, buckets = self._pending_decisions, self._pending_buckets
            total, cache = self._pending_sum, self._pending_cache
            self._reset()
        for (status, reason), count in decisions.items():
            self._child(self._decisions, str(status), reason).inc(count)
        histogram = self._decision_seconds
        for index, count in enumerate(buckets):
            if count:  # prometheus_client keeps a value per bucket, as `observe` fills them
                histogram._buckets[index].inc(count)
        if any(buckets):
            histogram._sum.inc(total)
        for result, count in cache.items():
            self._child(self._cache, result).inc(count)

    def _start_flusher(self) -> None:
        with self._lock:
            if self._flusher is not None:
                return
            self._flusher = threading.Thread(
                target=self._flush_forever, name="policyauth-metrics", daemon=True
            )
        self._flusher.start()

    def _flush_forever(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            self.flush()

    def provider_request(self, provider: str, outcome: str, seconds: float) -> None:
        if self.enabled:
            self._child(self._provider_requests, provider, outcome).inc()
            self._child(self._provider_seconds, provider).observe(seconds)

    def reload(self, result: str) -> None:
        if self.enabled:
            self._child(self._reloads, result).inc()

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of policyauth's series, and its content type. In
        multiprocess mode, the sum over every worker's files."""
        assert prometheus_client is not None
        self.flush()
        registry = self.registry
        directory = os.environ.get(MULTIPROC_ENV)
        if directory:
            registry = prometheus_client.CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return prometheus_client.generate_latest(registry), prometheus_client.CONTENT_TYPE_LATEST


METRICS = Metrics()


def exposition() -> Callable[[], tuple[bytes, str]] | None:
    """What renders `/metrics` (for `policyauth serve`, or an embedded app's own endpoint);
    None when prometheus_client is not installed."""
    return METRICS.render if METRICS.enabled else None


def prepare_workers() -> None:
    """Before starting worker processes: multiprocess mode in a fresh folder (unless the
    operator named one), so that `/metrics` adds up every worker. Workers are spawned, so
    each imports prometheus_client with the variable already set."""
    if prometheus_client is None:
        return
    if not os.environ.get(MULTIPROC_ENV):
        os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="policyauth-metrics-")
