"""igw's topics and their creation. The gateway creates what is missing at start-up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Final

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from gateway.config import KafkaSettings

__all__ = ["GATEWAY_TOPICS", "TOPIC_NAMES", "ensure_topics"]

log = logging.getLogger(__name__)

# What the gateway publishes to; the agent adds "replies".
GATEWAY_TOPICS: Final = ("messages", "postbacks", "events", "deadletter")
TOPIC_NAMES: Final = (*GATEWAY_TOPICS, "replies")


async def ensure_topics(
    kafka: KafkaSettings, names: Sequence[str] = TOPIC_NAMES, *, timeout: float = 15.0
) -> list[str]:
    """Create the missing topics among ``names`` (short names); return the full names created."""
    wanted = [kafka.topic(n) for n in names]
    admin = AIOKafkaAdminClient(client_id=f"{kafka.client_id}-admin", **kafka.client_kwargs())
    async with asyncio.timeout(timeout):
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [t for t in wanted if t not in existing]
            created: list[str] = []
            for topic in missing:
                try:
                    configs = {}
                    if topic == kafka.topic("deadletter"):
                        # Dead letters are whole signed bodies; Kafka's default limit is 1 MiB.
                        configs["max.message.bytes"] = str(kafka.max_message_bytes)
                    new = NewTopic(
                        topic,
                        num_partitions=kafka.partitions,
                        replication_factor=kafka.replication_factor,
                        topic_configs=configs,
                    )
                    await admin.create_topics([new])
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
