"""Independent conversations, concurrently; one conversation, strictly in order.

Each conversation has its own queue and at most one worker; a semaphore bounds how many
conversations run at once, and a second bound caps the events in hand (fetched, not finished) so
a flood waits in Kafka rather than in memory. A handler that wants an event tried again later
returns the delay: the conversation waits (its order is kept) without holding a concurrency slot,
so a slow or failing conversation never holds up the others.

The scheduler decides no retries itself: it waits the delays the handler returns (the reply
state machine owns retries, consumers/agent_replies/processor.py). A handler that raises has
given up on its record (:class:`GiveUp`, or an error that escaped it): the record stays
uncommitted, and a restart replays it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from consumers.common.runner import Ticket

__all__ = ["ConversationScheduler", "GiveUp", "Handler"]

log = logging.getLogger(__name__)

J = TypeVar("J")

# Returns None when the job is finished, or the seconds to wait before handling it again.
Handler = Callable[[J], Awaitable[float | None]]


class GiveUp(Exception):
    """Raised by a handler that cannot finish its record here: leave it uncommitted."""


class ConversationScheduler(Generic[J]):
    def __init__(
        self,
        handler: Handler[J],
        ticket_of: Callable[[J], Ticket],
        *,
        concurrency: int,
        max_in_flight: int,
        on_change: Callable[[int], None] | None = None,
    ) -> None:
        self._handler = handler
        self._ticket_of = ticket_of
        self._slots = asyncio.Semaphore(concurrency)
        self._room = asyncio.Semaphore(max_in_flight)
        self._queues: dict[str, deque[J]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._in_flight = 0
        self._on_change = on_change

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def active_conversations(self) -> int:
        return len(self._workers)

    async def submit(self, key: str, job: J) -> None:
        """Queue ``job`` behind the conversation's earlier jobs; waits while too many are in hand."""
        await self._room.acquire()
        self._changed(+1)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        queue.append(job)
        if key not in self._workers:
            self._workers[key] = asyncio.create_task(self._work(key, queue), name=f"conversation-{key}")

    def _changed(self, delta: int) -> None:
        self._in_flight += delta
        if self._on_change is not None:
            self._on_change(self._in_flight)

    async def _work(self, key: str, queue: deque[J]) -> None:
        try:
            while queue:
                job = queue[0]
                try:
                    await self._run(job)
                finally:
                    queue.popleft()
                    self._room.release()
                    self._changed(-1)
        finally:
            # The queue is empty (or the worker was cancelled): the next submit starts a new worker.
            self._workers.pop(key, None)
            if not queue:
                self._queues.pop(key, None)

    async def _run(self, job: J) -> None:
        ticket = self._ticket_of(job)
        while True:
            if ticket.stale:
                # The partition moved to another replica: its new owner handles this record.
                ticket.drop()
                return
            async with self._slots:
                try:
                    delay = await self._handler(job)
                except asyncio.CancelledError:
                    raise
                except GiveUp as exc:
                    log.error("%s; the record stays uncommitted and a restart replays it", exc)
                    ticket.drop()
                    return
                except Exception:
                    log.exception("handling a record failed; the record stays uncommitted and a restart replays it")
                    ticket.drop()
                    return
            if delay is None:
                ticket.finish()
                return
            # Wait to retry, unless the partition moves away first (a rebalance must not wait for us).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ticket.partition.wait_revoked(), delay)

    async def close(self) -> None:
        """Cancel every worker (their records stay uncommitted and are replayed on restart)."""
        workers = list(self._workers.values())
        for task in workers:
            task.cancel()
        for task in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
