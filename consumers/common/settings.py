"""Settings every igw Kafka consumer process shares: its group, its topics, its metrics port.

Each consumer (agent replies, analytics, ...) builds one :class:`ConsumerSettings` from the
environment with its own variable names for the group, so two consumers on one host can be told
apart, and keeps it inside its own frozen settings object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from igw.config import Env, KafkaSettings
from igw.errors import SettingsError

__all__ = ["ConsumerSettings"]

OffsetReset = Literal["earliest", "latest"]

# Kafka's rule for a group.instance.id (JoinGroupRequest.validateGroupInstanceId): a topic name's.
_INSTANCE_ID = re.compile(r"[a-zA-Z0-9._-]{1,249}")


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    """How one consumer group reads Kafka. ``topics`` are full names (prefix included)."""

    group_id: str
    topics: tuple[str, ...]
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    metrics_host: str = "0.0.0.0"  # noqa: S104 - the metrics port is scraped from outside the container
    metrics_port: int = 9100
    max_records_per_poll: int = 500
    poll_timeout_ms: int = 500
    session_timeout_ms: int = 30_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    # A new group starts from the oldest retained event; each consumer decides what is too old.
    auto_offset_reset: OffsetReset = "earliest"
    commit_interval_seconds: float = 1.0
    lag_interval_seconds: float = 15.0
    # Kept under the usual 30 s orchestrator kill grace period.
    shutdown_timeout_seconds: float = 20.0
    # Static group membership (KIP-345): a replica restarted under the same id takes its
    # partitions back at once, without the group waiting out the dead one's session.
    instance_id: str | None = None

    @classmethod
    def from_env(
        cls,
        env: Env,
        *,
        group_variable: str,
        default_group: str,
        topic_names: tuple[str, ...],
        default_metrics_port: int = 9100,
        kafka: KafkaSettings | None = None,
        metrics_host: str | None = None,
        metrics_port: int | None = None,
        default_session_timeout_ms: int | None = None,
    ) -> ConsumerSettings:
        """Read the shared consumer variables; ``topic_names`` are igw's short names (``messages``).

        ``metrics_host``/``metrics_port`` (``--metrics-host``/``--metrics-port``) win over their
        variables, which are then not read.
        """
        kafka_settings = kafka if kafka is not None else KafkaSettings.from_env(env)
        # Defaults come from a plain instance: mypy rejects class access to slotted fields.
        d = _DEFAULTS
        heartbeat = env.int("IGW_CONSUMER_HEARTBEAT_MS", d.heartbeat_interval_ms, min_value=100)
        session = env.int(
            "IGW_CONSUMER_SESSION_TIMEOUT_MS", default_session_timeout_ms or d.session_timeout_ms, min_value=1000
        )
        if heartbeat >= session:
            raise SettingsError(
                "IGW_CONSUMER_HEARTBEAT_MS",
                f"must be below IGW_CONSUMER_SESSION_TIMEOUT_MS, {session} ms; got {heartbeat} ms",
                "lower IGW_CONSUMER_HEARTBEAT_MS to about a third of the session timeout",
            )
        return cls(
            group_id=env.str(group_variable, default_group),
            topics=tuple(kafka_settings.topic(name) for name in topic_names),
            kafka=kafka_settings,
            metrics_host=metrics_host if metrics_host is not None else env.host("IGW_METRICS_HOST", d.metrics_host),
            metrics_port=(
                metrics_port
                if metrics_port is not None
                else env.port("IGW_METRICS_PORT", default_metrics_port, allow_zero=True)
            ),
            max_records_per_poll=env.int("IGW_CONSUMER_MAX_RECORDS", d.max_records_per_poll, min_value=1),
            poll_timeout_ms=env.int("IGW_CONSUMER_POLL_TIMEOUT_MS", d.poll_timeout_ms, min_value=10),
            session_timeout_ms=session,
            heartbeat_interval_ms=heartbeat,
            max_poll_interval_ms=env.int("IGW_CONSUMER_MAX_POLL_INTERVAL_MS", d.max_poll_interval_ms, min_value=1000),
            auto_offset_reset=(
                "earliest"
                if env.choice("IGW_CONSUMER_OFFSET_RESET", d.auto_offset_reset, ("earliest", "latest")) == "earliest"
                else "latest"
            ),
            commit_interval_seconds=env.float(
                "IGW_CONSUMER_COMMIT_INTERVAL_SECONDS", d.commit_interval_seconds, min_value=0.01
            ),
            lag_interval_seconds=env.float("IGW_CONSUMER_LAG_INTERVAL_SECONDS", d.lag_interval_seconds, min_value=0.1),
            shutdown_timeout_seconds=env.float("IGW_SHUTDOWN_TIMEOUT_SECONDS", d.shutdown_timeout_seconds, min_value=0),
            instance_id=_instance_id(env),
        )

    def consumer_kwargs(self) -> dict[str, object]:
        """Keywords for ``AIOKafkaConsumer``: manual commits, the group's timeouts, the reset rule."""
        return {
            **self.kafka.client_kwargs(),
            "group_id": self.group_id,
            "client_id": f"{self.kafka.client_id}-{self.group_id}",
            "enable_auto_commit": False,
            "auto_offset_reset": self.auto_offset_reset,
            "session_timeout_ms": self.session_timeout_ms,
            "heartbeat_interval_ms": self.heartbeat_interval_ms,
            "max_poll_interval_ms": self.max_poll_interval_ms,
            "max_poll_records": self.max_records_per_poll,
            **({"group_instance_id": self.instance_id} if self.instance_id else {}),
        }

    def describe(self) -> dict[str, object]:
        """What a consumer logs once at start-up (no secrets here: SASL passwords stay in ``kafka``)."""
        return {
            "group_id": self.group_id,
            "topics": list(self.topics),
            "kafka_bootstrap_servers": self.kafka.bootstrap_servers,
            "metrics": f"{self.metrics_host}:{self.metrics_port}",
            "max_records_per_poll": self.max_records_per_poll,
            "auto_offset_reset": self.auto_offset_reset,
            "instance_id": self.instance_id,
        }


def _instance_id(env: Env) -> str | None:
    value = env.optional_str("IGW_CONSUMER_INSTANCE_ID")
    if value is not None and (not _INSTANCE_ID.fullmatch(value) or value in {".", ".."}):
        # The broker would refuse the join only later, with an error that names no variable.
        raise SettingsError(
            "IGW_CONSUMER_INSTANCE_ID",
            f"expected up to 249 letters, digits, '.', '_' or '-', got {value!r}",
            "set it to a name stable for this replica, such as its pod name",
        )
    return value


_DEFAULTS = ConsumerSettings(group_id="", topics=())
