"""Metrics (production.md section 4): exactly the section's series names in policyauth's own
registry, recorded by the engine for every integration, and added up over every worker of
`policyauth serve --workers 2` (prometheus_client's multiprocess mode)."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import prometheus_client
from prometheus_client import multiprocess
from serve_servers import get, serving, write_policy

import policyauth
from policyauth.decision import Reason
from policyauth.observe import METRICS, exposition
from policyauth.observe.metrics import labels

SERIES = {
    "policyauth_decisions_total",
    "policyauth_decision_duration_seconds",
    "policyauth_provider_requests_total",
    "policyauth_provider_request_duration_seconds",
    "policyauth_identity_cache_total",
    "policyauth_policy_reloads_total",
}


def value(text: str, series: str) -> float:
    """The value of one sample line, 0 when absent."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split(" ")[1])
    return 0.0


def names(text: str) -> set[str]:
    """The metric families, less prometheus_client's `_created` companions (the time a series
    was created, which the client adds to every counter and histogram on its own)."""
    found = set(re.findall(r"^# TYPE (\S+) ", text, flags=re.MULTILINE))
    return {
        n for n in found if not (n.endswith("_created") and found & {n[:-8], n[:-8] + "_total"})
    }


def test_the_registry_has_exactly_the_series_and_nothing_of_the_process() -> None:
    render = exposition()
    assert render is not None
    body, content_type = render()
    assert names(body.decode()) == SERIES
    assert content_type == prometheus_client.CONTENT_TYPE_LATEST
    assert METRICS.registry is not prometheus_client.REGISTRY


def test_an_embedded_engine_records_decisions_providers_and_the_cache() -> None:
    text = (
        "provider corp {  # policyauth: ignore[PA202]\n"
        '  userinfo = "https://sso.example.com/userinfo"\n'
        "  username = $.login\n}\n\n"
        "route GET /a {\n  auth corp\n  allow\n}\n"
    )
    policy = policyauth.loads(text)

    def provider(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"login": "alice"})

    before = METRICS.render()[0].decode()
    with policyauth.Engine(policy, httpx.MockTransport(provider)) as engine:
        for _ in range(3):
            assert engine.authorize_sync("GET", "/a", [("Authorization", "Bearer m-1")]).allowed
        assert engine.authorize_sync("GET", "/nowhere").status == 403
    after = METRICS.render()[0].decode()

    def grew(series: str) -> float:
        return value(after, series) - value(before, series)

    assert grew('policyauth_decisions_total{reason="allowed",status="200"}') == 3
    assert grew('policyauth_decisions_total{reason="no_route",status="403"}') == 1
    assert grew("policyauth_decision_duration_seconds_count") == 4
    assert grew('policyauth_provider_requests_total{outcome="identity",provider="corp"}') == 1
    assert grew('policyauth_provider_request_duration_seconds_count{provider="corp"}') == 1
    assert grew('policyauth_identity_cache_total{result="miss"}') == 1
    assert grew('policyauth_identity_cache_total{result="hit"}') == 2


def test_metrics_add_up_every_worker(tmp_path: Path) -> None:
    """Two workers share the port, and each request opens a new connection, so both answer
    some (checked in each worker's own file). Whichever worker answers /metrics, it counts
    the decisions of both."""
    policy = write_policy(tmp_path)
    folder = tmp_path / "metrics"
    folder.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(folder)}
    sent = 0
    with serving(policy.path, tmp_path / "serve.log", ["--workers", "2"], env=env) as server:
        # Concurrent batches until both workers have answered some: the kernel hands each
        # connection to whichever worker accepts first, so one may take a short run alone.
        with ThreadPoolExecutor(8) as pool:
            while len(answered(folder)) < 2 and sent < 4000:
                statuses = list(pool.map(lambda _: ask(server.port), range(40)))
                assert statuses == [200] * 40
                sent += 40
        # Each worker moves its counts into its file every second: within a few seconds,
        # any worker's /metrics holds the sum, and keeps holding it.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and totals(server.port) != (sent, sent):
            time.sleep(0.2)
        for _ in range(4):
            assert totals(server.port) == (sent, sent)
        per_worker = answered(folder)
    assert len(per_worker) == 2, per_worker
    assert sum(per_worker) == sent


def totals(port: int) -> tuple[float, float]:
    """Allowed decisions and timed decisions, as one /metrics answer adds them up."""
    text = get(port, "/metrics")[2].decode()
    allowed = value(text, 'policyauth_decisions_total{reason="allowed",status="200"}')
    return allowed, value(text, "policyauth_decision_duration_seconds_count")


def ask(port: int) -> int:
    headers = [("X-Original-Method", "GET"), ("X-Original-URI", "/public/a")]
    return get(port, "/auth", headers)[0]


def answered(folder: Path) -> list[float]:
    """Allowed decisions per worker that made any, from each worker's own file."""
    counts = [decisions_in(file) for file in sorted(folder.glob("counter_*.db"))]
    return [count for count in counts if count > 0]


def decisions_in(file: Path) -> float:
    """The allowed decisions one worker's multiprocess file holds (none yet while the worker
    is still creating it: an empty file cannot be read)."""
    if file.stat().st_size == 0:
        return 0.0
    for family in multiprocess.MultiProcessCollector.merge([str(file)], accumulate=True):
        for sample in family.samples:
            if (
                sample.name == "policyauth_decisions_total"
                and sample.labels.get("reason") == "allowed"
            ):
                return float(sample.value)
    return 0.0


def test_queued_events_count_as_prometheus_would_observe_them() -> None:
    """The flusher counts a second of events at once (Counter, sorted, bisect): each bucket,
    the sum and the count must be what `Histogram.observe` makes of the same durations, bounds
    included, and appends made by other threads during a flush are counted once, none lost."""
    registry = prometheus_client.CollectorRegistry()
    reference = prometheus_client.Histogram(
        "reference_seconds", "same buckets", buckets=METRICS._bounds[:-1], registry=registry
    )
    durations = [0.00005, 0.0001, 0.00004, 0.0002, 0.00025, 0.003, 0.7, 5.0, 9.0, 0.0]
    durations += [i / 100_000 for i in range(1, 400)]
    METRICS.flush()
    before = METRICS.render()[0].decode()
    events = METRICS.queue()
    assert events is not None

    def append(part: list[float]) -> None:
        for seconds in part:
            events.append((labels(200, Reason.ALLOWED, "hit"), seconds))
            if seconds == 0.0:  # flushes race with the appends
                METRICS.flush()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(append, [durations[i::4] for i in range(4)]))
    METRICS.flush()
    after = METRICS.render()[0].decode()
    for seconds in durations:
        reference.observe(seconds)
    expected = prometheus_client.generate_latest(registry).decode()

    def grew(series: str) -> float:
        return value(after, series) - value(before, series)

    for bound in [*METRICS._bounds[:-1], float("inf")]:
        label = "+Inf" if bound == float("inf") else repr(float(bound))
        assert grew(f'policyauth_decision_duration_seconds_bucket{{le="{label}"}}') == value(
            expected, f'reference_seconds_bucket{{le="{label}"}}'
        ), label
    assert grew("policyauth_decision_duration_seconds_count") == len(durations)
    assert abs(grew("policyauth_decision_duration_seconds_sum") - sum(durations)) < 1e-9
    assert grew('policyauth_decisions_total{reason="allowed",status="200"}') == len(durations)
    assert grew('policyauth_identity_cache_total{result="hit"}') == len(durations)
