"""Nothing dropped silently: a record too large for the dead-letter topic goes there truncated, with its coordinates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from consumers.agent_replies.agent import AgentError
from consumers.agent_replies.metrics import AgentMetrics
from consumers.agent_replies.model import AgentReply, InboundEvent, Turn
from consumers.agent_replies.outcomes import TRUNCATED_HEAD_BYTES, OutcomePublisher, Reason
from igw.config import KafkaSettings
from tests.plugins.agent import StartAgent, envelope
from tests.plugins.kafka import TopicReader

BIG = 3_000_000


class DownAgent:
    """An agent that never answers (the service behind it refuses such a large message)."""

    name = "down"
    uses_history = False

    async def reply(self, event: InboundEvent, history: Sequence[Turn]) -> AgentReply:
        raise AgentError("the agent service answered 413")

    async def close(self) -> None:
        return None


@pytest.mark.kafka
async def test_a_3_mb_envelope_is_dead_lettered_truncated(
    kafka_settings: KafkaSettings, start_agent: StartAgent, topic_reader: TopicReader
) -> None:
    """A 3 MB DM the agent keeps failing on is dead-lettered as an envelope with its coordinates, counted, committed."""
    agent = await start_agent({"IGW_AGENT_MAX_RETRIES": "1"}, agent=DownAgent())
    event = envelope("u-big", "x" * BIG)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_settings.bootstrap_servers, enable_idempotence=False, max_request_size=8 * 1024 * 1024
    )
    await producer.start()
    try:
        meta = await producer.send_and_wait(
            kafka_settings.topic("messages"), orjson.dumps(event), key=event["conversation_id"].encode()
        )
    finally:
        await producer.stop()
    [record] = await topic_reader(kafka_settings.topic("deadletter"), expect=1, timeout=30)
    body: dict[str, Any] = orjson.loads(record.value)
    assert body["truncated"] is True
    assert (body["topic"], body["partition"], body["offset"]) == (meta.topic, meta.partition, meta.offset)
    assert body["size"] > BIG
    assert body["reason"] == "agent_error"
    assert body["event_id"] == event["id"]
    assert len(body["head"]) == TRUNCATED_HEAD_BYTES
    assert record.headers["igw_truncated"] == str(body["size"]).encode()
    assert record.headers["igw_reason"] == b"agent_error"
    assert record.headers["igw_source"] == f"{meta.topic}[{meta.partition}]@{meta.offset}".encode()
    assert agent.sample("igw_agent_dead_letters_total", {"reason": "agent_error", "form": "truncated"}) == 1
    await agent.shutdown()


class RefusingProducer:
    """Kafka taking nothing: every send fails."""

    def __init__(self) -> None:
        self.calls = 0

    async def send_and_wait(self, *args: Any, **kwargs: Any) -> None:
        self.calls += 1
        raise ConnectionError("broker away")


async def test_a_dead_letter_kafka_refuses_is_reported_not_dropped() -> None:
    """When Kafka takes the dead letter in no form, the publisher says so (the record is kept and tried again)."""
    registry = CollectorRegistry()
    producer = RefusingProducer()
    publisher = OutcomePublisher(producer, "t.replies", "t.deadletter", AgentMetrics(registry))
    published = await publisher.deadletter(
        b"{}", b"k", Reason.BAD_EVENT, "not an envelope", source=("t.messages", 0, 7)
    )
    assert published is False
    assert producer.calls == 1
    assert registry.get_sample_value("igw_agent_dead_letter_failures_total") == 1
