"""The values the agent consumer works with: inbound events read from envelopes, turns, replies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from igw.envelope import ANSWERABLE_TYPES

__all__ = ["ANSWERABLE_TYPES", "AgentReply", "BadEvent", "Button", "InboundEvent", "Turn", "parse_event"]


class BadEvent(ValueError):
    """A record that is not a usable envelope v1 (docs/events.md)."""


@dataclass(frozen=True, slots=True)
class Button:
    """A quick-reply button: what the user sees and the payload that comes back when pressed."""

    title: str
    payload: str


@dataclass(frozen=True, slots=True)
class AgentReply:
    """What an agent wants: text (with buttons), nothing (both empty), and/or a handover to a person."""

    text: str | None = None
    quick_replies: tuple[Button, ...] = ()
    handover: bool = False

    @property
    def is_empty(self) -> bool:
        return not self.text and not self.handover


@dataclass(frozen=True, slots=True)
class Turn:
    """One turn of a conversation's history, as chat models take it."""

    role: Literal["user", "assistant"]
    text: str


@dataclass(frozen=True, slots=True)
class InboundEvent:
    """The fields of an envelope the agent consumer needs; ``envelope`` keeps the whole record."""

    id: str
    type: str
    platform: str
    account_id: str
    user_id: str | None
    conversation_id: str | None
    timestamp_ms: int
    standby: bool = False
    mid: str | None = None
    text: str | None = None
    # A quick-reply button's payload (type message) or a postback button's payload.
    payload: str | None = None
    title: str | None = None
    app_id: str | None = None
    # Messenger echoes: the metadata the Send API was given (igw puts its reply's token there).
    metadata: str | None = None
    sender_id: str | None = None
    is_echo: bool = False
    envelope: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def answerable(self) -> bool:
        return self.type in ANSWERABLE_TYPES

    @property
    def user_text(self) -> str:
        """What the user said or pressed, for history and matching."""
        return self.text or self.title or self.payload or ""


def _opt_str(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str | int):
        return str(value)
    return None


def parse_event(value: bytes | None) -> InboundEvent:
    """Read one Kafka record value as an envelope v1; :class:`BadEvent` says why it cannot be."""
    if not value:
        raise BadEvent("empty record")
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise BadEvent(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadEvent("not a JSON object")
    if data.get("v") != 1:
        raise BadEvent(f"unsupported envelope version {data.get('v')!r}")
    event_id, event_type, account_id = data.get("id"), data.get("type"), data.get("account_id")
    if not isinstance(event_id, str) or not event_id:
        raise BadEvent("no id")
    if not isinstance(event_type, str) or not isinstance(account_id, str):
        raise BadEvent("no type or account_id")
    timestamp = data.get("timestamp")
    if not isinstance(timestamp, int) or isinstance(timestamp, bool):
        raise BadEvent("no integer timestamp")
    obj: dict[str, Any] = {}
    if event_type in {"message", "message_echo", "message_deleted"}:
        obj = data.get("message") or {}
    elif event_type == "postback":
        obj = data.get("postback") or {}
    elif event_type == "message_edit":
        obj = data.get("message_edit") or {}
    if not isinstance(obj, dict):
        raise BadEvent(f"{event_type} object is not an object")
    raw = data.get("raw")
    raw_message = raw.get("message") if isinstance(raw, dict) else None
    is_echo = isinstance(raw_message, dict) and bool(raw_message.get("is_echo"))
    payload = obj.get("quick_reply_payload") if event_type == "message" else obj.get("payload")
    return InboundEvent(
        id=event_id,
        type=event_type,
        platform=str(data.get("platform") or ""),
        account_id=account_id,
        user_id=_opt_str(data.get("user_id")),
        conversation_id=_opt_str(data.get("conversation_id")),
        timestamp_ms=timestamp,
        standby=bool(data.get("standby")),
        mid=_opt_str(obj.get("mid")),
        text=obj.get("text") if isinstance(obj.get("text"), str) else None,
        payload=_opt_str(payload),
        title=obj.get("title") if isinstance(obj.get("title"), str) else None,
        app_id=_opt_str(obj.get("app_id")),
        metadata=obj.get("metadata") if isinstance(obj.get("metadata"), str) else None,
        sender_id=_opt_str(data.get("sender_id")),
        is_echo=event_type == "message_echo" or is_echo,
        envelope=data,
    )
