"""A consumer process honours SIGTERM at any moment: during start-up, a group join, and a gone broker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from consumers.agent_replies.settings import SAMPLE_RULES
from consumers.common.metrics import ConsumerMetrics
from consumers.common.runner import OffsetTracker, Stopping, StopSignals, poll_batches, stop_consumer
from igw.config import KafkaSettings
from igw.topics import TOPIC_NAMES, ensure_topics
from igw_tools.localbroker import free_port


class _JoiningConsumer:
    """A consumer whose fetch waits for an assignment that never comes, and whose stop() hangs."""

    def __init__(self) -> None:
        self.fetches = 0

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        self.fetches += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    def assignment(self) -> set[TopicPartition]:
        return set()

    async def stop(self) -> None:
        await asyncio.Event().wait()


async def test_poll_returns_when_stopped_while_a_fetch_waits_for_the_group() -> None:
    """A stop while getmany waits for the group's assignment ends the poll at once, the fetch cancelled."""
    consumer, stop = _JoiningConsumer(), asyncio.Event()
    asyncio.get_running_loop().call_later(0.1, stop.set)
    started = time.monotonic()
    metrics = ConsumerMetrics(CollectorRegistry(), "g")
    await asyncio.wait_for(
        poll_batches(consumer, OffsetTracker(), lambda tp, records: None, stop, metrics=metrics, max_records=10), 5
    )
    assert time.monotonic() - started < 1
    assert consumer.fetches == 1


async def test_stop_consumer_gives_up_on_a_hanging_stop() -> None:
    """stop_consumer returns after its bound when consumer.stop() waits on a join or a gone broker."""
    started = time.monotonic()
    await stop_consumer(_JoiningConsumer(), timeout=0.2)
    assert time.monotonic() - started < 1


async def test_stop_signals_by_phase() -> None:
    """Before the join a signal cancels start-up (exit 0); after it, one drains and a second halts (exit 1)."""
    loop = asyncio.get_running_loop()
    sleeper = loop.create_task(asyncio.sleep(10))
    early = StopSignals(asyncio.Event(), sleeper, asyncio.Event())
    early.handle("SIGTERM")
    assert early.state is Stopping.START_CANCELLED
    assert early.stop.is_set()
    with pytest.raises(asyncio.CancelledError):
        await sleeper
    assert early.exit_status() == 0

    worker = loop.create_task(asyncio.sleep(10))
    joined = asyncio.Event()
    joined.set()
    late = StopSignals(asyncio.Event(), worker, joined)
    late.handle("SIGTERM")
    assert late.state is Stopping.DRAINING
    assert late.stop.is_set()
    await asyncio.sleep(0)
    assert not worker.cancelled()
    late.handle("SIGTERM")
    assert late.state is Stopping.HALTED
    with pytest.raises(asyncio.CancelledError):
        await worker
    assert late.exit_status() == 1


def _http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as response:  # noqa: S310 - a local http URL
            return int(response.status)
    except OSError:
        return None


@pytest.mark.kafka
@pytest.mark.parametrize("command", ["agent", "analytics"])
async def test_sigterm_during_the_group_join_stops_the_process_at_once(
    command: str, kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    """SIGTERM while the consumer joins its group (Tansu holds the join ~15 s here) exits 0 within seconds."""
    await ensure_topics(kafka_settings, TOPIC_NAMES)
    port = free_port()
    environ = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "KAFKA_ENABLE_IDEMPOTENCE": "false",
        "IGW_TOPIC_PREFIX": kafka_settings.topic_prefix,
        "IGW_RULES_FILE": str(SAMPLE_RULES),
        "IGW_ACCESS_TOKEN": "IGtoken-of-the-test",  # an account to send from; nothing is sent here
        "IGW_METRICS_PORT": str(port),
        "IGW_METRICS_HOST": "127.0.0.1",
        # The default 30 s session: Tansu holds a join for half of it, so the signal lands mid-join.
        "IGW_CONSUMER_SESSION_TIMEOUT_MS": "30000",
    }
    log_path = tmp_path / "consumer.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "igw_tools.cli", command], env=environ, stdout=log_file, stderr=log_file
        )
    try:
        deadline = time.monotonic() + 30
        while _http_status(f"http://127.0.0.1:{port}/healthz") != 200:
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        assert _http_status(f"http://127.0.0.1:{port}/readyz") != 200, "joined already: the test proves nothing"
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        status = await asyncio.to_thread(process.wait, 15)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log = log_path.read_text()
    assert status == 0, log
    assert took < 6, f"took {took:.1f} s\n{log}"
    assert "received during start-up: stopping now" in log
    assert "Traceback" not in log


async def test_gateway_stops_at_once_while_kafka_is_unreachable_at_start(tmp_path: Path) -> None:
    """SIGTERM while the gateway's producer waits for a Kafka that does not answer ends it within seconds."""
    port, kafka_port = free_port(), free_port()  # nothing listens on kafka_port
    environ = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_port}",
        "INSTAGRAM_WEBHOOK_VERIFY_TOKEN": "token",
        "INSTAGRAM_APP_SECRET": "secret",
        "IGW_SPOOL_DIR": str(tmp_path / "spool"),
    }
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "igw_tools.cli", "gateway", "--port", str(port)],
            env=environ,
            stdout=log_file,
            stderr=log_file,
        )
    try:
        deadline = time.monotonic() + 30
        while "starting on" not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            await asyncio.sleep(0.05)
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 15)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert took < 5, log_path.read_text()
