"""The gateway's Prometheus metrics, owned by the gateway process. Labels come from small fixed sets only.

Nothing registers on import: :class:`GatewayMetrics` is built by the app factory with a registry
of its own, and the gateway's ``/metrics`` serves that registry and nothing else, so no other
process can show the gateway's series (or the gateway theirs).

The metrics every webhook request touches are cheap series of this module's own (``_LoopCounter``,
``_LoopHistogram``) in a single process: no lock, one bisect per observation. They are served
through a prometheus_client collector under the same names, types, labels and buckets, and give
/metrics byte for byte what prometheus_client's own Counter and Histogram give
(tests/test_metrics_loop.py). Under ``--workers`` (``PROMETHEUS_MULTIPROC_DIR`` set) they are
prometheus_client's own, whose values live in the files that every worker's /metrics reads.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Final, Generic, Protocol, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    multiprocess,
)
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from igw.config import Env
from igw.metrics import process_registry

if TYPE_CHECKING:
    from igw.normalize import Event


class Incrementer(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Observer(Protocol):
    def observe(self, amount: float) -> None: ...


class LabelledCounter(Protocol):
    def labels(self, *values: str) -> Incrementer: ...


class LabelledHistogram(Protocol):
    def labels(self, *values: str) -> Observer: ...


class _LoopCounter:
    """One counter series, for the event loop's thread only (the handlers', the access log's)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.value += amount


class _LoopHistogram:
    """One histogram series, for the event loop's thread only.

    An observation lands in the first bucket whose bound is >= it, as in prometheus_client; NaN,
    which no caller here observes, would land in the first bucket instead of none.
    """

    __slots__ = ("_bounds", "buckets", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.buckets = [0.0] * len(bounds)  # per bucket, not cumulative
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.buckets[bisect_left(self._bounds, amount)] += 1.0
        self.sum += amount


_Series = TypeVar("_Series", _LoopCounter, _LoopHistogram)


class _LoopFamily(Generic[_Series]):
    """The series of one metric name: a prometheus_client collector, and ``.labels()`` for callers."""

    def __init__(
        self,
        new_series: Callable[[], _Series],
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        bounds: tuple[float, ...],
        registry: CollectorRegistry,
    ) -> None:
        self._new_series: Callable[[], _Series] = new_series
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._le = [floatToGoString(b) for b in bounds]  # type: ignore[no-untyped-call]
        self._children: dict[tuple[str, ...], _Series] = {}
        registry.register(self)

    def labels(self, *values: object) -> _Series:
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            if len(key) != len(self._labelnames):
                raise ValueError("Incorrect label count")
            child = self._children[key] = self._new_series()
        return child

    def _family(self) -> Metric:
        if self._le:
            return HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        return CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for key, child in list(self._children.items()):
            if isinstance(child, _LoopHistogram):
                cumulative, acc = [], 0.0
                for le, count in zip(self._le, child.buckets, strict=True):
                    acc += count
                    cumulative.append((le, acc))
                family.add_metric(key, cumulative, child.sum)  # type: ignore[attr-defined]
            else:
                family.add_metric(key, child.value)  # type: ignore[attr-defined]
        return [family]


def _bounds(buckets: Sequence[float]) -> tuple[float, ...]:
    """Upper bounds as prometheus_client's Histogram keeps them: floats, +Inf last."""
    bounds = [float(b) for b in buckets]
    if bounds[-1] != math.inf:
        bounds.append(math.inf)
    return tuple(bounds)


def loop_counter(
    name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
) -> _LoopFamily[_LoopCounter]:
    return _LoopFamily(_LoopCounter, name, documentation, labelnames, (), registry)


def loop_histogram(
    name: str,
    documentation: str,
    labelnames: Sequence[str],
    buckets: Sequence[float],
    registry: CollectorRegistry,
) -> _LoopFamily[_LoopHistogram]:
    bounds = _bounds(buckets)
    return _LoopFamily(lambda: _LoopHistogram(bounds), name, documentation, labelnames, bounds, registry)


# Webhook answers must stay well under Meta's 5 s; resolution matters below 50 ms. Measured on the
# local stack (tests/test_dashboard_live.py): about 40 % of answers and publishes take under 1 ms.
LATENCY_BUCKETS: Final = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Meta's bodies: a few hundred bytes for one message, up to megabytes for a batch.
PAYLOAD_BUCKETS: Final = (256, 512, 1024, 2048, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216)
EVENTS_PER_REQUEST_BUCKETS: Final = (1, 2, 5, 10, 50, 100, 500, 1000)


def shared_metrics_dir() -> str | None:
    """Where ``--workers`` share metric values; prometheus_client reads this variable itself, at import."""
    return Env().optional_str("PROMETHEUS_MULTIPROC_DIR")


class GatewayMetrics:
    """Every metric of one gateway process, and the registry its ``/metrics`` serves.

    Alone, the metrics register in a registry of their own. Under ``--workers`` (``multiprocess_dir``
    given) they are prometheus_client's multiprocess metrics, registered nowhere: their values go
    to files in that directory, and ``registry`` reads every live worker's files.
    """

    __slots__ = (
        "_published_children",
        "_request_children",
        "broker_errors",
        "dead_letters",
        "events_per_request",
        "events_published",
        "http_duration",
        "http_requests",
        "payload_bytes",
        "privacy_callbacks",
        "producer_ready",
        "publish_duration",
        "registry",
        "signature_failures",
        "spool_appends",
        "spool_bytes",
        "spool_drained",
        "spool_failures",
        "spool_oldest_age",
        "spool_records",
        "spool_write_duration",
    )

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        # The *_created series double every counter's output and no dashboard reads them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        own: CollectorRegistry | None
        if multiprocess_dir:
            # The process collectors would describe one worker only: left out, as prometheus_client does.
            self.registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(self.registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
            own = None
        else:
            self.registry = own = process_registry()

        def counter(name: str, documentation: str, labelnames: Sequence[str]) -> LabelledCounter:
            if own is None:
                return Counter(name, documentation, labelnames, registry=None)
            return loop_counter(name, documentation, labelnames, own)

        def histogram(
            name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
        ) -> LabelledHistogram:
            if own is None:
                return Histogram(name, documentation, labelnames, buckets=buckets, registry=None)
            return loop_histogram(name, documentation, labelnames, buckets, own)

        def unlabelled_histogram(name: str, documentation: str, buckets: Sequence[float]) -> Observer:
            if own is None:
                return Histogram(name, documentation, buckets=buckets, registry=None)
            # The attribute is the one series itself: no .labels() lookup per observation.
            return loop_histogram(name, documentation, (), buckets, own).labels()

        self.http_requests = counter(
            "igw_http_requests_total",
            "HTTP requests answered, by route template and status.",
            ["route", "method", "status"],
        )
        self.http_duration = histogram(
            "igw_http_request_duration_seconds", "Time to answer an HTTP request.", ["route"], LATENCY_BUCKETS
        )
        self.signature_failures = Counter(
            "igw_webhook_signature_failures_total",
            "Webhook POSTs refused for their signature.",
            ["reason"],
            registry=own,
        )
        self.events_published = counter(
            "igw_events_published_total", "Events acknowledged by Kafka, by type and topic.", ["type", "topic"]
        )
        self.publish_duration = unlabelled_histogram(
            "igw_publish_duration_seconds",
            "Time from handing a request's records to the producer to the last acknowledgement.",
            LATENCY_BUCKETS,
        )
        self.dead_letters = Counter(
            "igw_dead_letters_total", "Signed bodies kept on the dead-letter topic.", ["reason"], registry=own
        )
        self.broker_errors = Counter(
            "igw_broker_errors_total", "Requests Kafka did not acknowledge.", ["kind"], registry=own
        )
        self.payload_bytes = unlabelled_histogram(
            "igw_webhook_payload_bytes", "Size of signed webhook bodies.", PAYLOAD_BUCKETS
        )
        self.events_per_request = unlabelled_histogram(
            "igw_webhook_events_per_request", "Events in one webhook body.", EVENTS_PER_REQUEST_BUCKETS
        )
        # With --workers, the lowest value across live workers: 0 when any worker's producer is down.
        self.producer_ready = Gauge(
            "igw_producer_ready", "1 while the Kafka producer is connected.", multiprocess_mode="livemin", registry=own
        )

        # The spool (gateway/spool.py): bodies kept on local disk while Kafka cannot take them.
        self.spool_bytes = Gauge(
            "igw_spool_bytes",
            "Bytes of spooled bodies not yet acknowledged by Kafka.",
            multiprocess_mode="livesum",
            registry=own,
        )
        self.spool_records = Gauge(
            "igw_spool_records",
            "Spooled bodies not yet acknowledged by Kafka.",
            multiprocess_mode="livesum",
            registry=own,
        )
        self.spool_appends = Counter(
            "igw_spool_appends_total", "Bodies written to the spool (each answered 200 after fsync).", registry=own
        )
        self.spool_drained = Counter(
            "igw_spool_drained_total", "Spooled bodies published to Kafka and dropped from the spool.", registry=own
        )
        self.spool_failures = Counter(
            "igw_spool_failures_total",
            "Spool trouble: full, too_old, io_error (answered 503); torn_write, corrupt (found on reading it).",
            ["reason"],
            registry=own,
        )
        self.spool_oldest_age = Gauge(
            "igw_spool_oldest_age_seconds",
            "Age of the oldest spooled body; 0 when the spool is empty.",
            multiprocess_mode="livemax",
            registry=own,
        )
        self.spool_write_duration = Histogram(
            "igw_spool_write_duration_seconds",
            "Time to write and fsync one group commit.",
            buckets=LATENCY_BUCKETS,
            registry=own,
        )

        # Meta's Data Deletion Request and Deauthorize callbacks (gateway/privacy.py).
        self.privacy_callbacks = Counter(
            "igw_privacy_callbacks_total",
            "Meta's data deletion and deauthorize callbacks, by outcome (accepted or why refused).",
            ["callback", "outcome"],
            registry=own,
        )

        # Children of labelled metrics, looked up once per label set: ``.labels()`` costs a lock and
        # a tuple per call, and the request path calls it several times per request.
        self._request_children: dict[tuple[str, str, int], tuple[Incrementer, Observer]] = {}
        self._published_children: dict[tuple[str, str], Incrementer] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.http_requests.labels(route, method, str(status)),
                self.http_duration.labels(route),
            )
        children[0].inc()
        children[1].observe(seconds)

    def count_published(self, type_: str, topic: str, count: int = 1) -> None:
        """``topic`` may be a ``Topic`` member: a StrEnum hashes and compares as its value."""
        child = self._published_children.get((type_, topic))
        if child is None:
            child = self._published_children[(type_, topic)] = self.events_published.labels(type_, str(topic))
        child.inc(count)

    def observe_published(self, events: Sequence[Event], seconds: float) -> None:
        """A request's events acknowledged by Kafka after ``seconds``: duration, events per request, counts."""
        self.publish_duration.observe(seconds)
        self.events_per_request.observe(len(events))
        if len(events) == 1:
            event = events[0]
            self.count_published(event.type, event.topic)
            return
        tally: dict[tuple[str, str], int] = {}
        for event in events:
            key = (event.type, event.topic)
            tally[key] = tally.get(key, 0) + 1
        for (type_, topic), count in tally.items():
            self.count_published(type_, topic, count)
