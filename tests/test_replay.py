"""``igw replay`` copies a bounded, filtered range of a topic to another, keeping keys and headers."""

from __future__ import annotations

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from gateway.signature import sign
from igw.config import KafkaSettings
from igw.topics import ensure_topics
from igw_tools.commands.simulate import SimulationPlan, simulate
from igw_tools.replay import RecordFilter, ReplayPlan, parse_offsets, parse_time_ms, replay
from tests.plugins.gateway import APP_SECRET, dm_body
from tests.plugins.kafka import TopicReader
from tests.plugins.tools import run_cli

pytestmark = pytest.mark.kafka


async def _produce(settings: KafkaSettings, topic: str, records: list[tuple[bytes, bytes, int, int]]) -> None:
    """(key, value, partition, timestamp_ms) records, with a header naming each one."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, enable_idempotence=False)
    await producer.start()
    try:
        for i, (key, value, partition, ts) in enumerate(records):
            await producer.send_and_wait(
                topic, value, key=key, partition=partition, timestamp_ms=ts, headers=[("n", str(i).encode())]
            )
    finally:
        await producer.stop()


async def test_replays_filtered_events_with_keys_and_headers(
    webhook_url: str, kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    """Events published by the gateway, filtered by type, reach the target with the same keys, values and headers."""
    report = await simulate(SimulationPlan(url=webhook_url, secret=APP_SECRET, count=30, batch=2, rate=0, seed=5))
    assert report.failed == 0
    source, target = kafka_settings.topic("messages"), kafka_settings.topic("replayed")
    originals = await topic_reader(source, expect=report.expected_topics["messages"], settle=0.2)
    echoes = [r for r in originals if r.headers["ce_type"] == b"igw.v1.message_echo"]
    assert echoes

    plan = ReplayPlan(source=source, target=target, record_filter=RecordFilter(types=frozenset({"message_echo"})))
    result = await replay(kafka_settings, plan)
    assert result.scanned == len(originals)
    assert result.matched == result.published == len(echoes)

    copied = await topic_reader(target, expect=len(echoes), settle=0.3)
    assert sorted((r.key, r.value) for r in copied) == sorted((r.key, r.value) for r in echoes)
    assert sorted(sorted(r.headers.items()) for r in copied) == sorted(sorted(r.headers.items()) for r in echoes)


async def test_offsets_time_and_dry_run(kafka_settings: KafkaSettings, topic_reader: TopicReader) -> None:
    """Offset and time ranges select the right records; a dry run counts them and publishes nothing."""
    await ensure_topics(kafka_settings, ["events"])
    source = kafka_settings.topic("events")
    base = 1_764_000_000_000
    await _produce(kafka_settings, source, [(b"k%d" % i, b"v%d" % i, i % 2, base + i * 1000) for i in range(10)])

    dry = await replay(
        kafka_settings, ReplayPlan(source=source, target=kafka_settings.topic("copy"), dry_run=True, to_offsets=3)
    )
    assert (dry.matched, dry.published) == (6, 0)  # offsets 0, 1, 2 of both partitions
    assert dry.ranges == {0: (0, 3), 1: (0, 3), 2: (0, 0)} or dry.ranges == {0: (0, 3), 1: (0, 3)}

    ranged = await replay(
        kafka_settings,
        ReplayPlan(source=source, target=kafka_settings.topic("offsets"), from_offsets={0: 1, 1: 4}, to_offsets={0: 3}),
    )
    assert ranged.published == 3  # partition 0: offsets 1 and 2; partition 1: offset 4
    got = await topic_reader(kafka_settings.topic("offsets"), expect=3, settle=0.3)
    assert sorted(r.value for r in got) == [b"v2", b"v4", b"v9"]

    timed = await replay(
        kafka_settings,
        ReplayPlan(
            source=source,
            target=kafka_settings.topic("timed"),
            since_ms=base + 3000,
            until_ms=parse_time_ms("2025-11-24T16:00:07Z"),
        ),
    )
    assert timed.published == 4
    got = await topic_reader(kafka_settings.topic("timed"), expect=4, settle=0.3)
    assert sorted(r.value for r in got) == [b"v3", b"v4", b"v5", b"v6"]
    assert await topic_reader(kafka_settings.topic("copy"), expect=1, timeout=1.0) == []


async def test_dead_letters_by_reason_and_account(
    kafka_settings: KafkaSettings, topic_reader: TopicReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dead letters match --type on igw_reason and --account on the ids of the body's entries (through the CLI)."""
    await ensure_topics(kafka_settings, ["deadletter"])
    source = kafka_settings.topic("deadletter")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.bootstrap_servers, enable_idempotence=False)
    await producer.start()
    try:
        for account, reason in (("111", b"bad_item"), ("222", b"bad_item"), ("111", b"not_json")):
            body = orjson.dumps({"object": "instagram", "entry": [{"id": account, "messaging": [1]}]})
            await producer.send_and_wait(source, body, headers=[("igw_reason", reason)])
    finally:
        await producer.stop()
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_settings.bootstrap_servers)
    monkeypatch.setenv("IGW_TOPIC_PREFIX", kafka_settings.topic_prefix)
    monkeypatch.setenv("KAFKA_ENABLE_IDEMPOTENCE", "false")
    status, out, err = await run_cli(
        ["replay", "deadletter", "--to", "redriven", "--type", "bad_item", "--account", "111"]
    )
    assert status == 0, err
    assert "matched 1 (bad_item 1)" in out
    [record] = await topic_reader("redriven", expect=1, settle=0.3)
    assert record.headers["igw_reason"] == b"bad_item"
    assert b'"id":"111"' in record.value


def test_parsers() -> None:
    """Times are ms or ISO 8601 (UTC unless zoned); offsets are N or P:N lists."""
    assert parse_time_ms("1764000000000") == 1_764_000_000_000
    assert parse_time_ms("2025-11-24T16:00:00Z") == 1_764_000_000_000
    assert parse_time_ms("2025-11-24T17:00:00+01:00") == 1_764_000_000_000
    assert parse_offsets("12") == 12
    assert parse_offsets("0:5,2:7") == {0: 5, 2: 7}
    with pytest.raises(ValueError, match="not offsets"):
        parse_offsets("a:b")


async def test_dead_letters_redriven_through_the_gateway(
    webhook_url: str, kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    """--to-url posts each dead letter with Meta's original signature; the gateway takes it in as a fresh delivery."""
    await ensure_topics(kafka_settings, ["deadletter"])
    source = kafka_settings.topic("deadletter")
    usable = dm_body("kept while the normalizer was broken")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.bootstrap_servers, enable_idempotence=False)
    await producer.start()
    try:
        headers = [("igw_reason", b"bad_item"), ("igw_signature", sign(usable, APP_SECRET).encode())]
        await producer.send_and_wait(source, usable, headers=headers)
        await producer.send_and_wait(source, usable, headers=[("igw_reason", b"bad_item")])  # no signature kept
    finally:
        await producer.stop()

    report = await replay(kafka_settings, ReplayPlan(source=source, target_url=webhook_url))
    assert (report.matched, report.published, report.failed) == (2, 1, 1)
    assert report.statuses == {"200": 1, "no-signature": 1}
    [record] = await topic_reader(kafka_settings.topic("messages"), expect=1, settle=0.3)
    assert orjson.loads(record.value)["message"]["text"] == "kept while the normalizer was broken"
