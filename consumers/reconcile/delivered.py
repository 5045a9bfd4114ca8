"""What Kafka already holds: the event ids of the messages topic, read back from a point in time.

Reconcile never trusts a record of its own about what was delivered: Kafka is the record. At
start-up the index seeks every partition of ``<prefix>.messages`` to the lookback by Kafka's time
index (``offsets_for_times``) and reads to the end, keeping each record's event id (the
``ce_id`` header; the value only when a producer left it out). Afterwards it reads only what was
appended since (``catch_up``), and forgets ids older than the lookback (``prune``). So it is:

- cheap: headers only, no JSON, except ``message_edit`` records (rare) checked for hydration;
- bounded: ids of the lookback window only (about 100 bytes each);
- surviving restarts: a restarted process reads the same window back from Kafka.

Records are stamped by the producer when sent (CreateTime), never before Meta wrote the message,
so a message written after the lookback's start is found if Kafka has it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from igw.config import KafkaSettings
from igw.envelope import Header, ce_type

__all__ = ["DeliveredIndex", "EditToHydrate"]

log = logging.getLogger(__name__)

_ID = Header.ID
_TYPE = Header.TYPE
_EDIT_TYPE = ce_type("message_edit")
# Clocks differ between Meta, the gateway and this host: read back a little before the lookback.
CLOCK_MARGIN_MS = 5 * 60 * 1000


@dataclass(frozen=True, slots=True)
class EditToHydrate:
    """A ``message_edit`` with ``num_edit`` 0 that lacks its sender or text: a new message in disguise."""

    event_id: str
    account_id: str
    platform: str
    mid: str
    timestamp: int


def edit_to_hydrate(value: bytes | None) -> EditToHydrate | None:
    """The hydration a ``message_edit`` envelope needs, if any (docs/events.md, "Hydration")."""
    try:
        envelope: Any = orjson.loads(value) if value else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(envelope, dict) or envelope.get("type") != "message_edit":
        return None
    edit = envelope.get("message_edit")
    if not isinstance(edit, dict) or edit.get("num_edit") not in (0, "0"):
        return None
    mid = edit.get("mid")
    if not isinstance(mid, str) or not mid:
        return None
    if envelope.get("sender_id") and isinstance(edit.get("text"), str) and edit["text"]:
        return None  # complete: an edit before any edit is an ordinary message, nothing to add
    return EditToHydrate(
        event_id=str(envelope.get("id", "")),
        account_id=str(envelope.get("account_id", "")),
        platform=str(envelope.get("platform", "instagram")),
        mid=mid,
        timestamp=int(envelope.get("timestamp") or 0),
    )


class DeliveredIndex:
    """Event ids on the messages topic since ``since_ms``; see the module docstring."""

    def __init__(self, kafka: KafkaSettings, topic: str, *, clock: Any = time.time) -> None:
        self._kafka = kafka
        self._topic = topic
        self._clock = clock
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._ids: dict[str, int] = {}  # event id -> record time, ms
        self._positioned = False
        self._lock = asyncio.Lock()
        self.edits: list[EditToHydrate] = []
        self.records_read = 0

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, event_id: str, when_ms: int) -> None:
        self._ids[event_id] = max(when_ms, self._ids.get(event_id, 0))

    def prune(self, before_ms: int) -> int:
        """Forget ids recorded before ``before_ms``; returns how many."""
        old = [event_id for event_id, when in self._ids.items() if when < before_ms]
        for event_id in old:
            del self._ids[event_id]
        return len(old)

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            client_id=f"{self._kafka.client_id}-reconcile-index",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Brokers answer a connection's requests in order: a long fetch would hold up the
            # offset listing of the next catch-up behind it.
            fetch_max_wait_ms=100,
            **self._kafka.client_kwargs(),
        )
        await self._consumer.start()
        # Let the consumer's background task start: stopping it before then raises CancelledError.
        await asyncio.sleep(0)

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def _position(self, since_ms: int) -> None:
        consumer = self._consumer
        assert consumer is not None
        partitions = consumer.partitions_for_topic(self._topic)
        if partitions is None:
            await consumer.topics()  # refreshes the cluster metadata
            partitions = consumer.partitions_for_topic(self._topic)
        if not partitions:
            # A consumer learns every topic's partitions when it starts: a new one sees a topic made since.
            await self.stop()
            await self.start()
            raise LookupError(f"topic {self._topic} does not exist")
        self._partitions = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        consumer.assign(self._partitions)
        # Between catch-ups nothing is fetched.
        consumer.pause(*self._partitions)
        start = since_ms - CLOCK_MARGIN_MS
        found = await consumer.offsets_for_times(dict.fromkeys(self._partitions, max(0, start)))
        end = await consumer.end_offsets(self._partitions)
        for tp in self._partitions:
            hit = found.get(tp)
            consumer.seek(tp, hit.offset if hit is not None else end[tp])
        self._positioned = True

    async def catch_up(self, since_ms: int) -> int:
        """Read what the topic gained since the last call (from ``since_ms`` on the first); returns records read.

        Reads at least to the end offsets listed when called. Some brokers (Tansu 0.6) list the
        last batch's base offset plus one; a fetch returns whole batches, so reading until the
        position passes the listed end still reads every record (``igw.topics.end_offsets``).
        """
        async with self._lock:
            consumer = self._consumer
            if consumer is None:
                raise RuntimeError("DeliveredIndex.start() was not called")
            if not self._positioned:
                await self._position(since_ms)
            end = await consumer.end_offsets(self._partitions)
            pending = {tp for tp in self._partitions if end[tp] > await consumer.position(tp)}
            read = 0
            empty_polls = 0
            consumer.resume(*pending)
            try:
                # Three empty polls in a row: a compacted or transactional tail that never reaches the end.
                while pending and empty_polls < 3:
                    batch = await consumer.getmany(*pending, timeout_ms=500)
                    empty_polls = 0 if any(batch.values()) else empty_polls + 1
                    for records in batch.values():
                        for record in records:
                            self._take(record.headers, record.value, record.timestamp)
                        read += len(records)
                    pending = {tp for tp in pending if await consumer.position(tp) < end[tp]}
            finally:
                consumer.pause(*self._partitions)
            self.records_read += read
            return read

    def _take(self, headers: Iterable[tuple[str, bytes]], value: bytes | None, timestamp: int) -> None:
        event_id: str | None = None
        type_: bytes | None = None
        for name, header in headers:
            if name == _ID:
                event_id = header.decode()
            elif name == _TYPE:
                type_ = header
        if event_id is None:
            try:
                envelope = orjson.loads(value) if value else None
            except orjson.JSONDecodeError:
                return
            if not isinstance(envelope, dict) or not isinstance(envelope.get("id"), str):
                return
            event_id = envelope["id"]
            type_ = ce_type(str(envelope.get("type", "")))
        self.add(event_id, timestamp)
        if type_ == _EDIT_TYPE:
            edit = edit_to_hydrate(value)
            if edit is not None:
                self.edits.append(edit)

    def take_edits(self) -> list[EditToHydrate]:
        edits, self.edits = self.edits, []
        return edits
