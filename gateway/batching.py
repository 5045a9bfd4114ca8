"""Record batches shared by concurrent requests, one open batch per topic partition.

aiokafka's ``send()`` costs a coroutine, a delivery future and a metadata object per record, and
its sender resolves every one of them: on a one-message webhook that was the largest piece of the
gateway's own CPU (bench/). Here a request appends its records straight into the open batch of
their partition (aiokafka's C record builder) and waits on one future of its own, which the
batch resolves when the broker acknowledged it. A partition has one batch in flight at a time;
what arrives meanwhile fills the next one, so batches grow with load by themselves.

Order within a partition is the order of ``append`` calls: a lane hands batches over one at a
time, in order, and waits for each acknowledgement before the next.

Deadlines are coarse on purpose: requests whose deadlines fall in the same few milliseconds share
one loop timer. An ``asyncio.timeout`` per request instead cost ~15,000 more instructions per
one-message request, 3 % (``python -m bench.requestcost``, 16 connections).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
from collections.abc import Sequence
from typing import Any, Final

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.producer.message_accumulator import BatchBuilder

from igw.errors import BrokerUnavailable, PublishError, PublishTimeout

__all__ = ["Batch", "Lanes"]

log = logging.getLogger(__name__)

# Deadlines are rounded up to this many seconds: a timeout fires at most this late.
DEADLINE_GRANULARITY: Final = 0.005


class _Ticket:
    """One request waiting for ``remaining`` batches."""

    __slots__ = ("remaining", "waiter")

    def __init__(self, waiter: asyncio.Future[None], remaining: int) -> None:
        self.waiter = waiter
        self.remaining = remaining


class Batch:
    """Records of one partition sent together; tells its tickets when the broker acknowledged them."""

    __slots__ = ("builder", "future", "tickets")

    def __init__(self, builder: BatchBuilder, future: asyncio.Future[None]) -> None:
        self.builder = builder
        self.tickets: list[_Ticket] = []
        # For whoever must know when the batch is settled either way (Publisher.settle()).
        self.future = future

    def acknowledged(self) -> None:
        if not self.future.done():
            self.future.set_result(None)
        for ticket in self.tickets:
            ticket.remaining -= 1
            if ticket.remaining == 0 and not ticket.waiter.done():
                ticket.waiter.set_result(None)

    def failed(self, error: PublishError) -> None:
        if not self.future.done():
            self.future.set_exception(error)
            self.future.exception()  # nobody may be waiting any more: no "never retrieved" warning
        for ticket in self.tickets:
            if not ticket.waiter.done():
                ticket.waiter.set_exception(error)


class _Lane:
    """The batches of one topic partition: an open one taking records, full ones waiting, one submitter."""

    __slots__ = ("_buffer", "_open", "_producer", "_sealed", "_submitter", "_wakeup", "partition", "topic")

    def __init__(self, producer: AIOKafkaProducer, buffer: _Buffer, topic: str, partition: int) -> None:
        self._producer = producer
        self._buffer = buffer
        self.topic = topic
        self.partition = partition
        self._open: Batch | None = None
        self._sealed: collections.deque[Batch] = collections.deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._submitter: asyncio.Task[None] | None = None

    def append(self, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> Batch:
        """Add one record to the open batch and return that batch."""
        batch = self._open
        if batch is None:
            batch = self._start_batch()
        if batch.builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
            # Full: it waits for the submitter, a fresh batch takes this record.
            buffer = self._buffer
            if buffer.waiting >= buffer.limit:
                raise BrokerUnavailable(f"producer buffer full: {buffer.waiting} bytes wait for the broker")
            buffer.waiting += batch.builder.size()
            self._sealed.append(batch)
            batch = self._start_batch()
            if batch.builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
                raise BrokerUnavailable(f"a record of {len(value)} bytes exceeds KAFKA_MAX_BATCH_BYTES")
        return batch

    def _start_batch(self) -> Batch:
        batch = self._open = Batch(self._producer.create_batch(), asyncio.get_running_loop().create_future())
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)
        elif self._submitter is None:
            name = f"igw-lane-{self.topic}-{self.partition}"
            self._submitter = asyncio.create_task(self._submit_forever(), name=name)
        return batch

    def _take(self) -> Batch | None:
        if self._sealed:
            sealed = self._sealed.popleft()
            self._buffer.waiting -= sealed.builder.size()
            return sealed
        batch, self._open = self._open, None
        return batch

    async def _submit_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = self._take()
            if batch is None:
                self._wakeup = loop.create_future()
                await self._wakeup
                self._wakeup = None
                continue
            delivery = await self._submit(batch)
            if delivery is not None:
                # One batch in flight per partition, as aiokafka's sender does per broker: what
                # arrives meanwhile joins the open batch.
                await asyncio.wait((delivery,))

    async def _submit(self, batch: Batch) -> asyncio.Future[Any] | None:
        batch.builder.close()  # closed: the producer sends it at once instead of lingering
        try:
            delivery = await self._producer.send_batch(batch.builder, self.topic, partition=self.partition)
        except asyncio.CancelledError:
            # close() stopped the submitter before the producer took this batch (send_batch waits
            # for metadata or queue room): back to the head of the line, so close() hands it over.
            self._buffer.waiting += batch.builder.size()
            self._sealed.appendleft(batch)
            raise
        except KafkaError as exc:
            batch.failed(BrokerUnavailable(f"producer refused a batch: {type(exc).__name__}"))
            return None
        except Exception:  # never leave the lane without its submitter
            log.exception("could not hand a batch to the producer")
            batch.failed(BrokerUnavailable("producer failed to take a batch"))
            return None
        delivery.add_done_callback(lambda fut: _relay(fut, batch))
        return delivery  # type: ignore[no-any-return]

    async def close(self) -> None:
        """Stop the submitter, then hand every batch still here (one it was handing over included) to the producer."""
        if self._submitter is not None:
            self._submitter.cancel()
            await asyncio.gather(self._submitter, return_exceptions=True)
            self._submitter = None
        while (batch := self._take()) is not None:
            await self._submit(batch)

    def fail_pending(self, error: PublishError) -> None:
        """Fail what was never handed over (the producer is gone)."""
        while (batch := self._take()) is not None:
            batch.failed(error)


def _relay(delivery: asyncio.Future[Any], batch: Batch) -> None:
    if delivery.cancelled():
        batch.failed(BrokerUnavailable("batch delivery was cancelled"))
    elif (failure := delivery.exception()) is not None:
        batch.failed(BrokerUnavailable(f"broker rejected a batch: {type(failure).__name__}"))
    else:
        batch.acknowledged()


class _Buffer:
    """Bytes of full batches waiting for the producer, across a producer's lanes.

    With the broker away no lane can hand over, and the records of requests that already gave up
    must not pile up without bound: past ``limit``, ``append`` refuses at once.
    """

    __slots__ = ("limit", "waiting")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.waiting = 0


class _Expiry:
    """Shared coarse timers: every waiter whose deadline falls in one slot expires with one callback."""

    __slots__ = ("_loop", "_slots")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._slots: dict[int, list[tuple[asyncio.Future[None], float]]] = {}

    def add(self, waiter: asyncio.Future[None], timeout: float) -> None:
        # Rounded up: a waiter never expires before its deadline.
        slot = math.ceil((self._loop.time() + timeout) / DEADLINE_GRANULARITY)
        waiters = self._slots.get(slot)
        if waiters is None:
            waiters = self._slots[slot] = []
            self._loop.call_at(slot * DEADLINE_GRANULARITY, self._expire, slot)
        waiters.append((waiter, timeout))

    def _expire(self, slot: int) -> None:
        for waiter, timeout in self._slots.pop(slot, ()):
            if not waiter.done():
                waiter.set_exception(PublishTimeout(f"records not acknowledged within {timeout:.2f}s"))


class Lanes:
    """One ``_Lane`` per topic partition of one producer."""

    __slots__ = ("_buffer", "_expiry", "_lanes", "_loop", "_partition_counts", "_producer")

    def __init__(self, producer: AIOKafkaProducer, buffer_bytes: int) -> None:
        self._producer = producer
        self._buffer = _Buffer(buffer_bytes)
        self._lanes: dict[tuple[str, int], _Lane] = {}
        # aiokafka builds a new set for every partitions_for_topic(); a metadata update clears this.
        self._partition_counts: dict[str, int] = {}
        producer.client.cluster.add_listener(self._on_metadata)
        self._loop = asyncio.get_running_loop()
        self._expiry = _Expiry(self._loop)

    def _on_metadata(self, cluster: object) -> None:
        self._partition_counts.clear()

    def partition_count(self, topic: str) -> int:
        """How many partitions ``topic`` has in the producer's metadata; 0 while it is not known."""
        count = self._partition_counts.get(topic)
        if count is None:
            partitions = self._producer.client.cluster.partitions_for_topic(topic)
            if not partitions:
                return 0
            count = self._partition_counts[topic] = len(partitions)
        return count

    def append(self, topic: str, partition: int, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> Batch:
        lane = self._lanes.get((topic, partition))
        if lane is None:
            lane = self._lanes[topic, partition] = _Lane(self._producer, self._buffer, topic, partition)
        return lane.append(key, value, headers)

    def acknowledged(self, batches: Sequence[Batch], timeout: float) -> asyncio.Future[None]:
        """A future that resolves once every batch is acknowledged, fails with the first failure, or
        with ``PublishTimeout`` after ``timeout`` seconds (the batches themselves carry on)."""
        waiter: asyncio.Future[None] = self._loop.create_future()
        ticket = _Ticket(waiter, len(batches))
        for batch in batches:
            done = batch.future
            if not done.done():
                batch.tickets.append(ticket)
            elif done.exception() is not None:  # settled while the request still appended elsewhere
                waiter.set_exception(done.exception())  # type: ignore[arg-type]
                return waiter
            else:
                ticket.remaining -= 1
        if ticket.remaining == 0:
            waiter.set_result(None)
        else:
            self._expiry.add(waiter, timeout)
        return waiter

    async def close(self) -> None:
        """Hand everything over to the producer (whose ``stop()`` then flushes it)."""
        self._producer.client.cluster.remove_listener(self._on_metadata)
        lanes = list(self._lanes.values())
        self._lanes.clear()
        for lane in lanes:
            try:
                await lane.close()
            except Exception:  # a closing producer may refuse; those requests have their answer already
                log.exception("could not hand a batch to the producer while stopping")
                lane.fail_pending(BrokerUnavailable("the producer stopped"))
