"""`igw gateway --workers N`: one port, N processes, one /metrics for all, restarts without refusals."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from gateway.signature import sign
from igw_tools.localbroker import free_port
from tests.plugins.gateway import APP_SECRET, VERIFY_TOKEN, WEBHOOK, dm_body

pytestmark = pytest.mark.kafka


def _children(pid: int) -> set[int]:
    """Live child processes of ``pid``, from /proc."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == str(pid) and fields[0] != "Z":
            children.add(int(stat.parent.name))
    return children


async def _published(session: aiohttp.ClientSession, base: str) -> float:
    async with session.get(f"{base}/metrics") as resp:
        text = await resp.text()
    return sum(float(m) for m in re.findall(r"^igw_events_published_total\{[^}]*\} (\S+)$", text, re.M))


@pytest.fixture
def migrate_queued_connections() -> Iterator[None]:
    """net.ipv4.tcp_migrate_req=1 for the test (docs/scaling.md): without it the kernel resets connections
    still queued at a listener that closes, whatever the server does."""
    knob = Path("/proc/sys/net/ipv4/tcp_migrate_req")
    before = knob.read_text().strip()
    try:
        knob.write_text("1")
    except OSError as exc:
        pytest.fail(f"this test needs root to set {knob} (it restores the old value): {exc}")
    try:
        yield
    finally:
        knob.write_text(before)


@pytest.mark.usefixtures("migrate_queued_connections")
async def test_workers_share_port_metrics_and_restart_gracefully(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Two workers serve one port; /metrics counts both; SIGHUP swaps them with no failed request."""
    port = free_port()
    env = {
        **os.environ,
        "INSTAGRAM_WEBHOOK_VERIFY_TOKEN": VERIFY_TOKEN,
        "INSTAGRAM_APP_SECRET": APP_SECRET,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_ENABLE_IDEMPOTENCE": "false",
        "IGW_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "IGW_SPOOL_DIR": str(tmp_path / "spool"),  # each worker takes its own directory under it
    }
    (tmp_path / "metrics").mkdir()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "igw_tools.cli",
            "gateway",
            "--port",
            str(port),
            "--workers",
            "2",
            "--log-format",
            "json",
        ],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                try:
                    async with session.get(f"{base}/readyz") as resp:
                        if resp.status == 200 and len(_children(proc.pid)) == 2:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
            first = _children(proc.pid)
            assert len(first) == 2

            statuses: list[int] = []

            async def post(i: int) -> None:
                body = dm_body(mid=f"w-{i}", user=f"20000000000{i:05d}")
                # A fresh connection each time, so the kernel spreads them over the workers.
                async with (
                    aiohttp.ClientSession() as own,
                    own.post(
                        f"{base}{WEBHOOK}", data=body, headers={"X-Hub-Signature-256": sign(body, APP_SECRET)}
                    ) as resp,
                ):
                    statuses.append(resp.status)

            await asyncio.gather(*(post(i) for i in range(100)))
            assert statuses == [200] * 100
            assert await _published(session, base) == 100

            proc.send_signal(signal.SIGHUP)
            i = 100
            restart_deadline = time.monotonic() + 60
            while time.monotonic() < restart_deadline:
                await post(i)
                i += 1
                current = _children(proc.pid)
                if len(current) == 2 and not current & first:
                    break
            assert not _children(proc.pid) & first, "workers were not replaced"
            assert set(statuses) == {200}, f"requests failed during the rolling restart: {set(statuses)}"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
