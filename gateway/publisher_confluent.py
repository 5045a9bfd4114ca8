"""Optional producer backend on librdkafka (``IGW_PRODUCER_BACKEND=confluent``, extra ``confluent``).

Same contract as :class:`gateway.publisher.AiokafkaPublisher`: ``publish`` returns once the broker
acknowledged every record. librdkafka runs its own I/O threads; a poll thread here turns its
delivery reports into asyncio futures.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from gateway.acks import all_acknowledged, settle_stragglers
from gateway.metrics import UNCOUNTED, Incrementer
from igw.config import KafkaSettings
from igw.errors import BrokerUnavailable, PublishError, PublishTimeout
from igw.records import OutRecord

__all__ = ["ConfluentPublisher"]

log = logging.getLogger(__name__)


class ConfluentPublisher:
    # The background thread counted in igw_background_task_failures_total; the app points ``failures`` there.
    failure_task = "rdkafka-poll"

    def __init__(self, settings: KafkaSettings) -> None:
        self.failures: Incrementer = UNCOUNTED
        self._settings = settings
        self._producer: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poller: threading.Thread | None = None
        self._stopping = threading.Event()
        # Delivery futures of failed publishes that librdkafka may still deliver (see settle()).
        self._stragglers: set[asyncio.Future[Any]] = set()

    @property
    def connected(self) -> bool:
        return self._producer is not None

    def _config(self) -> dict[str, Any]:
        s = self._settings
        config: dict[str, Any] = {
            "bootstrap.servers": s.bootstrap_servers,
            "client.id": f"{s.client_id}-gateway",
            "acks": "all" if s.acks == "all" else "1",
            "enable.idempotence": s.enable_idempotence,
            "linger.ms": s.linger_ms,
            "batch.size": s.max_batch_bytes,
            "compression.type": s.compression,
            "message.timeout.ms": s.request_timeout_ms,
            # The Java client's key hashing (as aiokafka): a conversation maps to the same partition
            # whichever backend published it.
            "partitioner": "murmur2_random",
            "security.protocol": s.security_protocol,
        }
        if s.sasl_mechanism:
            config["sasl.mechanism"] = s.sasl_mechanism
            config["sasl.username"] = s.sasl_username
            config["sasl.password"] = s.sasl_password.value if s.sasl_password else None
        return config

    async def start(self) -> None:
        try:
            from confluent_kafka import Producer
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError("IGW_PRODUCER_BACKEND=confluent needs the 'confluent' extra (confluent-kafka)") from exc
        self._loop = asyncio.get_running_loop()
        self._producer = Producer(self._config(), logger=log)
        self._poller = threading.Thread(target=self._poll, name="igw-rdkafka-poll", daemon=True)
        self._poller.start()
        log.info("librdkafka producer started for %s", self._settings.bootstrap_servers)

    def _poll(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                self._producer.poll(0.05)
            except Exception:  # the thread must outlive any error: it resolves every delivery
                self.failures.inc()
                if failures == 0:
                    log.exception("librdkafka poll failed unexpectedly; polling on")
                failures += 1
                time.sleep(0.05)

    async def stop(self) -> None:
        producer = self._producer
        if producer is None:
            return
        self._stopping.set()
        if self._poller is not None:
            await asyncio.to_thread(self._poller.join)
        remaining = await asyncio.to_thread(producer.flush, 10.0)
        if remaining:
            log.error("%d records were not delivered before shutdown", remaining)
        self._producer = None

    async def publish(self, records: Sequence[OutRecord], timeout: float) -> None:
        producer = self._producer
        loop = self._loop
        if producer is None or loop is None:
            raise BrokerUnavailable("the Kafka producer is not started")
        started = time.monotonic()
        futures: list[asyncio.Future[Any]] = []
        for record in records:
            future: asyncio.Future[Any] = loop.create_future()
            try:
                producer.produce(
                    record.topic,
                    value=record.value,
                    key=record.key,
                    headers=record.headers,
                    on_delivery=_reporter(loop, future),
                )
            except BufferError:
                self._stragglers.update(futures)
                raise BrokerUnavailable("librdkafka's queue is full") from None
            except Exception as exc:  # KafkaException: unknown topic, message too large, ...
                self._stragglers.update(futures)
                raise BrokerUnavailable(f"producer refused a record: {type(exc).__name__}") from exc
            futures.append(future)
        if futures:
            try:
                await all_acknowledged(futures, max(0.0, timeout - (time.monotonic() - started)), timeout)
            except PublishError:
                self._stragglers.update(f for f in futures if not f.done())
                raise

    async def settle(self, timeout: float) -> bool:
        """Wait until librdkafka delivered or gave up (``message.timeout.ms``) the records of failed publishes."""
        return await settle_stragglers(self._stragglers, timeout)

    async def missing_topics(self, topics: Sequence[str], timeout: float) -> list[str]:
        producer = self._producer
        if producer is None:
            raise BrokerUnavailable("the Kafka producer is not started")
        try:
            metadata = await asyncio.to_thread(producer.list_topics, None, timeout)
        except Exception as exc:  # KafkaException on timeout or transport failure
            raise PublishTimeout(f"no metadata from the cluster in time ({type(exc).__name__})") from exc
        return [t for t in topics if t not in metadata.topics]


def _reporter(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]) -> Any:
    """A delivery callback (called on the poll thread) that settles ``future`` on the event loop."""

    def report(error: Any, message: Any) -> None:
        if error is None:
            loop.call_soon_threadsafe(_settle, future, None)
        else:
            loop.call_soon_threadsafe(_settle, future, BrokerUnavailable(f"delivery failed: {error.name()}"))

    return report


def _settle(future: asyncio.Future[Any], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
