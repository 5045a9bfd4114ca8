"""Record batches shared by concurrent requests, one open batch per topic partition.

aiokafka's ``send()`` costs a coroutine, a delivery future and a metadata object per record, and
its sender resolves every one of them: on a one-message webhook that was the largest piece of the
gateway's own CPU (bench/). Here a request appends its records straight into the open batch of
their partition (aiokafka's C record builder) and waits on that batch's single future. A lane
hands its batch to the producer (``send_batch``) at the next turn of the event loop; while the
producer still holds the previous one, records keep joining the open batch, so batches grow with
load by themselves instead of with a linger delay.

Order within a partition is the order of ``append`` calls: a lane hands batches over one at a
time, in order, and aiokafka keeps one request in flight per broker.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any, Final

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.producer.message_accumulator import BatchBuilder

from gateway.errors import BrokerUnavailable, PublishError

__all__ = ["Lanes"]

log = logging.getLogger(__name__)

# Full batches waiting for the producer, per partition, before ``append`` refuses: with the
# broker away a lane cannot hand over, and the records of requests that already gave up must
# not pile up without bound (aiokafka's own buffer refuses the same way).
MAX_SEALED_BATCHES: Final = 4


class _Lane:
    """The batches of one topic partition: an open one taking records, full ones waiting, one submitter."""

    __slots__ = ("_acked", "_open", "_producer", "_sealed", "_submitter", "_wakeup", "partition", "topic")

    def __init__(self, producer: AIOKafkaProducer, topic: str, partition: int) -> None:
        self._producer = producer
        self.topic = topic
        self.partition = partition
        self._open: BatchBuilder | None = None
        self._acked: asyncio.Future[None] | None = None
        self._sealed: collections.deque[tuple[BatchBuilder, asyncio.Future[None]]] = collections.deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._submitter: asyncio.Task[None] | None = None

    def append(self, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> asyncio.Future[None]:
        """Add one record to the open batch; the returned future resolves once the broker acknowledged it."""
        builder = self._open
        acked = self._acked
        if builder is None or acked is None:
            builder, acked = self._start_batch()
        if builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
            # Full: it waits for the submitter, a fresh batch takes this record.
            if len(self._sealed) >= MAX_SEALED_BATCHES:
                raise BrokerUnavailable(f"producer buffer for {self.topic}[{self.partition}] is full")
            self._sealed.append((builder, acked))
            builder, acked = self._start_batch()
            if builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
                raise BrokerUnavailable(f"a record of {len(value)} bytes exceeds KAFKA_MAX_BATCH_BYTES")
        return acked

    def _start_batch(self) -> tuple[BatchBuilder, asyncio.Future[None]]:
        builder = self._open = self._producer.create_batch()
        acked = self._acked = asyncio.get_running_loop().create_future()
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)
        elif self._submitter is None:
            name = f"igw-lane-{self.topic}-{self.partition}"
            self._submitter = asyncio.create_task(self._submit_forever(), name=name)
        return builder, acked

    def _take(self) -> tuple[BatchBuilder, asyncio.Future[None]] | None:
        if self._sealed:
            return self._sealed.popleft()
        builder, acked = self._open, self._acked
        if builder is None or acked is None:
            return None
        self._open = self._acked = None
        return builder, acked

    async def _submit_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            taken = self._take()
            if taken is None:
                self._wakeup = loop.create_future()
                await self._wakeup
                self._wakeup = None
                continue
            delivery = await self._submit(*taken)
            if delivery is not None:
                # One batch in flight per partition, as aiokafka's sender does per broker: what
                # arrives meanwhile joins the open batch, so batches grow with load.
                await asyncio.wait((delivery,))

    async def _submit(self, builder: BatchBuilder, acked: asyncio.Future[None]) -> asyncio.Future[Any] | None:
        builder.close()  # closed: the producer sends it at once instead of lingering
        try:
            delivery = await self._producer.send_batch(builder, self.topic, partition=self.partition)
        except KafkaError as exc:
            _fail(acked, BrokerUnavailable(f"producer refused a batch: {type(exc).__name__}"))
            return None
        except Exception:  # never leave the lane without its submitter
            log.exception("could not hand a batch to the producer")
            _fail(acked, BrokerUnavailable("producer failed to take a batch"))
            return None
        delivery.add_done_callback(lambda fut: _relay(fut, acked))
        return delivery  # type: ignore[no-any-return]

    async def close(self) -> None:
        """Hand every batch still here to the producer, then stop the submitter."""
        if self._submitter is not None:
            self._submitter.cancel()
            await asyncio.gather(self._submitter, return_exceptions=True)
            self._submitter = None
        while (taken := self._take()) is not None:
            await self._submit(*taken)

    def fail_pending(self, error: PublishError) -> None:
        """Fail what was never handed over (the producer is gone)."""
        while (taken := self._take()) is not None:
            _fail(taken[1], error)


def _relay(delivery: asyncio.Future[Any], acked: asyncio.Future[None]) -> None:
    if acked.done():
        return
    if delivery.cancelled():
        _fail(acked, BrokerUnavailable("batch delivery was cancelled"))
        return
    failure = delivery.exception()
    if failure is None:
        acked.set_result(None)
    else:
        _fail(acked, BrokerUnavailable(f"broker rejected a batch: {type(failure).__name__}"))


def _fail(acked: asyncio.Future[None], error: PublishError) -> None:
    if not acked.done():
        acked.set_exception(error)
        # Every waiter may have given up already: do not let asyncio log "exception never retrieved".
        acked.exception()


class Lanes:
    """One ``_Lane`` per topic partition of one producer."""

    __slots__ = ("_lanes", "_partition_counts", "_producer")

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._lanes: dict[tuple[str, int], _Lane] = {}
        # aiokafka builds a new set for every partitions_for_topic(); a metadata update clears this.
        self._partition_counts: dict[str, int] = {}
        producer.client.cluster.add_listener(self._on_metadata)

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

    def append(
        self, topic: str, partition: int, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[None]:
        lane = self._lanes.get((topic, partition))
        if lane is None:
            lane = self._lanes[topic, partition] = _Lane(self._producer, topic, partition)
        return lane.append(key, value, headers)

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
