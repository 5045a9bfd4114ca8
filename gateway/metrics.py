"""The gateway's Prometheus metrics. Labels come from small fixed sets only (docs/metrics)."""

from __future__ import annotations

import os
from typing import Any, Final

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    multiprocess,
)

# The *_created series double every counter's output and no dashboard reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Webhook answers must stay well under Meta's 5 s; resolution matters below 50 ms.
_LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

HTTP_REQUESTS = Counter(
    "igw_http_requests_total", "HTTP requests answered, by route template and status.", ["route", "method", "status"]
)
HTTP_DURATION = Histogram(
    "igw_http_request_duration_seconds", "Time to answer an HTTP request.", ["route"], buckets=_LATENCY_BUCKETS
)
SIGNATURE_FAILURES = Counter(
    "igw_webhook_signature_failures_total", "Webhook POSTs refused for their signature.", ["reason"]
)
EVENTS_PUBLISHED = Counter(
    "igw_events_published_total", "Events acknowledged by Kafka, by type and topic.", ["type", "topic"]
)
PUBLISH_DURATION = Histogram(
    "igw_publish_duration_seconds",
    "Time from handing a request's records to the producer to the last acknowledgement.",
    buckets=_LATENCY_BUCKETS,
)
DEAD_LETTERS = Counter("igw_dead_letters_total", "Signed bodies kept on the dead-letter topic.", ["reason"])
BROKER_ERRORS = Counter("igw_broker_errors_total", "Requests Kafka did not acknowledge.", ["kind"])
PAYLOAD_BYTES = Histogram(
    "igw_webhook_payload_bytes",
    "Size of signed webhook bodies.",
    buckets=(256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216),
)
EVENTS_PER_REQUEST = Histogram(
    "igw_webhook_events_per_request", "Events in one webhook body.", buckets=(1, 2, 5, 10, 50, 100, 500, 1000)
)
# With --workers, the lowest value across live workers: 0 when any worker's producer is down.
PRODUCER_READY = Gauge("igw_producer_ready", "1 while the Kafka producer is connected.", multiprocess_mode="livemin")


# The spool (gateway/spool.py): bodies kept on local disk while Kafka cannot take them.
SPOOL_BYTES = Gauge(
    "igw_spool_bytes", "Bytes of spooled bodies not yet acknowledged by Kafka.", multiprocess_mode="livesum"
)
SPOOL_RECORDS = Gauge("igw_spool_records", "Spooled bodies not yet acknowledged by Kafka.", multiprocess_mode="livesum")
SPOOL_APPENDS = Counter("igw_spool_appends_total", "Bodies written to the spool (each answered 200 after fsync).")
SPOOL_DRAINED = Counter("igw_spool_drained_total", "Spooled bodies published to Kafka and dropped from the spool.")
SPOOL_FAILURES = Counter(
    "igw_spool_failures_total",
    "Spool trouble: full, too_old, io_error (answered 503), torn_write, corrupt (found at start-up or on read).",
    ["reason"],
)
SPOOL_OLDEST_AGE = Gauge(
    "igw_spool_oldest_age_seconds",
    "Age of the oldest spooled body; 0 when the spool is empty.",
    multiprocess_mode="livemax",
)
SPOOL_FSYNC_DURATION = Histogram(
    "igw_spool_write_duration_seconds", "Time to write and fsync one group commit.", buckets=_LATENCY_BUCKETS
)


def registry() -> CollectorRegistry:
    """What /metrics serves: this process, or every worker's files under ``--workers``."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    aggregated = CollectorRegistry()
    multiprocess.MultiProcessCollector(aggregated)  # type: ignore[no-untyped-call]
    return aggregated


# Children of labelled metrics, looked up once per label set: ``.labels()`` costs a lock and a
# tuple per call, and the request path calls it several times per request.
_request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
_published_children: dict[tuple[str, str], Any] = {}


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    key = (route, method, status)
    children = _request_children.get(key)
    if children is None:
        children = _request_children[key] = (
            HTTP_REQUESTS.labels(route, method, str(status)),
            HTTP_DURATION.labels(route),
        )
    children[0].inc()
    children[1].observe(seconds)


def count_published(type_: str, topic: str, count: int = 1) -> None:
    child = _published_children.get((type_, topic))
    if child is None:
        child = _published_children[(type_, topic)] = EVENTS_PUBLISHED.labels(type_, topic)
    child.inc(count)
