"""The offset tracker commits each partition's lowest unfinished offset, whatever order work finishes in."""

from __future__ import annotations

import asyncio
import gc

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from consumers.common.metrics import ConsumerMetrics
from consumers.common.runner import GC_YOUNG_THRESHOLD, OffsetTracker, poll_batches, run_main

TP = TopicPartition("t.messages", 0)
TP2 = TopicPartition("t.messages", 1)


async def test_commit_point_is_lowest_unfinished_offset() -> None:
    """Finishing later offsets first does not move the commit point past an unfinished one."""
    tracker = OffsetTracker()
    tickets = [tracker.track(TP, offset) for offset in range(10, 15)]
    tickets[3].finish()
    tickets[1].finish()
    assert tracker.to_commit() == {TP: 10}
    tickets[0].finish()
    assert tracker.to_commit() == {TP: 12}
    tickets[2].finish()
    assert tracker.to_commit() == {TP: 14}
    tickets[4].finish()
    assert tracker.to_commit() == {TP: 15}
    assert tracker.in_flight == 0


async def test_partitions_are_independent_and_committed_once() -> None:
    """A slow record on one partition does not hold back another partition; unchanged points are not recommitted."""
    tracker = OffsetTracker()
    slow = tracker.track(TP, 0)
    fast = tracker.track(TP2, 7)
    fast.finish()
    offsets = tracker.to_commit()
    assert offsets == {TP: 0, TP2: 8}
    tracker.mark_committed(offsets)
    assert tracker.to_commit() == {}
    slow.finish()
    assert tracker.to_commit() == {TP: 1}


async def test_revoke_marks_tickets_stale_and_waits_for_work() -> None:
    """Revoked partitions make their queued tickets stale, and wait_idle returns once their work finished."""
    tracker = OffsetTracker()
    ticket = tracker.track(TP, 3)
    other = tracker.track(TP2, 3)
    tracker.revoke([TP])
    assert ticket.stale
    assert not other.stale
    waiter = asyncio.create_task(tracker.wait_idle([TP]))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    ticket.finish()
    await asyncio.wait_for(waiter, 1.0)
    assert tracker.to_commit([TP]) == {TP: 4}
    tracker.forget([TP])
    assert tracker.to_commit() == {TP2: 3}


async def test_dropped_record_holds_the_commit_point_but_not_idleness() -> None:
    """A dropped record counts as resolved for draining, yet the commit point never passes it."""
    tracker = OffsetTracker()
    first = tracker.track(TP, 0)
    second = tracker.track(TP, 1)
    first.drop()
    second.finish()
    assert tracker.in_flight == 0
    await asyncio.wait_for(tracker.wait_idle(), 1.0)
    assert tracker.to_commit() == {TP: 0}


async def test_revoked_partition_is_not_owned_until_assigned_again() -> None:
    """After a revoke the tracker refuses the partition's records until the group assigns it back."""
    tracker = OffsetTracker()
    tracker.track(TP, 0).finish()
    tracker.revoke([TP])
    tracker.forget([TP])
    assert not tracker.owns(TP)
    assert tracker.owns(TP2)
    tracker.assigned([TP])
    assert tracker.owns(TP)


class _Record:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class _FakeConsumer:
    """Hands out prepared batches, then sets ``stop``; records what was committed."""

    def __init__(self, batches: list[dict[TopicPartition, list[_Record]]], stop: asyncio.Event) -> None:
        self.batches = batches
        self.stop = stop
        self.committed: list[dict[TopicPartition, int]] = []

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[_Record]]:
        if not self.batches:
            self.stop.set()
            return {}
        return self.batches.pop(0)

    def assignment(self) -> set[TopicPartition]:
        return {TP, TP2}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.committed.append(dict(offsets))


async def test_poll_batches_hands_each_partition_batch_over_and_commits_past_it() -> None:
    """poll_batches gives each partition's records to one call in order; the commit point moves past them."""
    stop = asyncio.Event()
    tracker = OffsetTracker()
    consumer = _FakeConsumer(
        [{TP: [_Record(0), _Record(1)], TP2: [_Record(5)]}, {TP: [_Record(2)]}, {TP2: [_Record(6), _Record(7)]}],
        stop,
    )
    seen: list[tuple[int, list[int]]] = []
    metrics = ConsumerMetrics(CollectorRegistry(), "g")

    def handle(tp: TopicPartition, records: list[_Record]) -> None:
        seen.append((tp.partition, [r.offset for r in records]))

    await poll_batches(
        consumer,
        tracker,
        handle,
        stop,
        metrics=metrics,
        max_records=10,
        commit_interval=0,
    )
    assert seen == [(0, [0, 1]), (1, [5]), (0, [2]), (1, [6, 7])]
    assert tracker.in_flight == 0
    assert consumer.committed[-1] == {TP2: 8}
    assert tracker.to_commit() == {}
    tracker.revoke([TP])
    consumer.batches = [{TP: [_Record(3)]}]
    stop.clear()
    await poll_batches(
        consumer,
        tracker,
        handle,
        stop,
        metrics=metrics,
        max_records=10,
        commit_interval=0,
    )
    assert seen[-1] == (1, [6, 7]), "records of a revoked partition are left to its next owner"


def test_run_main_collects_young_garbage_less_often() -> None:
    """run_main runs the coroutine with the youngest generation's threshold raised, the older ones kept."""
    saved = gc.get_threshold()
    seen: list[tuple[int, int, int]] = []

    async def main() -> int:
        seen.append(gc.get_threshold())
        return 7

    try:
        assert run_main(main) == 7
    finally:
        gc.set_threshold(*saved)
    assert seen == [(GC_YOUNG_THRESHOLD, saved[1], saved[2])]
