"""The agent consumer's settings: one frozen object, read from the environment once at start-up."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from consumers.agent_replies.rules import SAMPLE_RULES, load_rules
from consumers.common.settings import ConsumerSettings
from consumers.send_api.settings import REDIS_SCHEMES, SendApiSettings
from igw.config import Env, Secret
from igw.envelope import Topic
from igw.errors import SettingsError
from igw.keystore import keystore_url

__all__ = ["AGENT_KINDS", "AGENT_TOPICS", "SAMPLE_RULES", "AgentSettings"]

AGENT_KINDS = ("rules", "http", "openai")
DEFAULT_METRICS_PORT = 9101
DEFAULT_SESSION_TIMEOUT_MS = 10_000
# What the agent reads: the answerable types are published there.
AGENT_TOPICS = (Topic.MESSAGES, Topic.POSTBACKS, Topic.ERASURES)


def _owner_id() -> str:
    # Names this replica's ledger leases: readable in Redis, unique across restarts.
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class AgentSettings:
    consumer: ConsumerSettings
    send_api: SendApiSettings = field(default_factory=SendApiSettings)
    agent: str = "rules"
    rules_file: Path | None = None
    agent_url: str | None = None
    agent_token: Secret | None = None
    agent_timeout_seconds: float = 10.0
    openai_base_url: str = "https://api.openai.com/v1"
    openai_api_key: Secret | None = None
    openai_model: str = "gpt-4o-mini"
    openai_system_prompt_file: Path | None = None
    openai_max_tokens: int = 400
    openai_handover_marker: str = "[HANDOVER]"
    history_turns: int = 10
    history_ttl_seconds: float = 7 * 24 * 3600.0
    redis_url: str | None = None
    redis_prefix: str = "igw:agent:"
    # Redis calls that take longer count as Redis being unreachable (sending pauses).
    store_timeout_seconds: float = 2.0
    # Renewed every third of it while the reply is in hand: a dead replica's events are taken over
    # within this long.
    lease_seconds: float = 15.0
    # How long to wait for Meta's echo of a send whose answer was lost before sending it again.
    echo_wait_seconds: float = 30.0
    # Longer than Meta's redelivery (up to 36 h) and the 24 h window past which nothing is answered.
    ledger_ttl_seconds: float = 48 * 3600.0
    human_pause_seconds: float = 12 * 3600.0
    handover_pause_seconds: float = 12 * 3600.0
    account_pause_seconds: float = 15 * 60.0
    window_seconds: float = 24 * 3600.0
    app_id: str | None = None
    concurrency: int = 64
    max_in_flight: int = 2000
    max_retries: int = 5
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 60.0
    create_topics: bool = True
    # Per-person content keys (docs/privacy.md): sealed envelopes are opened with them.
    content_keys: str | None = None
    owner_id: str = field(default_factory=_owner_id)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        metrics_host: str | None = None,
        metrics_port: int | None = None,
    ) -> AgentSettings:
        """Read and check every setting, the rules file included; ``metrics_*``: the flags, which win."""
        env = Env(environ)
        d = _defaults()
        consumer = ConsumerSettings.from_env(
            env,
            group_variable="IGW_AGENT_GROUP",
            default_group="igw-agent",
            topic_names=AGENT_TOPICS,
            default_metrics_port=DEFAULT_METRICS_PORT,
            metrics_host=metrics_host,
            metrics_port=metrics_port,
            # A replica that died must leave the group quickly: its replacement gets the
            # partitions, and replies resume, within seconds rather than half a minute.
            default_session_timeout_ms=DEFAULT_SESSION_TIMEOUT_MS,
        )
        agent = env.choice("IGW_AGENT", d.agent, AGENT_KINDS)
        rules_file = env.file("IGW_RULES_FILE")
        if agent == "rules":
            if rules_file is None:
                raise SettingsError(
                    "IGW_RULES_FILE",
                    "is not set; IGW_AGENT=rules answers from a YAML or JSON rules file",
                    f"set IGW_RULES_FILE, e.g. to the sample {SAMPLE_RULES}",
                )
            load_rules(rules_file)  # a file that does not parse stops the start, naming file and line
        agent_url = env.url("IGW_AGENT_URL", None, show=False)
        if agent == "http" and agent_url is None:
            raise SettingsError(
                "IGW_AGENT_URL", "is not set; IGW_AGENT=http sends each event to it", "set IGW_AGENT_URL"
            )
        openai_key = env.secret("OPENAI_API_KEY")
        openai_base = (env.url("OPENAI_BASE_URL", d.openai_base_url) or d.openai_base_url).rstrip("/")
        prompt_file = env.file("IGW_OPENAI_SYSTEM_PROMPT_FILE")
        if agent == "openai" and openai_key is None:
            raise SettingsError(
                "OPENAI_API_KEY", "is not set; IGW_AGENT=openai needs it", "set OPENAI_API_KEY or OPENAI_API_KEY_FILE"
            )
        human_pause = env.float("IGW_HUMAN_PAUSE_SECONDS", d.human_pause_seconds, min_value=0)
        lease = env.float("IGW_LEDGER_LEASE_SECONDS", d.lease_seconds, min_value=1)
        agent_timeout = env.float("IGW_AGENT_TIMEOUT_SECONDS", d.agent_timeout_seconds, min_value=0.1)
        store_timeout = env.float("IGW_AGENT_STORE_TIMEOUT_SECONDS", d.store_timeout_seconds, min_value=0.05)
        if store_timeout * 2 >= lease:
            # A lease is renewed every third of it; two slow renewals in a row must not lose it.
            raise SettingsError(
                "IGW_AGENT_STORE_TIMEOUT_SECONDS",
                f"must stay below half of IGW_LEDGER_LEASE_SECONDS, {lease:g}; got {store_timeout:g}",
                "lower IGW_AGENT_STORE_TIMEOUT_SECONDS or raise IGW_LEDGER_LEASE_SECONDS",
            )
        send_api = SendApiSettings.from_env(env)
        if not send_api.accounts:
            # Without one, the agent would start and fail every send.
            given = env.optional_str("IGW_ACCOUNTS_FILE")
            raise SettingsError(
                "IGW_ACCESS_TOKEN" if given is None else "IGW_ACCOUNTS_FILE",
                "no account to send replies from: "
                + ("IGW_ACCESS_TOKEN and IGW_ACCOUNTS_FILE are unset" if given is None else f"{given} lists none"),
                "set IGW_ACCESS_TOKEN for one Instagram-Login account, or list accounts in IGW_ACCOUNTS_FILE;"
                " docs/send-api.md",
            )
        app_id = env.optional_str("IGW_APP_ID")
        if app_id is not None and not app_id.isdigit():
            raise SettingsError("IGW_APP_ID", f"expected the app's numeric id, got {app_id!r}")
        return cls(
            consumer=consumer,
            send_api=send_api,
            agent=agent,
            rules_file=rules_file,
            agent_url=agent_url,
            agent_token=env.secret("IGW_AGENT_TOKEN"),
            agent_timeout_seconds=agent_timeout,
            openai_base_url=openai_base,
            openai_api_key=openai_key,
            openai_model=env.str("IGW_OPENAI_MODEL", d.openai_model),
            openai_system_prompt_file=prompt_file,
            openai_max_tokens=env.int("IGW_OPENAI_MAX_TOKENS", d.openai_max_tokens, min_value=1),
            openai_handover_marker=env.str("IGW_OPENAI_HANDOVER_MARKER", d.openai_handover_marker),
            history_turns=env.int("IGW_AGENT_HISTORY_TURNS", d.history_turns, min_value=0),
            history_ttl_seconds=env.float("IGW_AGENT_HISTORY_TTL_SECONDS", d.history_ttl_seconds, min_value=1),
            redis_url=env.url("REDIS_URL", None, schemes=REDIS_SCHEMES, show=False),
            redis_prefix=env.str("IGW_AGENT_REDIS_PREFIX", d.redis_prefix),
            store_timeout_seconds=store_timeout,
            lease_seconds=lease,
            echo_wait_seconds=env.float("IGW_AGENT_ECHO_WAIT_SECONDS", d.echo_wait_seconds, min_value=0),
            ledger_ttl_seconds=env.float("IGW_LEDGER_TTL_SECONDS", d.ledger_ttl_seconds, min_value=60),
            human_pause_seconds=human_pause,
            handover_pause_seconds=env.float("IGW_HANDOVER_PAUSE_SECONDS", human_pause, min_value=0),
            account_pause_seconds=env.float("IGW_ACCOUNT_PAUSE_SECONDS", d.account_pause_seconds, min_value=1),
            window_seconds=env.float("IGW_REPLY_WINDOW_SECONDS", d.window_seconds, min_value=1),
            app_id=app_id,
            concurrency=env.int("IGW_AGENT_CONCURRENCY", d.concurrency, min_value=1),
            max_in_flight=env.int("IGW_AGENT_MAX_IN_FLIGHT", d.max_in_flight, min_value=1),
            max_retries=env.int("IGW_AGENT_MAX_RETRIES", d.max_retries, min_value=0),
            retry_base_seconds=env.float("IGW_AGENT_RETRY_BASE_SECONDS", d.retry_base_seconds, min_value=0),
            retry_max_seconds=env.float("IGW_AGENT_RETRY_MAX_SECONDS", d.retry_max_seconds, min_value=0),
            create_topics=env.bool("IGW_CREATE_TOPICS", d.create_topics),
            content_keys=keystore_url(env, "IGW_CONTENT_KEYS"),
        )

    def topic(self, name: str) -> str:
        return self.consumer.kafka.topic(name)

    def describe(self) -> dict[str, object]:
        """What the consumer logs once at start-up: the settings that matter, secrets masked."""
        return {
            **self.consumer.describe(),
            "agent": self.agent,
            "rules_file": str(self.rules_file) if self.rules_file else None,
            "agent_url": self.agent_url,
            "agent_token": "***" if self.agent_token else None,
            "openai_base_url": self.openai_base_url if self.agent == "openai" else None,
            "openai_api_key": "***" if self.openai_api_key else None,
            "store": "redis" if self.redis_url else "in-process",
            "accounts": len(self.send_api.accounts),
            "concurrency": self.concurrency,
            "lease_seconds": self.lease_seconds,
            "echo_wait_seconds": self.echo_wait_seconds,
            "window_seconds": self.window_seconds,
            "human_pause_seconds": self.human_pause_seconds,
        }


def _defaults() -> AgentSettings:
    # Class attributes of a slotted dataclass are slot descriptors, not defaults: use an instance.
    return AgentSettings(consumer=ConsumerSettings(group_id="igw-agent", topics=()), owner_id="defaults")
