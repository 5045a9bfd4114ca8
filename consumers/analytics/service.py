"""The analytics process: consume every igw topic, feed the aggregator, serve ``/metrics``.

Counting is synchronous and cheap, so each fetched batch is counted in one call and finished as
soon as it is counted (``poll_batches``); offsets are committed on the shared runner's timer.
Counters live in memory: after a restart they start from zero (Prometheus' ``rate``/``increase``
handle resets) and the dedup memory is empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry

from consumers.analytics.aggregate import Aggregator
from consumers.analytics.metrics import AnalyticsMetrics
from consumers.analytics.rollup import RollupBuffer, RollupStore
from consumers.analytics.settings import TOPICS, AnalyticsSettings
from consumers.common.lag import lag_sampler
from consumers.common.metrics import ConsumerMetrics
from consumers.common.metrics_server import create_metrics_app, serve_metrics
from consumers.common.runner import (
    CommitOnRevoke,
    OffsetTracker,
    commit_finished,
    drain,
    poll_batches,
    stop_consumer,
)
from consumers.common.tasks import background
from igw.keystore import open_keystore
from igw.metrics import process_registry
from igw.sealing import Opener
from igw.topics import ensure_topics

__all__ = ["run_analytics"]

log = logging.getLogger(__name__)


@asynccontextmanager
async def rollup_flusher(
    settings: AnalyticsSettings, aggregator: Aggregator, buffer: RollupBuffer
) -> AsyncIterator[None]:
    """Write the rollup deltas every ``rollup_interval`` seconds, and once more at the end."""
    assert settings.rollup_path is not None
    store = await asyncio.to_thread(RollupStore, settings.rollup_path)

    async def flush() -> None:
        rows = buffer.drain()
        uniques = [(_day_label(day), account, users) for day, account, users in aggregator.uniques.snapshot()]
        if rows or uniques:
            await asyncio.to_thread(store.write, rows, uniques)

    async def loop() -> None:
        while True:
            await asyncio.sleep(settings.rollup_interval)
            try:
                await flush()
            except Exception:  # a full disk must not stop counting; the deltas of this round are lost
                log.exception("writing rollups to %s failed", settings.rollup_path)

    try:
        async with background(loop(), name="analytics-rollup"):
            yield
    finally:
        await flush()
        await asyncio.to_thread(store.close)


def _day_label(day: int) -> str:
    return datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y-%m-%d")


async def run_analytics(
    settings: AnalyticsSettings,
    stop: asyncio.Event,
    *,
    registry: CollectorRegistry | None = None,
    started: asyncio.Event | None = None,
) -> int:
    """Consume until ``stop`` is set; returns the exit status.

    The process's metrics (``igw_biz_*`` and the consumer group's) go to ``registry``, a new one by
    default, which ``/metrics`` serves. ``started`` is set once the consumer has joined its group
    and received its partitions.
    """
    registry = registry if registry is not None else process_registry()
    c = settings.consumer
    consumer_metrics = ConsumerMetrics(registry, c.group_id)
    log.info("analytics starting: %s", settings.describe())
    if settings.create_topics:
        await ensure_topics(settings.kafka, TOPICS)
    buffer = RollupBuffer() if settings.rollup_path is not None else None
    keys = open_keystore(settings.content_keys) if settings.content_keys else None
    opener = Opener(keys) if keys is not None else None
    aggregator = Aggregator(settings, AnalyticsMetrics(registry), rollup=buffer, opener=opener)
    short_names = settings.topics()
    tracker = OffsetTracker()
    listener = CommitOnRevoke(
        tracker,
        drain_timeout=c.shutdown_timeout_seconds,
        on_assigned=None if started is None else (lambda _partitions: started.set()),
    )
    consumer = AIOKafkaConsumer(**c.consumer_kwargs())
    listener.consumer = consumer
    consumer.subscribe(list(short_names), listener=listener)

    def handle(tp: TopicPartition, records: list[Any]) -> None:
        topic = short_names[tp.topic]
        try:
            for record in records:
                try:
                    # Only dead letters carry headers the counting reads.
                    headers = (
                        {key: value for key, value in record.headers or () if isinstance(value, bytes)}
                        if topic == "deadletter"
                        else None
                    )
                    aggregator.count(topic, record.value or b"", headers)
                except Exception:  # one odd record must not stop the counting; the metric shows it
                    log.exception("could not count a record of %s at offset %d", record.topic, record.offset)
                    aggregator.metrics.invalid_records.labels(short_names.get(record.topic, "unknown")).inc()
        finally:
            # Before the event loop can serve a scrape: the metrics show whole batches.
            aggregator.flush()

    async def ready() -> bool:
        return bool(consumer.assignment())

    app = create_metrics_app(registry, ready)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(serve_metrics(app, c.metrics_host, c.metrics_port))
        # Registered first: a stop signal may cancel start-up inside start(), and stop() must follow.
        stack.push_async_callback(stop_consumer, consumer)
        await consumer.start()
        if buffer is not None:
            await stack.enter_async_context(rollup_flusher(settings, aggregator, buffer))
        await stack.enter_async_context(lag_sampler(consumer, consumer_metrics, c.topics, c.lag_interval_seconds))
        if opener is not None and keys is not None:
            stack.push_async_callback(keys.close)
            await stack.enter_async_context(background(opener.watch(), name="analytics-content-keys"))
        await poll_batches(
            consumer,
            tracker,
            handle,
            stop,
            metrics=consumer_metrics,
            max_records=c.max_records_per_poll,
            poll_timeout_ms=c.poll_timeout_ms,
            commit_interval=c.commit_interval_seconds,
            prepare=(lambda records: opener.prefetch(r.value for r in records)) if opener is not None else None,
        )
        await drain(tracker, c.shutdown_timeout_seconds)
        await commit_finished(consumer, tracker)
    log.info("analytics stopped")
    return 0
