"""The metrics every consumer process exports: how far its group is behind, and what it fetched.

Nothing registers on import: each process builds one :class:`ConsumerMetrics` in the registry its
``/metrics`` serves, beside its own metrics (the agent's, analytics').
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics

from consumers.common.children import Children

__all__ = ["ConsumerMetrics"]


class ConsumerMetrics:
    """Lag and records fetched of one consumer group, in ``registry``."""

    __slots__ = ("_lag", "_records", "group", "lag", "records")

    def __init__(self, registry: CollectorRegistry, group: str) -> None:
        # The *_created series double every counter's output and no dashboard reads them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.group = group
        self.lag = Gauge(
            "igw_consumer_lag_messages",
            "Records between the consumer group's position and the end of the topic (assigned partitions).",
            ["group", "topic"],
            registry=registry,
        )
        self.records = Counter(
            "igw_consumer_records_total",
            "Records fetched by the consumer group.",
            ["group", "topic"],
            registry=registry,
        )
        self._lag = Children(self.lag)
        self._records = Children(self.records)

    def count_records(self, topic: str, count: int) -> None:
        """Add ``count`` fetched records of ``topic`` to the group's counter."""
        self._records(self.group, topic).inc(count)

    def set_lag(self, topic: str, records: int) -> None:
        self._lag(self.group, topic).set(records)
