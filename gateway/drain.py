"""The spool's drain: publish spooled bodies to Kafka in order once it takes records again.

One background task per gateway (kept running by ``gateway.background``). It re-runs
``normalize(body, received_at)`` on each spooled body, so what reaches Kafka is what the direct
path would have sent, and records its progress on disk only after Kafka acknowledged a batch.

A batch Kafka acknowledged is never published again by this process: when its progress cannot be
written (a disk fault), the drain retries only that write, reports the fault (new bodies then go
to Kafka directly, see ``gateway.delivery``) and reads nothing further meanwhile. A crash in
between replays that one batch: duplicates (which consumers drop by event id) stay within one
batch, nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter as Tally
from typing import Final

from gateway import bodies
from gateway.bodies import BigBodies
from gateway.content import seal_normalized
from gateway.delivery import Delivery
from gateway.kafka_health import check_kafka
from gateway.metrics import GatewayMetrics
from gateway.publisher import Publisher
from gateway.settings import GatewaySettings
from gateway.spool import Fault, Spool, SpoolBatch, SpoolLocked, orphan_dirs
from igw.envelope import Topic
from igw.errors import KeyStoreUnavailable, PublishError, SpoolUnavailable
from igw.records import OutRecord
from igw.sealing import Sealer

__all__ = ["BATCH_BYTES", "BATCH_RECORDS", "Drain"]

log = logging.getLogger(__name__)

BATCH_RECORDS: Final = 500
BATCH_BYTES: Final = 4 * 1024 * 1024
_BACKOFF_MIN: Final = 0.2
_BACKOFF_MAX: Final = 5.0
# How often the drain looks for spool directories of processes that are gone.
ADOPT_INTERVAL: Final = 30.0


class Drain:
    """Publishes the spool of ``delivery`` (whichever spool is open) while Kafka takes records."""

    def __init__(
        self,
        delivery: Delivery,
        publisher: Publisher,
        settings: GatewaySettings,
        topics: dict[Topic, str],
        big: BigBodies,
        metrics: GatewayMetrics,
        sealer: Sealer | None = None,
    ) -> None:
        self.delivery = delivery
        self.metrics = metrics
        self.sealer = sealer
        self.publisher = publisher
        self.settings = settings
        self.topics = topics
        self.big = big
        # Acknowledged by Kafka, its progress not yet on disk: only the ack is retried.
        self._published: tuple[Spool, SpoolBatch] | None = None
        self._check = True
        self._next_adoption = 0.0

    async def run(self) -> None:
        """Runs until cancelled; sleeps while there is nothing to drain or Kafka is away."""
        loop = asyncio.get_running_loop()
        backoff = _BACKOFF_MIN
        while True:
            spool = self.delivery.spool
            if self.delivery.kafka_ok and loop.time() >= self._next_adoption:
                self._next_adoption = loop.time() + ADOPT_INTERVAL
                await self.adopt_orphans()
            if spool is None or not spool.records or not self.delivery.kafka_ok:
                if spool is not None and spool.is_idle():
                    self.delivery.caught_up()
                await self._wait_for_work(spool)
                if self.delivery.spool is spool and spool is not None and spool.records and self._check:
                    # Direct publishes that started before spooling began finish (or fail) within spool_after.
                    await asyncio.sleep(self.settings.spool_after)
                continue
            if await self.step(spool):
                backoff = _BACKOFF_MIN
                continue
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    async def _wait_for_work(self, spool: Spool | None) -> None:
        waiters = [asyncio.ensure_future(self.delivery.wait_kafka())]
        if spool is not None:
            waiters.append(asyncio.ensure_future(spool.wait_for_records()))
        try:
            # Wakes up at least every second: the spool may be replaced, the adoption may be due.
            await asyncio.wait(waiters, timeout=1.0, return_when=asyncio.ALL_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def step(self, spool: Spool) -> bool:
        """One batch (or one retried ack): True when it made progress or there was nothing durable yet."""
        published = self._published
        if published is not None:
            if published[0] is not spool:
                self._published = None  # that spool was closed: its next open replays the batch
            else:
                return await self._ack(spool, published[1])
        if self._check:
            ok, checks = await check_kafka(self.publisher, self.settings, self.metrics)
            if not ok:
                log.debug("spool drain waiting for Kafka: %s", checks)
                self.delivery.kafka_failed()
                return False
            # Records of failed publishes may still be in the client's hands; let them land or expire
            # first, so they cannot race this batch into a fresh partition. (Topics first: on a replaced
            # broker they wait for the topics to exist.)
            if not await self.publisher.settle(timeout=self.settings.publish_timeout):
                return False
        try:
            batch = await spool.read_batch(BATCH_RECORDS, BATCH_BYTES)
        except SpoolUnavailable as exc:
            self._drain_failed(exc)
            return False
        if batch is None:
            if spool.is_idle():
                self.delivery.caught_up()
            return not spool.records  # records counted but none readable yet: back off
        try:
            await publish_batch(batch, self.publisher, self.settings, self.topics, self.big, self.metrics, self.sealer)
        except KeyStoreUnavailable as exc:
            log.warning("spool drain waiting for the content key store (%s)", exc)
            return False
        except PublishError as exc:
            log.warning(
                "spool drain: Kafka did not acknowledge %d spooled bodies (%s); retrying", len(batch.items), exc
            )
            self._check = True
            self.delivery.kafka_failed()
            return False
        self._check = False
        self.delivery.kafka_recovered()
        self._published = (spool, batch)
        return await self._ack(spool, batch)

    async def _ack(self, spool: Spool, batch: SpoolBatch) -> bool:
        try:
            await spool.ack(batch)
        except SpoolUnavailable as exc:
            self._drain_failed(exc)
            return False
        self._published = None
        self.delivery.set_drain_fault(None)
        log.debug("spool drain: %d bodies published, %d left", len(batch.items), spool.records)
        if spool.is_idle():
            self.delivery.caught_up()
        return True

    def _drain_failed(self, exc: SpoolUnavailable) -> None:
        fault = Fault(exc.reason)
        if self.delivery.drain_fault != fault:
            log.error("spool drain: %s (%s); retrying, new bodies go to Kafka directly meanwhile", exc, fault)
        self.metrics.spool_failures.labels(fault).inc()
        self.delivery.set_drain_fault(fault)

    async def adopt_orphans(self) -> None:
        """Drain spool directories left by processes that are gone (fewer workers now, a crash mid-restart)."""
        own = self.delivery.spool
        base = self.settings.spool_dir
        if base is None:
            return
        # With no spool of its own open, its directory is adopted like any other it can lock.
        own_dir = own.directory if own is not None else base / "-"
        for directory in await asyncio.to_thread(orphan_dirs, base, own_dir):
            orphan = Spool(
                directory,
                metrics=self.metrics,
                max_bytes=self.settings.spool_max_bytes,
                max_age_seconds=self.settings.spool_max_age_seconds,
                report_metrics=False,
            )
            try:
                report = await orphan.open()
            except (SpoolLocked, SpoolUnavailable):
                continue  # a live process owns it, or its disk fails: try again later
            try:
                if report.records:
                    log.warning(
                        "adopting %d bodies left in %s by a gateway process that is gone", report.records, directory
                    )
                while orphan.records:
                    batch = await orphan.read_batch(BATCH_RECORDS, BATCH_BYTES)
                    if batch is None:
                        break
                    await publish_batch(
                        batch, self.publisher, self.settings, self.topics, self.big, self.metrics, self.sealer
                    )
                    await orphan.ack(batch)
            except (PublishError, SpoolUnavailable) as exc:
                log.warning("adopting %s paused (%s); trying again later", directory, exc)
                return
            finally:
                await orphan.close()


async def publish_batch(
    batch: SpoolBatch,
    publisher: Publisher,
    settings: GatewaySettings,
    topics: dict[Topic, str],
    big: BigBodies,
    metrics: GatewayMetrics,
    sealer: Sealer | None = None,
) -> None:
    """Publish the records of every body of ``batch``; count them once Kafka acknowledged them all."""
    records: list[OutRecord] = []
    types: Tally[tuple[str, str]] = Tally()
    dead_reasons: Tally[str] = Tally()
    async with big.turn(batch.end - batch.start):
        for n, item in enumerate(batch.items):
            normalized = await big.normalize(item.body, item.received_at)
            if sealer is not None:
                normalized = await seal_normalized(sealer, normalized)
            records += await big.records(normalized, topics, item.body, item.received_at, item.signature)
            types.update((e.type, e.topic.value) for e in normalized.events)
            if normalized.dead_letter is not None:
                dead_reasons[normalized.dead_letter.reason] += 1
            if n % 50 == 49:
                await asyncio.sleep(0)  # a batch of many small bodies: let requests through now and then
        await bodies.publish(publisher, records, settings.publish_timeout)
    for (type_, topic), count in types.items():
        metrics.count_published(type_, topic, count)
    for reason, count in dead_reasons.items():
        metrics.dead_letters.labels(reason).inc(count)
