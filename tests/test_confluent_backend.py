"""The optional librdkafka backend keeps the gateway's contract: 200 only after the broker's ack."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.settings import GatewaySettings
from igw.config import KafkaSettings
from igw_tools.localbroker import LocalBroker
from tests.plugins.gateway import GatewayClient, dm_body, meta_bytes, post_signed
from tests.plugins.kafka import TopicReader

pytestmark = pytest.mark.kafka


@pytest.fixture
async def confluent_client(gateway_settings: GatewaySettings) -> AsyncIterator[GatewayClient]:
    settings = replace(gateway_settings, producer_backend="confluent")
    client: GatewayClient = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def test_dm_and_batch_through_librdkafka(
    confluent_client: GatewayClient, kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    """A DM and a 200-item batch are acknowledged and readable, keyed by conversation."""
    assert (await post_signed(confluent_client, dm_body(mid="rdk-1"))).status == 200
    items = [
        {"sender": {"id": f"u{i}"}, "recipient": {"id": "acc"}, "timestamp": 1764000000000 + i,
         "message": {"mid": f"rdk-b{i}", "text": "hi"}}
        for i in range(200)
    ]  # fmt: skip
    body = meta_bytes({"object": "instagram", "entry": [{"id": "acc", "messaging": items}]})
    assert (await post_signed(confluent_client, body)).status == 200
    records = await topic_reader(kafka_settings.topic("messages"), expect=201)
    assert len(records) == 201
    first = next(r for r in records if orjson.loads(r.value)["message"]["mid"] == "rdk-1")
    assert first.key == b"instagram:17841400000000000:1234567890123456"
    assert first.headers["ce_type"] == b"igw.v1.message"


async def test_same_partition_as_aiokafka(
    gateway_client: GatewayClient,
    confluent_client: GatewayClient,
    kafka_settings: KafkaSettings,
    topic_reader: TopicReader,
) -> None:
    """Both backends hash keys alike, so one conversation stays in one partition whichever published."""
    for i in range(5):
        user = f"31000000000000{i:02d}"
        assert (await post_signed(gateway_client, dm_body(mid=f"a{i}", user=user))).status == 200
        assert (await post_signed(confluent_client, dm_body(mid=f"c{i}", user=user))).status == 200
    records = await topic_reader(kafka_settings.topic("messages"), expect=10)
    partitions: dict[bytes | None, set[int]] = {}
    for record in records:
        partitions.setdefault(record.key, set()).add(record.partition)
    assert len(partitions) == 5
    assert all(len(p) == 1 for p in partitions.values())


async def test_503_when_broker_frozen(gateway_settings: GatewaySettings) -> None:
    """With librdkafka too, a broker that does not answer gets 503 within the deadline."""
    broker = LocalBroker()
    broker.start()
    try:
        kafka = replace(gateway_settings.kafka, bootstrap_servers=broker.bootstrap_servers)
        settings = replace(gateway_settings, kafka=kafka, producer_backend="confluent", publish_timeout=1.0)
        client: GatewayClient = TestClient(TestServer(create_app(settings)))
        await client.start_server()
        try:
            assert (await post_signed(client, dm_body(mid="ok"))).status == 200
            broker.freeze()
            assert (await post_signed(client, dm_body(mid="frozen"))).status == 503
            broker.thaw()
        finally:
            broker.thaw()
            await client.close()
    finally:
        broker.stop()
