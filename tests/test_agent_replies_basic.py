"""The agent consumer answers inbound messages and postbacks once, and records each outcome."""

from __future__ import annotations

import orjson
from aiokafka import AIOKafkaProducer
from jsonschema import Draft202012Validator

from consumers.agent_replies.schemas import load_reply_schema
from igw.config import KafkaSettings
from tests.plugins.agent import Emulator, StartAgent, envelope, publish
from tests.plugins.graph_emulator import MESSENGER_ACCOUNT
from tests.plugins.kafka import TopicReader


async def test_message_gets_one_reply_and_a_reply_record(
    kafka_settings: KafkaSettings, agent_emulator: Emulator, start_agent: StartAgent, topic_reader: TopicReader
) -> None:
    """A DM asking for opening hours gets the rules' hours answer with buttons, and a 'sent' record."""
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
    assert list(Draft202012Validator(load_reply_schema()).iter_errors(record)) == []
    assert record["outcome"] == "sent"
    assert record["reason"] == "replied"
    assert record["in_reply_to"] == event["id"]
    assert record["message_ids"] == [sent[0].message_id]
    assert record["conversation_id"] == event["conversation_id"]
    assert record["latency_ms"] >= 0
    assert records[0].key == event["conversation_id"].encode()
    await agent.shutdown()
    assert agent.sample("igw_agent_replies_total", {"outcome": "sent", "reason": "replied"}) == 1


async def test_messenger_postback_is_answered_with_the_page_token(
    kafka_settings: KafkaSettings, agent_emulator: Emulator, start_agent: StartAgent, topic_reader: TopicReader
) -> None:
    """A Messenger postback (from <prefix>.postbacks) is answered from its Page with messaging_type RESPONSE."""
    await start_agent()
    event = envelope(
        "psid-1", "Book a visit", type="postback", payload="BOOK", platform="messenger",
        account_id=MESSENGER_ACCOUNT.account_id,
    )  # fmt: skip
    await publish(kafka_settings, [event])
    [sent] = await agent_emulator.wait_for(1)
    assert sent.account_id == MESSENGER_ACCOUNT.account_id
    assert sent.auth == "access_token"
    assert sent.appsecret_proof
    assert sent.body["messaging_type"] == "RESPONSE"
    assert sent.body["message"]["text"] == "What kind of visit would you like to book?"
    [record] = await topic_reader(kafka_settings.topic("replies"), expect=1)
    assert orjson.loads(record.value)["platform"] == "messenger"


async def test_echoes_edits_deletions_and_standby_are_not_answered(
    kafka_settings: KafkaSettings, agent_emulator: Emulator, start_agent: StartAgent, topic_reader: TopicReader
) -> None:
    """Only inbound messages and postbacks are answered: not echoes, edits, deletions, standby copies or bad records."""
    await start_agent({"IGW_APP_ID": "555"})
    edit = envelope("quiet", "edited")
    edit["type"] = "message_edit"
    edit["message_edit"] = edit.pop("message")
    deleted = envelope("quiet", None)
    deleted["type"] = "message_deleted"
    await publish(
        kafka_settings,
        [
            envelope("quiet", "our echo", type="message_echo", app_id="555"),
            edit,
            deleted,
            envelope("quiet", "hello", standby=True),
            envelope("answered", "hello"),
        ],
    )
    producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.bootstrap_servers, enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(kafka_settings.topic("messages"), b"not json", key=b"x")
    finally:
        await producer.stop()
    records = await topic_reader(kafka_settings.topic("replies"), expect=2, settle=0.5)
    outcome = sorted((b["user_id"], b["reason"]) for b in (orjson.loads(r.value) for r in records))
    assert outcome == [("answered", "replied"), ("quiet", "standby")]
    assert [s.recipient_id for s in await agent_emulator.wait_for(1, settle=0.3)] == ["answered"]
    [dead] = await topic_reader(kafka_settings.topic("deadletter"), expect=1)
    assert (dead.value, dead.headers["igw_reason"]) == (b"not json", b"bad_event")
