"""Is Kafka able to take the gateway's records? Shared by ``/readyz`` and the spool's drain."""

from __future__ import annotations

import logging

from gateway.metrics import GatewayMetrics
from gateway.publisher import Publisher
from gateway.settings import GatewaySettings
from igw.errors import PublishError
from igw.topics import GATEWAY_TOPICS, ensure_topics

__all__ = ["check_kafka"]

log = logging.getLogger(__name__)


async def check_kafka(
    publisher: Publisher, settings: GatewaySettings, metrics: GatewayMetrics
) -> tuple[bool, dict[str, str]]:
    """(ok, checks): the producer is connected and every gateway topic exists, re-creating missing ones."""
    checks: dict[str, str] = {}
    if not publisher.connected:
        checks["kafka"] = "not connected"
        metrics.producer_ready.set(0)
        return False, checks
    topics = [settings.kafka.topic(name) for name in GATEWAY_TOPICS]
    try:
        missing = await publisher.missing_topics(topics, timeout=min(2.0, settings.publish_timeout))
    except PublishError as exc:
        checks["kafka"] = f"metadata unavailable ({type(exc).__name__})"
        metrics.producer_ready.set(0)
        return False, checks
    if missing and settings.create_topics:
        # A broker that lost its topics (a new cluster, a wiped dev broker) gets them back here.
        try:
            await ensure_topics(settings.kafka, GATEWAY_TOPICS, timeout=2.0)
            missing = await publisher.missing_topics(topics, timeout=min(2.0, settings.publish_timeout))
        except Exception as exc:  # the state is reported; the next check tries again
            log.warning("re-creating missing topics failed: %s", type(exc).__name__)
    checks["kafka"] = "ok"
    checks["topics"] = "ok" if not missing else "missing: " + ", ".join(missing)
    metrics.producer_ready.set(1)
    return not missing, checks
