"""The reconcile process's settings: one frozen object, read from the environment once at start-up.

Accounts, tokens, Graph base URLs and the Graph version are the agent's (``SendApiSettings``):
reconcile reads conversations with the same tokens the agent answers with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from consumers.send_api.settings import SendApiSettings
from igw.config import Env, KafkaSettings, Secret
from igw.errors import SettingsError
from igw.keystore import keystore_url

__all__ = ["DEFAULT_METRICS_PORT", "MAX_MESSAGES_PER_CONVERSATION", "ReconcileSettings"]

DEFAULT_METRICS_PORT = 9103
# Meta gives details of the 20 most recent messages of a conversation only.
MAX_MESSAGES_PER_CONVERSATION = 20


@dataclass(frozen=True, slots=True)
class ReconcileSettings:
    send_api: SendApiSettings = field(default_factory=SendApiSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    interval_seconds: float = 300.0
    # Conversations updated, and messages written, this long ago at most are compared with Kafka.
    lookback_seconds: float = 24 * 3600.0
    # A younger message may still be on its way as a webhook: it waits for the next pass.
    min_age_seconds: float = 60.0
    # Meta allows 2 Conversations API calls per second per account; a little under it, calls evenly spaced.
    rate_per_second: float = 1.9
    page_size: int = 25
    messages_per_conversation: int = MAX_MESSAGES_PER_CONVERSATION
    # True: messages come with the conversation list (Graph field expansion), one call per page;
    # False: one call per conversation, as Meta's Conversations API page shows it.
    expand_messages: bool = True
    timeout_seconds: float = 10.0
    max_attempts: int = 5
    backoff_base_seconds: float = 1.0
    backoff_max_seconds: float = 60.0
    # One pass stops calling an account once its retries would run past this.
    pass_timeout_seconds: float = 1800.0
    account_pause_seconds: float = 15 * 60.0
    hydrate: bool = True
    redis_url: str | None = None
    rate_limit_key_prefix: str = "igw:reconcile:rl:"
    app_id: str | None = None
    app_token: Secret | None = None
    metrics_host: str = "0.0.0.0"  # noqa: S104 - the metrics port is scraped from outside the container
    metrics_port: int = DEFAULT_METRICS_PORT
    create_topics: bool = True
    # Per-person content keys (docs/privacy.md): recovered envelopes are sealed like the gateway's.
    content_keys: str | None = None
    shutdown_timeout_seconds: float = 20.0

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        metrics_host: str | None = None,
        metrics_port: int | None = None,
    ) -> ReconcileSettings:
        """Read and check every setting; ``metrics_*``: the flags, which win over their variables."""
        env = Env(environ)
        d = cls()
        send_api = SendApiSettings.from_env(env)
        if not send_api.accounts:
            # Without one there is nothing to read: a start that can only fail.
            given = env.optional_str("IGW_ACCOUNTS_FILE")
            raise SettingsError(
                "IGW_ACCESS_TOKEN" if given is None else "IGW_ACCOUNTS_FILE",
                "no account to read conversations of: "
                + ("IGW_ACCESS_TOKEN and IGW_ACCOUNTS_FILE are unset" if given is None else f"{given} lists none"),
                "set IGW_ACCESS_TOKEN for one Instagram-Login account, or list accounts in IGW_ACCOUNTS_FILE;"
                " docs/reconcile.md",
            )
        messages = env.int("IGW_RECONCILE_MESSAGES_PER_CONVERSATION", d.messages_per_conversation, min_value=1)
        if messages > MAX_MESSAGES_PER_CONVERSATION:
            raise SettingsError(
                "IGW_RECONCILE_MESSAGES_PER_CONVERSATION",
                f"Meta details only the {MAX_MESSAGES_PER_CONVERSATION} most recent messages; got {messages}",
            )
        interval = env.float("IGW_RECONCILE_INTERVAL_SECONDS", d.interval_seconds, min_value=1)
        lookback = env.float("IGW_RECONCILE_LOOKBACK_SECONDS", d.lookback_seconds, min_value=60)
        if lookback < interval:
            raise SettingsError(
                "IGW_RECONCILE_LOOKBACK_SECONDS", f"must cover at least one interval ({interval:g} s), got {lookback:g}"
            )
        app_token = env.secret("IGW_APP_ACCESS_TOKEN")
        if app_token is not None and "|" not in app_token.value:
            # The value is not shown: it is a secret.
            raise SettingsError(
                "IGW_APP_ACCESS_TOKEN",
                "expected an app token, the app id and the app secret joined by a vertical bar",
            )
        app_id = env.optional_str("IGW_APP_ID")
        if app_id is not None and not app_id.isdigit():
            raise SettingsError("IGW_APP_ID", f"expected the app's numeric id, got {app_id!r}")
        if app_token is not None and app_id is None:
            raise SettingsError(
                "IGW_APP_ID", "is required with IGW_APP_ACCESS_TOKEN (the app whose subscriptions to read)"
            )
        return cls(
            send_api=send_api,
            kafka=KafkaSettings.from_env(env),
            interval_seconds=interval,
            lookback_seconds=lookback,
            min_age_seconds=env.float("IGW_RECONCILE_MIN_AGE_SECONDS", d.min_age_seconds, min_value=0),
            rate_per_second=env.float("IGW_RECONCILE_RATE", d.rate_per_second, min_value=0.01),
            page_size=env.int("IGW_RECONCILE_PAGE_SIZE", d.page_size, min_value=1),
            messages_per_conversation=messages,
            expand_messages=env.bool("IGW_RECONCILE_EXPAND_MESSAGES", d.expand_messages),
            timeout_seconds=env.float("IGW_RECONCILE_TIMEOUT_SECONDS", d.timeout_seconds, min_value=0.1),
            max_attempts=env.int("IGW_RECONCILE_MAX_ATTEMPTS", d.max_attempts, min_value=1),
            backoff_base_seconds=env.float("IGW_RECONCILE_BACKOFF_BASE_SECONDS", d.backoff_base_seconds, min_value=0),
            backoff_max_seconds=env.float("IGW_RECONCILE_BACKOFF_MAX_SECONDS", d.backoff_max_seconds, min_value=0),
            pass_timeout_seconds=env.float("IGW_RECONCILE_PASS_TIMEOUT_SECONDS", d.pass_timeout_seconds, min_value=1),
            account_pause_seconds=env.float("IGW_ACCOUNT_PAUSE_SECONDS", d.account_pause_seconds, min_value=1),
            hydrate=env.bool("IGW_RECONCILE_HYDRATE", d.hydrate),
            redis_url=send_api.redis_url,
            rate_limit_key_prefix=env.str("IGW_RECONCILE_RATE_KEY_PREFIX", d.rate_limit_key_prefix),
            app_id=app_id,
            app_token=app_token,
            metrics_host=metrics_host if metrics_host is not None else env.host("IGW_METRICS_HOST", d.metrics_host),
            metrics_port=(
                metrics_port
                if metrics_port is not None
                else env.port("IGW_METRICS_PORT", d.metrics_port, allow_zero=True)
            ),
            create_topics=env.bool("IGW_CREATE_TOPICS", d.create_topics),
            content_keys=keystore_url(env, "IGW_CONTENT_KEYS"),
            shutdown_timeout_seconds=env.float("IGW_SHUTDOWN_TIMEOUT_SECONDS", d.shutdown_timeout_seconds, min_value=0),
        )

    def describe(self) -> dict[str, object]:
        """What the process logs once at start-up (no secrets)."""
        return {
            "accounts": [f"{a.account_id} ({a.flavour})" for a in self.send_api.accounts],
            "kafka_bootstrap_servers": self.kafka.bootstrap_servers,
            "interval_seconds": self.interval_seconds,
            "lookback_seconds": self.lookback_seconds,
            "min_age_seconds": self.min_age_seconds,
            "rate_per_second": self.rate_per_second,
            "expand_messages": self.expand_messages,
            "rate_limiter": "redis" if self.redis_url else "in-process",
            "app_subscriptions": "checked" if self.app_token else "not checked (IGW_APP_ACCESS_TOKEN unset)",
            "metrics": f"{self.metrics_host}:{self.metrics_port}",
        }
