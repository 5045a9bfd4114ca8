"""The floor: aiohttp plus igw's publish path, nothing else.

Each request body is turned into records once, exactly as the gateway would (``normalize`` and
``build_records``), and cached; every later request with the same body publishes those ready-made
records through igw's publisher and awaits the broker's acknowledgement before answering 200. No
signature check, no parsing, no metrics, no access log. What this server reaches is what any
aiohttp gateway that waits for Kafka can reach here; the gateway's distance to it is the cost of
its own per-request work.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from aiohttp import web

from bench.ceiling import serve
from gateway.publisher import AiokafkaPublisher
from igw.config import Env, KafkaSettings
from igw.normalize import Topic, normalize
from igw.records import OutRecord, build_records
from igw.runtime import collect_rarely
from igw.topics import GATEWAY_TOPICS, ensure_topics

publisher_key = web.AppKey("publisher", AiokafkaPublisher)
records_key = web.AppKey("records", dict[bytes, list[OutRecord]])
topics_key = web.AppKey("topics", dict[Topic, str])
_TEXT = {"Content-Type": "text/plain"}
_PUBLISH_TIMEOUT = 3.0  # the gateway's default deadline


async def webhook(request: web.Request) -> web.Response:
    body = await request.read()
    app = request.app
    cache = app[records_key]
    records = cache.get(body)
    if records is None:
        received_at = time.time_ns() // 1_000_000
        records = cache[body] = build_records(normalize(body, received_at), app[topics_key], body, received_at, None)
    await app[publisher_key].publish(records, _PUBLISH_TIMEOUT)
    return web.Response(body=b"EVENT_RECEIVED", headers=_TEXT)


async def ready(request: web.Request) -> web.Response:
    return web.Response(status=200 if request.app[publisher_key].connected else 503)


async def kafka(app: web.Application) -> AsyncIterator[None]:
    settings = KafkaSettings.from_env(Env())
    await ensure_topics(settings, GATEWAY_TOPICS)
    publisher = AiokafkaPublisher(settings)
    await publisher.start()
    app[publisher_key] = publisher
    app[topics_key] = {t: settings.topic(t.value) for t in Topic}
    app[records_key] = {}
    yield
    await publisher.stop()


async def tune_gc(app: web.Application) -> None:
    # As the gateway does once it serves.
    asyncio.get_running_loop().call_soon(collect_rarely)


def create_app() -> web.Application:
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.cleanup_ctx.append(kafka)
    app.on_startup.append(tune_gc)
    app.router.add_post("/api/v1/instagram/webhook", webhook)
    app.router.add_get("/readyz", ready)
    return app


def main() -> None:
    serve(create_app(), __doc__)


if __name__ == "__main__":
    main()
