"""A message read from the Conversations API as the envelope its webhook would have produced. Pure.

The message is written back into the webhook's shape (one ``messaging`` item) and run through the
gateway's own normalizer, :func:`webhook_event` being the one place that calls it: the type, the
event id, the topic and the key come out exactly as the webhook path gives them (the id of a
``message`` depends on its ``mid`` only: ``igw.normalize.event_id``, docs/events.md). The
envelope then gains ``recovered``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from consumers.reconcile.history import ApiMessage
from igw.normalize import Event, normalize_item

__all__ = [
    "RECOVERED_FIELD",
    "Candidate",
    "Source",
    "find_inbound",
    "recovered_event",
    "webhook_event",
    "webhook_item",
]

RECOVERED_FIELD: Final = "recovered"


class Source:
    """``recovered.source``: how reconcile came to the message."""

    CONVERSATIONS: Final = "conversations_api"  # a conversation's history showed a message Kafka lacked
    LOOKUP: Final = "message_lookup"  # a message_edit without sender or text, completed from the message


def webhook_event(platform: str, account_id: str, item: dict[str, Any], received_at: int) -> Event:
    """The event the gateway makes of one ``messaging`` item of ``account_id``.

    The single call into the normalizer (``igw.normalize.normalize_item``, whose id is the one
    rule of ``igw.normalize.event_id``): type, id, topic, key and envelope are the webhook's.
    """
    return normalize_item(platform, account_id, item, received_at)


def webhook_item(account_id: str, message: ApiMessage) -> dict[str, Any]:
    """The inbound ``messaging`` item Meta's webhook carries for ``message`` (an ``ApiMessage``)."""
    content: dict[str, Any] = {"mid": message.id}
    if message.text is not None:
        content["text"] = message.text
    if message.attachments:
        content["attachments"] = [dict(a) for a in message.attachments]
    if message.reply_to is not None:
        content["reply_to"] = message.reply_to
    if message.is_unsupported:
        content["is_unsupported"] = True
    return {
        "sender": {"id": message.from_id},
        "recipient": {"id": account_id},
        "timestamp": message.created_ms,
        "message": content,
    }


@dataclass(frozen=True, slots=True)
class Candidate:
    """An inbound message of the fetched history, and the first answer the account wrote after it."""

    message: ApiMessage
    answered_at: int | None


def find_inbound(account_id: str, messages: tuple[ApiMessage, ...], *, since_ms: int, until_ms: int) -> list[Candidate]:
    """Inbound messages written in [since_ms, until_ms], each with the account's first later message.

    ``messages`` come newest first, as Meta lists them. Order in the list, not ``created_time``
    (whole seconds), says what came after. Messages without details (beyond Meta's 20) are left out.
    """
    found: list[Candidate] = []
    answered_at: int | None = None
    for message in messages:
        if not message.detailed or message.from_id is None:
            continue
        if message.from_id == account_id:
            # Going back in time: this answer is the earliest one seen so far after what follows.
            answered_at = message.created_ms
            continue
        if since_ms <= message.created_ms <= until_ms:
            found.append(Candidate(message, answered_at))
    return found


def recovered_event(
    platform: str,
    account_id: str,
    candidate: Candidate,
    *,
    received_at: int,
    source: str = Source.CONVERSATIONS,
    replaces: str | None = None,
) -> Event | None:
    """The webhook's event for ``candidate``, its envelope marked ``recovered`` (docs/events.md)."""
    event = webhook_event(platform, account_id, webhook_item(account_id, candidate.message), received_at)
    if event.type != "message":
        return None
    recovered: dict[str, Any] = {"source": source, "at": received_at, "answered_at": candidate.answered_at}
    if replaces is not None:
        recovered["replaces"] = replaces
    envelope = {**event.envelope, RECOVERED_FIELD: recovered}
    return event._replace(envelope=envelope)
