"""Assembling and running reconcile: Graph reader, delivered index, producer, passes, metrics.

:func:`run_reconcile` runs one pass (``once``) or a pass every ``IGW_RECONCILE_INTERVAL_SECONDS``
until ``stop`` is set. In the continuous mode a background task also follows the messages topic
(every ``TAIL_SECONDS``), so ``message_edit`` events that stand for new messages are hydrated
within seconds rather than at the next pass. Shutdown: the pass in hand is cancelled (what it
did not publish, the next pass finds again), then the producer is flushed and closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from consumers.common.metrics_server import create_metrics_app, serve_metrics
from consumers.common.partitioner import CachedPartitioner
from consumers.common.tasks import background
from consumers.reconcile.delivered import DeliveredIndex
from consumers.reconcile.graph import GraphReader
from consumers.reconcile.metrics import ReconcileMetrics
from consumers.reconcile.reconciler import PassReport, Reconciler
from consumers.reconcile.settings import ReconcileSettings
from igw.config import KafkaSettings
from igw.envelope import Topic
from igw.errors import BrokerUnavailable, KeyStoreUnavailable
from igw.keystore import open_keystore
from igw.normalize import Event
from igw.records import event_record
from igw.sealing import Sealer
from igw.topics import ensure_topics

__all__ = ["KafkaPublisher", "run_reconcile"]

log = logging.getLogger(__name__)

TAIL_SECONDS = 2.0


class KafkaPublisher:
    """Recovered events as the gateway's records (same topic, key, headers); Kafka errors as igw's own."""

    def __init__(self, kafka: KafkaSettings, sealer: Sealer | None = None) -> None:
        self._kafka = kafka
        # With IGW_CONTENT_KEYS, each person's content is sealed as the gateway seals it.
        self._sealer = sealer
        self._producer = AIOKafkaProducer(
            **kafka.client_kwargs(),
            client_id=f"{kafka.client_id}-reconcile",
            acks="all" if kafka.acks == "all" else 1,
            enable_idempotence=kafka.enable_idempotence,
            linger_ms=kafka.linger_ms,
            max_batch_size=kafka.max_batch_bytes,
            compression_type=None if kafka.compression == "none" else kafka.compression,
            # The gateway's partitioner: a recovered message lands in its conversation's partition.
            partitioner=CachedPartitioner(),
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, events: Sequence[Event]) -> None:
        if self._sealer is not None:
            try:
                await self._sealer.prepare(events)
            except Exception as exc:  # the store did not answer: the next pass tries again
                raise KeyStoreUnavailable(f"content key store: {type(exc).__name__}") from exc
            events = [self._sealer.seal(event) for event in events]
        try:
            futures = []
            for event in events:
                record = event_record(event, self._kafka.topic(event.topic))
                futures.append(
                    await self._producer.send(record.topic, record.value, key=record.key, headers=record.headers)
                )
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise BrokerUnavailable(
                f"Kafka did not take {len(events)} recovered event(s): {type(exc).__name__}"
            ) from None


@asynccontextmanager
async def _tail(reconciler: Reconciler, index: DeliveredIndex, settings: ReconcileSettings) -> AsyncIterator[None]:
    """Follow the messages topic; hydrate edits as they come."""

    async def loop() -> None:
        while True:
            try:
                since = int((time.time() - settings.lookback_seconds) * 1000)
                await index.catch_up(since)
                edits = index.take_edits()
                if edits:
                    await reconciler.hydrate(edits, time.monotonic() + settings.pass_timeout_seconds)
            except asyncio.CancelledError:
                raise
            except Exception:  # Kafka away for a moment: the next round tries again
                log.warning("following the messages topic failed; trying again", exc_info=True)
            await asyncio.sleep(TAIL_SECONDS)

    async with background(loop(), name="reconcile-tail"):
        yield


async def run_reconcile(
    settings: ReconcileSettings,
    stop: asyncio.Event,
    *,
    once: bool = False,
    reader: GraphReader | None = None,
    metrics: ReconcileMetrics | None = None,
    serve_http: bool = True,
    passes: asyncio.Queue[PassReport] | None = None,
) -> PassReport | None:
    """Run passes until ``stop`` (or one with ``once``, whose report is returned).

    ``passes`` receives each pass's report (tests and embedders watch it).
    """
    metrics = metrics if metrics is not None else ReconcileMetrics()
    kafka = settings.kafka
    if settings.create_topics:
        await ensure_topics(kafka, (Topic.MESSAGES, Topic.POSTBACKS, Topic.EVENTS, Topic.DEADLETTER))
    async with AsyncExitStack() as stack:
        if reader is None:
            reader = GraphReader(settings, metrics)
            await stack.enter_async_context(reader)
        index = DeliveredIndex(kafka, kafka.topic(Topic.MESSAGES))
        await index.start()
        stack.push_async_callback(index.stop)
        sealer: Sealer | None = None
        if settings.content_keys is not None:
            keys = open_keystore(settings.content_keys)
            stack.push_async_callback(keys.close)
            sealer = Sealer(keys)
            await sealer.refresh()
            watch = asyncio.create_task(sealer.watch(), name="reconcile-content-keys")
            stack.callback(watch.cancel)
        publisher = KafkaPublisher(kafka, sealer)
        await publisher.start()
        stack.push_async_callback(publisher.stop)
        reconciler = Reconciler(settings, reader, index, publisher, metrics)
        log.info("reconcile started: %s", settings.describe())
        if once:
            report = await reconciler.run_pass()
            log.info("pass: %s", report.summary())
            return report

        first_pass = asyncio.Event()

        async def ready() -> bool:
            return first_pass.is_set()

        if serve_http:
            app = create_metrics_app(metrics.registry, ready)
            await stack.enter_async_context(serve_metrics(app, settings.metrics_host, settings.metrics_port))
        await stack.enter_async_context(_tail(reconciler, index, settings))
        while not stop.is_set():
            task = asyncio.create_task(reconciler.run_pass())
            stopping = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if task not in done:
                # Stopping mid-pass: what the pass did not publish yet, the next one finds again.
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                break
            try:
                report = task.result()
            except Exception as exc:  # Kafka away, most likely: nothing lost, the next pass reads again
                log.warning(
                    "pass failed: %s: %s; next pass in %.0f s", type(exc).__name__, exc, settings.interval_seconds
                )
                log.debug("pass failure", exc_info=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), settings.interval_seconds)
                continue
            first_pass.set()
            if passes is not None:
                passes.put_nowait(report)
            if report.complete:
                log.info("pass: %s", report.summary())
            else:
                log.warning("pass incomplete: %s; %s", report.reason(), report.summary())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.interval_seconds)
    return None
