"""The pure core of the analytics consumer: one Kafka record in, metric (and rollup) updates out.

No I/O here: the consumer loop feeds records, tests feed them directly. Every record is counted
at most once per event id (see :mod:`consumers.analytics.dedup`), and everything that depends on
time uses the event's own time (``timestamp``), not the time it arrived: the day of a unique
user, the hour of a rollup, the gap that makes a conversation "returning", the first-response
time. Prometheus counters themselves advance when a record is processed.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from consumers.analytics.conversations import Conversations, Start
from consumers.analytics.dedup import RecentIds, Seen
from consumers.analytics.labels import OTHER, BoundedLabels, TopPayloads
from consumers.analytics.metrics import (
    ATTACHMENT_TYPES,
    DEAD_LETTER_REASONS,
    EVENT_TYPES,
    REPLY_OUTCOMES,
    AnalyticsMetrics,
)
from consumers.analytics.rollup import RollupBuffer
from consumers.analytics.settings import AnalyticsSettings
from consumers.analytics.sketch import HyperLogLog
from consumers.common.children import Tally
from igw.sealing import Opener

__all__ = ["Aggregator", "inbound_type"]

logger = logging.getLogger(__name__)

DAY_MS = 86_400_000
# Thread-control changes that hand a conversation to a person (or another app's inbox).
TAKEOVER_HANDOVERS = frozenset({"take_thread_control", "pass_thread_control"})
# Mids of messages the agent sent, to tell its echoes from a person's when app ids are not configured.
AGENT_MIDS_LIMIT = 50_000


def inbound_type(message: Mapping[str, Any], event_type: str) -> str:
    """What an inbound message mainly is: one of ``metrics.INBOUND_TYPES``."""
    if event_type == "message_edit":
        return "edit"
    if event_type == "message_deleted":
        return "deleted"
    if message.get("quick_reply_payload"):
        return "quick_reply"
    reply_to = message.get("reply_to")
    if isinstance(reply_to, Mapping) and reply_to.get("story"):
        return "story_reply"
    if message.get("attachments"):
        return "attachment"
    if message.get("text"):
        return "text"
    if message.get("is_unsupported"):
        return "unsupported"
    return "other"


@dataclass
class DailyUniques:
    """One HyperLogLog per (account, UTC day of event time), keeping today and yesterday."""

    clock: Callable[[], float]
    _sketches: dict[tuple[str, int], HyperLogLog] = field(default_factory=dict, init=False)

    def today(self) -> int:
        return int(self.clock() * 1000) // DAY_MS

    def add(self, account: str, user_id: str, event_time_ms: int) -> None:
        day = event_time_ms // DAY_MS
        today = int(self.clock() * 1000) // DAY_MS  # self.today(), without a call per event
        if day < today - 1 or day > today + 1:
            return  # too late to matter for the gauge; the rollup keeps what was counted in time
        key = (account, day)
        sketch = self._sketches.get(key)
        if sketch is None:
            sketch = self._sketches[key] = HyperLogLog()
            for old in [k for k in self._sketches if k[1] < today - 1]:
                del self._sketches[old]
        sketch.add(user_id)

    def count(self, account: str, day: int | None = None) -> int:
        sketch = self._sketches.get((account, self.today() if day is None else day))
        return sketch.count() if sketch is not None else 0

    def snapshot(self) -> list[tuple[int, str, int]]:
        """(day, account, approximate users) for every day held."""
        return [(day, account, sketch.count()) for (account, day), sketch in self._sketches.items()]


class Aggregator:
    """Turns igw records into ``igw_biz_*`` metric updates, once per event id."""

    def __init__(
        self,
        settings: AnalyticsSettings,
        metrics: AnalyticsMetrics,
        *,
        rollup: RollupBuffer | None = None,
        clock: Callable[[], float] = time.time,
        opener: Opener | None = None,
    ) -> None:
        self.settings = settings
        # Opens sealed content (IGW_CONTENT_KEYS); its keys are fetched per batch before counting.
        self.opener = opener
        self.metrics = metrics
        self.rollup = rollup
        self.clock = clock
        self.dedup = RecentIds(settings.dedup_retention_hours, settings.dedup_max_ids)
        self.accounts = BoundedLabels(settings.max_accounts)
        self.payloads = TopPayloads(settings.top_payloads, settings.payload_min_count, settings.pinned_payloads)
        self.conversations = Conversations(int(settings.session_gap_hours * 3_600_000), settings.max_conversations)
        self.uniques = DailyUniques(clock)
        self._agent_mids: OrderedDict[str, None] = OrderedDict()
        # Topics are read independently, so a reply may be counted before the message it answers.
        self._early_replies: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._inbound_gauges: set[str] = set()
        self._last_inbound: dict[str, int] = {}
        # The per-record counters, counted in dictionaries and added to the metrics by flush().
        self._events = Tally(metrics.events)
        self._inbound = Tally(metrics.inbound_messages)
        self._clicks = Tally(metrics.clicks)
        self._reactions = Tally(metrics.reactions)
        self._attachments = Tally(metrics.attachments)
        self._started = Tally(metrics.conversations_started)
        self._replies = Tally(metrics.replies)
        self._outbound = Tally(metrics.outbound_messages)
        self._tallies = (
            self._events,
            self._inbound,
            self._clicks,
            self._reactions,
            self._attachments,
            self._started,
            self._replies,
            self._outbound,
        )
        metrics.dedup_ids.set_function(lambda: len(self.dedup))
        metrics.tracked_conversations.set_function(lambda: len(self.conversations))

    # -- entry point -------------------------------------------------------------------------

    def handle(self, topic: str, value: bytes, headers: Mapping[str, bytes] | None = None) -> bool:
        """Count one record from ``topic`` (the short name: ``messages``, ...). False if skipped."""
        try:
            return self.count(topic, value, headers)
        finally:
            self.flush()

    def count(self, topic: str, value: bytes, headers: Mapping[str, bytes] | None = None) -> bool:
        """:meth:`handle` without :meth:`flush`: for a batch of records, flush once at its end."""
        headers = headers or {}
        if topic == "deadletter":
            return self._dead_letter(value, headers)
        try:
            record = orjson.loads(value)
        except orjson.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("id"), str):
            self.metrics.invalid_records.labels(topic).inc()
            return False
        event_time = _event_time(record, self.clock)
        if not self._first(topic, record["id"], event_time):
            return False
        if topic == "erasures":
            self._erasure(record)
            return True
        if self.opener is not None and "sealed" in record:
            record = self.opener.open_cached(record)
        if topic == "replies":
            self._reply(record, event_time)
        else:
            self._event(record, event_time)
        return True

    def flush(self) -> None:
        """Add the counts held back by :meth:`count` to the metrics."""
        for tally in self._tallies:
            tally.flush()

    # -- helpers -----------------------------------------------------------------------------

    def _first(self, topic: str, event_id: str, event_time: int) -> bool:
        seen = self.dedup.check(event_id, event_time)
        if seen is Seen.DUPLICATE:
            self.metrics.duplicates.labels(topic).inc()
            return False
        if seen is Seen.BEYOND_WINDOW:
            self.metrics.beyond_window.labels(topic).inc()
        return True

    def _count(self, event_time: int, account: str, family: str, label: str) -> None:
        """One more ``<family>.<label>`` in the rollup (the name is only built when rollups are on)."""
        if self.rollup is not None:
            self.rollup.add(event_time, account, f"{family}.{label}", 1)

    def _account(self, record: Mapping[str, Any]) -> str:
        account = record.get("account_id")
        return self.accounts.label(str(account)) if account else "unknown"

    def _erasure(self, record: Mapping[str, Any]) -> None:
        """An erased person: drop the per-conversation state. Counts and the unique-user sketches keep no
        id that could be read back (docs/privacy.md)."""
        conversation = record.get("conversation_id")
        if record.get("type") != "erasure" or not isinstance(conversation, str):
            return
        self.conversations.forget(conversation)
        self._early_replies.pop(conversation, None)
        self.metrics.erasures.inc()

    def _dead_letter(self, value: bytes, headers: Mapping[str, bytes]) -> bool:
        reason = headers.get("igw_reason", b"").decode("utf-8", "replace")
        received = headers.get("igw_received_at", b"")
        event_time = int(received) if received.isdigit() else int(self.clock() * 1000)
        # Meta redelivers the same bytes: the body's hash is its id.
        body_id = hashlib.blake2b(value, digest_size=16).hexdigest()
        if not self._first("deadletter", body_id, event_time):
            return False
        label = reason if reason in DEAD_LETTER_REASONS else OTHER
        self.metrics.dead_letters.labels(label).inc()
        self._count(event_time, "unknown", "dead_letters", label)
        return True

    def _event(self, record: Mapping[str, Any], event_time: int) -> None:
        event_type = record.get("type")
        event_type = event_type if event_type in EVENT_TYPES else "unknown"
        account = self._account(record)
        self._events.add(account, event_type)
        self._count(event_time, account, "events", event_type)
        conversation = record.get("conversation_id")
        user = record.get("user_id")
        inbound_user_item = event_type in {"message", "message_edit", "message_deleted", "postback", "reaction"}
        if inbound_user_item and isinstance(user, str) and user:
            self.uniques.add(account, user, event_time)
            # Event time: a late event must not move "last inbound" backwards.
            if event_time > self._last_inbound.get(account, 0):
                self._last_inbound[account] = event_time
            if account not in self._inbound_gauges:
                self._watch_inbound(account)
        if event_type in {"message", "message_edit", "message_deleted"}:
            self._inbound_message(record, account, event_type, event_time, conversation)
        elif event_type == "message_echo":
            self._echo(record, account, event_time, conversation)
        elif event_type == "postback":
            postback = record.get("postback") or {}
            payload = self.payloads.label(postback.get("payload"))
            self._clicks.add(account, "postback", payload)
            self._count(event_time, account, "clicks.postback", payload)
            self._start(account, conversation, event_time)
        elif event_type == "reaction":
            reaction = record.get("reaction") or {}
            action = "unreact" if reaction.get("action") == "unreact" else "react"
            self._reactions.add(account, action)
            self._count(event_time, account, "reactions", action)
        elif event_type == "handover":
            handover = record.get("handover") or {}
            if handover.get("kind") in TAKEOVER_HANDOVERS:
                self._takeover(account, conversation, "handover", event_time)

    def _inbound_message(
        self, record: Mapping[str, Any], account: str, event_type: str, event_time: int, conversation: object
    ) -> None:
        message = record.get("message") or record.get("message_edit") or {}
        kind = inbound_type(message, event_type)
        self._inbound.add(account, kind)
        self._count(event_time, account, "inbound_messages", kind)
        if event_type != "message":
            return
        for attachment in message.get("attachments") or ():
            a_type = attachment.get("type") if isinstance(attachment, Mapping) else None
            a_label = a_type if a_type in ATTACHMENT_TYPES else OTHER
            self._attachments.add(account, a_label)
            self._count(event_time, account, "attachments", a_label)
        if message.get("quick_reply_payload"):
            payload = self.payloads.label(str(message["quick_reply_payload"]))
            self._clicks.add(account, "quick_reply", payload)
            self._count(event_time, account, "clicks.quick_reply", payload)
        self._start(account, conversation, event_time)

    def _start(self, account: str, conversation: object, event_time: int) -> None:
        if not isinstance(conversation, str):
            return
        start = self.conversations.inbound(conversation, event_time)
        if start is not None:
            kind = "new" if start is Start.NEW else "returning"
            self._started.add(account, kind)
            self._count(event_time, account, "conversations", kind)
            early = self._early_replies.pop(conversation, None)
            if early is not None and early[1] >= event_time:
                self._first_response(early[0], conversation, early[1])

    def _echo(self, record: Mapping[str, Any], account: str, event_time: int, conversation: object) -> None:
        message = record.get("message") or {}
        app_id = str(message.get("app_id") or "")
        mid = message.get("mid")
        by_agent = app_id in self.settings.agent_app_ids or (isinstance(mid, str) and mid in self._agent_mids)
        sender = "agent" if by_agent else "human"
        self._outbound.add(account, sender)
        self._count(event_time, account, "outbound_messages", sender)
        if sender == "human":
            self._takeover(account, conversation, "echo", event_time)

    def _takeover(self, account: str, conversation: object, source: str, event_time: int) -> None:
        state = self.conversations.get(conversation) if isinstance(conversation, str) else None
        # Only within a session the analytics saw start: "share" is takeovers / conversation starts.
        if state is None or state.taken_over:
            return
        state.taken_over = True
        self.metrics.human_takeovers.labels(account, source).inc()
        self._count(event_time, account, "human_takeovers", source)

    def _reply(self, record: Mapping[str, Any], event_time: int) -> None:
        m = self.metrics
        account = self._account(record)
        outcome = record.get("outcome")
        outcome = outcome if outcome in REPLY_OUTCOMES else OTHER
        self._replies.add(account, outcome)
        self._count(event_time, account, "replies", outcome)
        if outcome != "sent":
            return
        for mid in record.get("message_ids") or ():
            if isinstance(mid, str):
                self._agent_mids[mid] = None
        while len(self._agent_mids) > AGENT_MIDS_LIMIT:
            self._agent_mids.popitem(last=False)
        latency_ms = record.get("latency_ms")
        if isinstance(latency_ms, int | float) and latency_ms >= 0:
            m.reply_latency.labels(account).observe(latency_ms / 1000)
        conversation = record.get("conversation_id")
        if isinstance(conversation, str):
            self._first_response(account, conversation, event_time)

    def _first_response(self, account: str, conversation: str, sent_at: int) -> None:
        state = self.conversations.get(conversation)
        if state is None or sent_at < state.session_start_ms:
            # The message it answers has not been read yet: keep the earliest such reply, bounded.
            if conversation not in self._early_replies:
                self._early_replies[conversation] = (account, sent_at)
                while len(self._early_replies) > AGENT_MIDS_LIMIT:
                    self._early_replies.popitem(last=False)
            return
        if not state.answered:
            state.answered = True
            self.metrics.first_response.labels(account).observe((sent_at - state.session_start_ms) / 1000)

    def _watch_inbound(self, account: str) -> None:
        """The account's inbound gauges, read when scraped rather than set per event."""
        self._inbound_gauges.add(account)
        # Estimating a sketch per event would cost thousands of steps each time.
        self.metrics.unique_users.labels(account).set_function(lambda: self.uniques.count(account))
        self.metrics.last_inbound.labels(account).set_function(lambda: self._last_inbound.get(account, 0) / 1000)


def _event_time(record: Mapping[str, Any], clock: Callable[[], float]) -> int:
    timestamp = record.get("timestamp")
    if isinstance(timestamp, int) and timestamp > 0:
        return timestamp
    return int(clock() * 1000)
