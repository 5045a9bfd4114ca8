"""Envelope records for the consumer benchmarks, made the way the gateway makes them.

Each body is a signed webhook delivery as Meta writes it (``bench/payloads.py``); the signature is
checked and the body goes through the gateway's own ``normalize`` and ``build_records``, so the
consumers read exactly what the gateway would have published.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import orjson

from bench import payloads
from gateway.signature import SignatureVerdict, SignatureVerifier
from igw.normalize import Topic, normalize
from igw.records import OutRecord, build_records

__all__ = ["AGENT_TEXTS", "Record", "agent_conversations", "analytics_mix"]

# Questions the clinic sample (consumers/agent_replies/samples/clinic.yaml) answers without a
# handover: a handover would pause the conversation and leave its next messages unanswered.
AGENT_TEXTS = (
    "Hi! What are your opening hours on Saturday?",
    "How much does a visit cost? Do you take my insurance?",
    "Where are you located, is there parking?",
    "Hello 😊",
    "Thank you!",
)
BENCH_ACCOUNT = "17841400000000777"
# Meta delivers up to 1000 items per POST; deliveries of this size keep generation quick.
ITEMS_PER_BODY = 100


# The gateway's own record type; ``topic`` holds the short name (``messages``, ...) here.
Record = OutRecord


def _records(bodies: Iterator[dict[str, Any]], secret: str) -> list[Record]:
    verifier = SignatureVerifier([secret])
    short = {topic: topic.value for topic in Topic}
    out: list[Record] = []
    for document in bodies:
        signed = payloads.signed("bench", document, secret)
        if verifier.verify(signed.body, signed.signature) is not SignatureVerdict.OK:
            raise AssertionError("a bench body failed the gateway's signature check")
        normalized = normalize(signed.body, received_at=int(time.time() * 1000))
        if normalized.dead_letter is not None or len(normalized.events) != signed.events:
            raise AssertionError(f"a bench body did not normalize cleanly: {normalized.dead_letter}")
        out.extend(build_records(normalized, short, signed.body, 0, signed.signature))
    return out


class _Item(NamedTuple):
    obj: str  # "instagram" or "page"
    list_key: str  # "messaging" or "changes"
    account: str
    item: dict[str, Any]


def _deliveries(items: list[_Item], per_body: int = ITEMS_PER_BODY) -> Iterator[dict[str, Any]]:
    """Items grouped into deliveries of up to ``per_body`` items, keeping their order."""
    now = int(time.time() * 1000)
    for start in range(0, len(items), per_body):
        # One delivery holds one object (instagram or page): split where it changes.
        for obj, same_object in itertools.groupby(items[start : start + per_body], key=lambda i: i.obj):
            entries = [
                {"time": now, "id": account, list_key: [i.item for i in group]}
                for (account, list_key), group in itertools.groupby(same_object, key=lambda i: (i.account, i.list_key))
            ]
            yield {"object": obj, "entry": entries}


def agent_conversations(conversations: int, messages_each: int, secret: str) -> list[Record]:
    """``conversations`` users writing ``messages_each`` DMs each to one account, timestamped now.

    Messages of different conversations interleave, as they arrive; within a conversation their
    timestamps (and so their order in Kafka) follow the order they were written.
    """
    now = int(time.time() * 1000)
    items: list[_Item] = []
    n = 0
    for round_no in range(messages_each):
        for user_no in range(conversations):
            user = f"9{user_no:015d}"
            items.append(
                _Item(
                    "instagram",
                    "messaging",
                    BENCH_ACCOUNT,
                    {
                        "sender": {"id": user},
                        "recipient": {"id": BENCH_ACCOUNT},
                        "timestamp": now + round_no,
                        "message": {"mid": f"aWdfbench{n:024d}", "text": AGENT_TEXTS[n % len(AGENT_TEXTS)]},
                    },
                )
            )
            n += 1
    return _records(_deliveries(items), secret)


def recipients(records: list[Record]) -> dict[str, int]:
    """Messages per user among ``records``: the replies each user should get."""
    counts: dict[str, int] = {}
    for record in records:
        user = orjson.loads(record.value).get("user_id")
        counts[user] = counts.get(user, 0) + 1
    return counts


# (weight, kind): roughly what a busy Instagram business account receives.
_MIX = (
    (40, "dm"),
    (18, "read"),
    (8, "reaction"),
    (7, "postback"),
    (6, "echo"),
    (5, "image"),
    (4, "quick_reply"),
    (3, "story_reply"),
    (3, "comment"),
    (3, "messenger_dm"),
    (2, "unreact"),
    (1, "referral"),
)


def _mix_item(kind: str, n: int, rng: random.Random, now: int) -> _Item:
    account = f"178414000000{rng.randrange(10):05d}"
    user = f"8{rng.randrange(20_000):015d}"
    mid = f"aWdfmix{n:026d}"
    base: dict[str, Any] = {"sender": {"id": user}, "recipient": {"id": account}, "timestamp": now + n}
    if kind == "dm":
        return _Item(
            "instagram", "messaging", account, {**base, "message": {"mid": mid, "text": f"Hallo! Frage Nr. {n} 😊"}}
        )
    if kind == "read":
        return _Item("instagram", "messaging", account, {**base, "read": {"mid": mid}})
    if kind in ("reaction", "unreact"):
        reaction = {"mid": mid, "action": "react", "reaction": "love", "emoji": "\u2764\ufe0f"}
        if kind == "unreact":
            reaction = {"mid": mid, "action": "unreact"}
        return _Item("instagram", "messaging", account, {**base, "reaction": reaction})
    if kind == "postback":
        payload = ("BOOK", "HOURS", "PRICES", "ADDRESS", "HUMAN")[n % 5]
        return _Item(
            "instagram",
            "messaging",
            account,
            {**base, "postback": {"mid": mid, "title": payload.title(), "payload": payload}},
        )
    if kind == "echo":
        echo = {**base, "sender": {"id": account}, "recipient": {"id": user}}
        return _Item(
            "instagram", "messaging", account, {**echo, "message": {"mid": mid, "text": "Danke!", "is_echo": True}}
        )
    if kind == "image":
        url = f"https://lookaside.example.com/ig_messaging_cdn/?asset_id={n}&signature=AbC"
        attachment = {"type": "image", "payload": {"url": url}}
        return _Item("instagram", "messaging", account, {**base, "message": {"mid": mid, "attachments": [attachment]}})
    if kind == "quick_reply":
        message = {"mid": mid, "text": "Book a visit", "quick_reply": {"payload": "BOOK"}}
        return _Item("instagram", "messaging", account, {**base, "message": message})
    if kind == "story_reply":
        story = {"story": {"url": "https://lookaside.example.com/story/1", "id": f"1790{n:013d}"}}
        return _Item(
            "instagram",
            "messaging",
            account,
            {**base, "message": {"mid": mid, "text": "Wie schön! 😍", "reply_to": story}},
        )
    if kind == "comment":
        value = {
            "id": f"179{n:014d}",
            "from": {"id": user, "username": f"user{n}"},
            "text": "Preis? 🙏",
            "media": {"id": "17880000000000001", "media_product_type": "FEED"},
        }
        return _Item("instagram", "changes", account, {"field": "comments", "value": value})
    if kind == "messenger_dm":
        page = f"10600000000{rng.randrange(3):04d}"
        item = {"sender": {"id": user}, "recipient": {"id": page}, "timestamp": now + n}
        return _Item(
            "page",
            "messaging",
            page,
            {**item, "message": {"mid": f"m_mix{n:026d}", "text": "Do you deliver to Zürich?"}},
        )
    referral = {"ref": "summer_campaign", "source": "ADS", "type": "OPEN_THREAD"}
    return _Item("instagram", "messaging", account, {**base, "referral": referral})


def analytics_mix(events: int, secret: str, seed: int = 7) -> list[Record]:
    """``events`` records of a realistic mix (DMs, reads, reactions, postbacks, echoes, comments, ...)."""
    rng = random.Random(seed)
    kinds = [kind for weight, kind in _MIX for _ in range(weight)]
    now = int(time.time() * 1000)
    items = [_mix_item(kinds[rng.randrange(len(kinds))], n, rng, now) for n in range(events)]
    return _records(_deliveries(items), secret)
