"""What the gateway keeps between requests: the verifier, topic names, the delivery state, readiness."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.bodies import BigBodies
from gateway.delivery import Delivery
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from gateway.signature import SignatureVerifier
from igw.normalize import Topic
from igw.sealing import Sealer


@dataclass(slots=True)
class KafkaChecked:
    """The last Kafka check ``/readyz`` ran, reused for ``ready_cache_seconds``."""

    ok: bool
    checks: dict[str, str]
    checked_at: float


@dataclass(slots=True)
class GatewayState:
    verifier: SignatureVerifier
    topics: dict[Topic, str]
    # Where bodies go (direct, spooled, refused): the one machine the handler and /readyz read.
    delivery: Delivery
    metrics: GatewayMetrics
    big: BigBodies = field(default_factory=BigBodies)
    kafka_checked: KafkaChecked | None = None
    # Set when IGW_CONTENT_KEYS is: each person's content is sealed before it is published.
    sealer: Sealer | None = None
    # Deletion requests' status documents when no key store is configured (this process only).
    deletion_requests: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: GatewaySettings, metrics: GatewayMetrics) -> GatewayState:
        return cls(
            verifier=SignatureVerifier(s.value for s in settings.app_secrets),
            topics={t: settings.kafka.topic(t.value) for t in Topic},
            delivery=Delivery(spool_configured=settings.spool_dir is not None, metrics=metrics),
            metrics=metrics,
        )
