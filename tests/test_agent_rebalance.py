"""Scaling out mid-batch: partitions move between replicas without losing or repeating a reply."""

from __future__ import annotations

from collections import Counter

import pytest

from consumers.agent_replies.ledger import Step
from consumers.agent_replies.store import MemoryStore
from igw.config import KafkaSettings
from igw_tools.graph_emulator import InjectedFailure
from tests.plugins.agent import Emulator, StartAgent, envelope, publish

pytestmark = pytest.mark.kafka

CONVERSATIONS = 150


async def done(store: MemoryStore, event_id: str) -> bool:
    entry, _ = await store.peek(event_id)
    return entry is not None and entry.step is Step.DONE


async def test_second_replica_joins_mid_batch(
    kafka_settings: KafkaSettings, agent_emulator: Emulator, start_agent: StartAgent
) -> None:
    """A replica joining takes partitions after the first commits its finished work: each user answered once.

    Each replica has its own in-process ledger here, so only the rebalance listener's drain and
    commit (not a shared ledger) keep a conversation from being answered twice.
    """
    agent_emulator.state.inject(InjectedFailure(count=10 * CONVERSATIONS, delay_seconds=0.02))
    extra = {"IGW_AGENT_CONCURRENCY": "4", "IGW_AGENT_MAX_IN_FLIGHT": "8"}
    stores = (MemoryStore(), MemoryStore())
    await start_agent(extra, store=stores[0])
    events = [envelope(f"r{i:03d}", "hello") for i in range(CONVERSATIONS)]
    await publish(kafka_settings, events)
    await agent_emulator.wait_for(CONVERSATIONS // 5)
    await start_agent(extra, store=stores[1])
    before = len(agent_emulator.replies())
    assert before < CONVERSATIONS
    await agent_emulator.wait_for(CONVERSATIONS, timeout=30, settle=0.5)
    counts = Counter(s.recipient_id for s in agent_emulator.replies())
    assert len(counts) == CONVERSATIONS
    assert set(counts.values()) == {1}, [user for user, n in counts.items() if n > 1]
    # Both replicas answered some, and no event is in both ledgers: partitions really moved.
    answered = [{e["id"] for e in events if await done(store, e["id"])} for store in stores]
    assert answered[0]
    assert answered[1]
    assert not answered[0] & answered[1]
    assert len(answered[0] | answered[1]) == CONVERSATIONS
