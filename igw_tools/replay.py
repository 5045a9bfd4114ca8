"""Re-publish records from one topic to another, or dead letters to a gateway, e.g. after a fix.

The range is fixed when the replay starts (by time or by offsets, per partition, never past the
end offsets seen then), so a replay into the topic it reads from still ends. Keys and headers are
kept as they were; each record may be filtered by account and by type.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from igw.config import KafkaSettings
from igw.producers import start_producer
from igw.topics import end_offsets

__all__ = ["RecordFilter", "ReplayPlan", "ReplayReport", "parse_offsets", "parse_time_ms", "replay"]

log = logging.getLogger(__name__)


def parse_time_ms(text: str) -> int:
    """Milliseconds since the epoch from ms digits or an ISO 8601 time (UTC when no zone is given)."""
    stripped = text.strip()
    if stripped.isdigit():
        return int(stripped)
    try:
        when = dt.datetime.fromisoformat(stripped.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time: {text!r} (use ISO 8601, e.g. 2026-11-25T21:00:00Z, or ms)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def parse_offsets(text: str) -> dict[int, int] | int:
    """``"120"`` (every partition) or ``"0:120,2:7"`` (per partition)."""
    stripped = text.strip()
    try:
        if ":" not in stripped:
            return int(stripped)
        pairs = (part.split(":", 1) for part in stripped.split(",") if part.strip())
        return {int(p): int(o) for p, o in pairs}
    except ValueError:
        raise ValueError(f"not offsets: {text!r} (use N, or PARTITION:OFFSET,...)") from None


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """Which records to replay: by business account and by event type (any when unset).

    Envelope records are matched on their CloudEvents headers (``ce_source``, ``ce_type``) and,
    without them, on the JSON value; dead letters (verbatim Meta bodies) on their entries' ids
    and on ``igw_reason`` as the type.
    """

    accounts: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()

    def matches(self, value: bytes | None, headers: Mapping[str, bytes]) -> bool:
        if not self.accounts and not self.types:
            return True
        parsed: Any = None
        if (self.accounts and "ce_source" not in headers) or (self.types and "ce_type" not in headers):
            try:
                parsed = orjson.loads(value or b"")
            except orjson.JSONDecodeError:
                parsed = None
        if self.accounts and not (self._accounts_of(headers, parsed) & self.accounts):
            return False
        return not self.types or self.type_of(headers, parsed) in self.types

    @staticmethod
    def _accounts_of(headers: Mapping[str, bytes], parsed: Any) -> set[str]:
        source = headers.get("ce_source")
        if source is not None:
            return {source.decode("utf-8", "replace").rsplit("/", 1)[-1]}
        if not isinstance(parsed, dict):
            return set()
        if "account_id" in parsed:
            return {str(parsed["account_id"])}
        entries = parsed.get("entry")
        if isinstance(entries, list):
            return {str(e["id"]) for e in entries if isinstance(e, dict) and "id" in e}
        return set()

    @staticmethod
    def type_of(headers: Mapping[str, bytes], parsed: Any) -> str | None:
        ce_type = headers.get("ce_type")
        if ce_type is not None:
            return ce_type.decode("utf-8", "replace").removeprefix("igw.v1.")
        reason = headers.get("igw_reason")
        if reason is not None:
            return reason.decode("utf-8", "replace")
        if isinstance(parsed, dict) and isinstance(parsed.get("type"), str):
            return str(parsed["type"])
        return None


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    source: str
    # A topic, or (target_url) a gateway's webhook URL: dead letters keep Meta's original bytes and
    # signature (``igw_signature``), so a fixed gateway can take them in again as if Meta resent them.
    target: str | None = None
    target_url: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    from_offsets: Mapping[int, int] | int | None = None
    to_offsets: Mapping[int, int] | int | None = None  # exclusive, like Kafka's end offsets
    record_filter: RecordFilter = field(default_factory=RecordFilter)
    dry_run: bool = False
    timeout: float = 120.0
    request_timeout: float = 10.0

    def __post_init__(self) -> None:
        if (self.target is None) == (self.target_url is None):
            raise ValueError("give exactly one of a target topic and a target URL")

    @property
    def destination(self) -> str:
        return self.target or self.target_url or ""


@dataclass(slots=True)
class ReplayReport:
    scanned: int = 0
    matched: int = 0
    published: int = 0
    failed: int = 0  # posts to a target URL that did not get a 2xx, or had no signature to send
    ranges: dict[int, tuple[int, int]] = field(default_factory=dict)  # partition -> [start, stop)
    types: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)


class _TopicSink:
    """Publishes to a topic with the record's key and headers; acknowledged at ``finish``."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.topic = topic
        self.kafka = kafka
        self.producer = AIOKafkaProducer(
            client_id=f"{kafka.client_id}-replay",
            acks="all" if kafka.acks == "all" else 1,
            enable_idempotence=kafka.enable_idempotence,
            max_batch_size=kafka.max_batch_bytes,
            linger_ms=kafka.linger_ms,
            **kafka.client_kwargs(),
        )
        self.sends: list[asyncio.Future[Any]] = []

    async def start(self) -> None:
        await start_producer(self.producer, self.kafka)

    async def put(self, record: ConsumerRecord[bytes, bytes], report: ReplayReport) -> None:
        self.sends.append(
            await self.producer.send(self.topic, value=record.value, key=record.key, headers=list(record.headers))
        )

    async def finish(self, report: ReplayReport) -> None:
        await self.producer.flush()
        await asyncio.gather(*self.sends)
        report.published = len(self.sends)

    async def stop(self) -> None:
        await self.producer.stop()


class _GatewaySink:
    """POSTs each record's value to a webhook URL with the signature Meta sent (``igw_signature``)."""

    def __init__(self, url: str, request_timeout: float) -> None:
        self.url = url
        self.timeout = aiohttp.ClientTimeout(total=request_timeout)
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(timeout=self.timeout)

    async def put(self, record: ConsumerRecord[bytes, bytes], report: ReplayReport) -> None:
        assert self.session is not None
        signature = dict(record.headers).get("igw_signature")
        if not signature:
            report.failed += 1
            report.statuses["no-signature"] += 1
            return
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": signature.decode("ascii", "replace")}
        try:
            async with self.session.post(self.url, data=record.value or b"", headers=headers) as resp:
                await resp.read()
                status = str(resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            status = "timeout" if isinstance(exc, TimeoutError) else f"error:{type(exc).__name__}"
        report.statuses[status] += 1
        if status.startswith("2"):
            report.published += 1
        else:
            report.failed += 1

    async def finish(self, report: ReplayReport) -> None:
        return None

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()


def _per_partition(spec: Mapping[int, int] | int | None, partitions: Iterable[int]) -> dict[int, int | None]:
    if spec is None:
        return dict.fromkeys(partitions)
    if isinstance(spec, int):
        return dict.fromkeys(partitions, spec)
    return {p: spec.get(p) for p in partitions}


async def _ranges(
    consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition], plan: ReplayPlan
) -> dict[TopicPartition, tuple[int, int]]:
    """[start, stop) per partition, clamped to what the partition holds right now."""
    begin = await consumer.beginning_offsets(tps)
    end = await end_offsets(consumer, tps)
    starts = {tp: begin[tp] for tp in tps}
    stops = {tp: end[tp] for tp in tps}
    if plan.since_ms is not None:
        found = await consumer.offsets_for_times(dict.fromkeys(tps, plan.since_ms))
        for tp in tps:
            hit = found.get(tp)
            starts[tp] = hit.offset if hit is not None else end[tp]
    # `until` is applied per record: an offset looked up by time may name a whole batch's start.
    partitions = [tp.partition for tp in tps]
    for tp in tps:
        lower = _per_partition(plan.from_offsets, partitions)[tp.partition]
        upper = _per_partition(plan.to_offsets, partitions)[tp.partition]
        if lower is not None:
            starts[tp] = max(starts[tp], lower)
        if upper is not None:
            stops[tp] = min(stops[tp], upper)
    return {tp: (starts[tp], max(starts[tp], stops[tp])) for tp in tps}


async def replay(kafka: KafkaSettings, plan: ReplayPlan) -> ReplayReport:
    """Copy the matching records of ``plan.source`` within its range to the plan's topic or URL."""
    report = ReplayReport()
    consumer = AIOKafkaConsumer(
        client_id=f"{kafka.client_id}-replay",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **kafka.client_kwargs(),
    )
    sink: _TopicSink | _GatewaySink | None = None
    async with asyncio.timeout(plan.timeout):
        await consumer.start()
        # Let the consumer's background task start: stopping it before then raises CancelledError.
        await asyncio.sleep(0)
        try:
            partitions = consumer.partitions_for_topic(plan.source)
            if partitions is None:
                await consumer.topics()  # refreshes the cluster metadata
                partitions = consumer.partitions_for_topic(plan.source)
            if not partitions:
                raise ValueError(f"topic {plan.source} does not exist")
            tps = [TopicPartition(plan.source, p) for p in sorted(partitions)]
            consumer.assign(tps)
            ranges = await _ranges(consumer, tps, plan)
            report.ranges = {tp.partition: r for tp, r in ranges.items()}
            pending = {tp for tp, (start, stop) in ranges.items() if stop > start}
            for tp in pending:
                consumer.seek(tp, ranges[tp][0])
            if not plan.dry_run and pending:
                if plan.target is not None:
                    sink = _TopicSink(kafka, plan.target)
                else:
                    assert plan.target_url is not None
                    sink = _GatewaySink(plan.target_url, plan.request_timeout)
                await sink.start()
            while pending:
                batch = await consumer.getmany(*pending, timeout_ms=500)
                for tp, records in batch.items():
                    stop = ranges[tp][1]
                    for record in records:
                        if record.offset >= stop:
                            break
                        report.scanned += 1
                        headers = dict(record.headers)
                        if plan.since_ms is not None and record.timestamp < plan.since_ms:
                            continue
                        if plan.until_ms is not None and record.timestamp >= plan.until_ms:
                            continue
                        if not plan.record_filter.matches(record.value, headers):
                            continue
                        report.matched += 1
                        report.types[RecordFilter.type_of(headers, None) or "?"] += 1
                        if sink is not None:
                            await sink.put(record, report)
                for tp in list(pending):
                    if await consumer.position(tp) >= ranges[tp][1]:
                        pending.discard(tp)
            if sink is not None:
                await sink.finish(report)
        finally:
            if sink is not None:
                await sink.stop()
            await consumer.stop()
    log.info("replayed %d of %d records from %s to %s", report.published, report.scanned, plan.source, plan.destination)
    return report
