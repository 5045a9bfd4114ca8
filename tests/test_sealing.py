"""Per-person sealing of envelope content: round trip, erasure, tombstones, tampering, the stores."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest

from igw.keystore import KeyStore, MemoryKeyStore, RedisKeyStore, SqliteKeyStore, open_keystore
from igw.normalize import Event, normalize
from igw.sealing import Opener, Sealer
from tests.plugins.agent import REDIS_URL
from tests.plugins.gateway import dm_body

ALICE = "1111111111111111"
BOB = "2222222222222222"


def dm(user: str, text: str, ts: int = 1764000000000) -> Event:
    (event,) = normalize(dm_body(text, user=user, mid=f"m-{user}-{ts}", timestamp=ts), ts + 5).events
    return event


async def seal(sealer: Sealer, event: Event) -> Event:
    await sealer.prepare([event])
    return sealer.seal(event)


async def test_content_is_sealed_and_opens_again() -> None:
    """The sealed envelope holds no text; opened, it equals the original envelope."""
    store = MemoryKeyStore()
    event = dm(ALICE, "my phone is +41 79 555 12 34")
    sealed = await seal(Sealer(store), event)
    wire = orjson.dumps(sealed.envelope)
    assert b"555" not in wire
    assert b"raw" not in wire
    assert b'"message":' not in wire
    assert sealed.envelope["conversation_id"] == event.envelope["conversation_id"]
    assert await Opener(store).open(orjson.loads(wire)) == event.envelope


async def test_erasure_shreds_one_person_only() -> None:
    """After erasing Alice her records do not open; Bob's still do; her new DM gets a new key."""
    store = MemoryKeyStore()
    sealer = Sealer(store)
    await sealer.refresh()  # as the gateway's watch task does at start-up
    alice = orjson.loads(orjson.dumps((await seal(sealer, dm(ALICE, "secret a"))).envelope))
    bob = orjson.loads(orjson.dumps((await seal(sealer, dm(BOB, "secret b"))).envelope))
    assert await store.erase(alice["conversation_id"], 1764000001000) == 1
    opener = Opener(store)
    assert (await opener.open(alice)).get("erased") is True
    assert "message" not in await opener.open(alice)
    assert (await opener.open(bob))["message"]["text"] == "secret b"
    assert await sealer.refresh()  # the epoch moved: cached keys dropped
    later = await seal(sealer, dm(ALICE, "hello again", ts=1764000002000))
    assert later.envelope["sealed"]["kid"] != alice["sealed"]["kid"]
    assert (await Opener(store).open(orjson.loads(orjson.dumps(later.envelope))))["message"]["text"] == "hello again"


async def test_a_body_from_before_the_erasure_arrives_without_content() -> None:
    """A retry or a spooled body older than the erasure is published marked erased, with no content."""
    store = MemoryKeyStore()
    event = dm(ALICE, "old text", ts=1764000000000)
    await store.erase(event.envelope["conversation_id"], 1764000000500)
    sealed = await seal(Sealer(store), event)
    assert sealed.envelope["erased"] is True
    assert "sealed" not in sealed.envelope
    assert b"old text" not in orjson.dumps(sealed.envelope)


async def test_sealed_content_cannot_move_to_another_envelope() -> None:
    """The envelope id is bound to the ciphertext: swapping ids makes opening fail loudly."""
    store = MemoryKeyStore()
    sealer = Sealer(store)
    one = orjson.loads(orjson.dumps((await seal(sealer, dm(ALICE, "one", ts=1764000000000))).envelope))
    two = orjson.loads(orjson.dumps((await seal(sealer, dm(ALICE, "two", ts=1764000009000))).envelope))
    one["sealed"] = two["sealed"]
    with pytest.raises(ValueError, match="does not open"):
        await Opener(store).open(one)


async def test_events_without_a_person_stay_readable() -> None:
    """Account-level events (no conversation) are not sealed."""
    body = (
        b'{"object":"instagram","entry":[{"id":"1784","time":1764000000,'
        b'"changes":[{"field":"story_insights","value":{"media_id":"1","impressions":5}}]}]}'
    )
    (event,) = normalize(body, 1764000000000).events
    assert event.subject is None
    assert (await seal(Sealer(MemoryKeyStore()), event)) is event


async def check_store(store: KeyStore, other: KeyStore) -> None:
    subject = f"instagram:1:{uuid.uuid4().hex}"
    kid, key = await store.create(subject, f"{subject}#a", b"k" * 32)
    # A second process racing to create gets the first one's key.
    assert await other.create(subject, f"{subject}#b", b"x" * 32) == (kid, key)
    assert await other.current(subject) == (kid, key)
    assert await other.key(kid) == key
    before = await other.epoch()
    assert await store.erase(subject, 5) == 1
    assert await other.key(kid) is None
    assert await other.current(subject) is None
    assert await other.erased_at(subject) == 5
    assert await other.epoch() != before
    await store.put_request("code1", b'{"status":"received"}')
    assert await other.get_request("code1") == b'{"status":"received"}'


async def test_sqlite_store_is_shared_by_processes_of_a_host(tmp_path: Path) -> None:
    """Two connections to one file (two processes) agree on keys, erasures and the epoch."""
    one, two = SqliteKeyStore(tmp_path / "keys.db"), SqliteKeyStore(tmp_path / "keys.db")
    try:
        await check_store(one, two)
        assert (tmp_path / "keys.db").stat().st_mode & 0o077 == 0  # keys readable by their owner only
    finally:
        await one.close()
        await two.close()


@pytest.mark.redis
async def test_redis_store_is_shared_by_replicas() -> None:
    """Two clients (two replicas) agree on keys, erasures and the epoch."""
    prefix = f"igw-test:{uuid.uuid4().hex}"
    one, two = RedisKeyStore.from_url(REDIS_URL, prefix), RedisKeyStore.from_url(REDIS_URL, prefix)
    try:
        await check_store(one, two)
    finally:
        await one.close()
        await two.close()


def test_open_keystore_names_the_setting_on_bad_values() -> None:
    """A bad IGW_CONTENT_KEYS is one clear settings error."""
    from igw.errors import SettingsError

    with pytest.raises(SettingsError, match="IGW_CONTENT_KEYS"):
        open_keystore("postgres://x")
    with pytest.raises(SettingsError, match="IGW_CONTENT_KEYS"):
        open_keystore("sqlite:")
