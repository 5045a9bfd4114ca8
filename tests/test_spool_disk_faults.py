"""The gateway under disk faults, with a real broker: what Meta is answered, what /readyz says, what Kafka gets.

- The spool's filesystem fills up while the broker is away, then the broker comes back (with and
  without a restart of the gateway): a real 256 KiB tmpfs when the test may mount one.
- EIO and EROFS injected at each step of the spool: appending (write, fsync, rotation) while
  spooling, recording the drain's progress (cursor), reading spooled bodies back, replay at start-up.

Each test reads Kafka back: no acknowledged event may be missing. Figures go to ``IGW_FAULT_REPORT``.
"""

from __future__ import annotations

import asyncio
import errno
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.delivery import Mode
from gateway.drain import BATCH_RECORDS
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from gateway.signature import sign
from gateway.spool import Spool
from gateway.state import GatewayState
from gateway.typedefs import state_key
from igw_tools.localbroker import LocalBroker
from tests.plugins.diskfaults import DiskFaultInjector, SmallFs
from tests.plugins.gateway import APP_SECRET, WEBHOOK, dm_body
from tests.plugins.kafka import read_topic
from tests.plugins.outage import Outcome, Post, report_fault, signed_poster, tally

pytestmark = pytest.mark.kafka

SPOOL_AFTER = 0.3
_ERRORS = {errno.EIO: "io_error", errno.EROFS: "read_only"}

Start = Callable[[GatewaySettings], Awaitable[TestServer]]


@pytest.fixture
async def start_gateway() -> AsyncIterator[Start]:
    """``await start_gateway(settings)``: the real app on a test server; every one started is closed at the end."""
    servers: list[TestServer] = []

    async def start(settings: GatewaySettings) -> TestServer:
        server = TestServer(create_app(settings))
        await server.start_server(auto_decompress=False)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


def _settings(base: GatewaySettings, bootstrap: str, spool_dir: Path) -> GatewaySettings:
    return replace(
        base,
        kafka=replace(base.kafka, bootstrap_servers=bootstrap),
        spool_dir=spool_dir,
        spool_after=SPOOL_AFTER,
        publish_timeout=1.0,
        ready_cache_seconds=0,
    )


async def _ready(session: aiohttp.ClientSession, server: TestServer) -> tuple[int, dict[str, Any]]:
    async with session.get(str(server.make_url("/readyz"))) as resp:
        return resp.status, await resp.json()


async def _until(predicate: Callable[[], bool], timeout: float) -> float | None:
    """Seconds until ``predicate()`` held (polled every 50 ms), or None after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    return None


def _settled(state: GatewayState) -> bool:
    """Back on the normal path: nothing waits in the spool and bodies go to Kafka directly."""
    spool = state.delivery.spool
    return spool is not None and spool.records == 0 and state.delivery.mode is Mode.DIRECT


async def _found(bootstrap: str, topic: str, outcomes: list[Outcome]) -> tuple[set[str], int]:
    """(acknowledged mids missing from Kafka, duplicated records) for these outcomes."""
    acknowledged = sum(o.status == 200 for o in outcomes)
    records = await read_topic(bootstrap, topic, expect=acknowledged, timeout=20, settle=0.5)
    result = tally(outcomes, records)
    return result.missing, result.duplicates


def _answers(outcomes: list[Outcome]) -> dict[str, int]:
    """Status -> how many requests got it (0: no answer)."""
    return {str(status): n for status, n in sorted(Counter(o.status for o in outcomes).items())}


async def _load_until(
    post: Post, stop: Callable[[list[Outcome]], bool], *, workers: int, timeout: float, tag: str
) -> list[Outcome]:
    """Closed-loop clients posting distinct DMs until ``stop(outcomes so far)`` holds after a post, or ``timeout``."""
    outcomes: list[Outcome] = []
    deadline = time.monotonic() + timeout

    async def worker(w: int) -> None:
        n = 0
        while time.monotonic() < deadline:  # each worker posts at least once
            outcome = await post(f"{tag}-{w}-{n}")
            outcomes.append(outcome)
            if stop(outcomes):
                return
            if outcome.status != 200:
                await asyncio.sleep(0.05)  # a refused client retries, but not in a tight loop
            n += 1

    await asyncio.gather(*(worker(w) for w in range(workers)))
    return outcomes


@pytest.mark.parametrize("restart", [False, True], ids=["same-gateway", "gateway-restarted"])
async def test_spool_filesystem_full_while_broker_away_then_back(
    own_broker: LocalBroker,
    small_fs: SmallFs,
    gateway_settings: GatewaySettings,
    start_gateway: Start,
    restart: bool,
) -> None:
    """Broker frozen until the spool's filesystem is full: 200 while it takes bodies, then 503 with /readyz 503
    (disk_full); broker back (with or without a restart, no space freed by hand): 200 again at once, the spool
    drains completely, every 200 is in Kafka."""
    settings = _settings(gateway_settings, own_broker.bootstrap_servers, small_fs.path / "spool")
    topic = settings.kafka.topic("messages")
    server = await start_gateway(settings)
    async with aiohttp.ClientSession() as session:
        post = signed_poster(session, str(server.make_url(WEBHOOK)), timeout=8)
        before = await post("before")
        assert before.status == 200
        own_broker.freeze()
        try:
            # Until the filesystem is full and 20 bodies were refused for it (or 30 s).
            filling = await _load_until(
                post, lambda done: sum(o.status == 503 for o in done) >= 20, workers=4, timeout=30, tag="fill"
            )
            status, full = await _ready(session, server)
        finally:
            own_broker.thaw()
        refused = [o for o in filling if o.status == 503]
        assert refused, "the filesystem never filled: the test would prove nothing"
        assert (status, full["mode"], full["reason"]) == (503, "refusing", "disk_full"), full
        first_503 = next(i for i, o in enumerate(filling) if o.status == 503)
        assert {o.status for o in filling[:first_503]} == {200}
        assert max(o.seconds for o in filling) < 2.0  # well within Meta's 5 s, 503s included
        back = time.monotonic()
        if restart:
            await server.close()
            server = await start_gateway(settings)
            post = signed_poster(session, str(server.make_url(WEBHOOK)), timeout=8)
        state = server.app[state_key]
        timed: list[tuple[float, Outcome]] = []

        async def timed_post(mid: str) -> Outcome:
            outcome = await post(mid)
            timed.append((time.monotonic() - back, outcome))
            return outcome

        recovery = await _load_until(timed_post, lambda _: _settled(state), workers=4, timeout=40, tag="back")
        emptied = time.monotonic() - back
        after = [await post(f"after-{i}") for i in range(5)]
        status, ready = await _ready(session, server)
    outcomes = [before, *filling, *recovery, *after]
    missing, duplicates = await _found(own_broker.bootstrap_servers, topic, outcomes)
    first_200 = next((i for i, (_, o) in enumerate(timed) if o.status == 200), len(timed))
    seconds_to_200 = timed[first_200][0] if first_200 < len(timed) else None
    report_fault(
        "spool filesystem full, broker away, then back" + (" (gateway restarted)" if restart else ""),
        filesystem=small_fs.kind,
        answers=_answers(outcomes),
        answers_while_full=_answers(filling[first_503:]),
        answers_after_broker_back=_answers(recovery + after),
        readiness=f"503 {full['reason']} while full; {status} {ready['mode']} after",
        seconds_to_first_200=seconds_to_200,
        seconds_to_spool_empty=round(emptied, 2),
        lost=len(missing),
        duplicates=duplicates,
    )
    assert _settled(state), f"spool still holds {state.delivery.spool and state.delivery.spool.records}"
    # 503 only until the gateway noticed the broker back (its monitor checks four times a second), then 200.
    assert seconds_to_200 is not None
    assert seconds_to_200 < 3.0 + (5.0 if restart else 0.0)
    assert {o.status for _, o in timed[first_200:]} | {o.status for o in after} == {200}
    assert (status, ready["mode"]) == (200, "direct")
    assert not missing, f"{len(missing)} acknowledged events missing, e.g. {sorted(missing)[:5]}"
    assert duplicates <= BATCH_RECORDS


@pytest.mark.parametrize("step", ["write", "fsync", "rotation"])
async def test_disk_fault_while_spooling(
    module_broker: LocalBroker,
    gateway_settings: GatewaySettings,
    start_gateway: Start,
    disk_fault: DiskFaultInjector,
    tmp_path: Path,
    step: str,
) -> None:
    """Broker frozen and the spool's disk failing at one step (EIO, then EROFS): 503 at once with /readyz 503
    naming the fault; the disk back: 200 (spooled) again; the broker back: every 200 in Kafka."""
    settings = _settings(gateway_settings, module_broker.bootstrap_servers, tmp_path / "spool")
    server = await start_gateway(settings)
    state = server.app[state_key]
    spool = state.delivery.spool
    assert spool is not None
    if step == "rotation":
        spool.segment_bytes = 1  # every write fills its segment: the next append starts a new one
    figures: dict[int, dict[str, Any]] = {}
    async with aiohttp.ClientSession() as session:
        post = signed_poster(session, str(server.make_url(WEBHOOK)))
        outcomes = [await post("before")]
        module_broker.freeze()
        try:
            for err, reason in _ERRORS.items():
                name = errno.errorcode[err]
                spooled = await post(f"spooled-{name}")
                fault = disk_fault(step, err)
                failed = await post(f"disk-fails-{name}")
                status, refusing = await _ready(session, server)
                fast = await post(f"refused-at-once-{name}")
                fault.clear()
                recovered = await _until(lambda: state.delivery.mode is Mode.SPOOLING, timeout=10)
                back = await post(f"disk-back-{name}")
                outcomes += [spooled, failed, fast, back]
                figures[err] = {"answers": [o.status for o in (spooled, failed, fast, back)], "recovered": recovered}
                assert [o.status for o in (spooled, failed, fast, back)] == [200, 503, 503, 200], name
                assert fast.seconds < 0.2  # refused without waiting on Kafka or the disk
                assert (status, refusing["mode"], refusing["reason"]) == (503, "refusing", reason)
                assert refusing["checks"]["spool"].startswith(f"refusing ({reason})")
                assert recovered is not None
        finally:
            module_broker.thaw()
        assert await _until(lambda: _settled(state), timeout=30) is not None
    missing, duplicates = await _found(module_broker.bootstrap_servers, settings.kafka.topic("messages"), outcomes)
    for err, reason in _ERRORS.items():
        report_fault(
            f"{errno.errorcode[err]} at spool {step}, broker away",
            answers=figures[err]["answers"],
            readiness=f"503 {reason} during the fault",
            seconds_to_recover=figures[err]["recovered"],
            lost=len(missing),
            duplicates=duplicates,
        )
    assert not missing, sorted(missing)
    # Only the first body, whose direct publish timed out before it was spooled, may be there twice.
    assert duplicates <= 1


async def _prefill(directory: Path, mids: list[str]) -> None:
    """Bodies left in the spool by an earlier run (each was answered 200 then)."""
    spool = Spool(directory / "0", metrics=GatewayMetrics(), max_bytes=1024 * 1024, max_age_seconds=3600)
    await spool.open()
    for mid in mids:
        body = dm_body(mid=mid, user=f"9{abs(hash(mid)) % 10**15:015d}")
        await spool.append(body, int(time.time() * 1000), sign(body, APP_SECRET))
    await spool.close()


@pytest.mark.parametrize("err", list(_ERRORS), ids=errno.errorcode.get)
@pytest.mark.parametrize("step", ["cursor", "read", "replay"])
async def test_disk_fault_while_draining(
    kafka_bootstrap: str,
    gateway_settings: GatewaySettings,
    start_gateway: Start,
    disk_fault: DiskFaultInjector,
    tmp_path: Path,
    step: str,
    err: int,
) -> None:
    """Spooled bodies that cannot be drained (progress not recordable, unreadable, replay failing) never turn
    webhooks away while Kafka takes records: new bodies go to Kafka directly; the disk back, the spool drains,
    and nothing is published twice."""
    spooled = [f"left-{step}-{i}" for i in range(3)]
    await _prefill(tmp_path / "spool", spooled)
    fault = disk_fault(step, err)
    settings = _settings(gateway_settings, kafka_bootstrap, tmp_path / "spool")
    server = await start_gateway(settings)
    state = server.app[state_key]
    expected = "direct" if step == "replay" else "bypassing"
    async with aiohttp.ClientSession() as session:
        post = signed_poster(session, str(server.make_url(WEBHOOK)))
        assert await _until(lambda: state.delivery.mode == expected and fault.raised > 0, timeout=15) is not None
        status, during = await _ready(session, server)
        fresh = [await post(f"fresh-{step}-{i}") for i in range(3)]
        fault.clear()
        recovered = await _until(lambda: _settled(state), timeout=20)
    outcomes = [Outcome(mid, 200, 0.0) for mid in spooled] + fresh
    missing, duplicates = await _found(kafka_bootstrap, settings.kafka.topic("messages"), outcomes)
    report_fault(
        f"{errno.errorcode[err]} at spool {step}, broker up",
        answers=[o.status for o in fresh],
        readiness=f"{status} {during['mode']} ({during['reason']})",
        seconds_to_recover=recovered,
        lost=len(missing),
        duplicates=duplicates,
    )
    assert [o.status for o in fresh] == [200, 200, 200]
    assert status == 200
    if step == "replay":
        assert during["checks"]["spool"] == f"unavailable ({_ERRORS[err]})"
    else:
        assert (during["mode"], during["reason"]) == ("bypassing", _ERRORS[err])
    assert recovered is not None
    assert not missing, sorted(missing)
    assert duplicates == 0  # a batch Kafka acknowledged is never published again
