"""One Kafka producer per process, behind a small interface the HTTP handlers depend on.

Client errors are translated here, once, into ``igw.errors``. A request's records are handed
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

from gateway.acks import all_acknowledged, settle_stragglers
from gateway.batching import Batch, Lanes
from gateway.metrics import UNCOUNTED, Incrementer
from igw.config import KafkaSettings
from igw.errors import BrokerUnavailable, IdempotenceRefused, PublishError, PublishTimeout
from igw.partitioning import key_hasher
from igw.producers import start_producer
from igw.records import OutRecord

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

    async def settle(self, timeout: float) -> bool:
        """Wait until no record of a failed ``publish`` is still retried by the client; False on timeout."""


class AiokafkaPublisher:
    """aiokafka producer with acks and batching from settings, connecting in the background.

    The gateway starts serving even when the broker is away at start-up: readiness says so and
    publishing fails fast until the producer is connected.
    """

    # The background task counted in igw_background_task_failures_total; the app points ``failures`` there.
    failure_task = "kafka-connect"

    def __init__(self, settings: KafkaSettings, *, reconnect_interval: float = 2.0) -> None:
        self.failures: Incrementer = UNCOUNTED
        self._settings = settings
        self._reconnect_interval = reconnect_interval
        self._producer: AIOKafkaProducer | None = None
        self._lanes: Lanes | None = None
        self._connector: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        # Delivery futures of publishes that failed: the client may still retry them (see settle()).
        self._stragglers: set[asyncio.Future[Any]] = set()

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
            await start_producer(producer, self._settings)
        except IdempotenceRefused as exc:
            log.error(
                "Kafka producer not started, retrying every %.0fs: %s (%s)", self._reconnect_interval, exc, exc.remedy
            )
            return False
        except (KafkaError, OSError) as exc:
            log.warning(
                "Kafka is not reachable at %s (%s); retrying every %.0fs. Check KAFKA_BOOTSTRAP_SERVERS.",
                self._settings.bootstrap_servers,
                type(exc).__name__,
                self._reconnect_interval,
            )
            await producer.stop()
            return False
        self._lanes = Lanes(producer, self._settings.buffer_bytes)
        self._producer = producer
        log.info("Kafka producer connected to %s", self._settings.bootstrap_servers)
        return True

    async def _connect_forever(self) -> None:
        while True:
            try:
                if await self._try_connect():
                    return
            except Exception:  # never stop trying for an unexpected error: nothing else would connect
                self.failures.inc()
                log.exception("connecting the Kafka producer failed unexpectedly; retrying")
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
        if self._lanes is not None:
            await self._lanes.close()
            self._lanes = None
        if self._producer is not None:
            # stop() flushes what in-flight requests handed over before returning.
            await self._producer.stop()
            self._producer = None

    async def publish(self, records: Sequence[OutRecord], timeout: float) -> None:
        producer, lanes = self._producer, self._lanes
        if producer is None or lanes is None:
            raise BrokerUnavailable("the Kafka producer is not connected")
        deadline = time.monotonic() + timeout
        # Usually one: a request's records share the open batch of their partition (gateway.batching).
        batches: list[Batch] = []
        sent: list[asyncio.Future[Any]] = []  # dead letters, through aiokafka's send()
        try:
            for r in records:
                key = r.key
                if key is None:  # dead letters: the producer picks a partition
                    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                        sent.append(await producer.send(r.topic, r.value, headers=r.headers))
                    continue
                partitions = lanes.partition_count(r.topic)
                if not partitions:  # metadata not known yet (start, new topic): wait for it
                    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                        partitions = len(await producer.partitions_for(r.topic))
                # Kafka numbers a topic's partitions 0..n-1: the same choice as DefaultPartitioner.
                batch = lanes.append(r.topic, _key_hash(key) % partitions, key, r.value, r.headers)
                if batch not in batches:  # a handful at most: one per partition the request touches
                    batches.append(batch)
            if batches:
                await lanes.acknowledged(batches, max(0.0, deadline - time.monotonic()))
            if sent:
                await all_acknowledged(sent, max(0.0, deadline - time.monotonic()), timeout)
        except TimeoutError:
            self._keep_stragglers(batches, sent)
            raise PublishTimeout(f"no topic metadata or dead-letter send within {timeout:.2f}s") from None
        except KafkaError as exc:
            self._keep_stragglers(batches, sent)
            raise BrokerUnavailable(f"producer refused records: {type(exc).__name__}") from exc
        except PublishError:
            # The client may still deliver or retry these: settle() waits for them.
            self._keep_stragglers(batches, sent)
            raise

    def _keep_stragglers(self, batches: list[Batch], sent: list[asyncio.Future[Any]]) -> None:
        self._stragglers.update(b.future for b in batches if not b.future.done())
        self._stragglers.update(f for f in sent if not f.done())

    async def settle(self, timeout: float) -> bool:
        """Wait for the delivery futures of failed publishes: each ends delivered late or expired.

        Until then the client may still send those records, and a batch retried into a fresh
        partition can race a new one (Tansu 0.6 keeps only one of two overlapping batches), so the
        spool's drain waits here before it publishes. aiokafka expires a batch after
        ``request_timeout_ms``, which bounds the wait.
        """
        return await settle_stragglers(self._stragglers, timeout)

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


_key_hash: Final = key_hasher()  # conversations repeat: each key hashed once
