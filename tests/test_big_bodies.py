"""Big bodies are worked on in slices and off the event loop, with the same records as the usual path."""

from __future__ import annotations

import asyncio
import io
import statistics
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import orjson
import pytest

from bench import payloads
from bench.bigbody import default_max_body
from gateway import bodies
from gateway.bodies import BigBodies
from gateway.signature import SignatureVerdict, SignatureVerifier, sign
from igw.config import KafkaSettings
from igw.envelope import Topic
from igw.normalize import normalize
from igw.records import OutRecord, build_records
from tests.plugins.gateway import APP_SECRET, WEBHOOK, meta_bytes
from tests.plugins.kafka import read_topic
from tests.plugins.outage import GatewayProcess, gateway_env, report_fault, signed_poster
from tests.plugins.payloads import payload_names, read_payload

TOPICS = {t: f"x.{t.value}" for t in Topic}


def _garbage_batch(items: int) -> bytes:
    """A big body with unreadable items among good ones: one dead letter besides the events."""
    good = [payloads.dm_item(n) for n in range(items)]
    good[7] = "not an item"  # type: ignore[call-overload]
    good[-3] = [1, 2]  # type: ignore[call-overload]
    return meta_bytes({"object": "instagram", "entry": [{"id": "1784", "time": 1, "messaging": good}]})


BODIES = [read_payload(name) for name in payload_names()] + [
    payloads.batch("s")[0].body,
    _garbage_batch(1200),
]


@pytest.mark.parametrize("body", BODIES, ids=[*payload_names(), "batch1000", "garbage1200"])
async def test_big_body_records_equal_the_usual_path(body: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """Normalized in the worker thread and built in slices (here of 2 events), a body becomes exactly the records
    the inline path builds, dead letter included."""
    monkeypatch.setattr(bodies, "BIG_BODY_BYTES", 0)
    monkeypatch.setattr(bodies, "SLICE_EVENTS", 2)
    big = BigBodies()
    try:
        signature = sign(body, APP_SECRET)
        normalized = await big.normalize(body, 1_764_000_000_000)
        assert normalized == normalize(body, 1_764_000_000_000)
        got = await big.records(normalized, TOPICS, body, 1_764_000_000_000, signature)
        assert got == build_records(normalized, TOPICS, body, 1_764_000_000_000, signature)
        assert await big.verify(SignatureVerifier([APP_SECRET]), body, signature) is SignatureVerdict.OK
    finally:
        big.close()


class _RecordingPublisher:
    """Records what it is given and how many publishes run at once (a test double of gateway.publisher)."""

    def __init__(self) -> None:
        self.published: list[OutRecord] = []
        self.running = 0
        self.most_at_once = 0

    async def publish(self, records: Sequence[OutRecord], timeout: float) -> None:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        await asyncio.sleep(0.001)
        self.published += records
        self.running -= 1


async def test_many_records_are_published_slice_after_slice_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Records beyond one slice are handed over one slice at a time, in their order."""
    monkeypatch.setattr(bodies, "SLICE_EVENTS", 7)
    body = payloads.batch("s", 100)[0].body
    records = build_records(normalize(body, 1), TOPICS, body, 1, None)
    publisher = _RecordingPublisher()
    await bodies.publish(publisher, records, timeout=5)  # type: ignore[arg-type]
    assert publisher.published == records
    assert publisher.most_at_once == 1


def _peak_rss(proc: GatewayProcess) -> int:
    assert proc.process is not None
    status = Path(f"/proc/{proc.process.pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) * 1024


@pytest.mark.kafka
async def test_largest_body_beside_streaming_dms(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Bodies of the default IGW_MAX_BODY_BYTES every second while DMs stream: every answer 200, no DM answered
    after a second or more, every event in Kafka, memory bounded."""
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:12]}")
    proc = GatewayProcess(gateway_env(kafka, tmp_path / "spool"), tmp_path / "gateway.log")
    proc.start()
    big = payloads.largest(APP_SECRET, default_max_body())
    try:
        async with aiohttp.ClientSession() as session:
            post_dm = signed_poster(session, proc.base_url + WEBHOOK)
            assert (await post_dm("warm-up")).status == 200

            async def post_big(i: int) -> tuple[int, float]:
                await asyncio.sleep(0.3 + i)
                started = time.monotonic()
                headers = {"X-Hub-Signature-256": big.signature}
                async with session.post(proc.base_url + WEBHOOK, data=io.BytesIO(big.body), headers=headers) as resp:
                    return resp.status, time.monotonic() - started

            async def stream_dms() -> list[tuple[str, int, float]]:
                tasks = []
                for n in range(150):  # 50/s for 3 s, open loop
                    tasks.append(asyncio.create_task(post_dm(f"beside-big-{n}")))
                    await asyncio.sleep(0.02)
                return [(o.mid, o.status, o.seconds) for o in await asyncio.gather(*tasks)]

            bigs, dms = await asyncio.gather(asyncio.gather(*(post_big(i) for i in range(3))), stream_dms())
        peak = _peak_rss(proc)
    finally:
        proc.stop()
    dm_seconds = sorted(s for _, _, s in dms)
    records = await read_topic(
        kafka_bootstrap, kafka.topic("messages"), expect=3 * big.events + len(dms) + 1, timeout=30
    )
    mids = {orjson.loads(r.value)["message"]["mid"] for r in records}
    report_fault(
        "largest bodies beside streaming DMs",
        big_bodies=[status for status, _ in bigs],
        big_seconds=[round(s, 2) for _, s in bigs],
        dm_p50_ms=round(1000 * statistics.median(dm_seconds)),
        dm_p99_ms=round(1000 * dm_seconds[int(0.99 * len(dm_seconds))]),
        dm_max_ms=round(1000 * dm_seconds[-1]),
        peak_rss_mib=peak // 2**20,
    )
    assert [status for status, _ in bigs] == [200, 200, 200]
    assert {status for _, status, _ in dms} == {200}
    assert dm_seconds[-1] < 1.0
    assert {mid for mid, _, _ in dms} <= mids
    assert len(records) >= 3 * big.events + len(dms)
    assert peak < 400 * 2**20
