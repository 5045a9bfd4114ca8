"""The aggregator: records in, igw_biz_* metrics out, once per event id, by event time."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from consumers.analytics.aggregate import Aggregator
from consumers.analytics.metrics import AnalyticsMetrics
from consumers.analytics.settings import AnalyticsSettings
from tests.analytics_records import ACCOUNT, T0, encode, envelope, message, postback, reply

HOUR = 3_600_000


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def agg(registry: CollectorRegistry) -> Aggregator:
    settings = AnalyticsSettings(top_payloads=3, payload_min_count=1, agent_app_ids=frozenset({"999"}))
    return Aggregator(settings, AnalyticsMetrics(registry), clock=lambda: T0 / 1000 + 60)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    got = registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def test_inbound_messages_are_counted_by_type_and_attachment(agg: Aggregator, registry: CollectorRegistry) -> None:
    """Text, attachments and quick replies land in their type; attachments also by attachment type."""
    agg.handle("messages", encode(message("hello", timestamp=T0)))
    agg.handle("messages", encode(message(None, attachments=[{"type": "image"}, {"type": "weird"}], timestamp=T0 + 1)))
    agg.handle("messages", encode(message("Yes", quick_reply="YES", timestamp=T0 + 2)))
    inbound = "igw_biz_inbound_messages_total"
    assert value(registry, inbound, account=ACCOUNT, type="text") == 1
    assert value(registry, inbound, account=ACCOUNT, type="attachment") == 1
    assert value(registry, inbound, account=ACCOUNT, type="quick_reply") == 1
    assert value(registry, "igw_biz_attachments_total", account=ACCOUNT, type="image") == 1
    assert value(registry, "igw_biz_attachments_total", account=ACCOUNT, type="other") == 1
    assert value(registry, "igw_biz_clicks_total", account=ACCOUNT, kind="quick_reply", payload="YES") == 1


def test_duplicates_are_counted_once(agg: Aggregator, registry: CollectorRegistry) -> None:
    """The same event id delivered three times, out of order with others, counts once."""
    first = encode(message("hello", timestamp=T0))
    assert agg.handle("messages", first)
    agg.handle("messages", encode(message("later", timestamp=T0 + 5 * HOUR)))
    assert not agg.handle("messages", first)
    assert not agg.handle("messages", first)
    assert value(registry, "igw_biz_inbound_messages_total", account=ACCOUNT, type="text") == 2
    assert value(registry, "igw_biz_duplicates_total", topic="messages") == 2


def test_new_and_returning_conversations_follow_event_time(agg: Aggregator, registry: CollectorRegistry) -> None:
    """A first message is new; one after the 24 h gap (in event time) is returning; within it, nothing."""
    for offset in (0, HOUR, 30 * HOUR, 29 * HOUR):  # the last one arrives late, inside the second session
        agg.handle("messages", encode(message(f"m{offset}", timestamp=T0 + offset)))
    started = "igw_biz_conversations_started_total"
    assert value(registry, started, account=ACCOUNT, kind="new") == 1
    assert value(registry, started, account=ACCOUNT, kind="returning") == 1


def test_first_response_and_reply_latency_come_from_the_replies_topic(
    agg: Aggregator, registry: CollectorRegistry
) -> None:
    """The first sent reply of a session is the first response; every sent reply feeds the latency."""
    agg.handle("messages", encode(message("hi", timestamp=T0)))
    agg.handle("replies", encode(reply("sent", timestamp=T0 + 4000, latency_ms=4000)))
    agg.handle("replies", encode(reply("sent", timestamp=T0 + 9000, latency_ms=2000)))
    agg.handle("replies", encode(reply("failed", timestamp=T0 + 9500)))
    assert value(registry, "igw_biz_first_response_seconds_count", account=ACCOUNT) == 1
    assert value(registry, "igw_biz_first_response_seconds_sum", account=ACCOUNT) == 4.0
    assert value(registry, "igw_biz_reply_latency_seconds_count", account=ACCOUNT) == 2
    assert value(registry, "igw_biz_reply_latency_seconds_sum", account=ACCOUNT) == 6.0
    assert value(registry, "igw_biz_replies_total", account=ACCOUNT, outcome="sent") == 2
    assert value(registry, "igw_biz_replies_total", account=ACCOUNT, outcome="failed") == 1


def test_human_takeover_is_counted_once_per_session(agg: Aggregator, registry: CollectorRegistry) -> None:
    """Echoes from the agent's app or of mids the agent sent are the agent's; a person's echo is a takeover."""
    agg.handle("messages", encode(message("hi", timestamp=T0)))
    agg.handle("replies", encode(reply("sent", timestamp=T0 + 1000, message_ids=["mid-agent"])))
    agg.handle("messages", encode(message("bot", event_type="message_echo", mid="mid-agent", timestamp=T0 + 1001)))
    agg.handle("messages", encode(message("bot", event_type="message_echo", app_id="999", timestamp=T0 + 1002)))
    agg.handle("messages", encode(message("human", event_type="message_echo", timestamp=T0 + 5000)))
    agg.handle("messages", encode(message("human2", event_type="message_echo", timestamp=T0 + 6000)))
    handover = envelope("handover", timestamp=T0 + 7000, handover={"kind": "take_thread_control"})
    agg.handle("events", encode(handover))
    assert value(registry, "igw_biz_outbound_messages_total", account=ACCOUNT, sender="agent") == 2
    assert value(registry, "igw_biz_outbound_messages_total", account=ACCOUNT, sender="human") == 2
    assert value(registry, "igw_biz_human_takeovers_total", account=ACCOUNT, source="echo") == 1
    assert value(registry, "igw_biz_human_takeovers_total", account=ACCOUNT, source="handover") == 0


def test_unique_users_are_per_account_per_event_day(agg: Aggregator, registry: CollectorRegistry) -> None:
    """Distinct users of today's event time are estimated; yesterday's events do not count for today."""
    for i in range(200):
        agg.handle("messages", encode(message("hi", user=f"u{i}", timestamp=T0 + i)))
        agg.handle("postbacks", encode(postback("BOOK", user=f"u{i}", timestamp=T0 + 1000 + i)))
    agg.handle("messages", encode(message("old", user="old-user", timestamp=T0 - 24 * HOUR)))
    assert 190 <= value(registry, "igw_biz_unique_users", account=ACCOUNT) <= 210
    assert value(registry, "igw_biz_last_inbound_timestamp_seconds", account=ACCOUNT) == (T0 + 1199) / 1000


def test_reactions_clicks_and_dead_letters(agg: Aggregator, registry: CollectorRegistry) -> None:
    """Reactions by action, postbacks by payload (bounded), dead letters by reason and body hash."""
    agg.handle("events", encode(envelope("reaction", reaction={"mid": "m", "action": "react", "reaction": "love"})))
    for payload in ("A", "B", "C", "D", "E"):
        agg.handle("postbacks", encode(postback(payload)))
    body = b"not json at all"
    for _ in range(2):
        agg.handle("deadletter", body, {"igw_reason": b"not_json", "igw_received_at": str(T0).encode()})
    agg.handle("deadletter", b"{}", {"igw_reason": b"something new"})
    assert value(registry, "igw_biz_reactions_total", account=ACCOUNT, action="react") == 1
    assert value(registry, "igw_biz_clicks_total", account=ACCOUNT, kind="postback", payload="A") == 1
    assert value(registry, "igw_biz_clicks_total", account=ACCOUNT, kind="postback", payload="other") == 2
    assert value(registry, "igw_biz_dead_letters_total", reason="not_json") == 1
    assert value(registry, "igw_biz_dead_letters_total", reason="other") == 1


def test_unreadable_records_are_counted_not_raised(agg: Aggregator, registry: CollectorRegistry) -> None:
    """A record that is not an igw event is skipped and shows in the invalid-records counter."""
    assert not agg.handle("events", b"\xff\x00")
    assert not agg.handle("events", b'{"no": "id"}')
    assert value(registry, "igw_biz_invalid_records_total", topic="events") == 2


def test_a_reply_read_before_its_message_still_gives_the_first_response(
    agg: Aggregator, registry: CollectorRegistry
) -> None:
    """Topics are read independently: a reply counted before the inbound message is matched later."""
    agg.handle("replies", encode(reply("sent", timestamp=T0 + 3000, latency_ms=3000)))
    agg.handle("messages", encode(message("hi", timestamp=T0)))
    assert value(registry, "igw_biz_first_response_seconds_sum", account=ACCOUNT) == 3.0


def test_events_older_than_the_dedup_window_are_counted_and_flagged(registry: CollectorRegistry) -> None:
    """Past the window a duplicate cannot be recognised: it is counted again and shows as beyond_window."""
    agg = Aggregator(AnalyticsSettings(dedup_retention_hours=2), AnalyticsMetrics(registry), clock=lambda: T0 / 1000)
    old = encode(message("old", timestamp=T0))
    agg.handle("messages", old)
    agg.handle("messages", encode(message("new", timestamp=T0 + 5 * HOUR)))
    assert agg.handle("messages", old)
    assert value(registry, "igw_biz_beyond_dedup_window_total", topic="messages") == 1
    assert value(registry, "igw_biz_inbound_messages_total", account=ACCOUNT, type="text") == 3
