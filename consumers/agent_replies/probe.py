"""A throughput probe for the agent consumer, run by hand (not part of the test suite).

``python -m consumers.agent_replies.probe --conversations 2000`` starts a local Tansu broker (or
uses ``KAFKA_BOOTSTRAP_SERVERS``), the Graph API emulator and the consumer (rules agent, clinic
sample, in-process store unless ``--redis``) in this one process, publishes one message per
conversation and prints replies per second from the first reply to the last. Everything shares
one event loop and this machine's cores, so the figure is a floor, not a capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer

from consumers.agent_replies.service import run_agent
from consumers.agent_replies.settings import SAMPLE_RULES, AgentSettings
from consumers.common.runner import run_main
from consumers.common.topics import ensure_topics
from consumers.send_api.emulator import EmulatorConfig, EmulatorState, create_emulator_app
from gateway.localbroker import LocalBroker

ACCOUNT = "17841400000000999"


def _envelope(user: str, prefix: str) -> bytes:
    now = int(time.time() * 1000)
    mid = f"mid.{prefix}.{user}"
    conversation = f"instagram:{ACCOUNT}:{user}"
    return orjson.dumps(
        {
            "v": 1,
            "id": uuid.uuid4().hex,
            "type": "message",
            "platform": "instagram",
            "account_id": ACCOUNT,
            "user_id": user,
            "sender_id": user,
            "recipient_id": ACCOUNT,
            "conversation_id": conversation,
            "timestamp": now,
            "received_at": now,
            "standby": False,
            "message": {"mid": mid, "text": "What are your opening hours?"},
            "raw": {},
        }
    )


async def probe(conversations: int, concurrency: int, redis_url: str | None, bootstrap: str | None) -> int:
    broker = None
    if bootstrap is None:
        broker = LocalBroker()
        broker.start()
        bootstrap = broker.bootstrap_servers
    state = EmulatorState()
    config = EmulatorConfig(enforce_window=False, ig_rate_per_second=1e9, page_rate_per_second=1e9)
    runner = web.AppRunner(create_emulator_app(config, state=state), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    prefix = f"probe{uuid.uuid4().hex[:8]}"
    environ = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "IGW_TOPIC_PREFIX": prefix,
        "KAFKA_ENABLE_IDEMPOTENCE": "false",
        "IGW_ACCESS_TOKEN": "probe-token",
        "IGW_GRAPH_BASE_URL": f"http://127.0.0.1:{port}",
        "IGW_INSTAGRAM_GRAPH_BASE_URL": f"http://127.0.0.1:{port}",
        "IGW_SEND_RATE_IG": "1000000",
        "IGW_RULES_FILE": str(SAMPLE_RULES),
        "IGW_AGENT_CONCURRENCY": str(concurrency),
        "IGW_CONSUMER_HEARTBEAT_MS": "300",
        "IGW_CONSUMER_SESSION_TIMEOUT_MS": "2000",
        "IGW_METRICS_PORT": "0",
        **({"REDIS_URL": redis_url, "IGW_AGENT_REDIS_PREFIX": f"{prefix}:"} if redis_url else {}),
    }
    settings = AgentSettings.from_env(environ)
    kafka = settings.consumer.kafka
    await ensure_topics(kafka, [kafka.topic(n) for n in ("messages", "postbacks", "replies", "deadletter")])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=5)
    await producer.start()
    try:
        batch = [
            producer.send(kafka.topic("messages"), _envelope(f"user{i}", prefix), key=f"user{i}".encode())
            for i in range(conversations)
        ]
        await asyncio.gather(*[await f for f in batch])
    finally:
        await producer.stop()
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_agent(settings, stop, serve_http=False, started=started))
    try:
        await asyncio.wait_for(started.wait(), 30)
        first: float | None = None
        deadline = time.monotonic() + 300
        while len(state.messages) < conversations and time.monotonic() < deadline:
            if first is None and state.messages:
                first = time.monotonic()
            await asyncio.sleep(0.01)
        last = time.monotonic()
        done = len(state.messages)
        elapsed = last - (first or last)
        rate = done / elapsed if elapsed > 0 else float("nan")
        store = "redis" if redis_url else "in-process"
        print(  # noqa: T201 - a probe run by hand prints its figure
            f"{done} replies in {elapsed:.2f} s: {rate:.0f} replies/s "
            f"(concurrency {concurrency}, {store} store, emulator and broker on this machine)"
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await runner.cleanup()
        if redis_url:
            await _forget_keys(redis_url, f"{prefix}:")
        if broker is not None:
            broker.stop()
    return 0


async def _forget_keys(redis_url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.delete(*keys[start : start + 1000])
    finally:
        await client.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--conversations", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--redis", default=None, help="REDIS_URL for the ledger (default: in-process)")
    parser.add_argument("--bootstrap", default=None, help="an existing broker (default: start Tansu)")
    args = parser.parse_args()
    return run_main(lambda: probe(args.conversations, args.concurrency, args.redis, args.bootstrap))


if __name__ == "__main__":
    raise SystemExit(main())
