"""While the ledger's store does not answer, sending pauses and says so (metric, /readyz); it resumes by itself."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from consumers.agent_replies.leases import StoreHealth
from consumers.common.metrics_server import create_metrics_app


async def test_store_down_pauses_then_resumes_by_itself() -> None:
    """Down: status 'paused', igw_agent_store_up 0; one probe asks until the store answers, then up again."""
    answers = [False, False, True]
    pings = 0

    async def ping() -> bool:
        nonlocal pings
        pings += 1
        return answers.pop(0)

    health = StoreHealth(ping, interval=0.01, max_interval=0.02)
    assert health.status() == {"store": "up", "sending": "active"}
    health.down("ConnectionError")
    health.down("ConnectionError")  # a second failure starts no second probe
    assert not health.up
    assert health.status() == {"store": "unreachable", "sending": "paused"}
    assert REGISTRY.get_sample_value("igw_agent_store_up") == 0
    for _ in range(100):
        if health.up:
            break
        await asyncio.sleep(0.01)
    assert health.up
    assert pings == 3
    assert REGISTRY.get_sample_value("igw_agent_store_up") == 1
    await health.close()


async def test_readyz_tells_why() -> None:
    """/readyz carries the consumer's status in its body, ready or not."""
    state = {"ready": False}

    async def ready() -> bool:
        return state["ready"]

    def status() -> dict[str, str]:
        return {"store": "up" if state["ready"] else "unreachable", "sending": "active" if state["ready"] else "paused"}

    client = TestClient(TestServer(create_metrics_app(ready, status=status)))
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
