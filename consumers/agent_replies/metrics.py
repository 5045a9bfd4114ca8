"""Prometheus metrics of the agent consumer. Labels come from small fixed sets only."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "AGENT_CALL_DURATION",
    "IN_FLIGHT",
    "LEDGER_HITS",
    "PAUSED_ACCOUNTS",
    "PAUSED_CONVERSATIONS",
    "REPLIES",
    "REPLY_LATENCY",
    "RETRIES",
    "TAKEOVERS",
]

REPLIES = Counter(
    "igw_agent_replies_total",
    "Inbound messages and postbacks by what the agent consumer did (sent, skipped, failed) and why.",
    ["outcome", "reason"],
)
REPLY_LATENCY = Histogram(
    "igw_agent_reply_latency_seconds",
    "From the inbound event's timestamp (Meta's) to Meta accepting the reply.",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0),
)
AGENT_CALL_DURATION = Histogram(
    "igw_agent_call_duration_seconds",
    "Duration of one call to the agent (rules, http, openai), failed calls included.",
    ["agent"],
    buckets=(0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
LEDGER_HITS = Counter(
    "igw_agent_ledger_hits_total",
    "Inbound events found already answered in the idempotency ledger (redeliveries, replays).",
)
PAUSED_CONVERSATIONS = Gauge(
    "igw_agent_paused_conversations",
    "Conversations where automatic replies are paused (a person answered, or the agent handed over).",
)
PAUSED_ACCOUNTS = Gauge(
    "igw_agent_paused_accounts",
    "Business accounts paused after a token or account error; an operator must act.",
)
TAKEOVERS = Counter(
    "igw_agent_takeovers_total",
    "Conversations paused for a person: 'human' (someone answered from the app) or 'handover' (agent asked).",
    ["kind"],
)
RETRIES = Counter(
    "igw_agent_retries_total",
    "Inbound events put back to be tried again later, by reason.",
    ["reason"],
)
IN_FLIGHT = Gauge(
    "igw_agent_in_flight_events",
    "Inbound events fetched and not yet finished (queued, running or waiting to retry).",
)
