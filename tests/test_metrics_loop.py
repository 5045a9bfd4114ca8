"""The gateway's lock-free request metrics expose exactly what prometheus_client's own would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from gateway import metrics
from igw.normalize import Event, Topic

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SIZE_BUCKETS = (256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216)

label_values = st.sampled_from(["/webhooks/meta", "unmatched", "POST", "200", 'q"u\\o\nte', "ü"])
amounts = st.floats(min_value=0, max_value=1e9, allow_nan=False) | st.sampled_from([0, 1, 5.0, 256, 1e300])


def expositions(registry: CollectorRegistry) -> tuple[bytes, bytes]:
    return generate_latest(registry), generate_openmetrics(registry)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(label_values, label_values, amounts), max_size=30),
    st.lists(amounts | st.integers(0, 2**40), max_size=30),
)
def test_same_exposition_as_prometheus_client(labelled: list[tuple[str, str, float]], unlabelled: list[float]) -> None:
    """The same observations give the same text and OpenMetrics output, sample for sample."""
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    their_counter = Counter("t_requests_total", "Requests.", ["route", "status"], registry=theirs)
    their_histogram = Histogram("t_duration_seconds", "Time.", ["route"], buckets=BUCKETS, registry=theirs)
    their_sizes = Histogram("t_payload_bytes", "Size.", buckets=SIZE_BUCKETS, registry=theirs)
    our_counter = metrics.loop_counter("t_requests_total", "Requests.", ["route", "status"], registry=ours)
    our_histogram = metrics.loop_histogram("t_duration_seconds", "Time.", ["route"], BUCKETS, registry=ours)
    our_sizes = metrics.loop_histogram("t_payload_bytes", "Size.", (), SIZE_BUCKETS, registry=ours).labels()
    assert expositions(ours) == expositions(theirs)
    for route, status, amount in labelled:
        their_counter.labels(route, status).inc(amount)
        our_counter.labels(route, status).inc(amount)
        their_histogram.labels(route).observe(amount)
        our_histogram.labels(route).observe(amount)
    for amount in unlabelled:
        their_sizes.observe(amount)
        our_sizes.observe(amount)
    assert expositions(ours) == expositions(theirs)


def test_misuse_fails_as_in_prometheus_client() -> None:
    """A negative increment and a wrong number of label values raise ValueError."""
    counter = metrics.loop_counter("t_total", "T.", ["a"], registry=CollectorRegistry())
    with pytest.raises(ValueError, match="non-negative"):
        counter.labels("x").inc(-1)
    with pytest.raises(ValueError, match="label count"):
        counter.labels("x", "y")


def test_name_clash_is_refused() -> None:
    """Registering a second metric of the same name fails, as with prometheus_client's own."""
    registry = CollectorRegistry()
    Counter("t_total", "T.", registry=registry)
    with pytest.raises(ValueError, match="Duplicated"):
        metrics.loop_counter("t_total", "T.", [], registry=registry)


def test_observe_published_counts_by_type_and_topic() -> None:
    """One call records the publish duration, the events per request and each (type, topic) count."""
    gateway = metrics.GatewayMetrics()

    def value(name: str, labels: dict[str, str] | None = None) -> float:
        return gateway.registry.get_sample_value(name, labels or {}) or 0.0

    def event(type_: str, topic: Topic) -> Event:
        return Event("id", type_, topic, "key", 1, "igw/x/y", None, {})

    gateway.observe_published([event("reaction", Topic.EVENTS)] * 2 + [event("message", Topic.MESSAGES)], 0.01)
    gateway.observe_published([event("reaction", Topic.EVENTS)], 0.02)
    assert value("igw_events_published_total", {"type": "reaction", "topic": "events"}) == 3
    assert value("igw_events_published_total", {"type": "message", "topic": "messages"}) == 1
    assert value("igw_publish_duration_seconds_count") == 2
    assert value("igw_webhook_events_per_request_sum") == 4


def test_two_gateways_in_one_process_keep_their_own_series() -> None:
    """Each GatewayMetrics has its own registry: counting in one leaves the other at zero, and no clash."""
    first, second = metrics.GatewayMetrics(), metrics.GatewayMetrics()
    first.observe_request("/webhooks/meta", "POST", 200, 0.004)
    first.producer_ready.set(1)
    labels = {"route": "/webhooks/meta", "method": "POST", "status": "200"}
    assert first.registry.get_sample_value("igw_http_requests_total", labels) == 1
    assert second.registry.get_sample_value("igw_http_requests_total", labels) is None
    assert second.registry.get_sample_value("igw_producer_ready") == 0
    # The process's own CPU and memory ride along in single-process mode.
    assert first.registry.get_sample_value("process_resident_memory_bytes")


WORKER = """
import json, sys
from prometheus_client import Counter, Histogram
from gateway.metrics import GatewayMetrics, shared_metrics_dir
gateway = GatewayMetrics(shared_metrics_dir())
gateway.observe_request("/webhooks/meta", "POST", 200, 0.004)
gateway.payload_bytes.observe(600)
gateway.count_published("message", "messages")
gateway.producer_ready.set(1)
kinds = [isinstance(m, (Counter, Histogram)) for m in (
    gateway.http_requests, gateway.http_duration, gateway.events_published,
    gateway.publish_duration, gateway.payload_bytes, gateway.events_per_request)]
registry = gateway.registry
print(json.dumps({"kinds": kinds, "requests": registry.get_sample_value(
    "igw_http_requests_total", {"route": "/webhooks/meta", "method": "POST", "status": "200"}),
    "bytes": registry.get_sample_value("igw_webhook_payload_bytes_sum"),
    "published": registry.get_sample_value("igw_events_published_total", {"type": "message", "topic": "messages"}),
    "process": registry.get_sample_value("process_resident_memory_bytes")}))
"""


def test_workers_keep_prometheus_client_metrics(tmp_path: Path) -> None:
    """Under --workers (PROMETHEUS_MULTIPROC_DIR), the request metrics are prometheus_client's, in the shared files."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    runs = [
        json.loads(subprocess.run([sys.executable, "-c", WORKER], env=env, capture_output=True, check=True).stdout)
        for _ in range(2)
    ]
    assert all(runs[0]["kinds"])
    # The second process reads both processes' files.
    assert runs[1]["requests"] == 2
    assert runs[1]["bytes"] == 1200
    assert runs[1]["published"] == 2
    # One worker's CPU and memory would pass for all of them: left out.
    assert runs[1]["process"] is None
