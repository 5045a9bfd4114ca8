"""What the gateway answers, driven through ``create_app`` with an in-memory publisher (no broker)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.signature import sign
from igw.errors import BrokerUnavailable, PublishError, PublishTimeout
from tests.plugins.gateway import APP_SECRET, WEBHOOK, GatewayClient, MemoryPublisher, dm_body, post_signed, serving

CONVERSATION = b"instagram:17841400000000000:1234567890123456"


async def test_signed_dm_is_answered_once_its_record_is_published(
    memory_gateway_client: GatewayClient, memory_publisher: MemoryPublisher, memory_gateway_settings: GatewaySettings
) -> None:
    """200 EVENT_RECEIVED after the publisher took one envelope, keyed by conversation, with CloudEvents headers."""
    resp = await post_signed(memory_gateway_client, dm_body("hello"))
    assert (resp.status, resp.headers["Content-Type"], await resp.read()) == (200, "text/plain", b"EVENT_RECEIVED")
    [record] = memory_publisher.records
    assert record.topic == memory_gateway_settings.kafka.topic("messages")
    assert record.key == CONVERSATION
    headers = dict(record.headers)
    assert headers["ce_type"] == b"igw.v1.message"
    assert headers["ce_id"] == orjson.loads(record.value)["id"].encode()
    assert orjson.loads(record.value)["message"]["text"] == "hello"


async def test_wrong_or_missing_signature_gets_403_and_publishes_nothing(
    memory_gateway_client: GatewayClient, memory_publisher: MemoryPublisher
) -> None:
    """No signature, or one made with another secret: 403 with a machine-readable error, nothing published."""
    unsigned = await memory_gateway_client.post(WEBHOOK, data=dm_body())
    wrong = await post_signed(memory_gateway_client, dm_body(), secret="not-the-secret")
    assert (unsigned.status, wrong.status) == (403, 403)
    assert (await wrong.json())["error"] == "invalid_signature"
    assert memory_publisher.records == []


@pytest.mark.parametrize("failure", [BrokerUnavailable("down"), PublishTimeout("slow")], ids=["unavailable", "timeout"])
async def test_kafka_failure_gets_503_until_a_check_finds_kafka_back(
    memory_gateway_client: GatewayClient, memory_publisher: MemoryPublisher, failure: PublishError
) -> None:
    """Without a spool, a publish Kafka did not acknowledge is a 503 with Retry-After, so Meta retries;
    once a Kafka check passes (here /readyz's), requests get 200 again."""
    memory_publisher.failure = failure
    resp = await post_signed(memory_gateway_client, dm_body())
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "1"
    assert (await resp.json())["error"] == "broker_unavailable"
    memory_publisher.failure = None
    assert (await memory_gateway_client.get("/readyz")).status == 200
    assert (await post_signed(memory_gateway_client, dm_body())).status == 200
    assert len(memory_publisher.records) == 1


async def test_unusable_signed_body_is_dead_lettered_and_answered_200(
    memory_gateway_client: GatewayClient, memory_publisher: MemoryPublisher, memory_gateway_settings: GatewaySettings
) -> None:
    """Signed bytes that are not JSON are kept verbatim with reason and signature: Meta would only resend them."""
    body = b"this is not json"
    assert (await post_signed(memory_gateway_client, body)).status == 200
    [record] = memory_publisher.records
    assert record.topic == memory_gateway_settings.kafka.topic("deadletter")
    assert record.value == body
    headers = dict(record.headers)
    assert headers["igw_reason"] == b"not_json"
    assert headers["igw_signature"] == sign(body, APP_SECRET).encode()


async def test_health_and_readiness_follow_the_publisher(
    memory_gateway_settings: GatewaySettings, memory_publisher: MemoryPublisher
) -> None:
    """/healthz is always 200; /readyz is 200 only while the producer is connected and every topic exists."""
    settings = replace(memory_gateway_settings, ready_cache_seconds=0)
    async with serving(create_app(settings, publisher_factory=lambda _: memory_publisher)) as client:
        assert memory_publisher.running
        assert (await client.get("/healthz")).status == 200
        ready = await client.get("/readyz")
        assert (ready.status, (await ready.json())["checks"]) == (200, {"kafka": "ok", "topics": "ok"})
        memory_publisher.missing = {settings.kafka.topic("messages")}
        missing = await client.get("/readyz")
        assert missing.status == 503
        assert (await missing.json())["checks"]["topics"] == f"missing: {settings.kafka.topic('messages')}"
        memory_publisher.connected = False
        gone = await client.get("/readyz")
        assert (gone.status, (await gone.json())["checks"]) == (503, {"kafka": "not connected"})
        assert (await client.get("/healthz")).status == 200
    assert not memory_publisher.running  # stopped by the app's cleanup


async def _eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_with_a_spool_kafka_away_is_answered_200_and_published_in_order_later(
    memory_gateway_settings: GatewaySettings, memory_publisher: MemoryPublisher, tmp_path: Path
) -> None:
    """With the spool on, bodies Kafka does not take are fsynced and answered 200, then drained in arrival order."""
    settings = replace(memory_gateway_settings, spool_dir=tmp_path / "spool", spool_after=0.05)
    async with serving(create_app(settings, publisher_factory=lambda _: memory_publisher)) as client:
        memory_publisher.failure = BrokerUnavailable("down")
        for n in range(3):
            assert (await post_signed(client, dm_body(mid=f"m{n}"))).status == 200
        assert memory_publisher.records == []
        memory_publisher.failure = None
        await _eventually(lambda: len(memory_publisher.records) == 3)
        # A body arriving while the drain catches up queues behind the spooled ones, never before them.
        assert (await post_signed(client, dm_body(mid="m3"))).status == 200
        await _eventually(lambda: len(memory_publisher.records) == 4)
        assert [orjson.loads(r.value)["message"]["mid"] for r in memory_publisher.records] == ["m0", "m1", "m2", "m3"]
