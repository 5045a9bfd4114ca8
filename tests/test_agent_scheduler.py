"""The conversation scheduler: order within a conversation, bounded concurrency, waits and errors."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka import TopicPartition

from consumers.agent_replies.scheduler import ConversationScheduler, GiveUp
from consumers.common.runner import OffsetTracker, Ticket

TP = TopicPartition("t.messages", 0)


@dataclass
class FakeJob:
    key: str
    n: int
    ticket: Ticket


def ticket_of(job: FakeJob) -> Ticket:
    return job.ticket


async def test_retry_delay_keeps_order_and_frees_the_slot() -> None:
    """A job asking to be retried later holds back its own conversation only, not the single concurrency slot."""
    done: list[tuple[str, int]] = []
    tries: dict[tuple[str, int], int] = {}

    async def handle(job: FakeJob) -> float | None:
        tries[(job.key, job.n)] = tries.get((job.key, job.n), 0) + 1
        if job.key == "a" and job.n == 0 and tries[(job.key, job.n)] < 3:
            return 0.1
        done.append((job.key, job.n))
        return None

    tracker = OffsetTracker()
    scheduler: ConversationScheduler[FakeJob] = ConversationScheduler(
        handle, ticket_of, concurrency=1, max_in_flight=100
    )
    for offset, (key, n) in enumerate([("a", 0), ("a", 1), ("b", 0), ("b", 1)]):
        await scheduler.submit(key, FakeJob(key, n, tracker.track(TP, offset)))
    await asyncio.wait_for(tracker.wait_idle(), 5)
    assert [d for d in done if d[0] == "a"] == [("a", 0), ("a", 1)]
    assert done.index(("b", 1)) < done.index(("a", 0))
    assert tracker.to_commit() == {TP: 4}
    assert scheduler.in_flight == 0


async def test_a_handler_that_raises_leaves_its_record_uncommitted() -> None:
    """The scheduler retries nothing itself: a handler that raises (or gives up) leaves its record uncommitted."""
    calls = {"broken": 0, "gave_up": 0, "fine": 0}

    async def handle(job: FakeJob) -> float | None:
        calls[job.key] += 1
        if job.key == "broken":
            raise ConnectionError("a bug")
        if job.key == "gave_up":
            raise GiveUp("cannot record it")
        return None

    tracker = OffsetTracker()
    scheduler: ConversationScheduler[FakeJob] = ConversationScheduler(
        handle, ticket_of, concurrency=4, max_in_flight=10
    )
    await scheduler.submit("broken", FakeJob("broken", 0, tracker.track(TP, 0)))
    await scheduler.submit("gave_up", FakeJob("gave_up", 0, tracker.track(TP, 1)))
    await scheduler.submit("fine", FakeJob("fine", 0, tracker.track(TP, 2)))
    await asyncio.wait_for(tracker.wait_idle(), 5)
    assert calls == {"broken": 1, "gave_up": 1, "fine": 1}
    assert tracker.to_commit() == {TP: 0}


async def test_revoke_interrupts_a_retry_wait() -> None:
    """A job waiting to retry gives up at once when its partition is revoked, so the rebalance is not held up."""

    async def handle(job: FakeJob) -> float | None:
        return 60.0  # always "try again in a minute"

    tracker = OffsetTracker()
    scheduler: ConversationScheduler[FakeJob] = ConversationScheduler(
        handle, ticket_of, concurrency=1, max_in_flight=10
    )
    await scheduler.submit("a", FakeJob("a", 0, tracker.track(TP, 0)))
    await asyncio.sleep(0.05)
    tracker.revoke([TP])
    await asyncio.wait_for(tracker.wait_idle([TP]), 1.0)
    assert tracker.to_commit([TP]) == {TP: 0}
    assert scheduler.in_flight == 0
