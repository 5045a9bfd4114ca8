"""The consumers' metrics server serves metrics, liveness and a readiness that tells the truth."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry
from pytest_aiohttp import AiohttpClient

from consumers.common.metrics import ConsumerMetrics
from consumers.common.metrics_server import create_metrics_app


async def test_metrics_and_health(aiohttp_client: AiohttpClient) -> None:
    """/metrics shows the consumer counters of the registry it is given and /healthz answers 200."""
    registry = CollectorRegistry()
    ConsumerMetrics(registry, "metrics-test-group").count_records("x.messages", 3)
    client = await aiohttp_client(create_metrics_app(registry))
    metrics = await client.get("/metrics")
    assert metrics.status == 200
    assert 'igw_consumer_records_total{group="metrics-test-group",topic="x.messages"} 3.0' in await metrics.text()
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200


async def test_readyz_follows_the_check(aiohttp_client: AiohttpClient) -> None:
    """/readyz answers 503 while the readiness check says no or raises, 200 once it says yes."""
    state = {"ready": False, "fail": False}

    async def ready() -> bool:
        if state["fail"]:
            raise ConnectionError("broker down")
        await asyncio.sleep(0)
        return state["ready"]

    client = await aiohttp_client(create_metrics_app(CollectorRegistry(), ready))
    assert (await client.get("/readyz")).status == 503
    state["ready"] = True
    assert (await client.get("/readyz")).status == 200
    state["fail"] = True
    assert (await client.get("/readyz")).status == 503
