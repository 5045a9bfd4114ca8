"""What the gateway keeps between requests: the verifier, topic names, broker health and its metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from gateway.signature import SignatureVerifier
from gateway.spool import Spool
from igw.normalize import Topic
from igw.sealing import Sealer


@dataclass(slots=True)
class Readiness:
    ready: bool
    checks: dict[str, str]
    checked_at: float


@dataclass(slots=True)
class GatewayState:
    verifier: SignatureVerifier
    topics: dict[Topic, str]
    metrics: GatewayMetrics
    # Set after a failed publish, cleared by the next success: while set, requests get the short deadline.
    degraded: bool = False
    probe_in_flight: bool = False
    readiness: Readiness | None = field(default=None)
    # Opened at start-up when the spool is on. While ``spooling`` is set, every signed body goes
    # to the spool (so none overtakes a spooled one); the drain clears it once it has caught up.
    spool: Spool | None = None
    spooling: bool = False
    # The reason of the last refusal, so it is logged once per change rather than per request.
    spool_refusal: str | None = None
    # Set when IGW_CONTENT_KEYS is: each person's content is sealed before it is published.
    sealer: Sealer | None = None
    # Deletion requests' status documents when no key store is configured (this process only).
    deletion_requests: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: GatewaySettings, metrics: GatewayMetrics) -> GatewayState:
        return cls(
            verifier=SignatureVerifier(s.value for s in settings.app_secrets),
            topics={t: settings.kafka.topic(t.value) for t in Topic},
            metrics=metrics,
        )
