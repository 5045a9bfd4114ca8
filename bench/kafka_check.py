"""Counting what reached Kafka: the records on every topic of a prefix, from the end offsets."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


async def _count(bootstrap: str, prefix: str) -> dict[str, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        topics = sorted(t for t in await consumer.topics() if t.startswith(prefix + "."))
        partitions = [
            TopicPartition(topic, p) for topic in topics for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        ends = await consumer.end_offsets(partitions) if partitions else {}
        starts = await consumer.beginning_offsets(partitions) if partitions else {}
    finally:
        await consumer.stop()
    counts = dict.fromkeys(topics, 0)
    for tp, end in ends.items():
        counts[tp.topic] += end - starts[tp]
    return counts


def count_records(bootstrap: str, prefix: str, timeout: float = 30.0) -> dict[str, int]:
    """Records per topic named ``<prefix>.*`` (a fresh prefix per run, so these are the run's records)."""
    return asyncio.run(asyncio.wait_for(_count(bootstrap, prefix), timeout))


async def _create(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


def create_topic(bootstrap: str, topic: str, partitions: int = 6, timeout: float = 30.0) -> None:
    asyncio.run(asyncio.wait_for(_create(bootstrap, topic, partitions), timeout))
