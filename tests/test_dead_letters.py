"""Signed but unusable input is kept verbatim on the dead-letter topic and answered 200."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.signature import sign
from igw.config import KafkaSettings
from tests.plugins.gateway import APP_SECRET, GatewayClient, meta_bytes, metric, post_signed
from tests.plugins.kafka import TopicReader


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"this is not json", "not_json"),
        (b'{"object":"instagram","entry":[', "not_json"),
        (b"[1,2,3]", "not_object"),
        (b'{"entry":[]}', "no_object"),
        (b'{"object":"whatsapp_business_account","entry":[]}', "unsupported_object"),
        (b'{"object":"instagram","entry":{"id":"1"}}', "bad_entry"),
        (b"[" * 5000 + b"]" * 5000, "not_json"),
    ],
)
async def test_unusable_body_is_dead_lettered_verbatim(
    gateway_client: GatewayClient, kafka_settings: KafkaSettings, topic_reader: TopicReader, body: bytes, reason: str
) -> None:
    """Meta would only retry the same bytes: keep them with the reason and say 200."""
    before = metric(gateway_client, "igw_dead_letters_total", {"reason": reason})
    resp = await post_signed(gateway_client, body)
    assert resp.status == 200
    [record] = await topic_reader(kafka_settings.topic("deadletter"), expect=1)
    assert record.value == body
    assert record.headers["igw_reason"] == reason.encode()
    assert record.headers["igw_signature"] == sign(body, APP_SECRET).encode()
    assert int(record.headers["igw_received_at"]) > 1_700_000_000_000
    assert metric(gateway_client, "igw_dead_letters_total", {"reason": reason}) == before + 1


async def test_bad_item_does_not_lose_its_neighbours(
    gateway_client: GatewayClient, kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    """An unreadable item is dead-lettered with its path; the good items beside it are published."""
    account = "17841400000000000"
    good = {"sender": {"id": "42"}, "recipient": {"id": account}, "timestamp": 1764000000000}
    body = meta_bytes(
        {
            "object": "instagram",
            "entry": [
                {"id": account, "messaging": [{**good, "message": {"mid": "a", "text": "one"}}, "garbage", 7]},
                "not an entry",
                {"id": account, "messaging": [{**good, "message": {"mid": "b", "text": "two"}}]},
            ],
        }
    )
    resp = await post_signed(gateway_client, body)
    assert resp.status == 200
    messages = await topic_reader(kafka_settings.topic("messages"), expect=2)
    assert sorted(orjson.loads(r.value)["message"]["text"] for r in messages) == ["one", "two"]
    [dead] = await topic_reader(kafka_settings.topic("deadletter"), expect=1)
    assert dead.value == body
    assert dead.headers["igw_paths"] == b"entry[0].messaging[1],entry[0].messaging[2],entry[1]"


async def test_unknown_item_is_kept_not_dropped(
    gateway_client: GatewayClient, kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    """A messaging key nobody knows yet becomes an 'unknown' event with the raw item."""
    item = {"sender": {"id": "42"}, "recipient": {"id": "7"}, "timestamp": 1764000000000, "brand_new": {"x": 1}}
    body = meta_bytes({"object": "page", "entry": [{"id": "7", "time": 1764000000000, "messaging": [item]}]})
    assert (await post_signed(gateway_client, body)).status == 200
    [record] = await topic_reader(kafka_settings.topic("events"), expect=1)
    envelope = orjson.loads(record.value)
    assert envelope["type"] == "unknown"
    assert envelope["unknown"]["keys"] == ["brand_new", "recipient", "sender", "timestamp"]
    assert envelope["raw"] == item


async def test_large_unusable_body_is_kept_whole(
    gateway_settings: GatewaySettings, kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    """A 2 MiB signed body that is not JSON (over Kafka's 1 MiB default) is still kept verbatim."""
    settings = replace(
        gateway_settings,
        max_body_bytes=3 * 1024 * 1024,
        kafka=replace(kafka_settings, max_message_bytes=3 * 1024 * 1024 + 65_536),
    )
    client: GatewayClient = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    try:
        body = b"not json " * (2 * 1024 * 1024 // 9)
        assert (await post_signed(client, body)).status == 200
    finally:
        await client.close()
    [record] = await topic_reader(kafka_settings.topic("deadletter"), expect=1, timeout=20)
    assert record.value == body
