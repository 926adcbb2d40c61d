"""Prometheus metrics, in a registry of policyauth's own (the one module that imports
prometheus_client, an optional dependency: `pip install policyauth[metrics]`).

The request path never touches prometheus_client: a decision or a cache lookup appends one
event to a deque (atomic, no lock: a lock and a few dict updates cost a remembered decision
a fifth of its time), and a flusher thread counts the events into the prometheus series every
second (and before every exposition, so this process's own figures are always current).
prometheus_client's own calls (label lookup, a lock per value, a bucket loop) cost a request
more than the rest of a cached decision. Events stay bounded: past PENDING of them, the request
that finds the deque full counts them itself. With several workers, another worker's last
second may not be in a scrape yet.

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
import collections
import itertools
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable
from operator import itemgetter
from typing import Any

try:
    import prometheus_client
    from prometheus_client import multiprocess
except ImportError:  # the `metrics` extra is not installed: record nothing
    prometheus_client = None  # type: ignore[assignment]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
FLUSH_SECONDS = 1.0
PENDING = 100_000  # events kept between flushes at most (a few MB)
# A decision: its labels (status, reason as a plain str, the identity cache lookup it counts
# or None), made once per remembered decision, and its seconds.
Labels = tuple[int, str, str | None]
Event = tuple[Labels, float]
_LABELS = itemgetter(0)
_SECONDS = itemgetter(1)
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
        self._lock = threading.Lock()  # one flush at a time
        self._flusher: threading.Thread | None = None
        # Events not yet in the prometheus series: (status, reason, seconds, cache result or
        # None) for a decision, the cache result alone for a lookup. `deque.append` and
        # `popleft` are atomic, so request threads never wait for the flusher.
        self._events: collections.deque[Event] = collections.deque()
        self._cache_events: collections.deque[str] = collections.deque()  # lookups alone
        # A forked worker (gunicorn --preload) has no flusher thread, and its parent's pending
        # events are the parent's to count.
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self._events.clear()
        self._cache_events.clear()
        self._lock = threading.Lock()
        if self._flusher is not None:
            self._flusher = None
            self._start_flusher()

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def decision(self, status: int, reason: str, seconds: float) -> None:
        """On the request path: one append."""
        if self.enabled:
            events = self._events
            events.append((labels(status, reason, None), seconds))
            if self._flusher is None or len(events) > PENDING:
                self.overflow()

    def queue(self) -> collections.deque[Event] | None:
        """The events queue itself, for the one caller on every request (remembered decisions,
        policyauth/recall.py), which appends `(labels(...), seconds)` to it without a call of
        ours, and calls `overflow` when it holds more than PENDING; None without
        prometheus_client. Starts the flusher."""
        if not self.enabled:
            return None
        if self._flusher is None:
            self._start_flusher()
        return self._events

    def cache(self, result: str) -> None:
        if self.enabled:
            events = self._cache_events
            events.append(result)
            if self._flusher is None or len(events) > PENDING:
                self.overflow()

    def overflow(self) -> None:
        """The flusher is not running yet, or cannot keep up: start it, or count here."""
        if self._flusher is None:
            self._start_flusher()
        elif self._lock.acquire(blocking=False):  # another thread is counting them already
            try:
                self._count()
            finally:
                self._lock.release()

    def flush(self) -> None:
        """Move the pending events into the prometheus series."""
        if self.enabled:
            with self._lock:
                self._count()

    def _count(self) -> None:
        """Count the events queued so far (with the lock held); those appended meanwhile
        wait for the next flush. Counted in C (Counter, sorted, bisect), not event by event
        in Python: this runs on the request path's process, a second of traffic at a time."""
        decisions = _drain(self._events)
        lookups = collections.Counter(_drain(self._cache_events))
        for (status, reason, cache), count in collections.Counter(map(_LABELS, decisions)).items():
            self._child(self._decisions, str(status), reason).inc(count)
            if cache is not None:
                lookups[cache] += count
        if decisions:
            histogram = self._decision_seconds
            seconds = sorted(map(_SECONDS, decisions))
            below = 0
            for index, bound in enumerate(self._bounds):  # `le` buckets: seconds <= bound
                upto = bisect.bisect_right(seconds, bound)
                if upto > below:  # prometheus_client keeps a value per bucket, as `observe`
                    histogram._buckets[index].inc(upto - below)
                below = upto
            histogram._sum.inc(math.fsum(seconds))
        for result, count in lookups.items():
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


def _drain(queue: collections.deque[Any]) -> list[Any]:
    """The items in `queue` now, taken out one by one (`popleft` is atomic: an item appended
    meanwhile by another thread stays for the next drain, none is lost). Called from C
    (`starmap` over empty argument tuples), not a Python loop: every remembered decision is
    one item, so this is part of each one's cost."""
    return list(itertools.starmap(queue.popleft, itertools.repeat((), len(queue))))


def labels(status: int, reason: str, cache: str | None) -> Labels:
    """A decision's labels as its event carries them. The reason goes in as a plain str (an
    enum member is a container to the collector): a tuple of plain values leaves the
    collector's lists at its first pass, so the events waiting for a flush cost collections
    nothing."""
    return status, reason if type(reason) is str else reason._value_, cache  # type: ignore[attr-defined]
