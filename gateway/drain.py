"""The spool's drain: publish spooled bodies to Kafka in order once it takes records again.

One background task per gateway. It re-runs ``normalize(body, received_at)`` on each spooled
body, so what reaches Kafka is what the direct path would have sent, and moves the spool's cursor
only after Kafka acknowledged a batch: a crash in between replays that batch (duplicates, which
consumers drop by event id), never loses it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter as Tally
from typing import Final

from gateway.content import seal_normalized
from gateway.kafka_health import check_kafka
from gateway.publisher import Publisher
from gateway.settings import GatewaySettings
from gateway.spool import Spool, SpoolLocked, orphan_dirs
from gateway.state import GatewayState
from igw.errors import KeyStoreUnavailable, PublishError
from igw.normalize import normalize
from igw.records import OutRecord, build_records

__all__ = ["adopt_orphans", "drain_forever"]

log = logging.getLogger(__name__)

BATCH_RECORDS: Final = 500
BATCH_BYTES: Final = 4 * 1024 * 1024
_BACKOFF_MIN: Final = 0.2
_BACKOFF_MAX: Final = 2.0
# How often an idle drain looks for spool directories of processes that are gone.
ADOPT_INTERVAL: Final = 30.0


async def drain_forever(spool: Spool, publisher: Publisher, settings: GatewaySettings, state: GatewayState) -> None:
    """Runs until cancelled; sleeps while the spool is empty."""
    while True:
        await adopt_orphans(spool, publisher, settings, state)
        try:
            await asyncio.wait_for(spool.wait_for_records(), ADOPT_INTERVAL)
        except TimeoutError:
            continue
        # Direct publishes that started before spooling began finish (or fail) within spool_after.
        await asyncio.sleep(settings.spool_after)
        backoff = _BACKOFF_MIN
        check = True
        while spool.records:
            if await _drain_once(spool, publisher, settings, state, check=check):
                backoff = _BACKOFF_MIN
                check = False
                continue
            check = True
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)
        _maybe_caught_up(spool, state)


async def adopt_orphans(own: Spool, publisher: Publisher, settings: GatewaySettings, state: GatewayState) -> None:
    """Drain spool directories left by processes that are gone (fewer workers now, a crash mid-restart)."""
    for directory in await asyncio.to_thread(orphan_dirs, own.directory.parent, own.directory):
        orphan = Spool(
            directory,
            metrics=state.metrics,
            max_bytes=own.max_bytes,
            max_age_seconds=own.max_age_ms / 1000,
            report_metrics=False,
        )
        try:
            report = await orphan.open()
        except SpoolLocked:
            continue  # a live process owns it
        try:
            if report.records:
                log.warning(
                    "adopting %d bodies left in %s by a gateway process that is gone", report.records, directory
                )
            check = True
            while orphan.records:
                if not await _drain_once(orphan, publisher, settings, state, check=check, owner=False):
                    return  # Kafka is not taking records: try again later
                check = False
        finally:
            await orphan.close()


async def _drain_once(
    spool: Spool,
    publisher: Publisher,
    settings: GatewaySettings,
    state: GatewayState,
    *,
    check: bool,
    owner: bool = True,
) -> bool:
    """One batch: True when it was published (or there was nothing durable to publish).

    ``check``: first make sure Kafka is connected and has the topics (after a failure, or at the
    start of a drain: a replaced broker starts with none).
    """
    if check:
        ok, checks = await check_kafka(publisher, settings, state.metrics)
        if not ok:
            log.debug("spool drain waiting for Kafka: %s", checks)
            return False
    # Records of failed publishes may still be in the client's hands; let them land or expire
    # first, so they cannot race this batch into a fresh partition. (Topics first: on a replaced
    # broker they wait for the topics to exist.)
    if not await publisher.settle(timeout=settings.publish_timeout):
        return False
    batch = await spool.read_batch(BATCH_RECORDS, BATCH_BYTES)
    if batch is None:
        if owner:
            _maybe_caught_up(spool, state)
        return True
    records: list[OutRecord] = []
    types: Tally[tuple[str, str]] = Tally()
    dead_reasons: Tally[str] = Tally()
    for item in batch.items:
        normalized = normalize(item.body, item.received_at)
        if state.sealer is not None:
            try:
                normalized = await seal_normalized(state.sealer, normalized)
            except KeyStoreUnavailable as exc:
                log.warning("spool drain waiting for the content key store (%s)", exc)
                return False
        records.extend(build_records(normalized, state.topics, item.body, item.received_at, item.signature))
        types.update((e.type, e.topic.value) for e in normalized.events)
        if normalized.dead_letter is not None:
            dead_reasons[normalized.dead_letter.reason] += 1
    try:
        await publisher.publish(records, settings.publish_timeout)
    except PublishError as exc:
        log.warning("spool drain: Kafka did not acknowledge %d spooled bodies (%s); retrying", len(batch.items), exc)
        return False
    await spool.ack(batch)
    log.debug("spool drain: %d bodies published, %d left", len(batch.items), spool.records)
    for (type_, topic), count in types.items():
        state.metrics.count_published(type_, topic, count)
    for reason, count in dead_reasons.items():
        state.metrics.dead_letters.labels(reason).inc(count)
    if owner:
        _maybe_caught_up(spool, state)
    return True


def _maybe_caught_up(spool: Spool, state: GatewayState) -> None:
    if spool.records == 0 and state.spooling:
        # Bodies whose fsync is still running are drained right after; new ones go direct again.
        state.spooling = False
        log.info("spool drained; publishing to Kafka directly again")
