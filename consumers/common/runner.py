"""Running a Kafka consumer process: the event loop, signals, offsets and rebalances.

The pieces, used together by each consumer:

- :func:`run_main` runs the process's main coroutine on uvloop when it is installed, with the
  garbage collector's youngest generation collected less often (``GC_YOUNG_THRESHOLD``).
- :func:`stop_on_signals`: the first SIGTERM or SIGINT asks the consumer to stop polling, finish
  the work in hand and commit; a second one cancels the main task (the impatient operator).
- :class:`OffsetTracker` knows, per partition, the lowest offset whose work is not finished:
  records may finish out of order (independent conversations run concurrently), and the group may
  only commit up to the first unfinished one, so a crash replays unfinished work and nothing else.
- :class:`CommitOnRevoke` is the rebalance listener: before partitions move to another replica it
  waits (bounded) for their work in hand, then commits what is finished.
- :func:`poll_loop` fetches batches, hands each record with its :class:`Ticket` to the consumer's
  ``submit`` and commits finished offsets on a timer.
- :func:`poll_batches` is the same loop for consumers whose work is synchronous (analytics): each
  partition's fetched records go to one call, and are finished when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition

from consumers.common.lag import count_records

__all__ = [
    "BatchHandler",
    "CommitOnRevoke",
    "OffsetTracker",
    "PartitionOffsets",
    "Submit",
    "Ticket",
    "commit_finished",
    "poll_batches",
    "poll_loop",
    "run_main",
    "stop_on_signals",
]

log = logging.getLogger(__name__)


# Allocations between collections of the youngest generation (CPython's default: 700). Every
# record makes futures, tasks and dictionaries; at 700 the collector ran so often that it cost the
# agent ~7 % of its instructions per reply (callgrind, bench/README.md). Older generations keep
# their default pace relative to this one.
GC_YOUNG_THRESHOLD = 10_000


def run_main(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run ``main()`` to completion on uvloop if it is installed (measured faster), else asyncio."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - depends on the install
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())


def stop_on_signals(stop: asyncio.Event, task: asyncio.Task[Any] | None = None) -> Callable[[], None]:
    """SIGTERM/SIGINT set ``stop``; a second signal cancels ``task``. Returns a function undoing it."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)

    def handle(signame: str) -> None:
        if not stop.is_set():
            log.info("%s received: finishing the work in hand, then stopping", signame)
            stop.set()
        elif task is not None:
            log.warning("%s received again: stopping now without waiting for work in hand", signame)
            task.cancel()

    for sig in signals:
        loop.add_signal_handler(sig, handle, sig.name)

    def undo() -> None:
        for sig in signals:
            loop.remove_signal_handler(sig)

    return undo


class PartitionOffsets:
    """The records of one partition in hand, in offset order, and which of them are finished."""

    __slots__ = ("_done", "_idle", "_next", "_pending", "_revoked", "_unresolved", "committed", "tp")

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self._pending: deque[int] = deque()
        self._done: set[int] = set()
        self._next: int | None = None
        # Records neither finished nor dropped; the partition is idle when none are left.
        self._unresolved = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.committed: int | None = None
        # Set when the partition moved away: queued work for it is dropped, not done.
        self._revoked = asyncio.Event()

    @property
    def revoked(self) -> bool:
        return self._revoked.is_set()

    def revoke(self) -> None:
        self._revoked.set()

    async def wait_revoked(self) -> None:
        """Returns once the partition moves away (work waiting to retry gives up its wait then)."""
        await self._revoked.wait()

    def add(self, offset: int) -> None:
        self._pending.append(offset)
        self._next = offset + 1
        self._unresolved += 1
        self._idle.clear()

    def finish(self, offset: int) -> None:
        self._done.add(offset)
        while self._pending and self._pending[0] in self._done:
            self._done.discard(self._pending.popleft())
        self._resolved()

    def drop(self, offset: int) -> None:
        """Give up on ``offset`` without finishing it: the commit point never passes it."""
        self._resolved()

    def finished_through(self, offset: int) -> None:
        """Every record up to ``offset`` was handled at once, in order, with none of them in hand."""
        if self._pending:
            raise RuntimeError(f"{self.tp}: records in hand; finish them one by one")
        self._next = offset + 1

    def _resolved(self) -> None:
        self._unresolved -= 1
        if self._unresolved <= 0:
            self._unresolved = 0
            self._idle.set()

    @property
    def in_flight(self) -> int:
        return self._unresolved

    def commit_point(self) -> int | None:
        """The offset to commit: the lowest unfinished one, or one past the last seen."""
        if self._pending:
            return self._pending[0]
        return self._next

    async def wait_idle(self) -> None:
        await self._idle.wait()


@dataclass(frozen=True, slots=True)
class Ticket:
    """One record in hand. Call :meth:`finish` once its work is done (or decided for good), or :meth:`drop`."""

    partition: PartitionOffsets
    offset: int

    @property
    def stale(self) -> bool:
        """The partition moved to another replica: do not start this record's work."""
        return self.partition.revoked

    def finish(self) -> None:
        self.partition.finish(self.offset)

    def drop(self) -> None:
        """Not done and not to be done here (partition revoked, shutdown): keep it uncommitted."""
        self.partition.drop(self.offset)


class OffsetTracker:
    """Offsets in hand per assigned partition; what may be committed."""

    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, PartitionOffsets] = {}
        # Revoked and not (yet) assigned again. aiokafka's assignment() still lists partitions
        # while a rebalance is in progress, so the tracker keeps its own account.
        self._away: set[TopicPartition] = set()

    def owns(self, tp: TopicPartition) -> bool:
        """False for a partition revoked in a rebalance and not assigned back: do not start its records."""
        return tp not in self._away

    def assigned(self, partitions: Iterable[TopicPartition]) -> None:
        self._away.difference_update(partitions)

    def _partition(self, tp: TopicPartition) -> PartitionOffsets:
        part = self._partitions.get(tp)
        if part is None:
            part = self._partitions[tp] = PartitionOffsets(tp)
        return part

    def track(self, tp: TopicPartition, offset: int) -> Ticket:
        part = self._partition(tp)
        part.add(offset)
        return Ticket(part, offset)

    def finished_through(self, tp: TopicPartition, offset: int) -> None:
        """Records of ``tp`` up to ``offset`` were handled synchronously (see :func:`poll_batches`)."""
        self._partition(tp).finished_through(offset)

    @property
    def in_flight(self) -> int:
        return sum(part.in_flight for part in self._partitions.values())

    def to_commit(self, partitions: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Commit points that moved since the last commit, for ``partitions`` (default: all)."""
        if partitions is None:
            chosen = self._partitions
        else:
            chosen = {tp: self._partitions[tp] for tp in partitions if tp in self._partitions}
        result: dict[TopicPartition, int] = {}
        for tp, part in chosen.items():
            point = part.commit_point()
            if point is not None and point != part.committed:
                result[tp] = point
        return result

    def mark_committed(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            part = self._partitions.get(tp)
            if part is not None:
                part.committed = offset

    def revoke(self, partitions: Iterable[TopicPartition]) -> list[PartitionOffsets]:
        """Mark ``partitions`` as moving away; returns their state (still tracked until :meth:`forget`)."""
        revoked = []
        for tp in partitions:
            self._away.add(tp)
            part = self._partitions.get(tp)
            if part is not None:
                part.revoke()
                revoked.append(part)
        return revoked

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._partitions.pop(tp, None)

    async def wait_idle(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        parts = (
            list(self._partitions.values())
            if partitions is None
            else [self._partitions[tp] for tp in partitions if tp in self._partitions]
        )
        for part in parts:
            await part.wait_idle()


async def commit_finished(
    consumer: Any, tracker: OffsetTracker, partitions: Iterable[TopicPartition] | None = None
) -> dict[TopicPartition, int]:
    """Commit each partition's lowest unfinished offset (Kafka's "next offset to read").

    A failed commit is logged and left for the next round: the work is recorded in the ledger,
    so replaying it after a crash costs time, not a duplicate.
    """
    # Only partitions the group still gives us: committing any other fails the whole request.
    assignment = consumer.assignment()
    offsets = {tp: offset for tp, offset in tracker.to_commit(partitions).items() if tp in assignment}
    if not offsets:
        return {}
    try:
        await consumer.commit(offsets)
    except Exception as exc:  # rebalancing or broker trouble: the next round commits again
        log.warning("offset commit failed (%s); retrying on the next round", exc.__class__.__name__)
        log.debug("offset commit failure", exc_info=True)
        return {}
    tracker.mark_committed(offsets)
    return offsets


class CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Before partitions move away: stop starting their queued work, wait for work in hand, commit.

    The wait is bounded by ``drain_timeout``: work still running afterwards may be replayed by the
    partition's next owner, which the consumer's idempotency ledger turns into a no-op.
    """

    def __init__(
        self,
        tracker: OffsetTracker,
        drain_timeout: float = 10.0,
        on_assigned: Callable[[list[TopicPartition]], None] | None = None,
        on_revoked: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.tracker = tracker
        self.drain_timeout = drain_timeout
        self.consumer: Any = None  # set once the consumer exists (it takes the listener at subscribe)
        self.on_assigned = on_assigned
        # After the drain and the commit: whatever the consumer still holds for them goes (leases).
        self.on_revoked = on_revoked

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        revoked = list(revoked)
        if not revoked:
            return
        self.tracker.revoke(revoked)
        started = time.monotonic()
        try:
            await asyncio.wait_for(self.tracker.wait_idle(revoked), self.drain_timeout)
        except TimeoutError:
            log.warning(
                "partitions revoked with work still running after %.1f s; their next owner replays it",
                self.drain_timeout,
            )
        if self.consumer is not None:
            committed = await commit_finished(self.consumer, self.tracker, revoked)
            log.info(
                "partitions revoked: %d, committed %d, drained in %.2f s",
                len(revoked),
                len(committed),
                time.monotonic() - started,
            )
        if self.on_revoked is not None:
            try:
                await self.on_revoked()
            except Exception:  # the consumer's cleanup must not break the rebalance
                log.warning("cleanup after revoking partitions failed", exc_info=True)
        self.tracker.forget(revoked)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        assigned = list(assigned)
        self.tracker.assigned(assigned)
        log.info("partitions assigned: %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in assigned) or "none")
        if self.on_assigned is not None:
            self.on_assigned(assigned)


Submit = Callable[[Any, Ticket], Awaitable[None]]


async def poll_loop(
    consumer: Any,
    tracker: OffsetTracker,
    submit: Submit,
    stop: asyncio.Event,
    *,
    group: str,
    max_records: int,
    poll_timeout_ms: int = 500,
    commit_interval: float = 1.0,
) -> None:
    """Fetch and hand out records until ``stop`` is set; commit finished offsets every ``commit_interval``.

    ``submit(record, ticket)`` may wait (that is the back-pressure: no fetch while it waits) and
    must arrange for ``ticket.finish()`` once the record's work is done. The caller drains the
    work in hand and commits a last time after this returns.
    """
    fetched = _fetched(consumer, tracker, stop, group, max_records, poll_timeout_ms, commit_interval)
    async with contextlib.aclosing(fetched):
        async for tp, records in fetched:
            for record in records:
                # Records not handed out are not tracked, so their offsets are not committed. A
                # partition revoked while submit() waited belongs to another replica now.
                if stop.is_set() or not tracker.owns(tp):
                    break
                await submit(record, tracker.track(tp, record.offset))


# Handles one partition's fetched records, in offset order, synchronously.
BatchHandler = Callable[[TopicPartition, list[Any]], None]


async def poll_batches(
    consumer: Any,
    tracker: OffsetTracker,
    handle: BatchHandler,
    stop: asyncio.Event,
    *,
    group: str,
    max_records: int,
    poll_timeout_ms: int = 500,
    commit_interval: float = 1.0,
) -> None:
    """:func:`poll_loop` for synchronous work: ``handle(tp, records)`` once per partition and fetch.

    The records are finished when ``handle`` returns (it must deal with a failing record itself).
    Nothing can interleave with a synchronous call (a signal, a rebalance), so this skips the
    per-record tickets and checks that :func:`poll_loop` needs for work that waits.
    """
    fetched = _fetched(consumer, tracker, stop, group, max_records, poll_timeout_ms, commit_interval)
    async with contextlib.aclosing(fetched):
        async for tp, records in fetched:
            # A partition revoked while the fetch waited belongs to another replica now.
            if records and tracker.owns(tp):
                handle(tp, records)
                tracker.finished_through(tp, records[-1].offset)


async def _fetched(
    consumer: Any,
    tracker: OffsetTracker,
    stop: asyncio.Event,
    group: str,
    max_records: int,
    poll_timeout_ms: int,
    commit_interval: float,
) -> AsyncGenerator[tuple[TopicPartition, list[Any]], None]:
    """Each partition's records of each fetch until ``stop`` is set, counted; between fetches,
    the finished offsets are committed every ``commit_interval`` seconds."""
    last_commit = time.monotonic()
    while not stop.is_set():
        batch = await consumer.getmany(timeout_ms=poll_timeout_ms, max_records=max_records)
        for tp, records in batch.items():
            count_records(group, tp.topic, len(records))
            yield tp, records
        if time.monotonic() - last_commit >= commit_interval:
            await commit_finished(consumer, tracker)
            last_commit = time.monotonic()


async def drain(tracker: OffsetTracker, timeout: float) -> bool:
    """Wait up to ``timeout`` for every record in hand to finish; False when some did not."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(tracker.wait_idle(), timeout)
        return True
    return False
