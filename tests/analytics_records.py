"""Builders for the records the analytics consumer reads: envelope v1 events and reply records."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

ACCOUNT = "17841400000000000"
T0 = 1_764_000_000_000  # 2025-11-24T16:00:00Z, in ms


def event_id(*parts: object) -> str:
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=16).hexdigest()


def envelope(
    event_type: str,
    *,
    user: str | None = "1234567890123456",
    account: str = ACCOUNT,
    timestamp: int = T0,
    eid: str | None = None,
    **objects: Any,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "v": 1,
        "id": eid or event_id(event_type, account, user, timestamp, orjson.dumps(objects).decode()),
        "type": event_type,
        "platform": "instagram",
        "account_id": account,
        "timestamp": timestamp,
        "received_at": timestamp + 100,
        "standby": False,
        "raw": {},
    }
    if user is not None:
        record["user_id"] = user
        record["conversation_id"] = f"instagram:{account}:{user}"
    record.update(objects)
    return record


def message(text: str | None = "hi", *, attachments: list[dict[str, Any]] | None = None, **kw: Any) -> dict[str, Any]:
    quick_reply = kw.pop("quick_reply", None)
    app_id = kw.pop("app_id", None)
    mid = kw.pop("mid", None)
    event_type = kw.pop("event_type", "message")
    body = {
        "mid": mid or event_id("mid", text, kw.get("timestamp"), kw.get("user")),
        "text": text,
        "attachments": attachments or [],
        "quick_reply_payload": quick_reply,
        "reply_to": None,
        "referral": None,
        "is_unsupported": False,
        "app_id": app_id,
        "metadata": None,
    }
    return envelope(event_type, message=body, **kw)


def postback(payload: str, **kw: Any) -> dict[str, Any]:
    body = {"mid": event_id("pb", payload, kw), "title": payload, "payload": payload}
    return envelope("postback", postback=body, **kw)


def reply(
    outcome: str = "sent",
    *,
    user: str = "1234567890123456",
    account: str = ACCOUNT,
    timestamp: int = T0,
    latency_ms: int = 1500,
    message_ids: list[str] | None = None,
    eid: str | None = None,
) -> dict[str, Any]:
    return {
        "v": 1,
        "id": eid or event_id("reply", account, user, timestamp, outcome),
        "type": "reply",
        "outcome": outcome,
        "reason": "ok" if outcome == "sent" else "paused",
        "account_id": account,
        "user_id": user,
        "conversation_id": f"instagram:{account}:{user}",
        "in_reply_to": [event_id("in", timestamp)],
        "message_ids": message_ids or [event_id("out", timestamp)],
        "latency_ms": latency_ms,
        "agent": "echo",
        "timestamp": timestamp,
        "platform": "instagram",
    }


def encode(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record)
