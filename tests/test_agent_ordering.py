"""Conversations run concurrently and independently; within one conversation replies keep the order of messages."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import pytest

from consumers.agent_replies.model import AgentReply, InboundEvent, Turn
from igw.config import KafkaSettings
from tests.plugins.agent import Emulator, StartAgent, envelope, publish

pytestmark = pytest.mark.kafka


class EchoAgent:
    """Answers ``echo:<text>`` after a random pause; a text starting with ``slow`` pauses ``slow_seconds``."""

    name = "rules"
    uses_history = False

    def __init__(self, slow_seconds: float = 0.0) -> None:
        self.slow_seconds = slow_seconds
        self.running = 0
        self.most_running = 0

    async def reply(self, event: InboundEvent, history: Sequence[Turn]) -> AgentReply:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            text = event.text or ""
            await asyncio.sleep(self.slow_seconds if text.startswith("slow") else random.uniform(0, 0.02))
            return AgentReply(text=f"echo:{text}")
        finally:
            self.running -= 1

    async def close(self) -> None:
        return None


async def test_order_within_each_conversation_under_concurrency(
    kafka_settings: KafkaSettings, agent_emulator: Emulator, start_agent: StartAgent
) -> None:
    """20 conversations x 5 messages with random agent delays: each user gets replies 0..4 in order, in parallel."""
    agent = EchoAgent()
    await start_agent({"IGW_AGENT_CONCURRENCY": "16"}, agent=agent)
    events = [envelope(f"o{user:02d}", str(n)) for n in range(5) for user in range(20)]
    await publish(kafka_settings, events)
    sent = await agent_emulator.wait_for(100, settle=0.3)
    assert len(sent) == 100
    for user in range(20):
        texts = [s.body["message"]["text"] for s in agent_emulator.replies_to(f"o{user:02d}")]
        assert texts == [f"echo:{n}" for n in range(5)], (user, texts)
    assert 1 < agent.most_running <= 16


async def test_a_slow_conversation_does_not_hold_up_the_others(
    kafka_settings: KafkaSettings, agent_emulator: Emulator, start_agent: StartAgent
) -> None:
    """While one conversation's agent call takes 2 s, ten other conversations (same partitions) are answered."""
    await start_agent({"IGW_AGENT_CONCURRENCY": "4"}, agent=EchoAgent(slow_seconds=2.0))
    await publish(kafka_settings, [envelope("slowpoke", "slow question"), envelope("slowpoke", "after")])
    await asyncio.sleep(0.3)
    await publish(kafka_settings, [envelope(f"f{i}", "quick") for i in range(10)])
    sent = await agent_emulator.wait_for(12, timeout=10)
    order = [s.recipient_id for s in sent]
    # Every quick conversation was answered while the slow one's first agent call was still running.
    assert sorted(order[:10]) == sorted(f"f{i}" for i in range(10))
    slow = [s.body["message"]["text"] for s in sent if s.recipient_id == "slowpoke"]
    assert slow == ["echo:slow question", "echo:after"]
