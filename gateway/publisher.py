"""One Kafka producer per process, behind a small interface the HTTP handlers depend on.

Client errors are translated here, once, into ``gateway.errors``. A request's records are handed
to the producer together and awaited together, so they share batches instead of paying a round
trip each.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any, Final, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from gateway.config import KafkaSettings
from gateway.errors import BrokerUnavailable, PublishTimeout
from gateway.records import OutRecord

__all__ = ["AiokafkaPublisher", "Publisher"]

log = logging.getLogger(__name__)


class Publisher(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    @property
    def connected(self) -> bool: ...

    async def publish(self, records: Sequence[OutRecord], timeout: float) -> None:
        """Return once the broker acknowledged every record; raise ``PublishError`` otherwise."""

    async def missing_topics(self, topics: Sequence[str], timeout: float) -> list[str]:
        """Which of ``topics`` the cluster does not have; raise ``PublishError`` when unreachable."""


class AiokafkaPublisher:
    """aiokafka producer with acks and batching from settings, connecting in the background.

    The gateway starts serving even when the broker is away at start-up: readiness says so and
    publishing fails fast until the producer is connected.
    """

    def __init__(self, settings: KafkaSettings, *, reconnect_interval: float = 2.0) -> None:
        self._settings = settings
        self._reconnect_interval = reconnect_interval
        self._producer: AIOKafkaProducer | None = None
        self._connector: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._producer is not None

    def _new_producer(self) -> AIOKafkaProducer:
        s = self._settings
        kwargs: dict[str, Any] = dict(s.client_kwargs())
        return AIOKafkaProducer(
            client_id=f"{s.client_id}-gateway",
            acks="all" if s.acks == "all" else 1,
            enable_idempotence=s.enable_idempotence,
            linger_ms=s.linger_ms,
            max_batch_size=s.max_batch_bytes,
            # A dead letter carries a whole signed body (up to IGW_MAX_BODY_BYTES), and a 1000-item
            # batch can exceed the 1 MiB default in one partition's request.
            max_request_size=max(s.max_batch_bytes * 4, s.max_message_bytes),
            compression_type=None if s.compression == "none" else s.compression,
            **kwargs,
        )

    async def _try_connect(self) -> bool:
        producer = self._new_producer()
        try:
            await producer.start()
        except (KafkaError, OSError) as exc:
            log.warning(
                "Kafka is not reachable at %s (%s); retrying every %.0fs. Check KAFKA_BOOTSTRAP_SERVERS.",
                self._settings.bootstrap_servers,
                type(exc).__name__,
                self._reconnect_interval,
            )
            await producer.stop()
            return False
        self._producer = producer
        log.info("Kafka producer connected to %s", self._settings.bootstrap_servers)
        return True

    async def _connect_forever(self) -> None:
        while not await self._try_connect():
            try:
                await asyncio.wait_for(self._stopping.wait(), self._reconnect_interval)
                return
            except TimeoutError:
                continue

    async def start(self, wait: float = 3.0) -> None:
        """Connect, waiting up to ``wait`` seconds; keep trying in the background after that."""
        self._connector = asyncio.create_task(self._connect_forever(), name="igw-kafka-connect")
        done, _ = await asyncio.wait({self._connector}, timeout=wait)
        if done:
            self._connector.result()

    async def stop(self) -> None:
        self._stopping.set()
        if self._connector is not None and not self._connector.done():
            self._connector.cancel()
            await asyncio.gather(self._connector, return_exceptions=True)
        if self._producer is not None:
            # stop() flushes what in-flight requests handed over before returning.
            await self._producer.stop()
            self._producer = None

    async def publish(self, records: Sequence[OutRecord], timeout: float) -> None:
        producer = self._producer
        if producer is None:
            raise BrokerUnavailable("the Kafka producer is not connected")
        deadline = time.monotonic() + timeout
        try:
            async with asyncio.timeout(timeout):
                if len(records) >= BATCH_THRESHOLD:
                    futures = await _send_in_batches(producer, records)
                else:
                    futures = [await producer.send(r.topic, r.value, key=r.key, headers=r.headers) for r in records]
        except TimeoutError:
            raise PublishTimeout(f"records not accepted by the producer within {timeout:.2f}s") from None
        except KafkaError as exc:
            raise BrokerUnavailable(f"producer refused records: {type(exc).__name__}") from exc
        if futures:
            await _all_acknowledged(futures, max(0.0, deadline - time.monotonic()), timeout)

    async def missing_topics(self, topics: Sequence[str], timeout: float) -> list[str]:
        producer = self._producer
        if producer is None:
            raise BrokerUnavailable("the Kafka producer is not connected")
        try:
            async with asyncio.timeout(timeout):
                metadata = await producer.client.fetch_all_metadata()
        except TimeoutError:
            raise PublishTimeout("no metadata from the cluster in time") from None
        except KafkaError as exc:
            raise BrokerUnavailable(f"metadata request failed: {type(exc).__name__}") from exc
        present = metadata.topics()
        return [t for t in topics if t not in present]


async def _all_acknowledged(futures: list[asyncio.Future[Any]], remaining: float, timeout: float) -> None:
    """Wait for every delivery future with one waiter and one timer.

    Cheaper than ``asyncio.wait`` on the hot path, and it never cancels the delivery futures:
    a late acknowledgement is still an acknowledgement.
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    pending = len(futures)

    def on_delivery(fut: asyncio.Future[Any]) -> None:
        nonlocal pending
        pending -= 1
        if waiter.done():
            return
        failure: BaseException | None = asyncio.CancelledError() if fut.cancelled() else fut.exception()
        if failure is not None:
            waiter.set_exception(BrokerUnavailable(f"broker rejected a record: {type(failure).__name__}"))
        elif pending == 0:
            waiter.set_result(None)

    def on_timeout() -> None:
        if not waiter.done():
            waiter.set_exception(
                PublishTimeout(f"{pending} of {len(futures)} records not acknowledged within {timeout:.2f}s")
            )

    for fut in futures:
        fut.add_done_callback(on_delivery)
    timer = loop.call_later(remaining, on_timeout)
    try:
        await waiter
    finally:
        timer.cancel()


# From this many records on, a request's records are grouped by partition and handed to the
# producer as ready-made batches: about half the CPU per record of one send() each (bench/).
BATCH_THRESHOLD: Final = 8
_murmur_cache: dict[bytes, int] = {}


def _key_hash(key: bytes) -> int:
    """aiokafka's (the Java client's) murmur2 of a key, cached: conversations repeat."""
    value = _murmur_cache.get(key)
    if value is None:
        if len(_murmur_cache) >= 65_536:
            _murmur_cache.clear()
        value = _murmur_cache[key] = murmur2(key) & 0x7FFFFFFF
    return value


async def _send_in_batches(producer: AIOKafkaProducer, records: Sequence[OutRecord]) -> list[asyncio.Future[Any]]:
    """Same partitions as ``DefaultPartitioner`` (murmur2 of the key), one batch per partition."""
    partitions: dict[str, list[int]] = {}
    groups: dict[tuple[str, int], list[OutRecord]] = {}
    futures: list[asyncio.Future[Any]] = []
    for record in records:
        if record.key is None:  # dead letters: the producer picks a partition
            futures.append(await producer.send(record.topic, record.value, headers=record.headers))
            continue
        known = partitions.get(record.topic)
        if known is None:
            known = partitions[record.topic] = sorted(await producer.partitions_for(record.topic))
        partition = known[_key_hash(record.key) % len(known)]
        groups.setdefault((record.topic, partition), []).append(record)
    for (topic, partition), members in groups.items():
        batch = producer.create_batch()
        for record in members:
            if batch.append(key=record.key, value=record.value, timestamp=None, headers=record.headers) is None:
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                if batch.append(key=record.key, value=record.value, timestamp=None, headers=record.headers) is None:
                    raise BrokerUnavailable(f"a record of {len(record.value)} bytes exceeds KAFKA_MAX_BATCH_BYTES")
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures
