"""Signed deliveries end up in Kafka, normalized, keyed and with CloudEvents headers."""

from __future__ import annotations

import orjson

from igw.config import KafkaSettings
from tests.plugins.gateway import GatewayClient, dm_body, meta_bytes, metric, post_signed
from tests.plugins.kafka import TopicReader


async def test_dm_is_published_after_ack(
    gateway_client: GatewayClient, kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    """A signed DM gets 200 and one envelope on <prefix>.messages, keyed by conversation."""
    resp = await post_signed(gateway_client, dm_body("Hi! Are you open on Saturday? ✨"))
    assert resp.status == 200
    [record] = await topic_reader(kafka_settings.topic("messages"), expect=1)
    envelope = orjson.loads(record.value)
    assert envelope["type"] == "message"
    assert envelope["message"]["text"] == "Hi! Are you open on Saturday? ✨"
    assert envelope["conversation_id"] == "instagram:17841400000000000:1234567890123456"
    assert record.key == b"instagram:17841400000000000:1234567890123456"
    assert record.headers["ce_specversion"] == b"1.0"
    assert record.headers["ce_id"] == envelope["id"].encode()
    assert record.headers["ce_type"] == b"igw.v1.message"
    assert record.headers["ce_source"] == b"igw/instagram/17841400000000000"
    assert record.headers["ce_time"] == b"2025-11-24T16:00:00.000Z"
    assert record.headers["content-type"] == b"application/json"


async def test_unsigned_or_wrongly_signed_is_refused_and_not_published(
    gateway_client: GatewayClient, kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    """Missing and wrong signatures get 403 and nothing reaches Kafka."""
    before = metric(gateway_client, "igw_webhook_signature_failures_total", {"reason": "mismatch"})
    body = dm_body()
    resp = await gateway_client.post("/api/v1/instagram/webhook", data=body)
    assert resp.status == 403
    resp = await post_signed(gateway_client, body, secret="not-the-secret")
    assert resp.status == 403
    assert (await resp.json())["error"] == "invalid_signature"
    after = metric(gateway_client, "igw_webhook_signature_failures_total", {"reason": "mismatch"})
    assert after == before + 1
    assert await topic_reader(kafka_settings.topic("messages"), expect=1, timeout=1.5) == []


async def test_routing_by_type(
    gateway_client: GatewayClient, kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    """Messages, postbacks and other events land on their own topics."""
    account, user = "17841400000000000", "1234567890123456"
    base = {"sender": {"id": user}, "recipient": {"id": account}, "timestamp": 1764000000000}
    body = meta_bytes(
        {
            "object": "instagram",
            "entry": [
                {
                    "id": account,
                    "time": 1764000000000,
                    "messaging": [
                        {**base, "message": {"mid": "m1", "text": "hello"}},
                        {**base, "postback": {"mid": "p1", "title": "Book", "payload": "BOOK"}},
                        {**base, "reaction": {"mid": "m0", "action": "react", "reaction": "love", "emoji": "❤"}},
                        {**base, "read": {"mid": "m0"}},
                    ],
                }
            ],
        }
    )
    assert (await post_signed(gateway_client, body)).status == 200
    messages = await topic_reader(kafka_settings.topic("messages"), expect=1)
    postbacks = await topic_reader(kafka_settings.topic("postbacks"), expect=1)
    events = await topic_reader(kafka_settings.topic("events"), expect=2)
    assert [orjson.loads(r.value)["type"] for r in messages] == ["message"]
    assert [orjson.loads(r.value)["postback"]["payload"] for r in postbacks] == ["BOOK"]
    assert sorted(orjson.loads(r.value)["type"] for r in events) == ["reaction", "read"]


async def test_redelivery_keeps_ids(
    gateway_client: GatewayClient, kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    """Meta's retry of the same event carries the same id; a different event gets another."""
    body = dm_body(mid="mid-redelivered")
    assert (await post_signed(gateway_client, body)).status == 200
    assert (await post_signed(gateway_client, body)).status == 200
    assert (await post_signed(gateway_client, dm_body(mid="mid-other"))).status == 200
    records = await topic_reader(kafka_settings.topic("messages"), expect=3)
    ids = [orjson.loads(r.value)["id"] for r in records]
    by_mid = {orjson.loads(r.value)["message"]["mid"]: orjson.loads(r.value)["id"] for r in records}
    assert len(ids) == 3
    assert len(set(ids)) == 2
    assert by_mid["mid-redelivered"] != by_mid["mid-other"]


async def test_thousand_item_batch(
    gateway_client: GatewayClient, kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    """A 1000-item batch (Meta's maximum) is acknowledged as a whole: 1000 records, 1000 ids."""
    account = "17841400000000000"
    entries = [
        {
            "id": account,
            "time": 1764000000000 + e,
            "messaging": [
                {
                    "sender": {"id": f"90000000000{e:02d}{i:03d}"},
                    "recipient": {"id": account},
                    "timestamp": 1764000000000 + e * 100 + i,
                    "message": {"mid": f"mid-{e}-{i}", "text": f"message {i} of entry {e} – ünïcödé"},
                }
                for i in range(100)
            ],
        }
        for e in range(10)
    ]
    resp = await post_signed(gateway_client, meta_bytes({"object": "instagram", "entry": entries}))
    assert resp.status == 200
    records = await topic_reader(kafka_settings.topic("messages"), expect=1000, timeout=30)
    assert len(records) == 1000
    assert len({orjson.loads(r.value)["id"] for r in records}) == 1000


async def test_batched_records_keep_their_conversation_partition(
    gateway_client: GatewayClient, kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    """Records published as ready-made batches land where single sends of the same keys land."""
    users = [f"41000000000000{i:02d}" for i in range(10)]
    for i, user in enumerate(users):
        assert (await post_signed(gateway_client, dm_body(mid=f"single-{i}", user=user))).status == 200
    account = "17841400000000000"
    items = [
        {"sender": {"id": user}, "recipient": {"id": account}, "timestamp": 1764000000000 + n,
         "message": {"mid": f"batched-{n}-{user}", "text": "again"}}
        for n in range(3) for user in users
    ]  # fmt: skip
    body = meta_bytes({"object": "instagram", "entry": [{"id": account, "messaging": items}]})
    assert (await post_signed(gateway_client, body)).status == 200
    records = await topic_reader(kafka_settings.topic("messages"), expect=40)
    partitions: dict[bytes | None, set[int]] = {}
    for record in records:
        partitions.setdefault(record.key, set()).add(record.partition)
    assert len(records) == 40
    assert len(partitions) == 10
    assert all(len(p) == 1 for p in partitions.values())
