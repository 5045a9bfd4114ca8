"""Consumer lag is the distance from the consumer's position to the end of its partitions."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry

from consumers.common.lag import sample_lag
from consumers.common.metrics import ConsumerMetrics
from igw.config import KafkaSettings
from igw.topics import ensure_topics


async def test_lag_gauge_follows_the_position(kafka_settings: KafkaSettings) -> None:
    """Five unread records are a lag of 5; after reading them the lag is 0."""
    topic = kafka_settings.topic("lagtest")
    assert await ensure_topics(kafka_settings, ["lagtest"]) == [topic]
    assert await ensure_topics(kafka_settings, ["lagtest"]) == []  # already there: nothing to create
    producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.bootstrap_servers, enable_idempotence=False)
    await producer.start()
    try:
        for n in range(5):
            await producer.send_and_wait(topic, b"x", partition=n % 2)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_settings.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(kafka_settings.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        registry = CollectorRegistry()
        metrics = ConsumerMetrics(registry, "lag-test")
        labels = {"group": "lag-test", "topic": topic}
        assert await sample_lag(consumer, metrics, (topic,)) == {topic: 5}
        assert registry.get_sample_value("igw_consumer_lag_messages", labels) == 5
        read = 0
        for _ in range(50):
            batch = await consumer.getmany(timeout_ms=100)
            read += sum(len(records) for records in batch.values())
            if read >= 5:
                break
        assert read == 5
        assert await sample_lag(consumer, metrics, (topic,)) == {topic: 0}
        assert registry.get_sample_value("igw_consumer_lag_messages", labels) == 0
    finally:
        await consumer.stop()
