"""The analytics consumer against a real broker: every topic read in its own group, served on /metrics."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from pathlib import Path

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from consumers.analytics.service import run_analytics
from consumers.analytics.settings import AnalyticsSettings
from igw.config import KafkaSettings
from igw.topics import ensure_topics
from igw_tools.localbroker import free_port
from tests.analytics_records import ACCOUNT, T0, encode, message, postback, reply

pytestmark = pytest.mark.kafka


async def wait_for_sample(
    registry: CollectorRegistry, name: str, labels: dict[str, str], expect: float, timeout: float = 20.0
) -> float | None:
    deadline = time.monotonic() + timeout
    got = registry.get_sample_value(name, labels)
    while time.monotonic() < deadline and got != expect:
        await asyncio.sleep(0.1)
        got = registry.get_sample_value(name, labels)
    return got


async def test_consumes_every_topic_once_and_serves_metrics(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    """Records on messages, postbacks and replies (one duplicated) show up once each on /metrics and in the rollup."""
    base = AnalyticsSettings()
    consumer = dataclasses.replace(
        base.consumer,
        kafka=kafka_settings,
        topics=tuple(kafka_settings.topic(n) for n in ("messages", "postbacks", "events", "deadletter", "replies")),
        group_id=f"analytics-{kafka_settings.topic_prefix}",
        metrics_host="127.0.0.1",
        metrics_port=free_port(),
        poll_timeout_ms=100,
        commit_interval_seconds=0.2,
        lag_interval_seconds=0.5,
        shutdown_timeout_seconds=2.0,
        # Tansu holds a JoinGroup for part of the rebalance timeout (max_poll_interval_ms): keep it short.
        max_poll_interval_ms=2000,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    rollup = tmp_path / "rollup.sqlite"
    settings = dataclasses.replace(base, consumer=consumer, payload_min_count=1, rollup_path=rollup)
    await ensure_topics(kafka_settings, settings.topics())
    producer = AIOKafkaProducer(**kafka_settings.client_kwargs(), enable_idempotence=False)
    await producer.start()
    try:
        dm = encode(message("hi", timestamp=T0))
        for topic, value in [
            ("messages", dm),
            ("messages", dm),  # Meta redelivered it
            ("postbacks", encode(postback("BOOK", timestamp=T0 + 1))),
            ("replies", encode(reply("sent", timestamp=T0 + 2000, latency_ms=2000))),
        ]:
            await producer.send_and_wait(kafka_settings.topic(topic), value)
    finally:
        await producer.stop()

    registry = CollectorRegistry()
    stop = asyncio.Event()
    task = asyncio.create_task(run_analytics(settings, stop, registry=registry))
    try:
        sent = {"account": ACCOUNT, "outcome": "sent"}
        assert await wait_for_sample(registry, "igw_biz_replies_total", sent, 1) == 1
        labels = {"account": ACCOUNT, "type": "text"}
        assert await wait_for_sample(registry, "igw_biz_inbound_messages_total", labels, 1) == 1
        clicks = {"account": ACCOUNT, "kind": "postback", "payload": "BOOK"}
        assert await wait_for_sample(registry, "igw_biz_clicks_total", clicks, 1) == 1
        assert await wait_for_sample(registry, "igw_biz_duplicates_total", {"topic": "messages"}, 1) == 1
        url = f"http://127.0.0.1:{consumer.metrics_port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/metrics") as resp:
                text = await resp.text()
            async with http.get(f"{url}/healthz") as health:
                assert health.status == 200
        assert 'igw_biz_first_response_seconds_count{account="17841400000000000"} 1.0' in text
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 15) == 0
    # The last flush happens on the way out.
    db = sqlite3.connect(rollup)
    rows = dict(db.execute("SELECT metric, value FROM rollup_hourly WHERE hour = '2025-11-24T16:00Z'").fetchall())
    db.close()
    assert rows["inbound_messages.text"] == 1
    assert rows["clicks.postback.BOOK"] == 1
    assert rows["replies.sent"] == 1
