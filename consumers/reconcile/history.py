"""Meta's Conversations API answers, read into plain values. Pure: no I/O.

A conversation list page is ``{"data": [{"id", "updated_time", "messages": {"data": [...]}}],
"paging": {"cursors": {"after"}, "next"}}``; a message is ``{"id", "created_time", "from": {"id"},
"to": {"data": [{"id"}]}, "message", "attachments": {"data": [...]}, "story", ...}``, newest first.
Anything unreadable in one item skips that item, never the page.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ApiMessage",
    "ConversationPage",
    "ConversationRef",
    "graph_time_ms",
    "parse_conversation_page",
    "parse_message",
    "parse_messages",
]


def graph_time_ms(value: Any) -> int | None:
    """``2022-07-12T19:11:07+0000`` (or a Unix time) as milliseconds; None when unreadable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value)
        return int(seconds if seconds > 100_000_000_000 else seconds * 1000)
    if not isinstance(value, str) or not value:
        return None
    if value.isdigit():
        return graph_time_ms(int(value))
    text = value.strip()
    # Python before 3.11 reads "+0000" only with strptime; fromisoformat wants "+00:00".
    if len(text) > 5 and text[-5] in "+-" and text[-4:].isdigit():
        text = f"{text[:-2]}:{text[-2:]}"
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class ApiMessage:
    """One message as the Conversations API details it; ``attachments`` already in the webhook's shape."""

    id: str
    created_ms: int
    from_id: str | None
    to_ids: tuple[str, ...]
    text: str | None = None
    attachments: tuple[dict[str, Any], ...] = ()
    is_unsupported: bool = False
    reply_to: dict[str, Any] | None = None
    detailed: bool = True  # False: Meta gave only id and time (beyond the 20 most recent)


@dataclass(frozen=True, slots=True)
class ConversationRef:
    id: str
    updated_ms: int | None
    participant_ids: tuple[str, ...] = ()
    # None: the listing did not carry messages (no field expansion); else newest first.
    messages: tuple[ApiMessage, ...] | None = None


@dataclass(frozen=True, slots=True)
class ConversationPage:
    conversations: tuple[ConversationRef, ...]
    after: str | None  # the cursor of the next page; None on the last page
    skipped: int = 0  # items that could not be read
    problems: tuple[str, ...] = field(default=(), compare=False)


def _party_id(party: Any) -> str | None:
    if isinstance(party, dict):
        value = party.get("id")
        if isinstance(value, str) and value:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    return None


def _attachment(item: Any) -> dict[str, Any] | None:
    """The Conversations API's attachment as the webhook's ``{"type", "payload": {"url"}}``."""
    if not isinstance(item, dict):
        return None
    for key, kind in (("image_data", "image"), ("video_data", "video")):
        data = item.get(key)
        if isinstance(data, dict):
            return {"type": kind, "payload": {"url": data.get("url")}}
    mime = str(item.get("mime_type") or "")
    url = item.get("file_url") or item.get("url")
    if mime.startswith("audio/"):
        return {"type": "audio", "payload": {"url": url}}
    if mime.startswith("image/"):
        return {"type": "image", "payload": {"url": url}}
    if mime.startswith("video/"):
        return {"type": "video", "payload": {"url": url}}
    return {"type": "file", "payload": {"url": url}}


def parse_message(data: Any) -> ApiMessage | None:
    """One message object; None when it has no id or no readable time."""
    if not isinstance(data, dict):
        return None
    message_id = data.get("id")
    created = graph_time_ms(data.get("created_time"))
    if not isinstance(message_id, str) or not message_id or created is None:
        return None
    to = data.get("to")
    to_items = to.get("data") if isinstance(to, dict) else None
    to_ids = tuple(i for i in (_party_id(p) for p in (to_items if isinstance(to_items, list) else ())) if i)
    raw_attachments = data.get("attachments")
    attachment_items = raw_attachments.get("data") if isinstance(raw_attachments, dict) else raw_attachments
    attachments = (
        [a for a in (_attachment(i) for i in attachment_items or ()) if a is not None]
        if isinstance(attachment_items, list)
        else []
    )
    story = data.get("story")
    if isinstance(story, dict):
        for kind in ("mention", "reply_to"):
            detail = story.get(kind)
            if isinstance(detail, dict):
                name = "story_mention" if kind == "mention" else "story"
                attachments.append({"type": name, "payload": {"url": detail.get("link")}})
    text = data.get("message")
    reply_to = data.get("reply_to")
    detailed = any(key in data for key in ("from", "to", "message", "attachments", "story"))
    return ApiMessage(
        id=message_id,
        created_ms=created,
        from_id=_party_id(data.get("from")),
        to_ids=to_ids,
        text=text if isinstance(text, str) and text else None,
        attachments=tuple(attachments),
        is_unsupported=bool(data.get("is_unsupported", False)),
        reply_to=reply_to if isinstance(reply_to, dict) else None,
        detailed=detailed,
    )


def parse_messages(edge: Any) -> tuple[ApiMessage, ...]:
    """The ``messages`` edge (``{"data": [...]}``), newest first, unreadable items left out."""
    items = edge.get("data") if isinstance(edge, dict) else None
    if not isinstance(items, list):
        return ()
    return tuple(m for m in (parse_message(item) for item in items) if m is not None)


def parse_conversation_page(body: Any) -> ConversationPage:
    """A page of ``GET /{account}/conversations``."""
    items = body.get("data") if isinstance(body, dict) else None
    if not isinstance(items, list):
        return ConversationPage((), None, problems=("the answer has no data list",))
    conversations = []
    skipped = 0
    for item in items:
        conversation_id = item.get("id") if isinstance(item, dict) else None
        if not isinstance(conversation_id, str) or not conversation_id:
            skipped += 1
            continue
        participants = item.get("participants")
        party_items = participants.get("data") if isinstance(participants, dict) else None
        participant_ids = tuple(
            i for i in (_party_id(p) for p in (party_items if isinstance(party_items, list) else ())) if i
        )
        messages = parse_messages(item["messages"]) if "messages" in item else None
        conversations.append(
            ConversationRef(conversation_id, graph_time_ms(item.get("updated_time")), participant_ids, messages)
        )
    paging = body.get("paging") if isinstance(body, dict) else None
    after = None
    if isinstance(paging, dict) and paging.get("next"):
        cursors = paging.get("cursors")
        cursor = cursors.get("after") if isinstance(cursors, dict) else None
        after = cursor if isinstance(cursor, str) and cursor else None
    return ConversationPage(tuple(conversations), after, skipped)
