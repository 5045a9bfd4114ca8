"""Running a Kafka consumer process: the event loop, signals, offsets and rebalances.

The pieces, used together by each consumer:

- :func:`run_main` runs the process's main coroutine as every igw process runs (``igw.runtime``):
  uvloop when installed, garbage collections rarer.
- :func:`run_consumer` runs a consumer's main coroutine with :class:`StopSignals`: the first SIGTERM
  or SIGINT asks the consumer to stop polling, finish the work in hand and commit; a second one
  cancels the main task (the impatient operator). Before the consumer has joined its group there
  is no work in hand: the first signal cancels start-up at once.
- :func:`stop_consumer` closes the Kafka consumer within a bound, whatever the group or broker do.
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
import enum
import logging
import signal
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition

from consumers.common.metrics import ConsumerMetrics
from igw.runtime import collect_rarely, run

__all__ = [
    "BatchHandler",
    "CommitOnRevoke",
    "OffsetTracker",
    "PartitionOffsets",
    "StopSignals",
    "Stopping",
    "Submit",
    "Ticket",
    "commit_finished",
    "poll_batches",
    "poll_loop",
    "run_consumer",
    "run_main",
    "stop_consumer",
]

log = logging.getLogger(__name__)


def run_main(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run ``main()`` to completion; what start-up imported is frozen out of the collector's view first."""
    collect_rarely()
    return run(main())


class Stopping(enum.Enum):
    """Where a consumer process is in stopping; :class:`StopSignals` moves it on each signal.

    ::

        RUNNING ──signal, group not joined yet──▶ START_CANCELLED   main task cancelled; exit 0
           │
           └──signal, joined──▶ DRAINING ──signal──▶ HALTED         stop set; then task cancelled; exit 1
    """

    RUNNING = "running"
    START_CANCELLED = "start_cancelled"  # start-up (topics, connecting, the group join) abandoned: nothing in hand
    DRAINING = "draining"  # no new work; the work in hand finishes and is committed
    HALTED = "halted"  # a second signal: work in hand is left uncommitted, to be replayed


class StopSignals:
    """What SIGTERM and SIGINT do to a consumer process, by phase (:class:`Stopping`).

    Until ``started`` is set (the consumer joined its group and got its partitions) there is no
    work in hand, and start-up can take seconds (a group join waits on the broker; with the broker
    gone, for ever): the first signal cancels ``task`` at once. Afterwards it sets ``stop`` so the
    work in hand finishes, and a second one cancels ``task`` (the impatient operator).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, stop: asyncio.Event, task: asyncio.Task[Any], started: asyncio.Event) -> None:
        self.stop = stop
        self.task = task
        self.started = started
        self.state = Stopping.RUNNING

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self.SIGNALS:
            loop.add_signal_handler(sig, self.handle, sig.name)

    def uninstall(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self.SIGNALS:
            loop.remove_signal_handler(sig)

    def handle(self, signame: str) -> None:
        if self.state is Stopping.RUNNING and not self.started.is_set():
            log.info("%s received during start-up: stopping now", signame)
            self.state = Stopping.START_CANCELLED
            self.stop.set()
            self.task.cancel()
        elif self.state is Stopping.RUNNING:
            log.info("%s received: finishing the work in hand, then stopping", signame)
            self.state = Stopping.DRAINING
            self.stop.set()
        elif self.state is Stopping.DRAINING:
            log.warning("%s received again: stopping now without waiting for work in hand", signame)
            self.state = Stopping.HALTED
            self.task.cancel()

    def exit_status(self) -> int:
        """The process's exit status once its main task was cancelled by a signal."""
        if self.state is Stopping.START_CANCELLED:
            log.info("stopped during start-up")
            return 0
        # A second signal: the events in hand stay uncommitted and are replayed on the next start.
        log.warning("stopped before the work in hand finished")
        return 1


def run_consumer(main: Callable[[asyncio.Event, asyncio.Event], Coroutine[Any, Any, int]]) -> int:
    """Run a consumer's ``main(stop, started)`` with :class:`StopSignals`; returns the exit status."""
    signals: StopSignals | None = None

    async def guarded() -> int:
        nonlocal signals
        task = asyncio.current_task()
        assert task is not None
        signals = StopSignals(asyncio.Event(), task, asyncio.Event())
        signals.install()
        try:
            return await main(signals.stop, signals.started)
        finally:
            signals.uninstall()

    try:
        return run_main(guarded)
    except asyncio.CancelledError:
        if signals is None:  # pragma: no cover - cancelled before main began
            raise
        return signals.exit_status()


async def stop_consumer(consumer: Any, timeout: float = 3.0) -> None:
    """``consumer.stop()``, waiting at most ``timeout`` seconds.

    aiokafka's ``stop()`` lets a group join in progress finish first (a broker holds a join for up
    to the rebalance timeout; Tansu for half the session timeout) and then sends LeaveGroup, which
    waits out the request timeout when the broker is gone. A stopping process must not sit out its
    orchestrator's grace period for either: past ``timeout``, it leaves without them (the broker
    drops the member after its session timeout).
    """
    stopping = asyncio.ensure_future(consumer.stop())
    done, _ = await asyncio.wait({stopping}, timeout=timeout)
    if done:
        stopping.result()
        return
    log.warning("the Kafka consumer did not close within %.0f s (a group join, or the broker gone); leaving", timeout)
    stopping.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await stopping


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
    metrics: ConsumerMetrics,
    max_records: int,
    poll_timeout_ms: int = 500,
    commit_interval: float = 1.0,
) -> None:
    """Fetch and hand out records until ``stop`` is set; commit finished offsets every ``commit_interval``.

    ``submit(record, ticket)`` may wait (that is the back-pressure: no fetch while it waits) and
    must arrange for ``ticket.finish()`` once the record's work is done. The caller drains the
    work in hand and commits a last time after this returns.
    """
    fetched = _fetched(consumer, tracker, stop, metrics, max_records, poll_timeout_ms, commit_interval)
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
    metrics: ConsumerMetrics,
    max_records: int,
    poll_timeout_ms: int = 500,
    commit_interval: float = 1.0,
    prepare: Callable[[list[Any]], Awaitable[None]] | None = None,
) -> None:
    """:func:`poll_loop` for synchronous work: ``handle(tp, records)`` once per partition and fetch.

    The records are finished when ``handle`` returns (it must deal with a failing record itself).
    Nothing can interleave with a synchronous call (a signal, a rebalance), so this skips the
    per-record tickets and checks that :func:`poll_loop` needs for work that waits.
    """
    fetched = _fetched(consumer, tracker, stop, metrics, max_records, poll_timeout_ms, commit_interval)
    async with contextlib.aclosing(fetched):
        async for tp, records in fetched:
            # A partition revoked while the fetch waited belongs to another replica now.
            if records and prepare is not None and tracker.owns(tp):
                await prepare(records)  # e.g. fetch the content keys the records need
            if records and tracker.owns(tp):
                handle(tp, records)
                tracker.finished_through(tp, records[-1].offset)


async def _fetched(
    consumer: Any,
    tracker: OffsetTracker,
    stop: asyncio.Event,
    metrics: ConsumerMetrics,
    max_records: int,
    poll_timeout_ms: int,
    commit_interval: float,
) -> AsyncGenerator[tuple[TopicPartition, list[Any]], None]:
    """Each partition's records of each fetch until ``stop`` is set, counted; between fetches,
    the finished offsets are committed every ``commit_interval`` seconds.

    Each fetch races ``stop``: while the group rebalances, aiokafka's ``getmany`` waits for the
    new assignment however long the join takes (seconds; for ever with the broker gone), and a
    stop signal must not wait for that. A fetch cancelled there has handed out nothing.
    """
    last_commit = time.monotonic()
    stopped = asyncio.ensure_future(stop.wait())
    fetch: asyncio.Future[dict[TopicPartition, list[Any]]] | None = None
    try:
        while not stop.is_set():
            fetch = asyncio.ensure_future(consumer.getmany(timeout_ms=poll_timeout_ms, max_records=max_records))
            await asyncio.wait((fetch, stopped), return_when=asyncio.FIRST_COMPLETED)
            if not fetch.done():
                break
            batch = fetch.result()
            fetch = None
            for tp, records in batch.items():
                metrics.count_records(tp.topic, len(records))
                yield tp, records
            if time.monotonic() - last_commit >= commit_interval:
                await commit_finished(consumer, tracker)
                last_commit = time.monotonic()
    finally:
        stopped.cancel()
        if fetch is not None and not fetch.done():
            fetch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fetch


async def drain(tracker: OffsetTracker, timeout: float) -> bool:
    """Wait up to ``timeout`` for every record in hand to finish; False when some did not."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(tracker.wait_idle(), timeout)
        return True
    return False
