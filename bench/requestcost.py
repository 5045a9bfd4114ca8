"""Instructions per request of the real ``igw gateway``, counted by callgrind: robust to a busy machine.

    .venv/bin/python -m bench.requestcost [--requests 500] [--connections 16] [--runs 1]

Starts a local broker, then ``igw gateway`` under ``valgrind --tool=callgrind`` (the broker and
the load generator run natively, uncounted). Each measurement is two runs of the gateway, one
answering n signed one-message DMs and one answering 3n, after the same warm-up; the difference
of their instruction totals over 2n is what one request costs, start-up and shutdown cancelled out.
Every request must be answered 200. A wall-clock benchmark on a shared machine moves by several
per cent from run to run; this figure by under 1 % (mostly 0.1-0.3 %), and a microsecond is
~6,000 instructions, so a few runs tell whether a change of a microsecond pays (bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

from bench import payloads
from igw.config import KafkaSettings
from igw.topics import GATEWAY_TOPICS, ensure_topics
from igw_tools.localbroker import free_port, running_broker

SECRET = "bench_requestcost_secret"  # noqa: S105 - signs the benchmark's own bodies
WEBHOOK = "http://127.0.0.1:{port}/api/v1/instagram/webhook"


async def _post(port: int, count: int, connections: int) -> None:
    """``count`` signed DMs over ``connections`` keep-alive connections; each must be answered 200."""
    [signed] = payloads.one_message(SECRET)
    headers = {"X-Hub-Signature-256": signed.signature, "Content-Type": "application/json"}
    url, left = WEBHOOK.format(port=port), [count]

    async def worker(session: aiohttp.ClientSession) -> None:
        while left[0] > 0:
            left[0] -= 1
            async with session.post(url, data=signed.body, headers=headers) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"the gateway answered {resp.status}")

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(connections)))


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def gateway_instructions(bootstrap: str, requests: int, warmup: int, connections: int, workdir: Path) -> int:
    """Total instructions of one ``igw gateway`` run under callgrind that answered warm-up + ``requests``."""
    port, out = free_port(), workdir / f"callgrind.{requests}.out"
    prefix = f"cost{time.monotonic_ns()}"
    asyncio.run(ensure_topics(KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix), GATEWAY_TOPICS))
    env = {
        **os.environ,
        "PYTHONHASHSEED": "0",
        "INSTAGRAM_WEBHOOK_VERIFY_TOKEN": "bench-verify-token",
        "INSTAGRAM_APP_SECRET": SECRET,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_ENABLE_IDEMPOTENCE": "false",  # Tansu lacks aiokafka's idempotent producer
        "IGW_TOPIC_PREFIX": prefix,
        "IGW_SPOOL_ENABLED": "false",
        "IGW_PUBLISH_TIMEOUT_SECONDS": "4.9",  # valgrind slows the gateway ~50x: no 503 for that
    }
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-m", "igw_tools.cli"]
    argv += ["gateway", "--port", str(port), "--log-level", "warning"]
    with (workdir / f"gateway.{requests}.log").open("wb") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while not _ready(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the gateway did not become ready; see {workdir}")
            time.sleep(0.5)
        asyncio.run(_post(port, warmup, connections))
        asyncio.run(_post(port, requests, connections))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(600)
    match = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no instruction total in {out}")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="n: the runs answer n and 3n requests")
    parser.add_argument("--warmup", type=int, default=300, help="requests answered before either count")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--runs", type=int, default=1, help="measurements (pairs of gateway runs)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="igw-requestcost-") as tmp, running_broker() as broker:
        for run in range(args.runs):
            counts = {
                n: gateway_instructions(broker.bootstrap_servers, n, args.warmup, args.connections, Path(tmp))
                for n in (args.requests, 3 * args.requests)
            }
            per_request = (counts[3 * args.requests] - counts[args.requests]) / (2 * args.requests)
            print(f"run {run + 1}: {per_request:,.0f} instructions per one-message request", flush=True)


if __name__ == "__main__":
    main()
