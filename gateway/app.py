"""The gateway's application factory. Pure: no I/O until the app starts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from gateway.drain import drain_forever
from gateway.metrics import GatewayMetrics, shared_metrics_dir
from gateway.privacy import data_deletion, deauthorize, deletion_status
from gateway.publisher import AiokafkaPublisher, Publisher
from gateway.settings import GatewaySettings
from gateway.spool import Spool, open_spool
from gateway.state import GatewayState
from gateway.typedefs import publisher_key, settings_key, state_key
from gateway.views import healthz, readyz, receive_webhook, verify_subscription
from igw.config import KafkaSettings
from igw.errors import SettingsError
from igw.keystore import open_keystore
from igw.sealing import Sealer
from igw.topics import GATEWAY_TOPICS, ensure_topics

__all__ = ["PublisherFactory", "create_app"]

log = logging.getLogger(__name__)

PublisherFactory = Callable[[KafkaSettings], Publisher]


def create_app(
    settings: GatewaySettings,
    *,
    publisher_factory: PublisherFactory | None = None,
    metrics: GatewayMetrics | None = None,
) -> web.Application:
    """The gateway's app. Its metrics are its own (a new registry unless ``metrics`` is given):
    ``/metrics`` serves them and nothing another part of the process may have registered."""
    # No middleware: even an empty one costs several % of a one-message POST (bench/); request
    # metrics come from the access-log hook aiohttp calls anyway (gateway.access_log).
    if metrics is None:
        metrics = GatewayMetrics(shared_metrics_dir())
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[settings_key] = settings
    app[state_key] = GatewayState.from_settings(settings, metrics)
    app[publisher_key] = (publisher_factory or default_publisher_factory(settings))(settings.kafka)
    app.router.add_get(settings.webhook_path, verify_subscription)
    app.router.add_post(settings.webhook_path, receive_webhook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", make_aiohttp_handler(metrics.registry))
    app.router.add_post(f"{settings.privacy_path}/data-deletion", data_deletion)
    app.router.add_post(f"{settings.privacy_path}/deauthorize", deauthorize)
    app.router.add_get(f"{settings.privacy_path}/deletion-status", deletion_status)
    # First: the key store must be open before a drained spool body is sealed.
    app.cleanup_ctx.append(_content_keys)
    app.cleanup_ctx.append(_kafka)
    # After _kafka: cleanup runs in reverse, so the drain stops before the producer does.
    app.cleanup_ctx.append(_spool)
    return app


def default_publisher_factory(settings: GatewaySettings) -> PublisherFactory:
    """aiokafka by default; librdkafka with ``IGW_PRODUCER_BACKEND=confluent``."""
    if settings.producer_backend == "confluent":
        from gateway.publisher_confluent import ConfluentPublisher

        return ConfluentPublisher
    return AiokafkaPublisher


async def _content_keys(app: web.Application) -> AsyncIterator[None]:
    """Open the content key store (``IGW_CONTENT_KEYS``) and follow other processes' erasures."""
    settings = app[settings_key]
    if settings.content_keys is None:
        yield
        return
    store = open_keystore(settings.content_keys)
    sealer = Sealer(store)
    app[state_key].sealer = sealer
    watch = asyncio.create_task(sealer.watch(), name="igw-content-keys")
    try:
        yield
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
        await store.close()


async def _kafka(app: web.Application) -> AsyncIterator[None]:
    """Connect the producer and create missing topics; on shutdown, flush and close it.

    aiohttp runs this cleanup only after in-flight handlers finished (within shutdown_timeout),
    so the records they handed to the producer are flushed by ``stop()``.
    """
    settings = app[settings_key]
    publisher = app[publisher_key]
    producer_ready = app[state_key].metrics.producer_ready
    # Wait briefly for Kafka, then serve anyway: /readyz reports the broker, and Meta's deliveries
    # get 503 (and are retried) rather than connection refused while the producer keeps trying.
    await publisher.start()
    topics_task: asyncio.Task[None] | None = None
    if settings.create_topics:
        topics_task = asyncio.create_task(_create_topics_when_connected(publisher, settings), name="igw-topics")
        if publisher.connected:
            await asyncio.wait({topics_task}, timeout=10)
    producer_ready.set(1 if publisher.connected else 0)
    try:
        yield
    finally:
        if topics_task is not None and not topics_task.done():
            topics_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await topics_task
        await publisher.stop()
        producer_ready.set(0)


async def _spool(app: web.Application) -> AsyncIterator[None]:
    """Open the spool (replaying what a previous run left in it) and run its drain."""
    settings = app[settings_key]
    state = app[state_key]
    if settings.spool_dir is None:
        yield
        return
    try:
        spool = await open_spool(
            settings.spool_dir,
            metrics=state.metrics,
            max_bytes=settings.spool_max_bytes,
            max_age_seconds=settings.spool_max_age_seconds,
        )
    except OSError as exc:
        # A spool that cannot be used is a configuration error: refuse to start rather than run without it.
        raise SettingsError("IGW_SPOOL_DIR", f"cannot use {settings.spool_dir}: {exc.strerror or exc}") from exc
    state.spool = spool
    report = spool.scan_report
    if report.records:
        log.warning(
            "spool %s holds %d bodies (%d bytes) from an earlier run; publishing them to Kafka first",
            spool.directory,
            report.records,
            report.bytes,
        )
    state.spooling = report.records > 0
    publisher = app[publisher_key]
    drain = asyncio.create_task(drain_forever(spool, publisher, settings, state), name="igw-spool-drain")
    gauges = asyncio.create_task(_refresh_spool_gauges(spool), name="igw-spool-gauges")
    try:
        yield
    finally:
        gauges.cancel()
        # Handlers have finished: give the drain a moment to empty the spool, since a replaced
        # container may not get this volume back (docs/durability.md).
        if spool.records and publisher.connected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(spool.wait_empty(), timeout=min(5.0, settings.shutdown_timeout))
        if spool.records:
            log.warning(
                "stopping with %d bodies in the spool %s; the next start publishes them", spool.records, spool.directory
            )
        drain.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drain
        await spool.close()


async def _refresh_spool_gauges(spool: Spool) -> None:
    while True:  # the oldest body's age grows with time, not only when the spool changes
        spool.publish_metrics()
        await asyncio.sleep(1.0)


async def _create_topics_when_connected(publisher: Publisher, settings: GatewaySettings) -> None:
    while True:
        if publisher.connected:
            try:
                await ensure_topics(settings.kafka, GATEWAY_TOPICS)
                return
            except Exception as exc:  # any failure is retried; readiness reports it meanwhile
                log.warning("creating topics failed (%s: %s); retrying", type(exc).__name__, exc)
        await asyncio.sleep(2.0)
