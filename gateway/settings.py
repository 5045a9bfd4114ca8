"""The gateway's settings: one frozen object, read from the environment once at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from igw.config import Env, KafkaSettings, Secret
from igw.errors import SettingsError

DEFAULT_WEBHOOK_PATH = "/api/v1/instagram/webhook"
# Relative to the working directory: right for `igw dev`; containers set a volume (docs/durability.md).
DEFAULT_SPOOL_DIR = ".igw/spool"


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    verify_token: Secret
    app_secrets: tuple[Secret, ...]
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    webhook_path: str = DEFAULT_WEBHOOK_PATH
    # Meta sends at most 1,000 updates per POST; 4 KiB each is several times a DM with attachments
    # (docs/configuration.md, IGW_MAX_BODY_BYTES).
    max_body_bytes: int = 4 * 1024 * 1024
    # Meta's current page asks for an answer within 5 s; stay well under it.
    publish_timeout: float = 3.0
    create_topics: bool = True
    ready_cache_seconds: float = 1.0
    # Kept under the usual 30 s orchestrator kill grace period.
    shutdown_timeout: float = 20.0
    producer_backend: str = "aiokafka"
    # A body still arriving after this long is refused with 408 (slow clients hold connections).
    body_read_timeout: float = 10.0
    # The durable spool (docs/durability.md); None turns it off and broker trouble answers 503.
    spool_dir: Path | None = None
    # With a spool, a direct publish waits this long before the body is spooled instead.
    spool_after: float = 1.0
    spool_max_bytes: int = 1024 * 1024 * 1024
    # Past this age the spool is not draining: answer 503 and let Meta's retries hold the rest.
    spool_max_age_seconds: float = 24 * 3600.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GatewaySettings:
        env = Env(environ)
        d: dict[str, Any] = {f.name: f.default for f in fields(cls)}
        verify_token = env.required_secret(
            "INSTAGRAM_WEBHOOK_VERIFY_TOKEN", "the token you typed in Meta's App Dashboard"
        )
        secrets_raw = env.required_secret(
            "INSTAGRAM_APP_SECRET", "the app secret that signs Meta's webhooks; comma-separate several"
        )
        app_secrets = tuple(Secret(part.strip()) for part in secrets_raw.value.split(",") if part.strip())
        if not app_secrets:
            raise SettingsError("INSTAGRAM_APP_SECRET", "holds no secret")
        path = env.str("IGW_WEBHOOK_PATH", DEFAULT_WEBHOOK_PATH)
        if not path.startswith("/") or any(ch in path for ch in "{}? "):
            raise SettingsError("IGW_WEBHOOK_PATH", f"must be a plain absolute path, got {path!r}")
        if path in {"/healthz", "/readyz", "/metrics"}:
            raise SettingsError("IGW_WEBHOOK_PATH", f"{path} is taken by the gateway itself")
        publish_timeout = env.float("IGW_PUBLISH_TIMEOUT_SECONDS", d["publish_timeout"], min_value=0.05)
        if publish_timeout >= 5.0:
            raise SettingsError("IGW_PUBLISH_TIMEOUT_SECONDS", "must stay under Meta's 5 s answer deadline (try 3)")
        spool_after = env.float("IGW_SPOOL_AFTER_SECONDS", d["spool_after"], min_value=0.01)
        if spool_after >= 4.0:
            raise SettingsError("IGW_SPOOL_AFTER_SECONDS", "must leave time to fsync within Meta's 5 s (try 1)")
        spool_dir = Path(env.str("IGW_SPOOL_DIR", DEFAULT_SPOOL_DIR)) if env.bool("IGW_SPOOL_ENABLED", True) else None
        max_body = env.int("IGW_MAX_BODY_BYTES", d["max_body_bytes"], min_value=1024)
        return cls(
            verify_token=verify_token,
            app_secrets=app_secrets,
            # A dead letter carries a whole body plus headers.
            kafka=replace(KafkaSettings.from_env(env), max_message_bytes=max_body + 65_536),
            webhook_path=path,
            max_body_bytes=max_body,
            publish_timeout=publish_timeout,
            create_topics=env.bool("IGW_CREATE_TOPICS", d["create_topics"]),
            ready_cache_seconds=env.float("IGW_READY_CACHE_SECONDS", d["ready_cache_seconds"], min_value=0),
            shutdown_timeout=env.float("IGW_SHUTDOWN_TIMEOUT_SECONDS", d["shutdown_timeout"], min_value=0),
            producer_backend=env.choice("IGW_PRODUCER_BACKEND", "aiokafka", ("aiokafka", "confluent")),
            body_read_timeout=env.float("IGW_BODY_READ_TIMEOUT_SECONDS", d["body_read_timeout"], min_value=0.1),
            spool_dir=spool_dir,
            spool_after=spool_after,
            spool_max_bytes=env.int("IGW_SPOOL_MAX_BYTES", d["spool_max_bytes"], min_value=1024 * 1024),
            spool_max_age_seconds=env.float("IGW_SPOOL_MAX_AGE_SECONDS", d["spool_max_age_seconds"], min_value=1),
        )

    def describe(self) -> dict[str, object]:
        """What the gateway logs once at start-up: every setting, secrets masked."""
        return {
            "webhook_path": self.webhook_path,
            "verify_token": "***",
            "app_secrets": f"{len(self.app_secrets)} configured",
            "kafka_bootstrap_servers": self.kafka.bootstrap_servers,
            "topic_prefix": self.kafka.topic_prefix,
            "enable_idempotence": self.kafka.enable_idempotence,
            "acks": self.kafka.acks,
            "max_body_bytes": self.max_body_bytes,
            "publish_timeout": self.publish_timeout,
            "producer_backend": self.producer_backend,
            "body_read_timeout": self.body_read_timeout,
            "spool_dir": str(self.spool_dir) if self.spool_dir is not None else "off",
            "spool_after": self.spool_after,
            "spool_max_bytes": self.spool_max_bytes,
            "spool_max_age_seconds": self.spool_max_age_seconds,
        }
