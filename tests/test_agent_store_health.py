"""Sending pauses while the ledger's store does not answer, and says so; leases are renewed and let go."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient, TestServer
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from consumers.agent_replies.leases import LeaseKeeper, StoreHealth
from consumers.agent_replies.metrics import AgentMetrics
from consumers.agent_replies.store import BeginKind, MemoryStore
from consumers.common.metrics_server import create_metrics_app
from consumers.common.runner import OffsetTracker


async def test_store_down_pauses_then_resumes_by_itself() -> None:
    """Down: status 'paused', igw_agent_store_up 0; one probe asks until the store answers, then up again."""
    answers = [False, False, True]
    pings = 0

    async def ping() -> bool:
        nonlocal pings
        pings += 1
        return answers.pop(0)

    registry = CollectorRegistry()
    health = StoreHealth(ping, AgentMetrics(registry), interval=0.01, max_interval=0.02)
    assert registry.get_sample_value("igw_agent_store_up") == 1
    assert health.status() == {"store": "up", "sending": "active"}
    health.down("ConnectionError")
    health.down("ConnectionError")  # a second failure starts no second probe
    assert not health.up
    assert health.status() == {"store": "unreachable", "sending": "paused"}
    assert registry.get_sample_value("igw_agent_store_up") == 0
    for _ in range(100):
        if health.up:
            break
        await asyncio.sleep(0.01)
    assert health.up
    assert pings == 3
    assert registry.get_sample_value("igw_agent_store_up") == 1
    await health.close()


async def test_readyz_tells_why() -> None:
    """/readyz carries the consumer's status in its body, ready or not."""
    state = {"ready": False}

    async def ready() -> bool:
        return state["ready"]

    def status() -> dict[str, str]:
        return {"store": "up" if state["ready"] else "unreachable", "sending": "active" if state["ready"] else "paused"}

    client = TestClient(TestServer(create_metrics_app(CollectorRegistry(), ready, status=status)))
    await client.start_server()
    try:
        response = await client.get("/readyz")
        assert response.status == 503
        assert await response.json() == {"status": "not ready", "store": "unreachable", "sending": "paused"}
        state["ready"] = True
        response = await client.get("/readyz")
        assert response.status == 200
        assert await response.json() == {"status": "ready", "store": "up", "sending": "active"}
    finally:
        await client.close()


async def test_leases_renewed_released_when_partitions_move_and_at_shutdown() -> None:
    """The keeper renews the leases in hand, lets go of those whose partition moved away, and of all at shutdown."""
    clock = [1_800_000_000.0]
    store = MemoryStore(lambda: clock[0])
    metrics = AgentMetrics(CollectorRegistry())
    health = StoreHealth(store.ping, metrics)
    keeper = LeaseKeeper(store, "A", 15.0, health, metrics)
    tracker = OffsetTracker()
    moving, staying = TopicPartition("t", 0), TopicPartition("t", 1)
    for event_id, tp in (("ev-moving", moving), ("ev-staying", staying)):
        begun = await store.begin(event_id, "A", lease=15, ttl=60, account_id="a", conversation_id=event_id)
        assert begun.kind is BeginKind.CLAIMED
        keeper.hold(event_id, tracker.track(tp, 0))
    clock[0] += 10
    tracker.revoke([moving])
    await keeper.renew_now()
    # The moved partition's event is free at once; the other one's lease was renewed 10 s in.
    assert (await store.begin("ev-moving", "B", lease=15, ttl=60, account_id="a", conversation_id="x")).kind is (
        BeginKind.RESUMED
    )
    clock[0] += 10
    assert (await store.begin("ev-staying", "B", lease=15, ttl=60, account_id="a", conversation_id="x")).kind is (
        BeginKind.HELD
    )
    await keeper.release_all()
    assert keeper.held == 0
    assert (await store.begin("ev-staying", "B", lease=15, ttl=60, account_id="a", conversation_id="x")).kind is (
        BeginKind.RESUMED
    )
    await health.close()
