"""The envelope's vocabulary, in one place: event types, topics, the topic of each type, headers.

Every process reads and writes these names; none defines them again. docs/events.md describes them
and the envelope's JSON Schema (``igw/schemas/envelope-v1.json``) lists the same types.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = [
    "ANSWERABLE_TYPES",
    "CE_SPECVERSION",
    "COMPUTED_FIELDS",
    "ENVELOPE_VERSION",
    "EVENT_TYPES",
    "GATEWAY_TOPICS",
    "TOPIC_OF",
    "Header",
    "Topic",
    "ce_type",
    "topic_of",
]

ENVELOPE_VERSION: Final = 1


class Topic(StrEnum):
    """igw's topics by their name after the prefix: ``<IGW_TOPIC_PREFIX>.<name>``."""

    MESSAGES = "messages"
    POSTBACKS = "postbacks"
    EVENTS = "events"
    DEADLETTER = "deadletter"
    # Written by the agent: one record per reply outcome.
    REPLIES = "replies"
    # Erasure requests and erasures of a person (docs/privacy.md): every consumer acts on them.
    ERASURES = "erasures"


# What the gateway publishes to.
GATEWAY_TOPICS: Final = (Topic.MESSAGES, Topic.POSTBACKS, Topic.EVENTS, Topic.DEADLETTER, Topic.ERASURES)

# Every ``type`` an envelope can carry (docs/events.md).
EVENT_TYPES: Final = (
    "message",
    "message_echo",
    "message_deleted",
    "message_edit",
    "postback",
    "reaction",
    "read",
    "delivery",
    "referral",
    "optin",
    "handover",
    "policy_enforcement",
    "response_feedback",
    "account_linking",
    "messaging_feedback",
    "order",
    "change",
    "unknown",
)

# The fields the gateway computes for every event (ids, parties, times); the type's object and ``raw``
# carry what Meta sent. Sealing keeps these readable (docs/privacy.md).
COMPUTED_FIELDS: Final = (
    "v",
    "id",
    "type",
    "platform",
    "account_id",
    "user_id",
    "sender_id",
    "recipient_id",
    "conversation_id",
    "timestamp",
    "received_at",
    "standby",
)

# Types with a topic of their own; every other type goes to ``events``.
TOPIC_OF: Final = {
    "message": Topic.MESSAGES,
    "message_echo": Topic.MESSAGES,
    "message_deleted": Topic.MESSAGES,
    "message_edit": Topic.MESSAGES,
    "postback": Topic.POSTBACKS,
}

# The records of the erasures topic (not webhook envelopes): a request from Meta's Data Deletion
# callback (an app-scoped user id, not yet mapped) and an erasure of one person.
ERASURE_REQUEST: Final = "erasure_request"
ERASURE: Final = "erasure"

# What a user writes or presses, which an agent may answer.
ANSWERABLE_TYPES: Final = frozenset({"message", "postback"})

# CloudEvents Kafka binding, binary mode: the envelope is the value, the attributes are headers.
CE_SPECVERSION: Final = b"1.0"
_CE_TYPE_PREFIX: Final = b"igw.v1."


def topic_of(type_: str) -> Topic:
    return TOPIC_OF.get(type_, Topic.EVENTS)


def ce_type(type_: str) -> bytes:
    """The ``ce_type`` header of an envelope (or a reply record) of ``type_``."""
    return _CE_TYPE_PREFIX + type_.encode()


class Header:
    """Record header names. ``ce_*`` are CloudEvents attributes; ``igw_*`` say why a record is a dead letter."""

    SPECVERSION: Final = "ce_specversion"
    ID: Final = "ce_id"
    TYPE: Final = "ce_type"
    SOURCE: Final = "ce_source"
    TIME: Final = "ce_time"
    SUBJECT: Final = "ce_subject"
    CONTENT_TYPE: Final = "content-type"
    REASON: Final = "igw_reason"
    DETAIL: Final = "igw_detail"
    PATHS: Final = "igw_paths"
    SIGNATURE: Final = "igw_signature"
    RECEIVED_AT: Final = "igw_received_at"
    FAILED_AT: Final = "igw_failed_at"
    CONSUMER: Final = "igw_consumer"
    EVENT_ID: Final = "igw_event_id"
    ORIGIN: Final = "igw_source"
    # On a dead letter that stands for a record too large to copy: the record's size in bytes.
    TRUNCATED: Final = "igw_truncated"
