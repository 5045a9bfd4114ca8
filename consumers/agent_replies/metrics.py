"""Prometheus metrics of the agent consumer. Labels come from small fixed sets only."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "AGENT_CALL_DURATION",
    "AMBIGUOUS_SENDS",
    "DEAD_LETTERS",
    "DEAD_LETTER_FAILURES",
    "IN_FLIGHT",
    "LEASES_LOST",
    "LEDGER_HITS",
    "PAUSED_ACCOUNTS",
    "PAUSED_CONVERSATIONS",
    "REPLIES",
    "REPLY_LATENCY",
    "RESUMED",
    "RETRIES",
    "STORE_UP",
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
STORE_UP = Gauge(
    "igw_agent_store_up",
    "1 while the ledger's store answers; 0 while it does not, and sending is paused (never without the ledger).",
)
AMBIGUOUS_SENDS = Counter(
    "igw_agent_ambiguous_sends_total",
    "Sends whose answer was lost (Meta may have taken them), by resolution: 'echo_confirmed' (Meta's echo "
    "showed it arrived: not sent again), 'resent' (no echo within IGW_AGENT_ECHO_WAIT_SECONDS: sent again), "
    "'late_echo' (an echo came after it was sent again: the user got it twice).",
    ["resolution"],
)
RESUMED = Counter(
    "igw_agent_resumed_total",
    "Replies taken up again at a step of the ledger (after a crash, a lost lease or a rebalance), by step.",
    ["step"],
)
LEASES_LOST = Counter(
    "igw_agent_leases_lost_total",
    "Events whose lease another worker took while this one still had them in hand (it was stalled past the lease).",
)
DEAD_LETTERS = Counter(
    "igw_agent_dead_letters_total",
    "Records sent to the dead-letter topic, by reason and form: 'verbatim', or 'truncated' (too large for the "
    "topic: an envelope with the record's coordinates; the record itself stays in its topic until retention).",
    ["reason", "form"],
)
DEAD_LETTER_FAILURES = Counter(
    "igw_agent_dead_letter_failures_total",
    "Dead letters Kafka did not take; the record is kept (uncommitted) and tried again.",
)
