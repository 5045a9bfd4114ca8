"""A real Kafka-protocol broker for the suite, and helpers to read back what was published.

The suite starts its own Tansu broker once per session unless ``KAFKA_BOOTSTRAP_SERVERS`` names
one. Each test gets its own topic prefix, so tests never see each other's records.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from igw.config import KafkaSettings
from igw_tools.localbroker import LocalBroker


@dataclass
class KafkaRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker | None]:
    """The session's broker process; ``None`` when ``KAFKA_BOOTSTRAP_SERVERS`` names an external one."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield None
        return
    log = Path(tmp_path_factory.mktemp("tansu")) / "tansu.log"
    broker = LocalBroker(log_path=log)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: LocalBroker | None) -> str:
    if kafka_broker is None:
        return os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    return kafka_broker.bootstrap_servers


@pytest.fixture
def kafka_settings(kafka_bootstrap: str) -> KafkaSettings:
    """Kafka settings with a topic prefix of this test's own."""
    return KafkaSettings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:12]}",
        # Tansu does not support aiokafka's idempotent producer; production Kafka keeps it on.
        enable_idempotence=os.environ.get("KAFKA_ENABLE_IDEMPOTENCE", "false").lower() == "true",
        partitions=3,
    )


async def read_topic(
    bootstrap: str, topic: str, *, expect: int, timeout: float = 15.0, settle: float = 0.0
) -> list[KafkaRecord]:
    """Read ``topic`` from the beginning until ``expect`` records arrived or ``timeout`` passed.

    With ``settle`` > 0, keep reading that long after reaching ``expect``, to catch extras
    (duplicates or records that should not be there).
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    records: list[KafkaRecord] = []
    try:
        deadline = time.monotonic() + timeout
        reached_at: float | None = None
        while time.monotonic() < deadline:
            if len(records) >= expect:
                reached_at = reached_at or time.monotonic()
                if time.monotonic() - reached_at >= settle:
                    break
            batch = await consumer.getmany(timeout_ms=200)
            for tp, messages in batch.items():
                records.extend(
                    KafkaRecord(
                        topic=tp.topic,
                        partition=tp.partition,
                        offset=m.offset,
                        key=m.key,
                        value=m.value,
                        headers=dict(m.headers),
                    )
                    for m in messages
                )
    finally:
        await consumer.stop()
    return records


TopicReader = Callable[..., Awaitable[list[KafkaRecord]]]


@pytest.fixture
def topic_reader(kafka_bootstrap: str) -> TopicReader:
    """``await topic_reader(topic, expect=N)``: the records of a topic, read with a fresh consumer."""

    async def _read(topic: str, *, expect: int, timeout: float = 15.0, settle: float = 0.0) -> list[KafkaRecord]:
        return await read_topic(kafka_bootstrap, topic, expect=expect, timeout=timeout, settle=settle)

    return _read
