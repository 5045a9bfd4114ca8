"""The business metrics (``igw_biz_*``). Every label comes from a bounded set; see docs/analytics.md.

- ``account``: the first ``IGW_ANALYTICS_MAX_ACCOUNTS`` accounts seen, then ``other``.
- ``payload``: the top ``IGW_ANALYTICS_TOP_PAYLOADS`` click payloads, then ``other``.
- ``type``, ``kind``, ``outcome``, ``reason``, ``sender``, ``source``, ``topic``: fixed vocabularies below.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from igw import envelope

__all__ = ["ATTACHMENT_TYPES", "EVENT_TYPES", "INBOUND_TYPES", "AnalyticsMetrics"]

# The envelope types of docs/events.md; anything else is counted as "unknown".
EVENT_TYPES = frozenset(envelope.EVENT_TYPES)
# What an inbound message mainly is, first match wins (see aggregate.inbound_type).
INBOUND_TYPES = ("quick_reply", "story_reply", "attachment", "text", "unsupported", "edit", "deleted", "other")
# Attachment types Meta is known to send (docs/events.md); anything else is "other".
ATTACHMENT_TYPES = frozenset(
    {
        "image",
        "video",
        "audio",
        "file",
        "share",
        "ig_post",
        "post",
        "story_mention",
        "story",
        "ig_story",
        "reel",
        "ig_reel",
        "sticker",
        "like_heart",
        "ephemeral",
        "template",
        "fallback",
        "appointment_booking",
    }
)
DEAD_LETTER_REASONS = frozenset({"not_json", "not_object", "no_object", "unsupported_object", "bad_entry", "bad_item"})
REPLY_OUTCOMES = frozenset({"sent", "skipped", "failed"})

# Seconds from a user's message to the reply: the rules agent on the local stack in 50-500 ms
# (tests/test_dashboard_live.py), through Meta in about a second, a model in seconds, a person in
# minutes to hours.
RESPONSE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)


class AnalyticsMetrics:
    """All analytics metrics, in the registry the analytics process serves (a private one in tests)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        # The *_created series double every counter's output and no dashboard reads them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        r = registry
        self.events = Counter(
            "igw_biz_events", "Events counted once, by envelope type", ["account", "type"], registry=r
        )
        self.inbound_messages = Counter(
            "igw_biz_inbound_messages", "Messages from users, by what they mainly are", ["account", "type"], registry=r
        )
        self.clicks = Counter(
            "igw_biz_clicks",
            "Postback and quick-reply clicks; payload is one of the top N or 'other'",
            ["account", "kind", "payload"],
            registry=r,
        )
        self.reactions = Counter("igw_biz_reactions", "Reactions by action", ["account", "action"], registry=r)
        self.attachments = Counter(
            "igw_biz_attachments", "Attachments in inbound messages by type", ["account", "type"], registry=r
        )
        self.conversations_started = Counter(
            "igw_biz_conversations_started",
            "Conversation starts: first inbound ever seen (new) or after the session gap (returning)",
            ["account", "kind"],
            registry=r,
        )
        self.unique_users = Gauge(
            "igw_biz_unique_users",
            "Approximate distinct users with inbound activity today (UTC, event time; HyperLogLog)",
            ["account"],
            registry=r,
        )
        self.last_inbound = Gauge(
            "igw_biz_last_inbound_timestamp_seconds",
            "Event time of the newest inbound item per account",
            ["account"],
            registry=r,
        )
        self.replies = Counter("igw_biz_replies", "Agent replies by outcome", ["account", "outcome"], registry=r)
        self.first_response = Histogram(
            "igw_biz_first_response_seconds",
            "From the message that started a conversation to the first reply sent",
            ["account"],
            buckets=RESPONSE_BUCKETS,
            registry=r,
        )
        self.reply_latency = Histogram(
            "igw_biz_reply_latency_seconds",
            "From the inbound message to the reply sent, as the agent reports it",
            ["account"],
            buckets=RESPONSE_BUCKETS,
            registry=r,
        )
        self.outbound_messages = Counter(
            "igw_biz_outbound_messages",
            "Messages sent by the business (echoes), by who sent them",
            ["account", "sender"],
            registry=r,
        )
        self.human_takeovers = Counter(
            "igw_biz_human_takeovers",
            "Conversation sessions a person took over (a human echo or a thread handover), once per session",
            ["account", "source"],
            registry=r,
        )
        self.dead_letters = Counter(
            "igw_biz_dead_letters", "Dead-lettered webhook bodies by reason", ["reason"], registry=r
        )
        self.duplicates = Counter(
            "igw_biz_duplicates", "Records skipped because their event id was already counted", ["topic"], registry=r
        )
        self.beyond_window = Counter(
            "igw_biz_beyond_dedup_window",
            "Records older than the dedup window: counted without a duplicate check",
            ["topic"],
            registry=r,
        )
        self.invalid_records = Counter(
            "igw_biz_invalid_records", "Records that could not be read as igw events", ["topic"], registry=r
        )
        self.erasures = Counter(
            "igw_biz_erasures", "Erasure records applied: a person's conversation state dropped", registry=r
        )
        self.dedup_ids = Gauge("igw_biz_dedup_ids", "Event ids held by the dedup memory", registry=r)
        self.tracked_conversations = Gauge(
            "igw_biz_tracked_conversations", "Conversations held in memory (new/returning, first response)", registry=r
        )
