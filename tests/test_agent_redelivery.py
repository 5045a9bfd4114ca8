"""The same inbound event delivered again (Meta's retries, gateway replays) gets no second reply."""

from __future__ import annotations

import orjson
import pytest

from igw.config import KafkaSettings
from tests.plugins.agent import REDIS_URL, Emulator, StartAgent, envelope, publish
from tests.plugins.kafka import TopicReader


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_same_event_twice_is_answered_once(
    kafka_settings: KafkaSettings,
    agent_emulator: Emulator,
    start_agent: StartAgent,
    topic_reader: TopicReader,
    redis_prefix: str,
    backend: str,
) -> None:
    """Two copies of one event (same id) give one reply; the copy is recorded as skipped/duplicate."""
    extra = {"REDIS_URL": REDIS_URL, "IGW_AGENT_REDIS_PREFIX": redis_prefix} if backend == "redis" else {}
    agent = await start_agent(extra)
    event = envelope("u-dup", "hello")
    await publish(kafka_settings, [event])
    await agent_emulator.wait_for(1)
    await publish(kafka_settings, [event])
    records = await topic_reader(kafka_settings.topic("replies"), expect=2)
    outcomes = sorted((r["outcome"], r["reason"]) for r in map(orjson.loads, (rec.value for rec in records)))
    assert outcomes == [("sent", "replied"), ("skipped", "duplicate")]
    assert len(agent_emulator.replies_to("u-dup")) == 1
    duplicate = next(orjson.loads(r.value) for r in records if b"duplicate" in r.value)
    assert duplicate["message_ids"] == [agent_emulator.replies()[0].message_id]
    assert agent.sample("igw_agent_ledger_hits_total") == 1


async def test_redelivery_across_replicas_sharing_redis(
    kafka_settings: KafkaSettings,
    agent_emulator: Emulator,
    start_agent: StartAgent,
    topic_reader: TopicReader,
    redis_prefix: str,
) -> None:
    """A second consumer group (another deployment) sharing the Redis ledger does not answer again."""
    extra = {"REDIS_URL": REDIS_URL, "IGW_AGENT_REDIS_PREFIX": redis_prefix}
    events = [envelope(f"u-shared-{i}", "hi") for i in range(5)]
    first = await start_agent(extra)
    await publish(kafka_settings, events)
    await agent_emulator.wait_for(5)
    await first.shutdown()
    # A fresh group reads the topic from the start: every event is replayed, none answered twice.
    await start_agent({**extra, "IGW_AGENT_GROUP": f"other-{kafka_settings.topic_prefix}"})
    records = await topic_reader(kafka_settings.topic("replies"), expect=10)
    reasons = sorted(orjson.loads(r.value)["reason"] for r in records)
    assert reasons == ["duplicate"] * 5 + ["replied"] * 5
    sent = agent_emulator.replies()
    assert sorted(s.recipient_id for s in sent) == sorted(e["user_id"] for e in events)
