"""Nothing acknowledged is lost: the spool under a frozen broker, a replaced broker and a killed gateway."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from gateway.signature import sign
from gateway.spool import Spool
from gateway.state import GatewayState
from gateway.typedefs import state_key
from igw.normalize import normalize
from igw.records import build_records
from igw_tools.localbroker import LocalBroker
from tests.plugins.gateway import APP_SECRET, WEBHOOK, dm_body
from tests.plugins.kafka import TopicReader, read_topic
from tests.plugins.outage import (
    GatewayProcess,
    gateway_env,
    report_fault,
    run_load,
    signed_poster,
    tally,
    wait_for_metric,
)

pytestmark = pytest.mark.kafka

SPOOL_AFTER = 1.0


def _sample(server: TestServer, name: str, labels: dict[str, str] | None = None) -> float:
    """A sample of what the gateway app behind ``server`` serves on /metrics (0 when absent)."""
    return server.app[state_key].metrics.registry.get_sample_value(name, labels or {}) or 0.0


@pytest.fixture
def spool_settings(gateway_settings: GatewaySettings, own_broker: LocalBroker, tmp_path: Path) -> GatewaySettings:
    """Gateway settings on this test's own broker, with a spool in the test's directory."""
    kafka = replace(gateway_settings.kafka, bootstrap_servers=own_broker.bootstrap_servers)
    return replace(
        gateway_settings,
        kafka=kafka,
        spool_dir=tmp_path / "spool",
        spool_after=SPOOL_AFTER,
        publish_timeout=2.0,
        ready_cache_seconds=0,
    )


@pytest.fixture
async def spool_server(spool_settings: GatewaySettings) -> AsyncIterator[TestServer]:
    server = TestServer(create_app(spool_settings))
    await server.start_server(auto_decompress=False)
    try:
        yield server
    finally:
        await server.close()


async def _wait_drained(state: GatewayState, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state.spool is not None and state.spool.records == 0 and not state.spooling:
            return True
        await asyncio.sleep(0.1)
    return False


async def test_frozen_broker_mid_load_every_200_reaches_kafka(
    own_broker: LocalBroker, spool_settings: GatewaySettings, spool_server: TestServer
) -> None:
    """Broker SIGSTOPped then SIGCONTed under load: every request gets 200 in time and every 200 is in Kafka."""
    state = spool_server.app[state_key]
    appends = _sample(spool_server, "igw_spool_appends_total")
    freeze_seconds = 2.5
    async with aiohttp.ClientSession() as session:
        post = signed_poster(session, str(spool_server.make_url(WEBHOOK)))

        async def fault() -> None:
            await asyncio.sleep(1.0)
            own_broker.freeze()
            await asyncio.sleep(freeze_seconds)
            own_broker.thaw()

        outcomes, _ = await asyncio.gather(run_load(post, workers=8, seconds=5.0, tag="frozen"), fault())
        assert await _wait_drained(state, 30), f"spool still holds {state.spool and state.spool.records}"
    spooled = _sample(spool_server, "igw_spool_appends_total") - appends
    statuses = {o.status for o in outcomes}
    slowest = max(o.seconds for o in outcomes)
    records = await read_topic(
        own_broker.bootstrap_servers,
        spool_settings.kafka.topic("messages"),
        expect=len(outcomes),
        timeout=20,
        settle=1.0,
    )
    result = tally(outcomes, records)
    # Requests that waited out SPOOL_AFTER: their direct publish timed out, then they were spooled.
    timed_out = {o.mid for o in outcomes if o.seconds >= SPOOL_AFTER * 0.95}
    report_fault(
        "frozen broker",
        load="8 closed-loop clients, 5 s",
        fault=f"SIGSTOP {freeze_seconds} s at t=1 s",
        requests=len(outcomes),
        acknowledged=len(result.acknowledged),
        spooled=spooled,
        found=len(result.found),
        duplicates=result.duplicates,
        duplicated_after_a_timed_out_publish=len(result.duplicated & timed_out),
        missing=len(result.missing),
        slowest_seconds=round(slowest, 3),
    )
    assert statuses == {200}
    assert slowest < SPOOL_AFTER + 1.5  # well under Meta's 5 s
    assert spooled > 0, "the freeze did not reach the spool: the test would prove nothing"
    assert not result.missing, f"{len(result.missing)} acknowledged events missing, e.g. {sorted(result.missing)[:5]}"
    # Duplicates only where a direct publish timed out (the body was spooled too) and landed later.
    assert result.duplicated <= timed_out, sorted(result.duplicated - timed_out)[:5]


async def test_broker_replaced_spool_drains_into_the_new_one(
    own_broker: LocalBroker, spool_settings: GatewaySettings, spool_server: TestServer
) -> None:
    """Broker killed, bodies spooled with 200, /readyz truthful, a fresh broker on the same port gets them all."""
    state = spool_server.app[state_key]
    # (phase, status, checks) of /readyz polled all along; phase says where the broker is.
    phase = "up"
    polls: list[tuple[str, int, dict[str, str]]] = []

    async def poll_readiness(session: aiohttp.ClientSession, url: str) -> None:
        while True:
            seen = phase
            async with session.get(url) as resp:
                polls.append((seen if seen == phase else "changing", resp.status, (await resp.json())["checks"]))
            await asyncio.sleep(0.1)

    async with aiohttp.ClientSession() as session, contextlib.AsyncExitStack() as stack:
        post = signed_poster(session, str(spool_server.make_url(WEBHOOK)))
        ready_url = str(spool_server.make_url("/readyz"))
        poller = asyncio.create_task(poll_readiness(session, ready_url))
        stack.callback(poller.cancel)
        assert (await post("before")).status == 200
        own_broker.stop()
        phase = "down"
        during = await run_load(post, workers=4, seconds=2.0, tag="during")
        assert {o.status for o in during} == {200}
        assert max(o.seconds for o in during) < SPOOL_AFTER + 1.5
        async with session.get(ready_url) as resp:
            ready = await resp.json()
            # Kafka is away but the spool takes webhooks durably: ready, and the checks say why.
            assert resp.status == 200, ready
        assert ready["checks"]["kafka"] != "ok"
        assert ready["checks"]["spool"].startswith("accepting, ")

        phase = "changing"
        own_broker.start()  # same port, empty: no topics
        assert await _wait_drained(state, 40), f"spool still holds {state.spool and state.spool.records}"
        phase = "drained"
        await asyncio.sleep(0.3)
        poller.cancel()
        async with session.get(ready_url) as resp:
            ready = await resp.json()
            assert resp.status == 200
        assert ready["checks"] == {"kafka": "ok", "topics": "ok", "spool": "accepting"}
        after = [await post(f"after-{i}") for i in range(5)]
        assert {o.status for o in after} == {200}
    outcomes = during + after
    records = await read_topic(
        own_broker.bootstrap_servers,
        spool_settings.kafka.topic("messages"),
        expect=len(outcomes),
        timeout=20,
        settle=1.0,
    )
    result = tally(outcomes, records)
    report_fault(
        "broker replaced",
        load="4 closed-loop clients, 2 s outage + 5 after",
        fault="SIGTERM broker, fresh empty broker on the same port",
        requests=len(outcomes),
        acknowledged=len(result.acknowledged),
        found=len(result.found),
        duplicates=result.duplicates,
        missing=len(result.missing),
    )
    # Readiness told the truth all along: Kafka away while it was, ready throughout (the spool had room).
    down = [checks for p, _, checks in polls if p == "down"]
    assert down, "no /readyz poll while the broker was down"
    assert all(checks["kafka"] != "ok" and checks["spool"].startswith("accepting") for checks in down[1:]), down
    assert {status for _, status, _ in polls} == {200}
    assert [checks for p, _, checks in polls if p == "drained"][-1]["kafka"] == "ok"
    # "before" went to the old broker's memory and died with it: only what came after is checked.
    assert not result.missing, f"{len(result.missing)} acknowledged events missing, e.g. {sorted(result.missing)[:5]}"


async def test_spool_full_answers_503_then_recovers(
    own_broker: LocalBroker, spool_settings: GatewaySettings, tmp_path: Path
) -> None:
    """Over its size limit the spool refuses with 503 (logged, counted, /readyz 503); after the drain, 200 again."""
    settings = replace(spool_settings, spool_max_bytes=4 * 1024)
    server = TestServer(create_app(settings))
    await server.start_server(auto_decompress=False)
    full = _sample(server, "igw_spool_failures_total", {"reason": "full"})
    try:
        async with aiohttp.ClientSession() as session:
            post = signed_poster(session, str(server.make_url(WEBHOOK)))
            own_broker.freeze()
            outcomes = [await post(f"fill-{i}") for i in range(40)]
            statuses = [o.status for o in outcomes]
            assert statuses[0] == 200
            assert 503 in statuses
            assert set(statuses[statuses.index(503) :]) == {503}
            assert _sample(server, "igw_spool_failures_total", {"reason": "full"}) > full
            async with session.get(str(server.make_url("/readyz"))) as resp:
                assert resp.status == 503
                assert (await resp.json())["checks"]["spool"].startswith("refusing")
            own_broker.thaw()
            assert await _wait_drained(server.app[state_key], 30)
            later = await post("after-drain")
            assert later.status == 200
    finally:
        own_broker.thaw()
        await server.close()
    acked = {o.mid for o in [*outcomes, later] if o.status == 200}
    records = await read_topic(own_broker.bootstrap_servers, settings.kafka.topic("messages"), expect=len(acked))
    assert acked <= {orjson.loads(r.value)["message"]["mid"] for r in records}


async def test_replayed_body_is_published_exactly_as_the_direct_path_would(
    gateway_settings: GatewaySettings, topic_reader: TopicReader, tmp_path: Path
) -> None:
    """Bodies left in spools (its own, a dead worker's) are published at start-up exactly as the direct path would."""
    received_at = 1_764_000_123_456
    dm = dm_body(mid="replayed-mid")
    garbage = b'{"object":"instagram","entry":"not a list"}'
    # <base>/0 becomes this gateway's own spool; <base>/3 is an orphan of a worker that is gone.
    for directory, body, at in (
        (tmp_path / "spool" / "0", dm, received_at),
        (tmp_path / "spool" / "3", garbage, received_at + 1),
    ):
        spool = Spool(directory, metrics=GatewayMetrics(), max_bytes=1024 * 1024, max_age_seconds=10**9)
        await spool.open()
        await spool.append(body, at, sign(body, APP_SECRET))
        await spool.close()

    settings = replace(gateway_settings, spool_dir=tmp_path / "spool")
    server = TestServer(create_app(settings))
    await server.start_server()
    try:
        state = server.app[state_key]
        assert await _wait_drained(state, 20)
        assert state.spool is not None
        assert state.spool.directory == tmp_path / "spool" / "0"
        topics = state.topics
    finally:
        await server.close()
    [message] = await topic_reader(settings.kafka.topic("messages"), expect=1)
    [dead] = await topic_reader(settings.kafka.topic("deadletter"), expect=1)
    [want_message] = build_records(normalize(dm, received_at), topics, dm, received_at, sign(dm, APP_SECRET))
    [want_dead] = build_records(
        normalize(garbage, received_at + 1), topics, garbage, received_at + 1, sign(garbage, APP_SECRET)
    )
    assert orjson.loads(message.value)["received_at"] == received_at
    for got, want in ((message, want_message), (dead, want_dead)):
        assert (got.key, got.value, got.headers) == (want.key, want.value, dict(want.headers))


async def test_gateway_killed_mid_load_publishes_every_200_after_restart(
    own_broker: LocalBroker, spool_settings: GatewaySettings, tmp_path: Path
) -> None:
    """kill -9 of the real gateway with bodies in its spool: the next start publishes every acknowledged one."""
    env = gateway_env(spool_settings.kafka, tmp_path / "spool", IGW_SPOOL_AFTER_SECONDS=str(SPOOL_AFTER))
    first = GatewayProcess(env, tmp_path / "gateway-1.log")
    second = GatewayProcess(env, tmp_path / "gateway-2.log")
    first.start()
    try:
        async with aiohttp.ClientSession() as session:
            assert await wait_for_metric(session, first.base_url, "igw_producer_ready", 1, timeout=20)
            post = signed_poster(session, first.base_url + WEBHOOK, timeout=5)

            async def fault() -> None:
                await asyncio.sleep(1.0)
                own_broker.freeze()
                await asyncio.sleep(2.5)
                first.signal(signal.SIGKILL)
                first.wait(5)
                own_broker.thaw()

            outcomes, _ = await asyncio.gather(run_load(post, workers=6, seconds=4.0, tag="killed"), fault())
            second.start()
            assert await wait_for_metric(session, second.base_url, "igw_spool_records", 0, timeout=30)
    finally:
        own_broker.thaw()
        first.stop()
        second.stop()
    replayed = [
        orjson.loads(line)
        for line in (tmp_path / "gateway-2.log").read_text().splitlines()
        if "from an earlier run" in line
    ]
    records = await read_topic(
        own_broker.bootstrap_servers,
        spool_settings.kafka.topic("messages"),
        expect=sum(o.status == 200 for o in outcomes),
        timeout=20,
        settle=1.0,
    )
    result = tally(outcomes, records)
    report_fault(
        "gateway kill -9",
        load="6 closed-loop clients, 4 s (real igw gateway process)",
        fault="SIGSTOP broker at t=1 s, SIGKILL gateway at t=3.5 s, SIGCONT, restart",
        requests=len(outcomes),
        acknowledged=len(result.acknowledged),
        refused_or_cut=sum(o.status != 200 for o in outcomes),
        found=len(result.found),
        duplicates=result.duplicates,
        missing=len(result.missing),
    )
    assert replayed, "the restarted gateway found nothing in the spool: the test would prove nothing"
    assert not result.missing, f"{len(result.missing)} acknowledged events missing, e.g. {sorted(result.missing)[:5]}"
