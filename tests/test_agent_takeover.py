"""A person answering from the app, or an agent's handover, pauses automatic replies in that conversation."""

from __future__ import annotations

import asyncio

import orjson

from igw.config import KafkaSettings
from tests.plugins.agent import REDIS_URL, Emulator, StartAgent, envelope, publish
from tests.plugins.kafka import TopicReader


async def reasons(topic_reader: TopicReader, kafka: KafkaSettings, expect: int) -> dict[str, list[str]]:
    """Reply records by user: the reasons, in order."""
    records = await topic_reader(kafka.topic("replies"), expect=expect, settle=0.3)
    by_user: dict[str, list[str]] = {}
    for record in sorted(records, key=lambda r: r.offset):
        body = orjson.loads(record.value)
        by_user.setdefault(body["user_id"], []).append(body["reason"])
    return by_user


async def test_human_echo_pauses_but_our_own_echo_does_not(
    kafka_settings: KafkaSettings,
    agent_emulator: Emulator,
    start_agent: StartAgent,
    topic_reader: TopicReader,
    redis_prefix: str,
) -> None:
    """Echoes of our replies (our mid or our app_id) change nothing; an echo from a person pauses that conversation."""
    await start_agent({"REDIS_URL": REDIS_URL, "IGW_AGENT_REDIS_PREFIX": redis_prefix, "IGW_APP_ID": "555"})
    await publish(kafka_settings, [envelope("bot-only", "hello"), envelope("human", "hello")])
    sent = await agent_emulator.wait_for(2)
    ours = {s.recipient_id: s.message_id for s in sent}
    await publish(
        kafka_settings,
        [
            # The echo of our own reply: its mid is one the Send API gave us.
            envelope("bot-only", "Hello! How can we help you today?", type="message_echo", mid=ours["bot-only"]),
            # A message sent by our app (app_id) but whose mid we did not record: still ours.
            envelope("bot-only", "sent by our app", type="message_echo", app_id="555"),
            # The echo of our reply to the other user, then a person typing in the Instagram app.
            envelope("human", "Hello! How can we help you today?", type="message_echo", mid=ours["human"]),
            envelope("human", "Hi, this is Anna from reception", type="message_echo", app_id="999"),
        ],
    )
    await asyncio.sleep(0.5)
    await publish(kafka_settings, [envelope("bot-only", "opening hours?"), envelope("human", "opening hours?")])
    by_user = await reasons(topic_reader, kafka_settings, expect=4)
    assert by_user == {"bot-only": ["replied", "replied"], "human": ["replied", "human_takeover"]}
    assert [s.recipient_id for s in agent_emulator.replies()].count("human") == 1


async def test_handover_rule_pauses_and_the_pause_ends(
    kafka_settings: KafkaSettings, agent_emulator: Emulator, start_agent: StartAgent, topic_reader: TopicReader
) -> None:
    """The clinic's "talk to a person" button sends its text and hands over; replies resume once the pause ends."""
    agent = await start_agent({"IGW_HANDOVER_PAUSE_SECONDS": "2"})
    await publish(kafka_settings, [envelope("handover", "Talk to a person", payload="HUMAN")])
    sent = await agent_emulator.wait_for(1)
    assert "member of our team" in sent[0].body["message"]["text"]
    await publish(kafka_settings, [envelope("handover", "hello?")])
    await topic_reader(kafka_settings.topic("replies"), expect=2)
    assert agent.sample("igw_agent_paused_conversations") == 1
    await asyncio.sleep(2)
    await publish(kafka_settings, [envelope("handover", "hello again")])
    by_user = await reasons(topic_reader, kafka_settings, expect=3)
    assert by_user == {"handover": ["handover", "human_takeover", "replied"]}
    assert len(agent_emulator.replies()) == 2


async def test_an_old_human_echo_does_not_pause(
    kafka_settings: KafkaSettings, agent_emulator: Emulator, start_agent: StartAgent
) -> None:
    """A person's echo older than the pause (replayed from the start of the topic) pauses nothing."""
    await start_agent({"IGW_HUMAN_PAUSE_SECONDS": "60"})
    old = envelope("late", "answered by a person long ago", type="message_echo", timestamp_ms=1_000_000)
    await publish(kafka_settings, [old, envelope("late", "hello")])
    assert len(await agent_emulator.wait_for(1)) == 1
