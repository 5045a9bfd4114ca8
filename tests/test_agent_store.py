"""The idempotency ledger, pause state and history behave the same in Redis and in process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from consumers.agent_replies.model import Turn
from consumers.agent_replies.store import ClaimState, MemoryStore, RedisStore, Store
from tests.plugins.agent import REDIS_URL


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    made: Store = (
        MemoryStore()
        if request.param == "memory"
        else RedisStore.from_url(REDIS_URL, request.getfixturevalue("redis_prefix"))
    )
    yield made
    await made.close()


async def test_one_claim_wins_and_done_is_final(store: Store) -> None:
    """Of two workers only one claims an event; after complete, both see DONE with Meta's message ids."""
    first, second = await asyncio.gather(store.claim("ev1", "A", 5), store.claim("ev1", "B", 5))
    assert sorted([first.state, second.state]) == sorted([ClaimState.CLAIMED, ClaimState.HELD])
    held = first if first.state is ClaimState.HELD else second
    assert 0 < held.retry_after <= 5
    await store.complete("ev1", "sent", ("m_1", "m_2"), 60)
    for owner in ("A", "B", "C"):
        claim = await store.claim("ev1", owner, 5)
        assert claim.state is ClaimState.DONE
        assert claim.message_ids == ("m_1", "m_2")


async def test_lease_expires_and_release_only_by_owner(store: Store) -> None:
    """A crashed worker's lease runs out so another can claim; release by a non-owner changes nothing."""
    assert (await store.claim("ev2", "A", 0.2)).state is ClaimState.CLAIMED
    await store.release("ev2", "B")
    assert (await store.claim("ev2", "B", 0.2)).state is ClaimState.HELD
    await asyncio.sleep(0.3)
    assert (await store.claim("ev2", "B", 5)).state is ClaimState.CLAIMED
    await store.release("ev2", "B")
    assert (await store.claim("ev2", "C", 5)).state is ClaimState.CLAIMED


async def test_pauses_and_our_message_ids(store: Store) -> None:
    """Conversation and account pauses end at their time, never shorten, and are counted; sent mids are ours."""
    now = time.time()
    await store.pause_conversation("c1", now + 60)
    await store.pause_conversation("c1", now + 1)  # a shorter pause does not shorten the longer one
    await store.pause_conversation("c2", now - 1)  # already over
    until = await store.conversation_paused_until("c1")
    assert until is not None
    assert until == pytest.approx(now + 60, abs=0.01)
    assert await store.conversation_paused_until("c2") is None
    assert await store.paused_conversations() == 1
    await store.pause_account("acct", now + 30)
    assert await store.account_paused_until("acct") is not None
    account_until, conversation_until = await store.pauses("acct", "c1")
    assert account_until == pytest.approx(now + 30, abs=0.01)
    assert conversation_until == pytest.approx(now + 60, abs=0.01)
    assert await store.pauses("other", "c2") == (None, None)
    assert await store.paused_accounts() == 1
    await store.remember_sent(("m_ours",), 60)
    assert await store.is_ours("m_ours")
    assert not await store.is_ours("m_theirs")


async def test_history_keeps_the_last_turns(store: Store) -> None:
    """History keeps at most ``keep`` turns, oldest dropped first, and returns the last ``limit``."""
    for i in range(4):
        await store.append_history("c", (Turn("user", f"q{i}"), Turn("assistant", f"a{i}")), 5, 60)
    turns = await store.history("c", 10)
    assert [t.text for t in turns] == ["a1", "q2", "a2", "q3", "a3"]
    assert [t.role for t in await store.history("c", 2)] == ["user", "assistant"]
    assert await store.history("other", 10) == []
