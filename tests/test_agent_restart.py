"""Stopping or crashing the consumer in the middle of a batch never leaves a conversation unanswered,
and never answers one twice outside the documented window (a crash with a send in flight, and no
echo of it: these tests deliver none)."""

from __future__ import annotations

import signal
from collections import Counter

import pytest
import redis.asyncio as aioredis

from igw.config import KafkaSettings
from igw_tools.graph_emulator import InjectedFailure
from tests.plugins.agent import REDIS_URL, Emulator, SpawnAgent, StartAgent, envelope, publish

pytestmark = pytest.mark.kafka

CONVERSATIONS = 200
# Slow every send a little, so that stopping "in the middle" really lands in the middle.
# A small in-flight bound: a graceful stop finishes what is in hand, which must be less than all.
SLOW = {"IGW_AGENT_CONCURRENCY": "8", "IGW_AGENT_MAX_IN_FLIGHT": "16"}


def crash_env(redis_prefix: str) -> dict[str, str]:
    """A shared Redis ledger with a short lease, so the restarted consumer takes over the crashed one's claims.

    No echoes reach the agent here: a part left in flight is sent again after a short echo wait.
    """
    return {
        **SLOW,
        "REDIS_URL": REDIS_URL,
        "IGW_AGENT_REDIS_PREFIX": redis_prefix,
        "IGW_LEDGER_LEASE_SECONDS": "2",
        "IGW_AGENT_STORE_TIMEOUT_SECONDS": "0.5",
        "IGW_AGENT_TIMEOUT_SECONDS": "0.5",
        "IGW_AGENT_ECHO_WAIT_SECONDS": "0.5",
    }


def slow_sends(emulator: Emulator, seconds: float = 0.04) -> None:
    emulator.state.inject(InjectedFailure(count=10 * CONVERSATIONS, delay_seconds=seconds))


def per_user(emulator: Emulator) -> Counter[str]:
    return Counter(sent.recipient_id for sent in emulator.replies())


async def unfinished_leases(prefix: str) -> int:
    """Ledger entries left with a part in flight (``sending``): the only events that may be answered twice."""
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        count = 0
        async for key in client.scan_iter(match=f"{prefix}ledger:*", count=1000):
            if await client.hget(key, "s") == b"sending":
                count += 1
        return count
    finally:
        await client.aclose()


async def test_sigterm_mid_batch_then_restart_answers_each_conversation_once(
    kafka_settings: KafkaSettings, agent_emulator: Emulator, spawn_agent: SpawnAgent
) -> None:
    """SIGTERM in the middle of 1,000 conversations, then a restart with an empty in-process ledger: 1,000 replies."""
    conversations = 1000  # the agent issue's own figure
    slow_sends(agent_emulator)
    first = await spawn_agent(SLOW)
    await publish(kafka_settings, [envelope(f"u{i:04d}", "hello") for i in range(conversations)])
    await agent_emulator.wait_for(conversations // 4)
    first.process.send_signal(signal.SIGTERM)
    assert await first.wait() == 0, first.log()
    stopped_at = len(agent_emulator.replies())
    assert stopped_at < conversations, "the first process finished everything: the test did not stop mid-batch"
    await spawn_agent(SLOW)
    await agent_emulator.wait_for(conversations, timeout=60, settle=0.5)
    counts = per_user(agent_emulator)
    assert len(counts) == conversations
    assert set(counts.values()) == {1}, [user for user, n in counts.items() if n > 1]


@pytest.mark.redis
async def test_sigkill_mid_batch_then_restart_with_redis_ledger(
    kafka_settings: KafkaSettings, agent_emulator: Emulator, spawn_agent: SpawnAgent, redis_prefix: str
) -> None:
    """After SIGKILL every conversation is answered, twice only where the crash left a send in flight."""
    extra = crash_env(redis_prefix)
    slow_sends(agent_emulator)
    first = await spawn_agent(extra)
    await publish(kafka_settings, [envelope(f"k{i:03d}", "hello") for i in range(CONVERSATIONS)])
    await agent_emulator.wait_for(CONVERSATIONS // 4)
    first.process.kill()
    await first.wait()
    at_crash = len(agent_emulator.replies())
    leases = await unfinished_leases(redis_prefix)
    assert at_crash < CONVERSATIONS
    await spawn_agent(extra)
    await agent_emulator.wait_for(CONVERSATIONS, timeout=30, settle=1.5)
    counts = per_user(agent_emulator)
    assert len(counts) == CONVERSATIONS
    twice = [user for user, n in counts.items() if n > 1]
    assert max(counts.values()) <= 2
    assert len(twice) <= leases, (twice, leases)


@pytest.mark.redis
async def test_task_crash_mid_batch_then_restart_with_redis_ledger(
    kafka_settings: KafkaSettings, agent_emulator: Emulator, start_agent: StartAgent, redis_prefix: str
) -> None:
    """A cancelled consumer task and a new one answer each conversation; duplicates are bounded by leases."""
    extra = crash_env(redis_prefix)
    slow_sends(agent_emulator)
    first = await start_agent(extra)
    await publish(kafka_settings, [envelope(f"t{i:03d}", "hello") for i in range(CONVERSATIONS)])
    await agent_emulator.wait_for(CONVERSATIONS // 3)
    await first.crash()
    leases = await unfinished_leases(redis_prefix)
    assert len(agent_emulator.replies()) < CONVERSATIONS
    await start_agent(extra)
    await agent_emulator.wait_for(CONVERSATIONS, timeout=30, settle=1.5)
    counts = per_user(agent_emulator)
    assert len(counts) == CONVERSATIONS
    assert len([user for user, n in counts.items() if n > 1]) <= leases
