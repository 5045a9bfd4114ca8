"""Hostile and broken input against the real ``igw gateway``: bounded time and memory, clear codes, no loss."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from gateway.signature import sign
from igw.config import KafkaSettings
from tests.plugins.gateway import APP_SECRET, VERIFY_TOKEN, WEBHOOK, dm_body, meta_bytes
from tests.plugins.kafka import read_topic
from tests.plugins.outage import GatewayProcess, gateway_env, report_fault, signed_poster

pytestmark = pytest.mark.kafka

KEEPALIVE = 2.0
BODY_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def hostile_gateway(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, KafkaSettings]]:
    """One real gateway for the module, with short keep-alive and body timeouts so slow clients are cut fast."""
    tmp = tmp_path_factory.mktemp("hostile")
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:12]}")
    env = gateway_env(kafka, tmp / "spool", IGW_BODY_READ_TIMEOUT_SECONDS=str(BODY_TIMEOUT))
    proc = GatewayProcess(env, tmp / "gateway.log", ("--keepalive-timeout", str(KEEPALIVE)))
    proc.start()
    try:
        yield proc, kafka
    finally:
        proc.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def _rss_bytes(proc: GatewayProcess) -> int:
    assert proc.process is not None
    for line in Path(f"/proc/{proc.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def _raw(proc: GatewayProcess, data: bytes, *, read_timeout: float = 5.0) -> bytes:
    """Send raw bytes on a fresh connection; return what the server answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), read_timeout)
    finally:
        writer.close()


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.") else 0


async def test_slowloris_headers_are_cut_while_neighbours_are_served(
    hostile_gateway: tuple[GatewayProcess, KafkaSettings], session: aiohttp.ClientSession
) -> None:
    """Connections trickling their headers are closed after the keep-alive timeout; signed posts meanwhile get 200."""
    proc, kafka = hostile_gateway
    rss_before = _rss_bytes(proc)

    async def slow_client() -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
        started = time.monotonic()
        try:
            writer.write(f"POST {WEBHOOK} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".encode())
            while time.monotonic() - started < KEEPALIVE + 5:
                writer.write(b"a")
                await writer.drain()
                try:
                    if await asyncio.wait_for(reader.read(1024), 0.3) == b"":
                        return time.monotonic() - started
                except TimeoutError:
                    continue
            return float("inf")
        except ConnectionError:
            return time.monotonic() - started
        finally:
            writer.close()

    slow = [asyncio.create_task(slow_client()) for _ in range(50)]
    await asyncio.sleep(0.3)
    post = signed_poster(session, proc.base_url + WEBHOOK)
    neighbours = [await post(f"neighbour-{i}") for i in range(20)]
    closed_after = await asyncio.gather(*slow)
    assert {o.status for o in neighbours} == {200}
    assert max(o.seconds for o in neighbours) < 1.0
    assert max(closed_after) < KEEPALIVE + 2, closed_after
    records = await read_topic(kafka.bootstrap_servers, kafka.topic("messages"), expect=20, timeout=10)
    assert {f"neighbour-{i}" for i in range(20)} <= {orjson.loads(r.value)["message"]["mid"] for r in records}
    report_fault(
        "slowloris headers",
        bad_inputs=len(slow),
        neighbours_acknowledged=20,
        slowest_close_seconds=round(max(closed_after), 2),
        rss_growth_bytes=_rss_bytes(proc) - rss_before,
    )


async def test_trickled_body_gets_408(hostile_gateway: tuple[GatewayProcess, KafkaSettings]) -> None:
    """A body that does not arrive within the body timeout is answered 408 and the connection closed."""
    proc, _ = hostile_gateway
    reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
    started = time.monotonic()
    try:
        writer.write(
            f"POST {WEBHOOK} HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n"
            f"X-Hub-Signature-256: sha256={'0' * 64}\r\n\r\n{{".encode()
        )
        answer = b""
        while time.monotonic() - started < BODY_TIMEOUT + 3:
            writer.write(b" ")
            await writer.drain()
            try:
                chunk = await asyncio.wait_for(reader.read(4096), 0.2)
            except TimeoutError:
                continue
            answer += chunk
            if not chunk or b"\r\n\r\n" in answer:
                break
    finally:
        writer.close()
    assert _status(answer) == 408
    assert b"body_timeout" in answer
    assert time.monotonic() - started < BODY_TIMEOUT + 1.5


@pytest.mark.parametrize(
    ("name", "headers"),
    [
        ("one huge header", "X-Big: " + "b" * 20_000 + "\r\n"),
        ("too many headers", "".join(f"X-H{i}: v\r\n" for i in range(200))),
        ("huge request line", ""),
    ],
)
async def test_oversized_headers_are_refused(
    hostile_gateway: tuple[GatewayProcess, KafkaSettings], name: str, headers: str
) -> None:
    """Header sections over the parser limits get a 4xx and a closed connection, not a buffered megabyte."""
    proc, _ = hostile_gateway
    path = WEBHOOK + ("?" + "q" * 20_000 if name == "huge request line" else "")
    answer = await _raw(proc, f"POST {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: 2\r\n\r\n{{}}".encode())
    assert _status(answer) in {400, 414, 431}, answer[:200]


async def test_content_types_and_unsigned_bodies(
    hostile_gateway: tuple[GatewayProcess, KafkaSettings], session: aiohttp.ClientSession
) -> None:
    """The signature decides, not the Content-Type: a signed DM as text/plain is kept; unsigned form data is 403."""
    proc, kafka = hostile_gateway
    body = dm_body(mid="plain-text-ct")
    url = proc.base_url + WEBHOOK
    headers = {"X-Hub-Signature-256": sign(body, APP_SECRET), "Content-Type": "text/plain"}
    async with session.post(url, data=body, headers=headers) as resp:
        assert resp.status == 200
    form = b"a=1&b=2"
    async with session.post(url, data=form, headers={"Content-Type": "application/x-www-form-urlencoded"}) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"] == "invalid_signature"
    async with session.post(url, data=b"", headers={"Content-Type": "multipart/form-data; boundary=x"}) as resp:
        assert resp.status == 403
    records = await read_topic(kafka.bootstrap_servers, kafka.topic("messages"), expect=50, timeout=3)
    assert "plain-text-ct" in {orjson.loads(r.value)["message"]["mid"] for r in records}


async def test_deep_nesting_and_garbage_batches_are_bounded(
    hostile_gateway: tuple[GatewayProcess, KafkaSettings], session: aiohttp.ClientSession
) -> None:
    """Deeply nested JSON and 1000-item batches of garbage get 200 fast and go to dead letters; neighbours are kept."""
    proc, kafka = hostile_gateway
    url = proc.base_url + WEBHOOK
    rss_before = _rss_bytes(proc)
    deep = b'{"object":"instagram","entry":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    garbage_items = [
        {"sender": i, "recipient": None, "timestamp": "soon", "message": [i]}
        if i % 3 == 0
        else {"messaging_seen": {"x": "y" * (i % 50)}}
        if i % 3 == 1
        else "not an item"
        for i in range(1000)
    ]
    garbage = meta_bytes({"object": "instagram", "entry": [{"id": "1", "time": 1, "messaging": garbage_items}]})
    not_json = b"\x00\xff" * 5000
    bodies = [deep, garbage, not_json, b"[]", b"null", b'{"object":"instagram","entry":[{"changes":7}]}']
    post = signed_poster(session, url)

    async def timed(body: bytes) -> tuple[int, float]:
        started = time.monotonic()
        async with session.post(url, data=body, headers={"X-Hub-Signature-256": sign(body, APP_SECRET)}) as resp:
            await resp.read()
            return resp.status, time.monotonic() - started

    results, neighbours = await asyncio.gather(
        asyncio.gather(*(timed(b) for b in bodies)),
        asyncio.gather(*(post(f"beside-garbage-{i}") for i in range(10))),
    )
    assert [status for status, _ in results] == [200] * len(bodies)
    assert max(seconds for _, seconds in results) < 3.0
    assert {o.status for o in neighbours} == {200}
    messages = await read_topic(kafka.bootstrap_servers, kafka.topic("messages"), expect=60, timeout=4)
    mids = {orjson.loads(r.value)["message"]["mid"] for r in messages}
    assert {f"beside-garbage-{i}" for i in range(10)} <= mids
    dead = await read_topic(kafka.bootstrap_servers, kafka.topic("deadletter"), expect=len(bodies), timeout=10)
    assert deep in {r.value for r in dead}
    growth = _rss_bytes(proc) - rss_before
    assert growth < 64 * 1024 * 1024
    report_fault(
        "garbage bodies",
        bad_inputs=len(bodies),
        neighbours_acknowledged=len(neighbours),
        slowest_seconds=round(max(s for _, s in results), 3),
        rss_growth_bytes=growth,
    )


# Requests aiohttp refuses before routing, each as raw bytes on its own connection.
MALFORMED: dict[str, bytes] = {
    "header without colon": b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
    "too many headers": b"GET / HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(100)) + b"\r\n",
    "request line too long": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "header too long": b"GET / HTTP/1.1\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n",
    "two content lengths": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    "length and chunked": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
    "bad chunk size": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "bad method": b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad version": b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    "TLS on the HTTP port": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 60,
}


def _counter(metrics_text: str, name: str, **labels: str) -> float:
    """One sample of the Prometheus text exposition (0 when absent)."""
    for line in metrics_text.splitlines():
        if not line.startswith(name + "{"):
            continue
        sample, value = line.rsplit(" ", 1)
        pairs = dict(part.split("=", 1) for part in sample[len(name) + 1 : -1].split(","))
        if all(pairs.get(k) == f'"{v}"' for k, v in labels.items()):
            return float(value)
    return 0.0


async def test_malformed_requests_cost_almost_nothing(
    hostile_gateway: tuple[GatewayProcess, KafkaSettings], session: aiohttp.ClientSession
) -> None:
    """A flood of malformed requests, unsigned posts and wrong handshakes: each is answered (400/403) and counted
    in igw_http_requests_total, no traceback is logged, and the log grows by a few hundred bytes at most."""
    proc, _ = hostile_gateway
    per_kind, junk = 100, 200
    log_size = proc.log_path.stat().st_size

    async def scrape() -> str:
        async with session.get(proc.base_url + "/metrics") as resp:
            return await resp.text()

    before = await scrape()
    limit = asyncio.Semaphore(32)

    async def malformed(data: bytes) -> int:
        async with limit:
            return _status(await _raw(proc, data))

    async def unsigned(i: int) -> int:
        async with limit, session.post(proc.base_url + WEBHOOK, data=b'{"object":"instagram"}') as resp:
            return resp.status

    async def wrong_handshake(i: int) -> int:
        params = {"hub.mode": "subscribe", "hub.verify_token": f"guess-{i}", "hub.challenge": "1"}
        async with limit, session.get(proc.base_url + WEBHOOK, params=params) as resp:
            return resp.status

    started = time.monotonic()
    statuses, posts, handshakes = await asyncio.gather(
        asyncio.gather(*(malformed(data) for data in MALFORMED.values() for _ in range(per_kind))),
        asyncio.gather(*(unsigned(i) for i in range(junk))),
        asyncio.gather(*(wrong_handshake(i) for i in range(junk))),
    )
    elapsed = time.monotonic() - started
    await asyncio.sleep(0.2)  # let the last log lines reach the file
    after = await scrape()
    new_log = proc.log_path.read_bytes()[log_size:]
    growth = len(new_log)
    counted = _counter(after, "igw_http_requests_total", route="malformed", status="400") - _counter(
        before, "igw_http_requests_total", route="malformed", status="400"
    )
    refused_posts = _counter(after, "igw_http_requests_total", route=WEBHOOK, method="POST", status="403") - _counter(
        before, "igw_http_requests_total", route=WEBHOOK, method="POST", status="403"
    )
    report_fault(
        "malformed-request flood",
        requests=len(statuses) + len(posts) + len(handshakes),
        seconds=round(elapsed, 2),
        log_growth_bytes=growth,
        log_bytes_per_second=round(growth / elapsed),
        counted_malformed=counted,
    )
    assert set(statuses) == {400}
    assert set(posts) == set(handshakes) == {403}
    assert counted == len(MALFORMED) * per_kind
    assert refused_posts == junk
    assert b"Traceback" not in new_log
    assert b'"level":"error"' not in new_log
    # One throttled line per kind (malformed, signatures, handshakes) per 10 s, ~300 bytes each.
    assert growth <= 3 * 400 * (1 + int(elapsed / 10)), new_log.decode(errors="replace")


async def test_long_handshake_url_never_reaches_the_log(
    kafka_bootstrap: str, tmp_path: Path, gateway_process: Callable[..., GatewayProcess]
) -> None:
    """Handshakes with the verify token in URLs over the line limit, with debug logs and access lines on: the token
    is in no log line; the challenge answer is plain text with nosniff."""
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:12]}")
    proc = gateway_process(gateway_env(kafka, None), tmp_path / "gateway.log", "--log-level", "debug", "--access-log")
    query = f"hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444"
    async with aiohttp.ClientSession() as session, session.get(f"{proc.base_url}{WEBHOOK}?{query}") as resp:
        assert resp.status == 200
        assert await resp.text() == "1158201444"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Content-Type"].startswith("text/plain")
    answers = [
        await _raw(proc, f"GET {WEBHOOK}?{query}&pad={'p' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n".encode()),
        await _raw(proc, f"GET {WEBHOOK}?{'p' * 9000}&{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode()),
        await _raw(proc, f"GET {WEBHOOK}?{query} HTTP/1.1\r\nHost: x\r\nX-Big: {'b' * 9000}\r\n\r\n".encode()),
    ]
    await asyncio.sleep(0.2)
    proc.stop()
    assert [_status(a) for a in answers] == [400, 400, 400]
    log_text = proc.log_path.read_text()
    assert "webhook subscription verified" in log_text  # the log was written at debug level
    assert '"GET /api/v1/instagram/webhook 200' in log_text or f"GET {WEBHOOK} 200" in log_text
    assert VERIFY_TOKEN not in log_text
