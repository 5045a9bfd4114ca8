"""The gateway's settings: one frozen object, read from the environment once at start-up."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from igw.config import Env, KafkaSettings, Secret
from igw.errors import SettingsError
from igw.keystore import keystore_url

DEFAULT_WEBHOOK_PATH = "/api/v1/instagram/webhook"
# Relative to the working directory: right for `igw dev`; containers set a volume (docs/durability.md).
DEFAULT_SPOOL_DIR = ".igw/spool"
DEFAULT_PRIVACY_PATH = "/api/v1/meta"


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    verify_token: Secret
    app_secrets: tuple[Secret, ...]
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    webhook_path: str = DEFAULT_WEBHOOK_PATH
    max_body_bytes: int = 8 * 1024 * 1024
    # Meta's current page asks for an answer within 5 s; stay well under it.
    publish_timeout: float = 3.0
    # While the broker is failing, later requests get this shorter deadline so they fail fast.
    degraded_publish_timeout: float = 0.5
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
    # Per-person content keys (docs/privacy.md): memory:, sqlite:PATH or redis://...; None = content in clear.
    content_keys: str | None = None
    # Meta's Data Deletion Request / Deauthorize callbacks (docs/privacy.md).
    privacy_path: str = DEFAULT_PRIVACY_PATH
    public_url: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GatewaySettings:
        env = Env(environ)
        d: dict[str, Any] = {f.name: f.default for f in fields(cls)}
        verify_token = env.required_secret(
            "INSTAGRAM_WEBHOOK_VERIFY_TOKEN", "the verify token you typed in Meta's App Dashboard"
        )
        app_secrets = env.secrets("INSTAGRAM_APP_SECRET", required_as="the app secret that signs Meta's webhooks")
        backend = env.choice("IGW_PRODUCER_BACKEND", "aiokafka", ("aiokafka", "confluent"))
        if backend == "confluent" and importlib.util.find_spec("confluent_kafka") is None:
            raise SettingsError(
                "IGW_PRODUCER_BACKEND",
                "confluent needs the confluent-kafka package, which is not installed",
                "pip install 'igw[confluent]', or set IGW_PRODUCER_BACKEND=aiokafka",
            )
        path = env.str("IGW_WEBHOOK_PATH", DEFAULT_WEBHOOK_PATH)
        if not path.startswith("/") or any(ch in path for ch in "{}? "):
            raise SettingsError("IGW_WEBHOOK_PATH", f"must be a plain absolute path, got {path!r}")
        if path in {"/healthz", "/readyz", "/metrics"}:
            raise SettingsError("IGW_WEBHOOK_PATH", f"{path} is taken by the gateway itself")
        publish_timeout = env.float("IGW_PUBLISH_TIMEOUT_SECONDS", d["publish_timeout"], min_value=0.05)
        if publish_timeout >= 5.0:
            raise SettingsError(
                "IGW_PUBLISH_TIMEOUT_SECONDS",
                f"must stay under Meta's 5 s answer deadline, got {publish_timeout:g}",
                "set it to 3, the default, or unset it",
            )
        spool_after = env.float("IGW_SPOOL_AFTER_SECONDS", d["spool_after"], min_value=0.01)
        if spool_after >= 4.0:
            raise SettingsError(
                "IGW_SPOOL_AFTER_SECONDS",
                f"must leave time to fsync within Meta's 5 s, got {spool_after:g}",
                "set it to 1, the default, or unset it",
            )
        spool_dir = Path(env.str("IGW_SPOOL_DIR", DEFAULT_SPOOL_DIR)) if env.bool("IGW_SPOOL_ENABLED", True) else None
        max_body = env.int("IGW_MAX_BODY_BYTES", d["max_body_bytes"], min_value=1024)
        privacy_path = env.str("IGW_PRIVACY_PATH", DEFAULT_PRIVACY_PATH).rstrip("/")
        if not privacy_path.startswith("/") or any(ch in privacy_path for ch in "{}? "):
            raise SettingsError("IGW_PRIVACY_PATH", f"must be a plain absolute path, got {privacy_path!r}")
        public_url = env.optional_str("IGW_PUBLIC_URL")
        if public_url is not None and not public_url.startswith(("https://", "http://")):
            raise SettingsError(
                "IGW_PUBLIC_URL", f"must be the gateway's public base URL (https://...), got {public_url!r}"
            )
        public_url = public_url.rstrip("/") if public_url else None
        return cls(
            verify_token=verify_token,
            app_secrets=app_secrets,
            # A dead letter carries a whole body plus headers.
            kafka=replace(
                KafkaSettings.from_env(env, aiokafka_codecs=backend == "aiokafka"), max_message_bytes=max_body + 65_536
            ),
            webhook_path=path,
            max_body_bytes=max_body,
            publish_timeout=publish_timeout,
            degraded_publish_timeout=min(
                publish_timeout,
                env.float("IGW_DEGRADED_PUBLISH_TIMEOUT_SECONDS", d["degraded_publish_timeout"], min_value=0.01),
            ),
            create_topics=env.bool("IGW_CREATE_TOPICS", d["create_topics"]),
            ready_cache_seconds=env.float("IGW_READY_CACHE_SECONDS", d["ready_cache_seconds"], min_value=0),
            shutdown_timeout=env.float("IGW_SHUTDOWN_TIMEOUT_SECONDS", d["shutdown_timeout"], min_value=0),
            producer_backend=backend,
            body_read_timeout=env.float("IGW_BODY_READ_TIMEOUT_SECONDS", d["body_read_timeout"], min_value=0.1),
            spool_dir=spool_dir,
            spool_after=spool_after,
            spool_max_bytes=env.int("IGW_SPOOL_MAX_BYTES", d["spool_max_bytes"], min_value=1024 * 1024),
            spool_max_age_seconds=env.float("IGW_SPOOL_MAX_AGE_SECONDS", d["spool_max_age_seconds"], min_value=1),
            content_keys=keystore_url(env, "IGW_CONTENT_KEYS"),
            privacy_path=privacy_path,
            public_url=public_url,
        )

    def check_spool_dir(self) -> None:
        """Create the spool directory now, so an unusable one stops the start before anything else."""
        if self.spool_dir is None:
            return
        try:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SettingsError(
                "IGW_SPOOL_DIR",
                f"cannot create {self.spool_dir}: {exc.strerror or exc}",
                "point IGW_SPOOL_DIR at a writable directory, on a volume in a container",
            ) from None

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
            "content_keys": self.content_keys.split("://")[0].split(":")[0] if self.content_keys else "off",
            "privacy_path": self.privacy_path,
        }


@dataclass(frozen=True, slots=True)
class ServeSettings:
    """How ``igw gateway`` serves the app. A command-line flag wins over its variable, which is then not read."""

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    access_log: bool = False
    keepalive_timeout: float = 75.0
    # With --workers above 1: where the workers keep their metric files (None: a new temporary directory).
    metrics_dir: Path | None = None

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        workers: int | None = None,
        access_log: bool | None = None,
        keepalive_timeout: float | None = None,
    ) -> ServeSettings:
        env = Env(environ)
        d = _SERVE_DEFAULTS
        return cls(
            host=host if host is not None else env.host("IGW_HOST", d.host),
            port=port if port is not None else env.port("IGW_PORT", d.port),
            workers=workers if workers is not None else env.int("IGW_WORKERS", d.workers, min_value=1),
            access_log=access_log if access_log is not None else env.bool("IGW_ACCESS_LOG", d.access_log),
            keepalive_timeout=(
                keepalive_timeout
                if keepalive_timeout is not None
                else env.float("IGW_KEEPALIVE_TIMEOUT_SECONDS", d.keepalive_timeout, min_value=0)
            ),
            metrics_dir=env.directory("PROMETHEUS_MULTIPROC_DIR"),
        )


_SERVE_DEFAULTS = ServeSettings()
