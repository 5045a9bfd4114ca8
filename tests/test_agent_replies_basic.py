"""The agent consumer answers inbound messages and postbacks once, and records each outcome."""

from __future__ import annotations

import orjson
from prometheus_client import REGISTRY

from gateway.config import KafkaSettings
from tests.plugins.agent import Emulator, StartAgent, envelope, publish
from tests.plugins.kafka import TopicReader


async def test_message_gets_one_reply_and_a_reply_record(
    kafka_settings: KafkaSettings, agent_emulator: Emulator, start_agent: StartAgent, topic_reader: TopicReader
) -> None:
    """A DM asking for opening hours gets the rules' hours answer with buttons, and a 'sent' record."""
    before = REGISTRY.get_sample_value("igw_agent_replies_total", {"outcome": "sent", "reason": "replied"}) or 0.0
    agent = await start_agent()
    event = envelope("u-hours", "Are you open on Saturday?")
    await publish(kafka_settings, [event])
    sent = await agent_emulator.wait_for(1)
    assert len(sent) == 1
    assert sent[0].recipient_id == "u-hours"
    assert "Saturday 9:00-13:00" in sent[0].body["message"]["text"]
    assert [q["payload"] for q in sent[0].body["message"]["quick_replies"]] == ["BOOK", "ADDRESS"]
    records = await topic_reader(kafka_settings.topic("replies"), expect=1)
    record = orjson.loads(records[0].value)
    assert record["outcome"] == "sent"
    assert record["reason"] == "replied"
    assert record["in_reply_to"] == event["id"]
    assert record["message_ids"] == [sent[0].message_id]
    assert record["conversation_id"] == event["conversation_id"]
    assert record["latency_ms"] >= 0
    assert records[0].key == event["conversation_id"].encode()
    await agent.shutdown()
    after = REGISTRY.get_sample_value("igw_agent_replies_total", {"outcome": "sent", "reason": "replied"})
    assert after == before + 1
