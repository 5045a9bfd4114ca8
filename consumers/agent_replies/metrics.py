"""Prometheus metrics of the agent consumer. Labels come from small fixed sets only.

The agent process builds :class:`AgentMetrics` in the registry its ``/metrics`` serves, beside the
Send API client's and the consumer group's. Nothing registers on import.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

__all__ = ["AGENT_CALL_BUCKETS", "REPLY_LATENCY_BUCKETS", "AgentMetrics"]

# From Meta's timestamp of the message to Meta accepting the reply: a rules agent on a nearby
# broker answers in tens of milliseconds, a model in seconds, a retried send much later.
REPLY_LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
# One call to the agent: the rules agent in tens of microseconds, an HTTP agent or a model in seconds.
AGENT_CALL_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.001,
    0.005,
    0.025,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class AgentMetrics:
    """The agent consumer's own metrics, in ``registry``."""

    __slots__ = (
        "agent_call_duration",
        "in_flight",
        "ledger_hits",
        "paused_accounts",
        "paused_conversations",
        "replies",
        "reply_latency",
        "retries",
        "takeovers",
    )

    def __init__(self, registry: CollectorRegistry) -> None:
        # The *_created series double every counter's output and no dashboard reads them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.replies = Counter(
            "igw_agent_replies_total",
            "Inbound messages and postbacks by what the agent consumer did (sent, skipped, failed) and why.",
            ["outcome", "reason"],
            registry=registry,
        )
        self.reply_latency = Histogram(
            "igw_agent_reply_latency_seconds",
            "From the inbound event's timestamp (Meta's) to Meta accepting the reply.",
            buckets=REPLY_LATENCY_BUCKETS,
            registry=registry,
        )
        self.agent_call_duration = Histogram(
            "igw_agent_call_duration_seconds",
            "Duration of one call to the agent (rules, http, openai), failed calls included.",
            ["agent"],
            buckets=AGENT_CALL_BUCKETS,
            registry=registry,
        )
        self.ledger_hits = Counter(
            "igw_agent_ledger_hits_total",
            "Inbound events found already answered in the idempotency ledger (redeliveries, replays).",
            registry=registry,
        )
        self.paused_conversations = Gauge(
            "igw_agent_paused_conversations",
            "Conversations where automatic replies are paused (a person answered, or the agent handed over).",
            registry=registry,
        )
        self.paused_accounts = Gauge(
            "igw_agent_paused_accounts",
            "Business accounts paused after a token or account error; an operator must act.",
            registry=registry,
        )
        self.takeovers = Counter(
            "igw_agent_takeovers_total",
            "Conversations paused for a person: 'human' (someone answered from the app) or 'handover' (agent asked).",
            ["kind"],
            registry=registry,
        )
        self.retries = Counter(
            "igw_agent_retries_total",
            "Inbound events put back to be tried again later, by reason.",
            ["reason"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "igw_agent_in_flight_events",
            "Inbound events fetched and not yet finished (queued, running or waiting to retry).",
            registry=registry,
        )
