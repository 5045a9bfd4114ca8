"""Erasure on the real broker: sealed content, `igw erase`, Meta's deletion callbacks, topic retention."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.access_log import access_logger_for
from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.signed_request import sign_request
from gateway.typedefs import state_key
from igw.config import KafkaSettings
from igw.keystore import SqliteKeyStore
from igw.sealing import WATCH_INTERVAL, Opener
from igw_tools.deletion_requests import process_requests
from igw_tools.erase import Erasure, erase
from tests.plugins.gateway import APP_SECRET, GatewayClient, dm_body, post_signed
from tests.plugins.graph_emulator import MESSENGER_ACCOUNT, TEST_ACCOUNTS, RunningEmulator
from tests.plugins.kafka import TopicReader

pytestmark = pytest.mark.kafka

ACCOUNT = "17841400000000000"
ALICE = "1111111111111111"
BOB = "2222222222222222"


@pytest.fixture
def keys_path(tmp_path: Path) -> Path:
    return tmp_path / "keys.db"


@pytest.fixture
async def sealing_client(gateway_settings: GatewaySettings, keys_path: Path) -> AsyncIterator[GatewayClient]:
    settings = dataclasses.replace(
        gateway_settings, content_keys=f"sqlite:{keys_path}", public_url="https://hooks.example.com"
    )
    app = create_app(settings)
    server = TestServer(app)
    await server.start_server(
        auto_decompress=False, access_log_class=access_logger_for(app[state_key].metrics, lines=True)
    )
    client: GatewayClient = TestClient(server)
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def opened(store: SqliteKeyStore, values: list[bytes]) -> list[dict[str, Any]]:
    opener = Opener(store)
    return [await opener.open(orjson.loads(v)) for v in values]


async def test_erase_makes_one_persons_messages_unreadable(
    sealing_client: GatewayClient, kafka_settings: KafkaSettings, keys_path: Path, topic_reader: TopicReader
) -> None:
    """After `igw erase`, none of Alice's text can be read back from Kafka; Bob's can; her next DM works."""
    for i, (user, text) in enumerate([(ALICE, "alice: my address is 4 Elm St"), (BOB, "bob: open on Sunday?")]):
        body = dm_body(text, user=user, mid=f"m{i}", timestamp=1764000000000 + i)
        assert (await post_signed(sealing_client, body)).status == 200
    store = SqliteKeyStore(keys_path)
    try:
        report = await erase(kafka_settings, store, Erasure("instagram", ACCOUNT, ALICE))
        assert report.keys_deleted == 1
        await asyncio.sleep(2 * WATCH_INTERVAL)  # the gateway notices the erasure and drops Alice's key
        later = dm_body("alice: hello again", user=ALICE, mid="m9", timestamp=report.erased_at + 1000)
        assert (await post_signed(sealing_client, later)).status == 200

        records = await topic_reader(kafka_settings.topic("messages"), expect=3)
        raw = b"".join(r.value for r in records)
        assert b"Elm St" not in raw
        assert b"Sunday" not in raw  # sealed, though readable with its key
        texts = {
            e["user_id"]: e.get("message", {}).get("text") for e in await opened(store, [r.value for r in records])
        }
        envelopes = await opened(store, [r.value for r in records])
        alice = [e for e in envelopes if e["user_id"] == ALICE]
        assert sorted(str(e.get("message", {}).get("text")) for e in alice) == ["None", "alice: hello again"]
        assert [e.get("erased") for e in alice if "message" not in e] == [True]
        assert texts[BOB] == "bob: open on Sunday?"

        (erasure,) = await topic_reader(kafka_settings.topic("erasures"), expect=1)
        document = orjson.loads(erasure.value)
        assert (document["type"], document["conversation_id"]) == ("erasure", f"instagram:{ACCOUNT}:{ALICE}")
        assert erasure.key == f"instagram:{ACCOUNT}:{ALICE}".encode()
    finally:
        await store.close()


async def test_data_deletion_callback_accepts_meta_format_and_refuses_forgeries(
    sealing_client: GatewayClient, kafka_settings: KafkaSettings, topic_reader: TopicReader
) -> None:
    """A valid signed_request is stored and answered with url + confirmation_code; forged ones do nothing."""
    valid = sign_request(
        {"algorithm": "HMAC-SHA256", "issued_at": 1764000000, "user_id": "218471"}, APP_SECRET.encode()
    )
    response = await sealing_client.post("/api/v1/meta/data-deletion", data={"signed_request": valid})
    assert response.status == 200
    answer = await response.json()
    code = answer["confirmation_code"]
    assert answer["url"] == f"https://hooks.example.com/api/v1/meta/deletion-status?id={code}"

    page = await sealing_client.get(f"/api/v1/meta/deletion-status?id={code}")
    assert page.status == 200
    assert "received" in await page.text()
    assert (await sealing_client.get("/api/v1/meta/deletion-status?id=nope")).status == 404

    forged = sign_request({"algorithm": "HMAC-SHA256", "user_id": "218471"}, b"not-the-secret")
    refusals = [
        ({"signed_request": forged}, 403),
        ({"signed_request": "garbage"}, 400),
        ({}, 400),
        ({"signed_request": sign_request({"algorithm": "HMAC-SHA256", "user_id": "1", "expires": 1}, b"x")}, 403),
        (
            {
                "signed_request": sign_request(
                    {"algorithm": "HMAC-SHA256", "user_id": "1", "expires": 1}, APP_SECRET.encode()
                )
            },
            400,
        ),
    ]
    for form, status in refusals:
        assert (await sealing_client.post("/api/v1/meta/data-deletion", data=form)).status == status
    assert (await sealing_client.post("/api/v1/meta/deauthorize", data={"signed_request": forged})).status == 403
    deauth = await sealing_client.post("/api/v1/meta/deauthorize", data={"signed_request": valid})
    assert deauth.status == 200

    records = await topic_reader(kafka_settings.topic("erasures"), expect=2, settle=1.0)
    kinds = sorted(orjson.loads(r.value)["kind"] for r in records)
    assert kinds == ["data_deletion", "deauthorize"]  # nothing from the refused ones


async def test_topics_are_created_with_retention(kafka_settings: KafkaSettings) -> None:
    """Topics igw creates carry retention.ms (a week; erasures a month) and the dead letters' size limit."""
    from igw.topics import topic_configs

    assert topic_configs(kafka_settings, "messages") == {"retention.ms": str(168 * 3_600_000)}
    assert topic_configs(kafka_settings, "erasures")["retention.ms"] == str(720 * 3_600_000)
    assert "max.message.bytes" in topic_configs(kafka_settings, "deadletter")


async def test_deletion_request_is_mapped_and_erased_on_messenger(
    sealing_client: GatewayClient,
    kafka_settings: KafkaSettings,
    keys_path: Path,
    graph_emulator: RunningEmulator,
    topic_reader: TopicReader,
) -> None:
    """`igw erase --requests`: the app-scoped id is mapped to the Page-scoped id, erased, and the page says so."""
    page, psid, asid = MESSENGER_ACCOUNT.account_id, "6500000000000001", "218471"
    async with aiohttp.ClientSession() as session:
        learn = {"asid": asid, "page_id": page, "psid": psid}
        await session.post(f"{graph_emulator.base_url}/_emulator/app_scoped_ids", json=learn)
    valid = sign_request({"algorithm": "HMAC-SHA256", "issued_at": 1764000000, "user_id": asid}, APP_SECRET.encode())
    response = await sealing_client.post("/api/v1/meta/data-deletion", data={"signed_request": valid})
    code = (await response.json())["confirmation_code"]

    store = SqliteKeyStore(keys_path)
    try:
        common = {"graph_url": f"{graph_emulator.base_url}/v25.0", "app_id": "1234", "app_secret": APP_SECRET}
        (outcome,) = await process_requests(kafka_settings, store, TEST_ACCOUNTS, **common)
        assert (outcome.code, outcome.status) == (code, "done")
        assert outcome.erased == (f"Messenger conversation with Page {page}",)
        assert outcome.reason is not None
        assert "Instagram" in outcome.reason  # the IG accounts could not be covered, and the page says so
        assert await process_requests(kafka_settings, store, TEST_ACCOUNTS, **common) == []  # done once
    finally:
        await store.close()
    page_text = await (await sealing_client.get(f"/api/v1/meta/deletion-status?id={code}")).text()
    assert "has been erased" in page_text
    assert "Instagram" in page_text
    records = await topic_reader(kafka_settings.topic("erasures"), expect=2)
    erasures = [orjson.loads(r.value) for r in records if orjson.loads(r.value)["type"] == "erasure"]
    assert [e["conversation_id"] for e in erasures] == [f"messenger:{page}:{psid}"]
