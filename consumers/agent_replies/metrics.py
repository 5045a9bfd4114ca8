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
        "ambiguous_sends",
        "dead_letter_failures",
        "dead_letters",
        "in_flight",
        "leases_lost",
        "ledger_hits",
        "paused_accounts",
        "paused_conversations",
        "replies",
        "reply_latency",
        "resumed",
        "retries",
        "store_up",
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
        self.store_up = Gauge(
            "igw_agent_store_up",
            "1 while the ledger's store answers; 0 while it does not, and sending is paused (never without "
            "the ledger).",
            registry=registry,
        )
        self.ambiguous_sends = Counter(
            "igw_agent_ambiguous_sends_total",
            "Sends whose answer was lost (Meta may have taken them), by resolution: 'echo_confirmed' (Meta's echo "
            "showed it arrived: not sent again), 'resent' (no echo within IGW_AGENT_ECHO_WAIT_SECONDS: sent again), "
            "'late_echo' (an echo came after it was sent again: the user got it twice).",
            ["resolution"],
            registry=registry,
        )
        self.resumed = Counter(
            "igw_agent_resumed_total",
            "Replies taken up again at a step of the ledger (after a crash, a lost lease or a rebalance), by step.",
            ["step"],
            registry=registry,
        )
        self.leases_lost = Counter(
            "igw_agent_leases_lost_total",
            "Events whose lease another worker took while this one still had them in hand (it was stalled past "
            "the lease).",
            registry=registry,
        )
        self.dead_letters = Counter(
            "igw_agent_dead_letters_total",
            "Records sent to the dead-letter topic, by reason and form: 'verbatim', or 'truncated' (too large for "
            "the topic: an envelope with the record's coordinates; the record itself stays in its topic until "
            "retention).",
            ["reason", "form"],
            registry=registry,
        )
        self.dead_letter_failures = Counter(
            "igw_agent_dead_letter_failures_total",
            "Dead letters Kafka did not take; the record is kept (uncommitted) and tried again.",
            registry=registry,
        )
