"""Requests share per-partition batches: same partitions as aiokafka, order kept, bounded when stuck."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner

from gateway.publisher import AiokafkaPublisher
from igw.config import KafkaSettings
from igw.errors import PublishError
from igw.records import OutRecord
from igw.topics import ensure_topics
from igw_tools.localbroker import LocalBroker
from tests.plugins.kafka import TopicReader, read_topic

pytestmark = pytest.mark.kafka


def _record(topic: str, conversation: int, seq: int) -> OutRecord:
    key = f"instagram:17841400000000000:{conversation}".encode()
    return OutRecord(topic, key, f"{conversation}:{seq}".encode(), [("ce_id", f"{conversation}-{seq}".encode())])


async def test_concurrent_requests_keep_order_and_partitions(
    kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    """400 concurrent one-record publishes over 40 conversations: per conversation, Kafka holds them in
    publish order, each in the partition aiokafka's DefaultPartitioner picks for its key."""
    topic = kafka_settings.topic("messages")
    await ensure_topics(kafka_settings, ["messages"])
    publisher = AiokafkaPublisher(kafka_settings)
    await publisher.start()
    try:
        conversations, per_conversation = 40, 10
        order = [(c, s) for s, c in itertools.product(range(per_conversation), range(conversations))]
        # Started in this order: each task appends before its first await, so this is publish order.
        await asyncio.gather(*(publisher.publish([_record(topic, c, s)], 10.0) for c, s in order))
        # One request with records for many partitions.
        await publisher.publish([_record(topic, c, per_conversation) for c in range(conversations)], 10.0)
    finally:
        await publisher.stop()

    total = conversations * (per_conversation + 1)
    records = await topic_reader(topic, expect=total, settle=0.3)
    assert len(records) == total
    partitioner = DefaultPartitioner()
    partitions = list(range(kafka_settings.partitions))
    seen: dict[int, list[int]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        assert record.key is not None
        assert record.partition == partitioner(record.key, partitions, partitions)
        conversation, seq = map(int, record.value.split(b":"))
        seen.setdefault(conversation, []).append(seq)
        assert record.headers["ce_id"] == f"{conversation}-{seq}".encode()
    assert seen == {c: list(range(per_conversation + 1)) for c in range(conversations)}


async def test_frozen_broker_bounds_waiting_batches(own_broker: LocalBroker, kafka_settings: KafkaSettings) -> None:
    """With the broker frozen, publishes time out, then the partition's buffer refuses new records at
    once instead of growing; after the thaw every record the publisher took is delivered."""
    settings = KafkaSettings(
        bootstrap_servers=own_broker.bootstrap_servers,
        topic_prefix=kafka_settings.topic_prefix,
        enable_idempotence=False,
        partitions=1,
        max_batch_bytes=4096,
        buffer_bytes=16_384,
    )
    topic = settings.topic("messages")
    await ensure_topics(settings, ["messages"])
    publisher = AiokafkaPublisher(settings)
    await publisher.start()
    value = b"x" * 1000  # about four to a batch
    accepted = refused_at_once = 0
    try:
        await publisher.publish([OutRecord(topic, b"k", value, [])], 5.0)
        accepted += 1
        own_broker.freeze()
        try:
            for _ in range(60):
                started = asyncio.get_running_loop().time()
                try:
                    await publisher.publish([OutRecord(topic, b"k", value, [])], 0.05)
                except PublishError as exc:
                    if "buffer" in str(exc):
                        refused_at_once += 1
                        assert asyncio.get_running_loop().time() - started < 0.02
                    else:
                        accepted += 1  # taken, not acknowledged in time: still delivered later
        finally:
            own_broker.thaw()
        assert refused_at_once > 0
        assert await publisher.settle(30.0)
    finally:
        await publisher.stop()
    records = await read_topic(own_broker.bootstrap_servers, topic, expect=accepted, timeout=20.0, settle=0.5)
    assert len(records) == accepted


@pytest.mark.parametrize("records", [0, 1])
async def test_publish_without_connection_fails_fast(kafka_settings: KafkaSettings, records: int) -> None:
    publisher = AiokafkaPublisher(kafka_settings)
    with pytest.raises(PublishError):
        await publisher.publish([_record("t", 1, 1)] * records, 1.0)


async def test_stop_hands_over_a_batch_the_submitter_was_handing_over(
    kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    """Stopping while the producer has not yet taken a batch (send_batch still waiting, as it does
    for metadata or queue room) delivers that batch instead of dropping it."""
    topic = kafka_settings.topic("messages")
    await ensure_topics(kafka_settings, ["messages"])
    publisher = AiokafkaPublisher(kafka_settings)
    await publisher.start()
    producer = publisher._producer
    assert producer is not None
    real_send_batch = producer.send_batch
    entered = asyncio.Event()

    async def stalling_send_batch(*args: Any, **kwargs: Any) -> Any:
        if not entered.is_set():  # the first hand-over waits, as for metadata that never comes
            entered.set()
            await asyncio.Event().wait()
        return await real_send_batch(*args, **kwargs)

    producer.send_batch = stalling_send_batch  # type: ignore[method-assign]
    request = asyncio.create_task(publisher.publish([_record(topic, 7, 1)], 20.0))
    await asyncio.wait_for(entered.wait(), 5.0)
    await publisher.stop()
    await asyncio.wait_for(request, 5.0)  # acknowledged, not timed out

    records = await topic_reader(topic, expect=1, settle=0.3)
    assert [r.value for r in records] == [b"7:1"]
