"""``--scenario bigbody``: the largest accepted body every few seconds while single DMs stream.

The gateway (pinned to the server core, default settings) gets an open-loop stream of one-DM
bodies at ``DM_RATE`` per second and, every ``BIG_EVERY`` seconds, one body of exactly as many
DMs as fit in the default ``IGW_MAX_BODY_BYTES``. Reported: the DMs' p50/p99/max latency and how
many took over 1 s, the big bodies' answers and latencies, and the gateway's idle and peak RSS. The
same DM stream first runs alone for as long (the control): on a shared machine, the difference
between the two is what the big bodies cost.
Target (issue 12): DMs' p99 under 100 ms and no answer over 1 s while big bodies are processed.
Afterwards every acknowledged event must be in Kafka (the delivery check).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import statistics
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import aiohttp

from bench import kafka_check, payloads, procstat, servers
from gateway.settings import GatewaySettings
from igw_tools.localbroker import LocalBroker

DM_RATE: Final = 100.0
BIG_EVERY: Final = 3.0
MIN_DURATION: Final = 20.0


def default_max_body() -> int:
    """The gateway's default IGW_MAX_BODY_BYTES."""
    [limit] = [f.default for f in dataclasses.fields(GatewaySettings) if f.name == "max_body_bytes"]
    assert isinstance(limit, int)
    return limit


@dataclass
class BigBodyRun:
    body_bytes: int
    body_events: int
    duration: float
    dm_seconds: list[float] = field(default_factory=list)
    dm_errors: int = 0
    # The control: the same DM stream before, without big bodies.
    control_seconds: list[float] = field(default_factory=list)
    big_seconds: list[float] = field(default_factory=list)
    big_statuses: list[int] = field(default_factory=list)
    idle_rss: int = 0
    peak_rss: int = 0
    # From the gateway's own igw_http_request_duration_seconds (webhook route): share answered within 0.1 s.
    server_within_100ms: float = float("nan")
    control_server_within_100ms: float = float("nan")
    found: int = 0
    acknowledged: int = 0

    def percentile_ms(self, q: float, *, control: bool = False) -> float:
        ordered = sorted(self.control_seconds if control else self.dm_seconds)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    def markdown(self) -> str:
        big_ms = [1000 * s for s in self.big_seconds]
        over = sum(s > 1.0 for s in self.dm_seconds)
        rows = [
            "| figure | value |",
            "|---|---|",
            f"| largest body | {self.body_bytes:,} bytes, {self.body_events:,} DMs, every {BIG_EVERY:g} s |",
            f"| DMs | {len(self.dm_seconds):,} answered 200 at {DM_RATE:g}/s over {self.duration:.0f} s, "
            f"{self.dm_errors} not |",
            f"| DM latency p50 / p99 / max | {self.percentile_ms(0.5):.1f} / {self.percentile_ms(0.99):.1f} / "
            f"{1000 * max(self.dm_seconds, default=0):.1f} ms |",
            f"| DMs over 1 s | {over} |",
            f"| control, DMs alone: p50 / p99 / max | {self.percentile_ms(0.5, control=True):.1f} / "
            f"{self.percentile_ms(0.99, control=True):.1f} / {1000 * max(self.control_seconds, default=0):.1f} ms |",
            f"| webhook answers within 100 ms, timed by the gateway itself (control) | {self.server_within_100ms:.2%} "
            f"({self.control_server_within_100ms:.2%}) |",
            f"| big bodies: answers | {', '.join(map(str, self.big_statuses))} |",
            f"| big bodies: latency median / max | {statistics.median(big_ms) if big_ms else 0:.0f} / "
            f"{max(big_ms, default=0):.0f} ms |",
            f"| gateway RSS idle / peak | {self.idle_rss / 2**20:.0f} / {self.peak_rss / 2**20:.0f} MiB |",
            f"| delivery check | {self.found:,} records in Kafka for {self.acknowledged:,} acknowledged events |",
        ]
        return "\n".join(rows)

    @property
    def delivered(self) -> bool:
        return self.found >= self.acknowledged


def run(
    *,
    broker: LocalBroker,
    port: int,
    server_core: int | None,
    load_core: int | None,
    workdir: Path,
    secret: str,
    verify_token: str,
    prefix: str,
    duration: float,
) -> BigBodyRun:
    """Start the gateway, load it as described above, stop it, check delivery."""
    workdir.mkdir(parents=True, exist_ok=True)
    dm = payloads.one_message(secret)[0]
    big = payloads.largest(secret, default_max_body())
    spec = servers.gateway_spec(broker.bootstrap_servers, prefix, secret, verify_token)
    spec.env["IGW_SPOOL_DIR"] = str(workdir / "spool")
    server = servers.start(spec, port=port, core=server_core, log_path=workdir / "server.log", probe=dm)
    result = BigBodyRun(len(big.body), big.events, max(duration, MIN_DURATION))
    previous = os.sched_getaffinity(0)
    try:
        result.idle_rss = procstat.memory(server.pid).rss_bytes
        if load_core is not None:
            os.sched_setaffinity(0, {load_core})
        url = server.url + servers.WEBHOOK_PATH
        control = BigBodyRun(0, 0, result.duration)
        start = _buckets(server.url + "/metrics")
        asyncio.run(_load(url, dm, None, control))
        middle = _buckets(server.url + "/metrics")
        result.control_seconds = control.dm_seconds
        asyncio.run(_load(url, dm, big, result))
        result.peak_rss = procstat.memory(server.pid).hwm_bytes
        end = _buckets(server.url + "/metrics")
        result.control_server_within_100ms = _share_within(start, middle, "0.1")
        result.server_within_100ms = _share_within(middle, end, "0.1")
    finally:
        os.sched_setaffinity(0, previous)
        server.stop()
    dms = len(result.dm_seconds) + len(result.control_seconds)
    result.acknowledged = server.probe_events + dms + big.events * result.big_statuses.count(200)
    result.found = sum(kafka_check.count_records(broker.bootstrap_servers, prefix).values())
    (workdir / "results.md").write_text(result.markdown() + "\n")
    return result


async def _load(url: str, dm: payloads.SignedBody, big: payloads.SignedBody | None, result: BigBodyRun) -> None:
    headers = {"Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:

        async def post(body: payloads.SignedBody) -> tuple[int, float]:
            started = time.monotonic()
            try:
                data = io.BytesIO(body.body) if len(body.body) > 1024 * 1024 else body.body
                async with session.post(
                    url, data=data, headers={**headers, "X-Hub-Signature-256": body.signature}
                ) as resp:
                    await resp.read()
                    return resp.status, time.monotonic() - started
            except (aiohttp.ClientError, TimeoutError):
                return 0, time.monotonic() - started

        async def one_dm() -> None:
            status, seconds = await post(dm)
            if status == 200:
                result.dm_seconds.append(seconds)
            else:
                result.dm_errors += 1

        async def one_big(big: payloads.SignedBody) -> None:
            status, seconds = await post(big)
            result.big_statuses.append(status)
            result.big_seconds.append(seconds)

        tasks: list[asyncio.Task[None]] = []
        start = time.monotonic()
        sent = 0
        next_big = start + 1.0
        while (now := time.monotonic()) - start < result.duration:
            if big is not None and now >= next_big:
                tasks.append(asyncio.create_task(one_big(big)))
                next_big += BIG_EVERY
            # Open loop: DMs leave on schedule whether or not earlier ones were answered.
            due = int((now - start) * DM_RATE)
            while sent < due:
                tasks.append(asyncio.create_task(one_dm()))
                sent += 1
            await asyncio.sleep(1 / DM_RATE / 2)
        await asyncio.gather(*tasks)


def _buckets(metrics_url: str) -> dict[str, float]:
    """The cumulative buckets of the gateway's webhook answer times, by upper bound."""
    with urllib.request.urlopen(metrics_url, timeout=5) as response:  # noqa: S310 - 127.0.0.1 only
        text = response.read().decode()
    route = f'route="{servers.WEBHOOK_PATH}"'
    buckets: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("igw_http_request_duration_seconds_bucket{") and route in line:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[le] = float(line.rsplit(" ", 1)[1])
    return buckets


def _share_within(before: dict[str, float], after: dict[str, float], bound: str) -> float:
    """Share of the answers between two scrapes that took at most ``bound`` seconds."""
    total = after.get("+Inf", 0.0) - before.get("+Inf", 0.0)
    within = after.get(bound, 0.0) - before.get(bound, 0.0)
    return within / total if total else float("nan")
