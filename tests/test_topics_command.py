"""``igw topics`` creates igw's topics with the configured partitions and describes them."""

from __future__ import annotations

import dataclasses

import pytest
from aiokafka import AIOKafkaProducer

from igw.config import KafkaSettings
from igw.topics import TOPIC_NAMES, describe_topics, ensure_topics
from tests.plugins.tools import run_cli

pytestmark = pytest.mark.kafka


async def test_ensure_then_describe(kafka_settings: KafkaSettings) -> None:
    """All six topics are created once with the configured partitions; describe counts their records."""
    settings = dataclasses.replace(kafka_settings, partitions=2)
    before = await describe_topics(settings)
    assert [i.exists for i in before] == [False] * len(TOPIC_NAMES)
    created = await ensure_topics(settings)
    assert created == [settings.topic(n) for n in TOPIC_NAMES]
    assert await ensure_topics(settings) == []

    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, enable_idempotence=False, linger_ms=50)
    await producer.start()
    try:
        # One batch of several records: the count must not depend on how the broker lists end offsets.
        futures = [await producer.send(settings.topic("events"), b"x", key=b"k") for _ in range(7)]
        await producer.flush()
        for future in futures:
            await future
    finally:
        await producer.stop()

    infos = {i.name: i for i in await describe_topics(settings)}
    assert all(i.exists and i.partitions == 2 and i.replication == 1 for i in infos.values())
    assert infos[settings.topic("events")].records == 7
    assert infos[settings.topic("messages")].records == 0


async def test_cli_describe_exits_1_until_created(
    kafka_settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`igw topics` reads Kafka settings from the environment; describe fails while topics are missing."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_settings.bootstrap_servers)
    monkeypatch.setenv("IGW_TOPIC_PREFIX", kafka_settings.topic_prefix)
    monkeypatch.setenv("IGW_TOPIC_PARTITIONS", "1")
    status, out, _ = await run_cli(["topics", "describe"])
    assert status == 1
    assert "missing: run `igw topics create`" in out.replace(f"{len(TOPIC_NAMES)} topic(s) ", "")
    status, out, _ = await run_cli(["topics", "create"])
    assert status == 0
    assert out.count(" created") == len(TOPIC_NAMES)
    status, out, _ = await run_cli(["topics"])
    assert status == 0
    assert f"{kafka_settings.topic('deadletter')}" in out


def test_create_topics_errors_are_raised_per_topic() -> None:
    """CreateTopics answers errors per topic instead of raising: a refusal raises the matching error."""
    from types import SimpleNamespace

    from aiokafka.errors import InvalidReplicationFactorError, TopicAlreadyExistsError

    from igw.topics import _raise_for_topic_errors

    _raise_for_topic_errors(SimpleNamespace(topic_errors=[("ig.events", 0, None)]))
    with pytest.raises(InvalidReplicationFactorError, match=r"ig\.events: replication factor 3 > 1 broker"):
        _raise_for_topic_errors(SimpleNamespace(topic_errors=[("ig.events", 38, "replication factor 3 > 1 broker")]))
    with pytest.raises(TopicAlreadyExistsError):
        _raise_for_topic_errors(SimpleNamespace(topic_errors=[("ig.events", 36)]))
