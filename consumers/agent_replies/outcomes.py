"""What happened to each inbound event, published to ``<prefix>.replies`` (and dead letters).

Every message or postback the consumer takes up ends in one :class:`Outcome` with one
:class:`Reason` from a fixed set. The reply record is envelope-style JSON, keyed by the
conversation, for analytics and audit; events that fail for good also go to
``<prefix>.deadletter`` verbatim, with ``igw_*`` headers saying why (as the gateway does).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson
from aiokafka.errors import MessageSizeTooLargeError

from consumers.agent_replies.metrics import AgentMetrics
from consumers.agent_replies.model import InboundEvent
from consumers.common.children import Children
from igw.envelope import Header
from igw.records import cloudevent_headers

__all__ = ["TRUNCATED_HEAD_BYTES", "Outcome", "OutcomePublisher", "Reason", "ReplyRecord", "reply_id"]

log = logging.getLogger(__name__)

# How much of a record too large for the dead-letter topic its truncated envelope keeps.
TRUNCATED_HEAD_BYTES = 4096


class Outcome(StrEnum):
    SENT = "sent"
    SKIPPED = "skipped"
    FAILED = "failed"


class Reason(StrEnum):
    REPLIED = "replied"  # sent: the agent's answer
    HANDOVER = "handover"  # sent or skipped: the agent handed the conversation to a person
    DUPLICATE = "duplicate"  # skipped: the ledger says it was answered already
    WINDOW_CLOSED = "window_closed"  # skipped: older than the 24 h window, or Meta said so
    HUMAN_TAKEOVER = "human_takeover"  # skipped: a person answered in this conversation recently
    ALREADY_ANSWERED = "already_answered"  # skipped: recovered, and the account wrote after it (docs/reconcile.md)
    ACCOUNT_PAUSED = "account_paused"  # skipped: the account's token or status needs an operator
    STANDBY = "standby"  # skipped: another app owns the thread
    NO_REPLY = "no_reply"  # skipped: the agent chose not to answer
    AGENT_ERROR = "agent_error"  # failed: the agent kept failing
    SEND_FAILED = "send_failed"  # failed: Meta kept failing (transient or rate limited)
    PARTIAL_SEND = "partial_send"  # failed: some parts of a long reply went out, then an error
    USER_UNAVAILABLE = "user_unavailable"  # failed: Meta's user errors
    INVALID_MESSAGE = "invalid_message"
    TOKEN_INVALID = "token_invalid"  # noqa: S105 - a reason name, not a credential
    ACCOUNT_BLOCKED = "account_blocked"
    THREAD_OWNED = "thread_owned"
    SEND_ERROR = "send_error"  # failed: an error Meta's table does not name
    BAD_EVENT = "bad_event"  # failed: the record is not a usable envelope
    INTERNAL_ERROR = "internal_error"  # failed: handling it kept raising an unexpected error (a bug)


def reply_id(event_id: str, outcome: Outcome, reason: Reason) -> str:
    """32 hex chars, derived from the inbound event and the decision: a replayed decision keeps its id."""
    digest = hashlib.blake2b(f"reply\0{event_id}\0{outcome}\0{reason}".encode(), digest_size=16)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class ReplyRecord:
    event: InboundEvent
    outcome: Outcome
    reason: Reason
    agent: str
    message_ids: tuple[str, ...] = ()
    detail: str | None = None
    error_code: int | None = None
    attempts: int = 0

    def to_json(self, now_ms: int) -> dict[str, Any]:
        event = self.event
        return {
            "v": 1,
            "id": reply_id(event.id, self.outcome, self.reason),
            "type": "reply",
            "outcome": str(self.outcome),
            "reason": str(self.reason),
            "platform": event.platform,
            "account_id": event.account_id,
            "user_id": event.user_id,
            "conversation_id": event.conversation_id,
            "in_reply_to": event.id,
            "in_reply_to_type": event.type,
            "message_ids": list(self.message_ids),
            "latency_ms": max(0, now_ms - event.timestamp_ms),
            "agent": self.agent,
            "timestamp": now_ms,
            "detail": self.detail,
            "error_code": self.error_code,
            "attempts": self.attempts,
        }


class OutcomePublisher:
    """Publishes reply records and dead letters with one shared producer, and counts outcomes."""

    def __init__(
        self, producer: Any, replies_topic: str, deadletter_topic: str, metrics: AgentMetrics, clock: Any = time.time
    ) -> None:
        self._producer = producer
        self._reply_latency = metrics.reply_latency
        self.replies_topic = replies_topic
        self.deadletter_topic = deadletter_topic
        self._clock = clock
        self._replies = Children(metrics.replies)
        self._dead_letters = Children(metrics.dead_letters)
        self._dead_letter_failures = metrics.dead_letter_failures

    async def record(self, record: ReplyRecord) -> None:
        now_ms = int(self._clock() * 1000)
        self._replies(record.outcome, record.reason).inc()
        if record.outcome is Outcome.SENT:
            self._reply_latency.observe(max(0.0, (now_ms - record.event.timestamp_ms) / 1000))
        body = record.to_json(now_ms)
        event = record.event
        headers = cloudevent_headers(
            body["id"], "reply", f"igw/agent/{event.account_id}", now_ms, event.conversation_id or None
        )
        key = (event.conversation_id or event.account_id).encode()
        try:
            await self._producer.send_and_wait(self.replies_topic, orjson.dumps(body), key=key, headers=headers)
        except Exception as exc:  # the ledger holds the decision; losing the audit record must not stop replies
            log.error(
                "reply record for event %s not published (%s): %s/%s",
                event.id,
                exc.__class__.__name__,
                record.outcome,
                record.reason,
            )

    async def deadletter(
        self,
        value: bytes | None,
        key: bytes | None,
        reason: Reason,
        detail: str,
        *,
        event_id: str | None = None,
        source: tuple[str, int, int] | None = None,
    ) -> bool:
        """Publish the inbound record verbatim with ``igw_reason``/``igw_detail`` headers.

        A record too large for the dead-letter topic goes there as a small envelope that says
        where the record is (topic, partition, offset), how large it is and why it failed, with
        the record's first bytes. False when Kafka took neither: the caller keeps the record and
        tries again, so that nothing is dropped silently.
        """
        headers = [
            (Header.REASON, str(reason).encode()),
            (Header.DETAIL, detail[:500].encode()),
            (Header.FAILED_AT, str(int(self._clock() * 1000)).encode()),
            (Header.CONSUMER, b"agent"),
            (Header.CONTENT_TYPE, b"application/json"),
        ]
        if event_id:
            headers.append((Header.EVENT_ID, event_id.encode()))
        if source is not None:
            topic, partition, offset = source
            headers.append((Header.ORIGIN, f"{topic}[{partition}]@{offset}".encode()))
        body = value or b""
        try:
            await self._producer.send_and_wait(self.deadletter_topic, body, key=key, headers=headers)
        except MessageSizeTooLargeError:
            return await self._deadletter_truncated(body, key, reason, detail, headers, event_id, source)
        except Exception as exc:  # kept and tried again: logged with enough to find the record
            self._dead_letter_failures.inc()
            log.error("dead letter not published (%s) for %s: %s", exc.__class__.__name__, source, reason)
            return False
        self._dead_letters(reason, "verbatim").inc()
        return True

    async def _deadletter_truncated(
        self,
        body: bytes,
        key: bytes | None,
        reason: Reason,
        detail: str,
        headers: list[tuple[str, bytes]],
        event_id: str | None,
        source: tuple[str, int, int] | None,
    ) -> bool:
        topic, partition, offset = source if source is not None else (None, None, None)
        envelope = {
            "truncated": True,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "size": len(body),
            "reason": str(reason),
            "detail": detail[:500],
            "event_id": event_id,
            "head": body[:TRUNCATED_HEAD_BYTES].decode("utf-8", errors="replace"),
        }
        headers = [*headers, (Header.TRUNCATED, str(len(body)).encode())]
        try:
            await self._producer.send_and_wait(
                self.deadletter_topic, orjson.dumps(envelope), key=(key or b"")[:1024] or None, headers=headers
            )
        except Exception as exc:
            self._dead_letter_failures.inc()
            log.error("truncated dead letter not published (%s) for %s: %s", exc.__class__.__name__, source, reason)
            return False
        self._dead_letters(reason, "truncated").inc()
        log.error(
            "record %s (%d bytes) is too large for the dead-letter topic: dead-lettered as a truncated envelope "
            "(%s); copy the record out of its topic before retention removes it",
            f"{topic}[{partition}]@{offset}",
            len(body),
            reason,
        )
        return True
