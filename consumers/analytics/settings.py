"""The analytics consumer's settings: one frozen object, read from the environment at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gateway.config import Env, KafkaSettings

__all__ = ["TOPICS", "AnalyticsSettings"]

# Every igw topic, by its name after the prefix.
TOPICS = ("messages", "postbacks", "events", "deadletter", "replies")


@dataclass(frozen=True, slots=True)
class AnalyticsSettings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    group_id: str = "igw-analytics"
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
    auto_offset_reset: str = "earliest"

    def topics(self) -> dict[str, str]:
        """Full topic name -> the short name (``messages``, ...)."""
        return {self.kafka.topic(name): name for name in TOPICS}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AnalyticsSettings:
        env = Env(environ)
        pinned = env.str("IGW_ANALYTICS_PAYLOADS", "")
        app_ids = env.str("IGW_ANALYTICS_AGENT_APP_IDS", "")
        rollup = env.optional_str("IGW_ANALYTICS_ROLLUP_PATH")
        return cls(
            kafka=KafkaSettings.from_env(env),
            group_id=env.str("IGW_ANALYTICS_GROUP", cls.group_id),
            max_accounts=env.int("IGW_ANALYTICS_MAX_ACCOUNTS", cls.max_accounts, min_value=1),
            top_payloads=env.int("IGW_ANALYTICS_TOP_PAYLOADS", cls.top_payloads, min_value=0),
            payload_min_count=env.int("IGW_ANALYTICS_PAYLOAD_MIN_COUNT", cls.payload_min_count, min_value=1),
            pinned_payloads=tuple(p.strip() for p in pinned.split(",") if p.strip()),
            dedup_retention_hours=env.int("IGW_ANALYTICS_DEDUP_HOURS", cls.dedup_retention_hours, min_value=1),
            dedup_max_ids=env.int("IGW_ANALYTICS_DEDUP_MAX_IDS", cls.dedup_max_ids, min_value=1000),
            session_gap_hours=env.float("IGW_ANALYTICS_SESSION_GAP_HOURS", cls.session_gap_hours, min_value=0.01),
            max_conversations=env.int("IGW_ANALYTICS_MAX_CONVERSATIONS", cls.max_conversations, min_value=100),
            agent_app_ids=frozenset(a.strip() for a in app_ids.split(",") if a.strip()),
            rollup_path=Path(rollup) if rollup else None,
            rollup_interval=env.float("IGW_ANALYTICS_ROLLUP_INTERVAL_SECONDS", cls.rollup_interval, min_value=1),
            auto_offset_reset=env.choice("IGW_ANALYTICS_OFFSET_RESET", cls.auto_offset_reset, ("earliest", "latest")),
        )

    def describe(self) -> dict[str, object]:
        return {
            "kafka_bootstrap_servers": self.kafka.bootstrap_servers,
            "topic_prefix": self.kafka.topic_prefix,
            "group_id": self.group_id,
            "max_accounts": self.max_accounts,
            "top_payloads": self.top_payloads,
            "dedup_retention_hours": self.dedup_retention_hours,
            "session_gap_hours": self.session_gap_hours,
            "rollup_path": str(self.rollup_path) if self.rollup_path else None,
        }
