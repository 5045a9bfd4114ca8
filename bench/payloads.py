"""Signed webhook bodies as Meta sends them: compact JSON, non-ASCII as ``\\uXXXX``, ``/`` as ``\\/``.

Each body knows how many events (``messaging``/``changes`` items) it carries, so the harness can
turn acknowledged requests into acknowledged events and check them against Kafka.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

ACCOUNT_ID = "17841400000000000"
USER_ID = "1234567890123456"
BASE_TIME_MS = 1764000000000
BATCH_ITEMS = 1000  # Meta's documented maximum per delivery

# An Instagram message id is long base64; a fixed one keeps the one-message body byte-identical.
_MID = (
    "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDAwMDAwMDAwMDAwOjM0MDI4MjM2Njg0MTcxMDMwMTI0NDI1OTU5"
    "NzQ0NzEzOTAxMjM0NTY6NzQ2MjY5NjAxMDI0MjQ4OTU2MzkyNjAzNTI0NzQ0MDAwMDAwMDAwMA"
)


@dataclass(frozen=True, slots=True)
class SignedBody:
    name: str
    body: bytes
    signature: str  # the X-Hub-Signature-256 header value
    events: int


def sign(body: bytes, secret: str) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of the raw bytes, as Meta computes it."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def meta_json(obj: Any) -> bytes:
    """Serialize the way Meta does: escaped unicode and escaped slashes, no spaces."""
    text = json.dumps(obj, ensure_ascii=True, separators=(",", ":"))
    return text.replace("/", "\\/").encode("ascii")


def signed(name: str, obj: dict[str, Any], secret: str) -> SignedBody:
    body = meta_json(obj)
    return SignedBody(name=name, body=body, signature=sign(body, secret), events=count_events(obj))


def count_events(obj: dict[str, Any]) -> int:
    """Items the gateway turns into one record each (messaging, standby, changes, or a bare field/value)."""
    total = 0
    for entry in obj.get("entry", []):
        items = sum(len(entry.get(key, [])) for key in ("messaging", "standby", "changes"))
        total += items or (1 if "field" in entry else 0)
    return total


def _envelope(obj_type: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": obj_type, "entry": entries}


def _entry(items: list[dict[str, Any]], account: str = ACCOUNT_ID, key: str = "messaging") -> dict[str, Any]:
    return {"time": BASE_TIME_MS + 123, "id": account, key: items}


def dm_item(n: int = 0, *, text: str | None = None, sender: str = USER_ID, account: str = ACCOUNT_ID) -> dict[str, Any]:
    return {
        "sender": {"id": sender},
        "recipient": {"id": account},
        "timestamp": BASE_TIME_MS + n,
        "message": {
            "mid": _MID if n == 0 else f"{_MID[:-12]}{n:012d}",
            "text": text
            if text is not None
            else "Hallo! Habt ihr am Samstag geöffnet? Ich würde gern mit zwei Freundinnen vorbeikommen 😊 "
            "Gibt es noch Plätze für 19:30? Danke — https://example.com/menu",
        },
    }


def one_message(secret: str) -> list[SignedBody]:
    """The common case: one Instagram DM (about 600 bytes, with escaped unicode and slashes)."""
    return [signed("dm", _envelope("instagram", [_entry([dm_item()])]), secret)]


def batch(secret: str, items: int = BATCH_ITEMS) -> list[SignedBody]:
    """Meta's largest delivery: ``items`` DMs spread over 10 entries (accounts) and 100 users."""
    per_entry = max(1, items // 10)
    entries = []
    n = 0
    for e in range(10):
        account = f"1784140000000{e:04d}"
        chunk = []
        for _ in range(min(per_entry, items - n)):
            chunk.append(
                dm_item(
                    n, text=f"Nachricht {n}: wann öffnet ihr? 😊", sender=f"12345678901{n % 100:05d}", account=account
                )
            )
            n += 1
        if chunk:
            entries.append(_entry(chunk, account))
    return [signed(f"batch{items}", _envelope("instagram", entries), secret)]


def largest(secret: str, limit: int) -> SignedBody:
    """As many DMs as fit in ``limit`` bytes (entries of 100, 1000 conversations): the largest body accepted."""
    item_bytes = len(meta_json(dm_item(1))) + 1
    count = limit // item_bytes
    while True:
        entries = []
        for start in range(0, count, 100):
            items = [dm_item(n, sender=f"12345678901{n % 1000:05d}") for n in range(start, min(start + 100, count))]
            entries.append(_entry(items))
        body = signed(f"largest{count}", _envelope("instagram", entries), secret)
        if len(body.body) <= limit:
            return body
        count = count * limit // len(body.body) - 1


def mixed(secret: str) -> list[SignedBody]:
    """A realistic stream, one event per body: DMs, an image, a story reply, a postback, reactions, reads, a comment."""
    account, user = ACCOUNT_ID, USER_ID
    base = {"sender": {"id": user}, "recipient": {"id": account}, "timestamp": BASE_TIME_MS}
    bodies: list[tuple[str, dict[str, Any]]] = [
        ("dm", _envelope("instagram", [_entry([dm_item()])])),
        ("dm_short", _envelope("instagram", [_entry([dm_item(7, text="Preis? 💸")])])),
        (
            "image",
            _envelope(
                "instagram",
                [
                    _entry(
                        [
                            {
                                **base,
                                "message": {
                                    "mid": _MID[:-4] + "img1",
                                    "attachments": [
                                        {
                                            "type": "image",
                                            "payload": {
                                                "url": "https://lookaside.example.com/ig_messaging_cdn/?asset_id=1790&signature=AbC"
                                            },
                                        }
                                    ],
                                },
                            }
                        ]
                    )
                ],
            ),
        ),
        (
            "story_reply",
            _envelope(
                "instagram",
                [
                    _entry(
                        [
                            {
                                **base,
                                "message": {
                                    "mid": _MID[:-4] + "sty1",
                                    "text": "Wie schön! 😍",
                                    "reply_to": {
                                        "story": {"url": "https://lookaside.example.com/story/1", "id": "1790000000001"}
                                    },
                                },
                            }
                        ]
                    )
                ],
            ),
        ),
        (
            "postback",
            _envelope(
                "instagram",
                [
                    _entry(
                        [
                            {
                                **base,
                                "postback": {
                                    "mid": _MID[:-4] + "pb01",
                                    "title": "Tisch reservieren",
                                    "payload": "BOOK_TABLE",
                                },
                            }
                        ]
                    )
                ],
            ),
        ),
        (
            "reaction",
            _envelope(
                "instagram",
                [
                    _entry(
                        [
                            {
                                **base,
                                "reaction": {
                                    "mid": _MID,
                                    "action": "react",
                                    "reaction": "love",
                                    "emoji": "\u2764\ufe0f",
                                },
                            }
                        ]
                    )
                ],
            ),
        ),
        ("read", _envelope("instagram", [_entry([{**base, "read": {"mid": _MID}}])])),
        (
            "comment",
            _envelope(
                "instagram",
                [
                    _entry(
                        [
                            {
                                "field": "comments",
                                "value": {
                                    "id": "17900000000000001",
                                    "from": {"id": "17890000000000001", "username": "jörg.müller"},
                                    "text": "Preis? 🙏",
                                    "media": {"id": "17880000000000001", "media_product_type": "FEED"},
                                },
                            }
                        ],
                        key="changes",
                    )
                ],
            ),
        ),
        (
            "messenger_dm",
            _envelope(
                "page",
                [
                    _entry(
                        [
                            dm_item(
                                9,
                                text="Hi, do you deliver to Zürich?",
                                sender="6500000000000001",
                                account="106000000000001",
                            )
                        ],
                        "106000000000001",
                    )
                ],
            ),
        ),
    ]
    return [signed(name, obj, secret) for name, obj in bodies]
