"""The gateway under broker trouble: 503 while Kafka cannot acknowledge, recovery, graceful shutdown."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.signature import sign
from igw.config import KafkaSettings
from igw_tools.localbroker import LocalBroker, free_port, port_is_open
from tests.plugins.gateway import APP_SECRET, WEBHOOK, dm_body, post_signed
from tests.plugins.kafka import read_topic
from tests.plugins.outage import gateway_env

pytestmark = pytest.mark.kafka


async def test_503_while_broker_is_frozen_then_every_200_is_stored(
    own_broker: LocalBroker, gateway_settings: GatewaySettings
) -> None:
    """Broker frozen: 503 within the deadline, concurrent requests refused fast; thawed: 200s, all stored."""
    kafka = replace(gateway_settings.kafka, bootstrap_servers=own_broker.bootstrap_servers)
    settings = replace(gateway_settings, kafka=kafka, publish_timeout=1.0)
    server = TestServer(create_app(settings))
    client: TestClient[aiohttp.web.Request, aiohttp.web.Application] = TestClient(server)
    await client.start_server()
    try:
        assert (await post_signed(client, dm_body(mid="before"))).status == 200
        own_broker.freeze()
        started = time.monotonic()
        resp = await post_signed(client, dm_body(mid="during"))
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "1"
        assert time.monotonic() - started < 2.0

        # Degraded: one probe waits the full deadline, the concurrent others are refused fast.
        async def timed_post(i: int) -> tuple[int, float]:
            begun = time.monotonic()
            status = (await post_signed(client, dm_body(mid=f"during-{i}"))).status
            return status, time.monotonic() - begun

        results = await asyncio.gather(*(timed_post(i) for i in range(6)))
        assert {status for status, _ in results} == {503}
        assert sum(elapsed < 0.8 for _, elapsed in results) >= 5

        own_broker.thaw()
        statuses = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            statuses.append((await post_signed(client, dm_body(mid="after"))).status)
            if statuses[-1] == 200:
                break
            await asyncio.sleep(0.2)
        assert statuses[-1] == 200
    finally:
        own_broker.thaw()
        await client.close()
    # Records refused with 503 may still land later (the producer keeps them): Meta's retry then
    # carries the same event id, so consumers may see an id twice, never a loss.
    records = await read_topic(own_broker.bootstrap_servers, kafka.topic("messages"), expect=9, timeout=5)
    mids = {orjson.loads(r.value)["message"]["mid"] for r in records}
    assert {"before", "after"} <= mids


async def test_broker_replaced_on_the_same_port(own_broker: LocalBroker, gateway_settings: GatewaySettings) -> None:
    """Broker killed, a fresh empty one started: readiness re-creates the topics and 200s resume, no restart."""
    kafka = replace(gateway_settings.kafka, bootstrap_servers=own_broker.bootstrap_servers)
    settings = replace(gateway_settings, kafka=kafka, publish_timeout=1.0, ready_cache_seconds=0)
    server = TestServer(create_app(settings))
    client: TestClient[aiohttp.web.Request, aiohttp.web.Application] = TestClient(server)
    await client.start_server()
    try:
        assert (await post_signed(client, dm_body(mid="before"))).status == 200
        own_broker.stop()
        assert (await post_signed(client, dm_body(mid="during"))).status == 503
        assert (await client.get("/readyz")).status == 503
        own_broker.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (await client.get("/readyz")).status != 200:
            await asyncio.sleep(0.5)
        ready = await client.get("/readyz")
        assert ready.status == 200
        assert (await ready.json())["checks"]["topics"] == "ok"
        statuses = []
        while time.monotonic() < deadline:
            statuses.append((await post_signed(client, dm_body(mid="after", user="5550000000000001"))).status)
            if statuses[-1] == 200:
                break
            await asyncio.sleep(0.2)
        assert statuses[-1] == 200
        # What a fresh Tansu stores next to records retried from before the outage is not checked here:
        # Tansu 0.6 acknowledges a retried batch and a new one on a fresh in-memory partition with
        # overlapping offsets and keeps one (seen here; Kafka does not). Delivery is covered by the
        # frozen-broker test above and by the spool's fault tests.
    finally:
        await client.close()


async def test_starts_without_a_broker_and_connects_later(gateway_settings: GatewaySettings, tmp_path: Path) -> None:
    """With no broker at start-up the gateway serves, is not ready, and becomes ready once one appears."""
    port = free_port()
    kafka = replace(gateway_settings.kafka, bootstrap_servers=f"127.0.0.1:{port}")
    settings = replace(gateway_settings, kafka=kafka, publish_timeout=0.5, ready_cache_seconds=0)
    server = TestServer(create_app(settings))
    client: TestClient[aiohttp.web.Request, aiohttp.web.Application] = TestClient(server)
    broker = LocalBroker(port=port, log_path=tmp_path / "late.log")
    try:
        await asyncio.wait_for(client.start_server(), timeout=20)
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/readyz")).status == 503
        assert (await post_signed(client, dm_body())).status == 503
        broker.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (await client.get("/readyz")).status != 200:
            await asyncio.sleep(0.5)
        assert (await client.get("/readyz")).status == 200
        assert (await post_signed(client, dm_body())).status == 200
    finally:
        await client.close()
        broker.stop()


async def test_graceful_shutdown_flushes_in_flight_requests(own_broker: LocalBroker, tmp_path: Path) -> None:
    """SIGTERM while requests wait for Kafka: each one that got 200 is in Kafka afterwards."""
    kafka = KafkaSettings(bootstrap_servers=own_broker.bootstrap_servers, topic_prefix=f"t{uuid.uuid4().hex[:10]}")
    port = free_port()
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "igw_tools.cli", "gateway", "--port", str(port)],
            env=gateway_env(kafka, tmp_path / "spool"),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not port_is_open("127.0.0.1", port):
                await asyncio.sleep(0.1)
            url = f"http://127.0.0.1:{port}{WEBHOOK}"
            async with aiohttp.ClientSession() as session:
                for _ in range(100):  # wait until ready: topics exist
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                        if resp.status == 200:
                            break
                    await asyncio.sleep(0.1)

                async def post(i: int) -> tuple[str, int]:
                    body = dm_body(mid=f"inflight-{i}", user=f"10000000000{i:05d}")
                    headers = {"X-Hub-Signature-256": sign(body, APP_SECRET)}
                    try:
                        async with session.post(url, data=body, headers=headers) as resp:
                            return f"inflight-{i}", resp.status
                    except aiohttp.ClientError:
                        return f"inflight-{i}", 0

                own_broker.freeze()  # requests now wait for acknowledgements
                tasks = [asyncio.create_task(post(i)) for i in range(40)]
                await asyncio.sleep(0.5)
                proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.3)
                own_broker.thaw()
                results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
            assert proc.wait(timeout=30) == 0
        finally:
            own_broker.thaw()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    acknowledged = {mid for mid, status in results if status == 200}
    assert acknowledged, f"no request completed; statuses {sorted({s for _, s in results})}"
    records = await read_topic(own_broker.bootstrap_servers, kafka.topic("messages"), expect=len(acknowledged))
    found = {orjson.loads(r.value)["message"]["mid"] for r in records}
    assert acknowledged <= found
