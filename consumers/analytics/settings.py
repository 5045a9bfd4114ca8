"""The analytics consumer's settings: one frozen object, read from the environment at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from consumers.common.settings import ConsumerSettings
from igw.config import Env, KafkaSettings
from igw.envelope import Topic
from igw.errors import SettingsError
from igw.keystore import keystore_url

__all__ = ["TOPICS", "AnalyticsSettings"]

# Analytics reads every igw topic.
TOPICS = tuple(Topic)


DEFAULT_GROUP = "igw-analytics"
DEFAULT_METRICS_PORT = 9102


def _default_consumer() -> ConsumerSettings:
    kafka = KafkaSettings()
    return ConsumerSettings(
        group_id=DEFAULT_GROUP,
        topics=tuple(kafka.topic(name) for name in TOPICS),
        kafka=kafka,
        metrics_port=DEFAULT_METRICS_PORT,
    )


@dataclass(frozen=True, slots=True)
class AnalyticsSettings:
    consumer: ConsumerSettings = field(default_factory=_default_consumer)
    # Accounts are a small known set; past this many, new ones are labelled "other".
    max_accounts: int = 50
    top_payloads: int = 20
    payload_min_count: int = 3
    pinned_payloads: tuple[str, ...] = ()
    # Meta retries for up to 36 hours: remember ids a little longer than that.
    dedup_retention_hours: int = 48
    dedup_max_ids: int = 1_000_000
    # A conversation "starts" again when the user writes after this long; 24 h is Meta's window.
    session_gap_hours: float = 24.0
    max_conversations: int = 200_000
    # Echoes from these apps are the agent's; other echoes are people in an inbox.
    agent_app_ids: frozenset[str] = frozenset()
    rollup_path: Path | None = None
    rollup_interval: float = 60.0
    create_topics: bool = True
    # Per-person content keys (docs/privacy.md); None: content arrives in clear.
    content_keys: str | None = None

    @property
    def kafka(self) -> KafkaSettings:
        return self.consumer.kafka

    @property
    def group_id(self) -> str:
        return self.consumer.group_id

    def topics(self) -> dict[str, str]:
        """Full topic name -> the short name (``messages``, ...)."""
        return {self.kafka.topic(name): name for name in TOPICS}

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        metrics_host: str | None = None,
        metrics_port: int | None = None,
    ) -> AnalyticsSettings:
        """``metrics_host``/``metrics_port``: ``--metrics-host``/``--metrics-port``, which win over the variables."""
        env = Env(environ)
        pinned = env.str("IGW_ANALYTICS_PAYLOADS", "")
        app_ids = frozenset(a.strip() for a in env.str("IGW_ANALYTICS_AGENT_APP_IDS", "").split(",") if a.strip())
        if not all(app_id.isdigit() for app_id in app_ids):
            raise SettingsError("IGW_ANALYTICS_AGENT_APP_IDS", f"expected numeric app ids, got {sorted(app_ids)}")
        rollup = env.optional_str("IGW_ANALYTICS_ROLLUP_PATH")
        # Defaults come from a plain instance: mypy rejects class access to slotted fields.
        d = _DEFAULTS
        consumer = ConsumerSettings.from_env(
            env,
            group_variable="IGW_ANALYTICS_GROUP",
            default_group=DEFAULT_GROUP,
            topic_names=TOPICS,
            default_metrics_port=DEFAULT_METRICS_PORT,
            metrics_host=metrics_host,
            metrics_port=metrics_port,
        )
        return cls(
            consumer=consumer,
            max_accounts=env.int("IGW_ANALYTICS_MAX_ACCOUNTS", d.max_accounts, min_value=1),
            top_payloads=env.int("IGW_ANALYTICS_TOP_PAYLOADS", d.top_payloads, min_value=0),
            payload_min_count=env.int("IGW_ANALYTICS_PAYLOAD_MIN_COUNT", d.payload_min_count, min_value=1),
            pinned_payloads=tuple(p.strip() for p in pinned.split(",") if p.strip()),
            dedup_retention_hours=env.int("IGW_ANALYTICS_DEDUP_HOURS", d.dedup_retention_hours, min_value=1),
            dedup_max_ids=env.int("IGW_ANALYTICS_DEDUP_MAX_IDS", d.dedup_max_ids, min_value=1000),
            session_gap_hours=env.float("IGW_ANALYTICS_SESSION_GAP_HOURS", d.session_gap_hours, min_value=0.01),
            max_conversations=env.int("IGW_ANALYTICS_MAX_CONVERSATIONS", d.max_conversations, min_value=100),
            agent_app_ids=app_ids,
            rollup_path=Path(rollup) if rollup else None,
            rollup_interval=env.float("IGW_ANALYTICS_ROLLUP_INTERVAL_SECONDS", d.rollup_interval, min_value=1),
            create_topics=env.bool("IGW_CREATE_TOPICS", d.create_topics),
            content_keys=keystore_url(env, "IGW_CONTENT_KEYS"),
        )

    def check_rollup_path(self) -> None:
        """Create the rollup file's directory now, so an unusable path stops the start before anything else."""
        if self.rollup_path is None:
            return
        remedy = "point IGW_ANALYTICS_ROLLUP_PATH at a file, new or an earlier rollup, in a writable directory"
        if self.rollup_path.is_dir():
            raise SettingsError("IGW_ANALYTICS_ROLLUP_PATH", f"{self.rollup_path} is a directory", remedy)
        try:
            self.rollup_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SettingsError(
                "IGW_ANALYTICS_ROLLUP_PATH", f"cannot create {self.rollup_path.parent}: {exc.strerror or exc}", remedy
            ) from None

    def describe(self) -> dict[str, object]:
        return {
            **self.consumer.describe(),
            "max_accounts": self.max_accounts,
            "top_payloads": self.top_payloads,
            "dedup_retention_hours": self.dedup_retention_hours,
            "session_gap_hours": self.session_gap_hours,
            "rollup_path": str(self.rollup_path) if self.rollup_path else None,
        }


_DEFAULTS = AnalyticsSettings()
