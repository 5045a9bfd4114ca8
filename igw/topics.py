"""igw's topics: creating the missing ones with their settings, describing them, reading their ends.

The one place topics are created, by every process (``IGW_CREATE_TOPICS``) and by ``igw topics``,
so a topic gets the same settings whichever process creates it first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from igw.config import KafkaSettings
from igw.envelope import GATEWAY_TOPICS, Topic

__all__ = ["GATEWAY_TOPICS", "TOPIC_NAMES", "TopicInfo", "describe_topics", "end_offsets", "ensure_topics"]

log = logging.getLogger(__name__)

TOPIC_NAMES: Final = tuple(Topic)


def topic_configs(kafka: KafkaSettings, name: str) -> dict[str, str]:
    """The topic-level settings igw gives a topic it creates (``name`` is the short name)."""
    hours = kafka.erasure_retention_hours if name == Topic.ERASURES else kafka.retention_hours
    configs = {"retention.ms": str(hours * 3_600_000)}
    if name == Topic.DEADLETTER:
        # Dead letters are whole signed bodies; Kafka's default limit is 1 MiB.
        configs["max.message.bytes"] = str(kafka.max_message_bytes)
    return configs


def _admin(kafka: KafkaSettings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(client_id=f"{kafka.client_id}-admin", **kafka.client_kwargs())


def _raise_for_topic_errors(response: Any) -> None:
    """CreateTopics answers errors per topic instead of raising them; raise the first real one."""
    for error in getattr(response, "topic_errors", ()):
        topic, code = error[0], error[1]
        if code == 0:
            continue
        exc_type = for_code(code)
        message = error[2] if len(error) > 2 and error[2] else exc_type.__name__
        raise exc_type(f"{topic}: {message}")


async def ensure_topics(
    kafka: KafkaSettings, names: Sequence[str] = TOPIC_NAMES, *, timeout: float = 15.0
) -> list[str]:
    """Create the missing topics among ``names`` (short names); return the full names created.

    Topics that exist keep their settings. A refusal (ACLs, a managed service) raises: the
    operator then creates the topics with the documented names and settings.
    """
    wanted = {kafka.topic(n): n for n in dict.fromkeys(names)}
    admin = _admin(kafka)
    created: list[str] = []
    async with asyncio.timeout(timeout):
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [t for t in wanted if t not in existing]
            for topic in missing:
                try:
                    new = NewTopic(
                        topic,
                        num_partitions=kafka.partitions,
                        replication_factor=kafka.replication_factor,
                        topic_configs=topic_configs(kafka, wanted[topic]),
                    )
                    _raise_for_topic_errors(await admin.create_topics([new]))
                    created.append(topic)
                except TopicAlreadyExistsError:
                    pass  # another replica created it meanwhile
                except KafkaError as exc:
                    log.warning("could not create topic %s: %s", topic, exc)
                    raise
        finally:
            await admin.close()
    if created:
        log.info("created topics %s", ", ".join(created))
    return created


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    exists: bool
    partitions: int = 0
    replication: int = 0
    records: int = 0  # end minus beginning offsets: what the topic holds now


async def describe_topics(
    kafka: KafkaSettings, names: Sequence[str] = TOPIC_NAMES, *, timeout: float = 15.0
) -> list[TopicInfo]:
    """Partitions, replication and record count of each of ``names`` (short names), missing ones marked."""
    wanted = [kafka.topic(n) for n in names]
    admin = _admin(kafka)
    consumer = AIOKafkaConsumer(client_id=f"{kafka.client_id}-admin", group_id=None, **kafka.client_kwargs())
    infos: list[TopicInfo] = []
    async with asyncio.timeout(timeout):
        await admin.start()
        try:
            # All topics, then filter: naming them could auto-create them on some brokers.
            described = {t["topic"]: t for t in await admin.describe_topics()}
        finally:
            await admin.close()
        await consumer.start()
        # Let the consumer's background task start: stopping it before then raises CancelledError.
        await asyncio.sleep(0)
        try:
            for name in wanted:
                topic = described.get(name)
                if topic is None or not topic.get("partitions"):
                    infos.append(TopicInfo(name, exists=False))
                    continue
                partitions = topic["partitions"]
                tps = [TopicPartition(name, p["partition"]) for p in partitions]
                consumer.assign(tps)
                begin = await consumer.beginning_offsets(tps)
                end = await end_offsets(consumer, tps)
                infos.append(
                    TopicInfo(
                        name,
                        exists=True,
                        partitions=len(partitions),
                        replication=max(len(p.get("replicas", ())) for p in partitions),
                        records=sum(end[tp] - begin[tp] for tp in tps),
                    )
                )
        finally:
            await consumer.stop()
    return infos


async def end_offsets(consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
    """The offset after each partition's last record, as fetched rather than as listed.

    Some Kafka-protocol brokers (Tansu 0.6) list the end offset as the last *batch*'s base offset
    plus one; reading the last batch gives the true end. On Apache Kafka this changes nothing.
    The consumer must have ``tps`` assigned; their positions are left where this leaves them.
    """
    listed: dict[TopicPartition, int] = await consumer.end_offsets(list(tps))
    result = dict(listed)
    probe = [tp for tp in tps if listed[tp] > 0]
    for tp in probe:
        consumer.seek(tp, listed[tp] - 1)
    waiting = set(probe)
    # Two empty polls in a row: nothing more will come (compacted or transactional tails).
    empty_polls = 0
    while waiting and empty_polls < 2:
        batch = await consumer.getmany(*waiting, timeout_ms=300)
        empty_polls = 0 if batch else empty_polls + 1
        for tp, records in batch.items():
            if records:
                result[tp] = max(result[tp], records[-1].offset + 1)
                waiting.discard(tp)
    return result
