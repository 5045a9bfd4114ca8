"""The reply ledger, pause state and history behave the same in Redis and in process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from consumers.agent_replies.ledger import Answer, Entry, Step, text_fingerprint
from consumers.agent_replies.model import Turn
from consumers.agent_replies.redisstore import RedisStore
from consumers.agent_replies.store import BeginKind, MemoryStore, SaveResult, Store, Witnessed, pending_member
from consumers.send_api.model import QuickReply
from tests.plugins.agent import REDIS_URL

ANSWER = Answer(("Hello!", "We open at 8."), (QuickReply("Book", "BOOK"),), handover=False)
TTL = 60.0


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    made: Store = (
        MemoryStore()
        if request.param == "memory"
        else RedisStore.from_url(REDIS_URL, request.getfixturevalue("redis_prefix"))
    )
    yield made
    await made.close()


async def begin(store: Store, event_id: str, owner: str, lease: float = 5.0) -> BeginKind:
    result = await store.begin(event_id, owner, lease=lease, ttl=TTL, account_id="acct", conversation_id="conv")
    return result.kind


async def test_one_claim_wins_and_done_is_final(store: Store) -> None:
    """Of two workers only one claims an event; once finished, everyone sees DONE with Meta's message ids."""
    first, second = await asyncio.gather(
        store.begin("ev1", "A", lease=5, ttl=TTL, account_id="acct", conversation_id="c"),
        store.begin("ev1", "B", lease=5, ttl=TTL, account_id="acct", conversation_id="c"),
    )
    assert sorted([first.kind, second.kind]) == sorted([BeginKind.CLAIMED, BeginKind.HELD])
    held = first if first.kind is BeginKind.HELD else second
    assert 0 < held.retry_after <= 5
    await store.finish("ev1", Entry(Step.DONE, ANSWER, ("m_1", "m_2"), outcome="sent"), ttl=TTL)
    for owner in ("A", "B", "C"):
        result = await store.begin("ev1", owner, lease=5, ttl=TTL, account_id="acct", conversation_id="c")
        assert result.kind is BeginKind.DONE
        assert result.entry is not None
        assert result.entry.mids == ("m_1", "m_2")
        assert result.entry.outcome == "sent"


async def test_a_dead_workers_reply_is_resumed_at_its_step(store: Store) -> None:
    """When A's lease runs out mid-send, B resumes with A's answer and the part in flight; A can no longer write."""
    assert await begin(store, "ev2", "A", lease=0.3) is BeginKind.CLAIMED
    saved = await store.save("ev2", "A", Entry(Step.SENDING, ANSWER, ("m_1",)), lease=0.3, ttl=TTL)
    assert saved.result is SaveResult.OK
    assert await begin(store, "ev2", "B") is BeginKind.HELD
    await asyncio.sleep(0.4)
    resumed = await store.begin("ev2", "B", lease=5, ttl=TTL, account_id="acct", conversation_id="conv")
    assert resumed.kind is BeginKind.RESUMED
    entry = resumed.entry
    assert entry is not None
    assert (entry.step, entry.answer, entry.mids, entry.cursor) == (Step.SENDING, ANSWER, ("m_1",), 1)
    assert entry.intent_at == pytest.approx(saved.now, abs=0.01)
    late = await store.save("ev2", "A", Entry(Step.SENDING, ANSWER, ("m_1",)), lease=5, ttl=TTL)
    assert late.result is SaveResult.LOST


async def test_renew_keeps_leases_and_reports_lost_ones(store: Store) -> None:
    """Renewing keeps a short lease alive; a lease taken by another worker is reported lost."""
    assert await begin(store, "ev3", "A", lease=0.3) is BeginKind.CLAIMED
    assert await begin(store, "ev4", "A", lease=0.3) is BeginKind.CLAIMED
    for _ in range(3):
        await asyncio.sleep(0.15)
        assert await store.renew("A", ["ev3"], 0.3) == set()
    assert await begin(store, "ev3", "B") is BeginKind.HELD
    assert await begin(store, "ev4", "B") is BeginKind.RESUMED  # not renewed: ran out
    assert await store.renew("A", ["ev3", "ev4", "unknown"], 0.3) == {"ev4"}


async def test_release_lets_the_next_worker_take_over_at_once(store: Store) -> None:
    """A released lease (shutdown, rebalance) is taken over without waiting; release by a non-owner changes nothing."""
    assert await begin(store, "ev5", "A", lease=30) is BeginKind.CLAIMED
    await store.release("B", ["ev5"])
    assert await begin(store, "ev5", "B") is BeginKind.HELD
    await store.release("A", ["ev5"])
    assert await begin(store, "ev5", "B") is BeginKind.RESUMED


async def test_a_messenger_echo_confirms_the_part_in_flight(store: Store) -> None:
    """An echo carrying the reply's token marks its part as arrived: a second send of it is refused as ECHOED."""
    await begin(store, "ev6", "A")
    await store.save("ev6", "A", Entry(Step.SENDING, ANSWER, ()), lease=5, ttl=TTL)
    assert await store.witness(
        "acct", "user", "m_echo", token=("ev6", 0), fingerprint=None, timestamp=time.time(), ttl=TTL
    )
    entry, _ = await store.peek("ev6")
    assert entry is not None
    assert entry.echoed == "m_echo"
    again = await store.save("ev6", "A", Entry(Step.SENDING, ANSWER, ()), lease=5, ttl=TTL)
    assert (again.result, again.echoed) == (SaveResult.ECHOED, "m_echo")


async def test_an_instagram_echo_is_matched_by_recipient_and_text(store: Store) -> None:
    """On Instagram an echo is matched by text to the oldest part being sent; a finished reply's match is late."""
    index = ("acct", "user")
    fingerprint = text_fingerprint(ANSWER.parts[0])
    for event_id in ("ev7", "ev8"):
        await begin(store, event_id, "A")
        member = pending_member(event_id, 0, fingerprint)
        await store.save(event_id, "A", Entry(Step.SENDING, ANSWER, ()), lease=5, ttl=TTL, index=index, add=member)
    # ev7's part came back with its id and the reply is done: the next echo with that text is ev8's.
    await store.finish("ev7", Entry(Step.DONE, ANSWER, ("m_7",), outcome="sent"), ttl=TTL)
    now = time.time()

    async def witness(mid: str, text_print: str) -> Witnessed:
        return await store.witness("acct", "user", mid, token=None, fingerprint=text_print, timestamp=now, ttl=TTL)

    assert await witness("m_person", text_fingerprint("something a person typed")) is Witnessed.NOT_OURS
    assert await witness("m_7", fingerprint) is Witnessed.OURS  # ev7's own id
    assert await witness("m_8", fingerprint) is Witnessed.OURS
    entry, _ = await store.peek("ev8")
    assert entry is not None
    assert entry.echoed == "m_8"
    # Nothing left being sent with that text and both replies done with other ids: this one is late.
    assert await witness("m_x", fingerprint) is Witnessed.LATE


async def test_pauses_stop_new_replies_not_replies_in_flight(store: Store) -> None:
    """A paused conversation or account stops a fresh claim, but a reply already sending is resumed all the same."""
    now = time.time()
    assert await begin(store, "ev9", "A", lease=0.1) is BeginKind.CLAIMED
    await store.save("ev9", "A", Entry(Step.SENDING, ANSWER, ()), lease=0.1, ttl=TTL)
    await store.pause_conversation("conv", now + 60)
    result = await store.begin("ev10", "A", lease=5, ttl=TTL, account_id="acct", conversation_id="conv")
    assert (result.kind, result.conversation_paused, result.account_paused) == (BeginKind.PAUSED, True, False)
    await asyncio.sleep(0.15)
    assert await begin(store, "ev9", "B") is BeginKind.RESUMED
    await store.pause_account("acct2", now + 60)
    result = await store.begin("ev11", "A", lease=5, ttl=TTL, account_id="acct2", conversation_id="other")
    assert (result.kind, result.account_paused) == (BeginKind.PAUSED, True)


async def test_pause_times_and_counts(store: Store) -> None:
    """Conversation and account pauses end at their time, never shorten, and are counted."""
    now = time.time()
    await store.pause_conversation("c1", now + 60)
    await store.pause_conversation("c1", now + 1)  # a shorter pause does not shorten the longer one
    await store.pause_conversation("c2", now - 1)  # already over
    until = await store.conversation_paused_until("c1")
    assert until == pytest.approx(now + 60, abs=0.01)
    assert await store.conversation_paused_until("c2") is None
    assert await store.paused_conversations() == 1
    await store.pause_account("acct", now + 30)
    assert await store.account_paused_until("acct") == pytest.approx(now + 30, abs=0.01)
    assert await store.paused_accounts() == 1


async def test_history_keeps_the_last_turns(store: Store) -> None:
    """History keeps at most ``keep`` turns, oldest dropped first, and returns the last ``limit``."""
    for i in range(4):
        await store.append_history("c", (Turn("user", f"q{i}"), Turn("assistant", f"a{i}")), 5, 60)
    turns = await store.history("c", 10)
    assert [t.text for t in turns] == ["a1", "q2", "a2", "q3", "a3"]
    assert [t.role for t in await store.history("c", 2)] == ["user", "assistant"]
    assert await store.history("other", 10) == []
