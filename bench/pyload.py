"""A Python load generator for machines without wrk: ``connections`` aiohttp workers for ``duration``.

Slower than wrk (it may become the bottleneck), so the harness says when it is used. Prints the
same ``BENCH_JSON`` line as the wrk script.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import aiohttp

from bench.loadgen import MARKER, TIMEOUT_SECONDS


def _percentile(sorted_values: list[int], pct: float) -> int:
    if not sorted_values:
        return 0
    index = min(len(sorted_values) - 1, round(pct / 100 * (len(sorted_values) - 1)))
    return sorted_values[index]


async def _load(
    url: str, bodies: list[tuple[bytes, str]], connections: int, duration: float, delay_ms: float
) -> dict[str, int]:
    latencies: list[int] = []
    counts = {"requests": 0, "non2xx": 0, "connect": 0, "read": 0, "write": 0, "timeout": 0}
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
    start = time.monotonic()
    deadline = start + duration

    async def worker(session: aiohttp.ClientSession, offset: int) -> None:
        i = offset
        while time.monotonic() < deadline:
            body, signature = bodies[i % len(bodies)]
            i += 1
            sent = time.perf_counter()
            try:
                async with session.post(
                    url, data=body, headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature}
                ) as response:
                    await response.read()
                    status = response.status
            except TimeoutError:
                counts["timeout"] += 1
                continue
            except aiohttp.ClientConnectionError:
                counts["read"] += 1
                continue
            latencies.append(int((time.perf_counter() - sent) * 1e6))
            counts["requests"] += 1
            if status >= 400:
                counts["non2xx"] += 1
            if delay_ms > 0:
                await asyncio.sleep(delay_ms / 1000)

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async with asyncio.timeout(duration + TIMEOUT_SECONDS + 5):
            await asyncio.gather(*(worker(session, n) for n in range(connections)))
    elapsed = time.monotonic() - start
    latencies.sort()
    return {
        **counts,
        "duration_us": int(elapsed * 1e6),
        "p50_us": _percentile(latencies, 50),
        "p99_us": _percentile(latencies, 99),
        "max_us": latencies[-1] if latencies else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--bodies", required=True, help="JSON list of {file, signature}")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--delay-ms", type=float, default=0)
    args = parser.parse_args()
    manifest = json.loads(Path(args.bodies).read_text())
    bodies = [(Path(item["file"]).read_bytes(), item["signature"]) for item in manifest]
    result = asyncio.run(_load(args.url, bodies, args.connections, args.duration, args.delay_ms))
    print(MARKER + json.dumps(result))


if __name__ == "__main__":
    main()
