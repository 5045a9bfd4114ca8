"""CPU per record of the producer paths the gateway could take, against a local Tansu broker.

    .venv/bin/python -m bench.producer_paths [--records 30000]

Compares, alternating, for 1000-record requests (a maximum Meta batch) and for single records
with 64 in flight (one DM per request): aiokafka ``send()`` per record and aiokafka ready-made
``send_batch()`` per partition (what the gateway does for multi-record bodies); for 1000-record
requests also confluent-kafka ``produce()`` with delivery callbacks. CPU time is the process's
(all threads).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import murmur2

from igw_tools.localbroker import LocalBroker

VALUE = b"x" * 900
HEADERS = [("ce_id", b"0" * 32), ("ce_type", b"igw.v1.message"), ("content-type", b"application/json")]
PARTITIONS = 6


def keys(n: int) -> list[bytes]:
    return [b"instagram:17841400000000000:%016d" % i for i in range(n)]


async def aiokafka_send(producer: AIOKafkaProducer, topic: str, batch: list[bytes]) -> None:
    futures = [await producer.send(topic, VALUE, key=k, headers=HEADERS) for k in batch]
    await asyncio.gather(*futures)


async def aiokafka_send_batch(producer: AIOKafkaProducer, topic: str, batch: list[bytes]) -> None:
    groups: dict[int, list[bytes]] = {}
    for k in batch:
        groups.setdefault((murmur2(k) & 0x7FFFFFFF) % PARTITIONS, []).append(k)
    futures = []
    for partition, members in groups.items():
        builder = producer.create_batch()
        for k in members:
            if builder.append(key=k, value=VALUE, timestamp=None, headers=HEADERS) is None:
                futures.append(await producer.send_batch(builder, topic, partition=partition))
                builder = producer.create_batch()
                builder.append(key=k, value=VALUE, timestamp=None, headers=HEADERS)
        futures.append(await producer.send_batch(builder, topic, partition=partition))
    await asyncio.gather(*futures)


class Confluent:
    def __init__(self, bootstrap: str) -> None:
        from confluent_kafka import Producer

        self.producer = Producer(
            {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 2, "partitioner": "murmur2_random"}
        )
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        while not self.stop.is_set():
            self.producer.poll(0.01)

    async def produce(self, topic: str, batch: list[bytes]) -> None:
        loop = asyncio.get_running_loop()
        futures = []
        for k in batch:
            future: asyncio.Future[None] = loop.create_future()

            def report(err: Any, msg: Any, future: asyncio.Future[None] = future) -> None:
                loop.call_soon_threadsafe(future.set_result, None)

            self.producer.produce(topic, value=VALUE, key=k, headers=HEADERS, on_delivery=report)
            futures.append(future)
        await asyncio.gather(*futures)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.producer.flush(10)


async def measure(name: str, total: int, request_size: int, run: Callable[[list[bytes]], Awaitable[None]]) -> None:
    batches = [keys(total)[i : i + request_size] for i in range(0, total, request_size)]
    in_flight = asyncio.Semaphore(64 if request_size == 1 else 1)

    async def one(batch: list[bytes]) -> None:
        async with in_flight:
            await run(batch)

    cpu, wall = time.process_time(), time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.gather(*(one(b) for b in batches)), 120)
    except TimeoutError:
        print(f"{name:48s} did not finish within 120 s")
        return
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(f"{name:48s} {cpu * 1e6 / total:7.1f} us CPU/record {total / wall:9.0f} records/s")


async def main(total: int) -> None:
    broker = LocalBroker()
    broker.start()
    try:
        bootstrap = broker.bootstrap_servers
        topic = f"producer-paths-{os.getpid()}"
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
        await admin.close()
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", linger_ms=2, max_batch_size=262144, max_request_size=4 << 20
        )
        await producer.start()
        confluent = Confluent(bootstrap)
        try:
            for size in (1000, 1):
                await measure(f"aiokafka send() per record, {size}/request", total, size,
                              lambda b: aiokafka_send(producer, topic, b))  # fmt: skip
                await measure(f"aiokafka send_batch() per partition, {size}/request", total, size,
                              lambda b: aiokafka_send_batch(producer, topic, b))  # fmt: skip
                if size > 1:  # one record per request with delivery callbacks stalled here: not compared
                    await measure(f"confluent-kafka produce(), {size}/request", total, size,
                                  lambda b: confluent.produce(topic, b))  # fmt: skip
        finally:
            confluent.close()
            await producer.stop()
    finally:
        broker.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=30_000)
    asyncio.run(main(parser.parse_args().records))
