"""The agent with sealed content and erasures: it reads sealed DMs, an erasure drops the person's history
and pause (the ledger keeps ids only), and the person's next DM is answered normally."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumers.agent_replies.model import Turn
from consumers.agent_replies.store import MemoryStore
from igw.config import KafkaSettings
from igw.envelope import Topic
from igw.keystore import SqliteKeyStore
from igw.normalize import Event
from igw.sealing import Sealer
from igw_tools.erase import Erasure, erase
from tests.plugins.agent import ACCOUNT, Emulator, StartAgent, envelope, publish

pytestmark = pytest.mark.kafka

ALICE = "7000000000000001"
BOB = "7000000000000002"


async def sealed(sealer: Sealer, body: dict[str, Any]) -> dict[str, Any]:
    cid = body["conversation_id"]
    event = Event(body["id"], body["type"], Topic.MESSAGES, cid, body["timestamp"], "src", cid, body)
    await sealer.prepare([event])
    out = sealer.seal(event).envelope
    assert "message" not in out  # the agent must open it to answer
    return out


async def wait_until(check: Any, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.1)
    return False


async def test_agent_answers_sealed_dms_and_forgets_an_erased_person(
    start_agent: StartAgent, agent_emulator: Emulator, kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    """Sealed DMs are answered; after `igw erase` the person's history is gone, others' stay, and they are
    answered again afterwards."""
    keys_path = tmp_path / "keys.db"
    keys = SqliteKeyStore(keys_path)
    sealer = Sealer(keys)
    store = MemoryStore()
    try:
        await start_agent({"IGW_CONTENT_KEYS": f"sqlite:{keys_path}"}, store=store)
        for user in (ALICE, BOB):
            agent_emulator.state.record_inbound(ACCOUNT, user, time.time() * 1000)
        await publish(
            kafka_settings,
            [await sealed(sealer, envelope(user, "What are your opening hours?")) for user in (ALICE, BOB)],
        )
        await agent_emulator.wait_for(2)
        assert agent_emulator.replies_to(ALICE)
        assert agent_emulator.replies_to(BOB)
        alice, bob = (f"instagram:{ACCOUNT}:{user}" for user in (ALICE, BOB))
        # The rules agent keeps no history; an LLM agent would have written these turns.
        for conversation in (alice, bob):
            await store.append_history(conversation, (Turn("user", "my phone is +41 79 555 12 34"),), 10, 3600)

        await store.pause_conversation(alice, time.time() + 3600)
        report = await erase(kafka_settings, keys, Erasure("instagram", ACCOUNT, ALICE))
        assert report.keys_deleted == 1

        async def forgotten() -> bool:
            return not await store.history(alice, 10) and await store.conversation_paused_until(alice) is None

        assert await wait_until(forgotten), "the agent did not apply the erasure"
        assert await store.history(bob, 10)  # other people's history stays

        await sealer.refresh()
        later = envelope(ALICE, "Hello again, can I book for Friday?", timestamp_ms=report.erased_at + 1000)
        await publish(kafka_settings, [await sealed(sealer, later)])
        await agent_emulator.wait_for(3)
        assert len(agent_emulator.replies_to(ALICE)) == 2
    finally:
        await keys.close()


async def test_erasure_records_of_other_kinds_are_ignored(
    start_agent: StartAgent, kafka_settings: KafkaSettings
) -> None:
    """A deletion request (not yet mapped to a person) on the erasures topic changes nothing and is committed."""
    store = MemoryStore()
    await start_agent(store=store)
    request = {"v": 1, "id": "c1", "type": "erasure_request", "app_user_id": "218471"}
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.bootstrap_servers, enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(kafka_settings.topic("erasures"), orjson.dumps(request), key=b"c1")
    finally:
        await producer.stop()
    await asyncio.sleep(1.0)
    assert await store.paused_conversations() == 0
