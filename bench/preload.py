"""Topics and records in place before a consumer starts, so what is measured is the consumer alone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer

from bench.envelopes import Record
from igw.config import KafkaSettings
from igw.topics import ensure_topics

__all__ = ["preload"]

# Producer batches as large as Tansu takes comfortably: loading is not what is measured.
_BATCH_BYTES = 1 << 20
_IN_FLIGHT = 20_000


async def _preload(kafka: KafkaSettings, short_names: Iterable[str], records: list[Record]) -> float:
    await ensure_topics(kafka, [kafka.topic(name) for name in short_names])
    producer = AIOKafkaProducer(
        **kafka.client_kwargs(),
        enable_idempotence=False,  # Tansu lacks aiokafka's idempotent producer
        acks="all",
        linger_ms=20,
        max_batch_size=_BATCH_BYTES,
        max_request_size=4 * _BATCH_BYTES,
    )
    await producer.start()
    started = time.monotonic()
    try:
        for start in range(0, len(records), _IN_FLIGHT):
            chunk = records[start : start + _IN_FLIGHT]
            futures = [await producer.send(kafka.topic(r.topic), r.value, key=r.key, headers=r.headers) for r in chunk]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.monotonic() - started


def preload(
    bootstrap: str, prefix: str, short_names: Iterable[str], records: list[Record], *, partitions: int = 6
) -> float:
    """Create ``<prefix>.<name>`` topics and publish ``records`` to them (acks=all); returns the seconds taken."""
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix, partitions=partitions)
    return asyncio.run(asyncio.wait_for(_preload(kafka, short_names, records), 600))
