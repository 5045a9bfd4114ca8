"""Realistic Meta webhook bodies for ``igw simulate``, tests and benchmarks. Pure: no I/O.

Bodies are serialized the way Meta sends them (``\\uXXXX`` for non-ASCII, ``\\/`` for ``/``, no
spaces), so a gateway that re-serializes before checking the signature fails against them just
as it would against Meta.
"""

from __future__ import annotations

import base64
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

__all__ = [
    "DASHBOARD_TEST_USER_ID",
    "DEFAULT_ACCOUNT_IDS",
    "DEFAULT_HUMAN_ECHO_SHARE",
    "DEV_APP_ID",
    "EVENT_KINDS",
    "MIX_WEIGHTS",
    "PERSON_APP_ID",
    "Platform",
    "SimulatedBody",
    "TrafficGenerator",
    "meta_dumps",
    "topic_for",
]

Platform = Literal["instagram", "messenger"]

# Event kinds the generator knows, and the igw topic (suffix) each one lands in (docs/events.md).
_TOPIC_OF_KIND: dict[str, str] = {
    "message": "messages",
    "quick_reply": "messages",
    "attachment": "messages",
    "story_mention": "messages",
    "echo": "messages",
    "edit": "messages",
    "postback": "postbacks",
    "reaction": "events",
    "read": "events",
    "referral": "events",
    "comment": "events",
    "delivery": "events",
}
EVENT_KINDS: tuple[str, ...] = tuple(_TOPIC_OF_KIND)

# Roughly what a busy account sees: mostly messages, then echoes of the business's own replies.
MIX_WEIGHTS: Mapping[Platform, Mapping[str, int]] = {
    "instagram": {
        "message": 48,
        "echo": 12,
        "read": 8,
        "attachment": 7,
        "reaction": 6,
        "postback": 6,
        "quick_reply": 5,
        "comment": 4,
        "story_mention": 2,
        "edit": 1,
        "referral": 1,
    },
    "messenger": {
        "message": 45,
        "echo": 12,
        "delivery": 10,
        "read": 8,
        "attachment": 6,
        "postback": 7,
        "quick_reply": 5,
        "reaction": 4,
        "comment": 2,
        "referral": 1,
    },
}

# The same accounts as `igw dev` and its Graph API emulator (igw_tools/devenv.py).
DEFAULT_ACCOUNT_IDS: Mapping[Platform, str] = {"instagram": "17841400000000000", "messenger": "106000000000001"}

# Echoes carry the id of the app that sent the message. Most are of the agent's own replies (this
# app: `igw dev` gives its agent IGW_APP_ID=DEV_APP_ID); a few were typed by a person in the
# Instagram app or the Page inbox (another app's id), which pauses the agent in that conversation.
DEV_APP_ID: Final = "1517000000000001"
PERSON_APP_ID: Final = "1217000000000002"
DEFAULT_HUMAN_ECHO_SHARE: Final = 0.05
_USER_ID_BASE: Mapping[Platform, int] = {"instagram": 1_234_567_890_120_000, "messenger": 6_500_000_000_000_000}
# The user of Meta's App Dashboard test for Instagram's `messages` field; its account is "0", its
# recipient "23245" (docs/events.md, "Meta's dashboard test").
DASHBOARD_TEST_USER_ID = "12334"

_TEXTS = (
    "Hi! Are you open on Saturday?",
    "How much is the blue one?",
    "Can I change my order #4821?",
    "Quanto custa? \U0001f60a",
    "Ich m\u00f6chte meine Bestellung stornieren",
    "\u00bfTienen env\u00edo a Sevilla?",
    "Is this still in stock? https://shop.example/p/123",
    "\u3053\u3093\u306b\u3061\u306f\u3001\u4e88\u7d04\u3067\u304d\u307e\u3059\u304b\uff1f",
    "thanks \u2764\ufe0f",
    "\u00e4\u00f6\u00e5 ok",
)
_REPLIES = ("Thanks for your message! We'll get back to you shortly.", "Yes, we are open 10:00\u201318:00.")
_QUICK_REPLIES = (("Size M", "SIZE_M"), ("Talk to a person", "HUMAN"), ("Track my order", "TRACK_ORDER"))
_POSTBACKS = (("Book a visit", "BOOK"), ("Get started", "GET_STARTED"), ("See prices", "PRICES"))
_COMMENTS = ("Price?", "Love this \U0001f60d", "DM me the details please", "Do you ship to Canada?")
_REACTIONS = (("love", "\u2764\ufe0f"), ("like", "\U0001f44d"), ("haha", "\U0001f606"), ("wow", "\U0001f62e"))


def meta_dumps(obj: object) -> bytes:
    """JSON as Meta writes it: compact, ``\\uXXXX`` escapes for non-ASCII, ``/`` escaped as ``\\/``."""
    # A '/' can only occur inside strings in JSON text, so a plain replace is exact.
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).replace("/", "\\/").encode("ascii")


def topic_for(kind: str) -> str:
    """The igw topic suffix (``messages``, ``postbacks``, ``events``) an event kind lands in."""
    return _TOPIC_OF_KIND[kind]


@dataclass(frozen=True, slots=True)
class SimulatedBody:
    """One request body and the event kinds of its items, in order."""

    body: bytes
    kinds: tuple[str, ...]

    def topic_counts(self) -> Counter[str]:
        """How many records each igw topic should receive for this body."""
        return Counter(topic_for(kind) for kind in self.kinds)


class TrafficGenerator:
    """Builds webhook bodies for one business account talking with ``conversations`` users."""

    def __init__(
        self,
        *,
        platform: Platform = "instagram",
        account_id: str | None = None,
        conversations: int = 100,
        seed: int | None = None,
        clock_ms: Callable[[], int] | None = None,
        app_id: str = DEV_APP_ID,
        human_echo_share: float = DEFAULT_HUMAN_ECHO_SHARE,
    ) -> None:
        if conversations < 1:
            raise ValueError("conversations must be at least 1")
        if not 0.0 <= human_echo_share <= 1.0:
            raise ValueError("the share of echoes typed by a person must be between 0 and 1")
        self.app_id = app_id
        self.human_echo_share = human_echo_share
        self.platform: Platform = platform
        self.account_id = account_id or DEFAULT_ACCOUNT_IDS[platform]
        self.conversations = conversations
        self._rng = random.Random(seed)  # noqa: S311 - test traffic, not cryptography
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._serial = 0
        weights = MIX_WEIGHTS[platform]
        self._mix_kinds = tuple(weights)
        self._mix_weights = tuple(weights.values())

    # -- bodies ----------------------------------------------------------------------------------

    def next(self, kind: str | None = None, *, batch: int = 1) -> SimulatedBody:
        """A body of ``batch`` items of ``kind``, or of a realistic mix when ``kind`` is None."""
        if batch < 1:
            raise ValueError("batch must be at least 1")
        if kind is not None and kind not in _TOPIC_OF_KIND:
            raise ValueError(f"unknown event kind {kind!r}; known: {', '.join(EVENT_KINDS)}")
        kinds = (
            [kind] * batch
            if kind is not None
            else self._rng.choices(self._mix_kinds, weights=self._mix_weights, k=batch)
        )
        return self.body(kinds)

    def body(self, kinds: Sequence[str]) -> SimulatedBody:
        """One body holding one item per kind: messaging items in one entry, changes in another."""
        now = self._clock_ms()
        messaging: list[dict[str, Any]] = []
        changes: list[dict[str, Any]] = []
        for kind in kinds:
            if kind == "comment":
                changes.append(self._comment())
            else:
                messaging.append(self._messaging_item(kind, now))
        entries: list[dict[str, Any]] = []
        if messaging:
            entries.append({"id": self.account_id, "time": now, "messaging": messaging})
        if changes:
            # Meta's `changes` examples give entry.time in seconds.
            entries.append({"id": self.account_id, "time": now // 1000, "changes": changes})
        obj = {"object": "instagram" if self.platform == "instagram" else "page", "entry": entries}
        ordered = tuple(k for k in kinds if k != "comment") + tuple(k for k in kinds if k == "comment")
        return SimulatedBody(body=meta_dumps(obj), kinds=ordered)

    def dashboard_test(self) -> SimulatedBody:
        """The body the App Dashboard's "Test" button sends for Instagram's ``messages`` field: one
        ``changes`` item whose value is a DM, its timestamp a string of seconds. As Meta sends it but
        for two fields: the generator's account stands for Meta's "0" and "23245", so the agent of the
        local stack has a token to answer with, and the time is now, not Meta's fixed 1527459824
        (May 2018), so the 24-hour window is open."""
        now = self._clock_ms()
        value = {
            "sender": {"id": DASHBOARD_TEST_USER_ID},
            "recipient": {"id": self.account_id},
            "timestamp": str(now // 1000),
            "message": {"mid": "random_mid", "text": "random_text"},
        }
        entry = {"id": self.account_id, "time": now, "changes": [{"field": "messages", "value": value}]}
        return SimulatedBody(body=meta_dumps({"object": "instagram", "entry": [entry]}), kinds=("message",))

    # -- items -----------------------------------------------------------------------------------

    def user_id(self, index: int | None = None) -> str:
        """The id of user ``index`` (0 .. conversations-1), or of a random one."""
        if index is None:
            index = self._rng.randrange(self.conversations)
        return str(_USER_ID_BASE[self.platform] + index)

    def _mid(self) -> str:
        self._serial += 1
        raw = f"{self._serial}:{self._rng.getrandbits(64):016x}".encode()
        if self.platform == "instagram":
            # Instagram mids are url-safe base64 strings starting with "aWdf" ("ig_").
            return base64.urlsafe_b64encode(b"ig_item:1:IGMessageId:" + raw).decode().rstrip("=")
        return "m_" + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def _cdn_url(self) -> str:
        asset = self._rng.getrandbits(56)
        if self.platform == "instagram":
            return f"https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id={asset}&signature=AbCdEf{asset:x}"
        return f"https://scontent.xx.fbcdn.net/v/t1.15752-9/{asset}_n.jpg?_nc_cat=1&oh=00_{asset:x}"

    def _messaging_item(self, kind: str, now: int) -> dict[str, Any]:
        user = self.user_id()
        rng = self._rng
        item: dict[str, Any] = {"sender": {"id": user}, "recipient": {"id": self.account_id}, "timestamp": now}
        if kind == "message":
            item["message"] = {"mid": self._mid(), "text": rng.choice(_TEXTS)}
        elif kind == "quick_reply":
            title, payload = rng.choice(_QUICK_REPLIES)
            item["message"] = {"mid": self._mid(), "text": title, "quick_reply": {"payload": payload}}
        elif kind == "attachment":
            media = rng.choice(("image", "image", "video", "audio"))
            item["message"] = {
                "mid": self._mid(),
                "attachments": [{"type": media, "payload": {"url": self._cdn_url()}}],
            }
        elif kind == "story_mention":
            item["message"] = {
                "mid": self._mid(),
                "attachments": [{"type": "story_mention", "payload": {"url": self._cdn_url()}}],
            }
        elif kind == "echo":
            # Sent by the business: sender and recipient swap. Meta gives the sending app's id as a number.
            item["sender"], item["recipient"] = {"id": self.account_id}, {"id": user}
            by_person = rng.random() < self.human_echo_share
            item["message"] = {
                "mid": self._mid(),
                "text": rng.choice(_REPLIES),
                "is_echo": True,
                "app_id": int(PERSON_APP_ID if by_person else self.app_id),
            }
        elif kind == "edit":
            item["message_edit"] = {"mid": self._mid(), "text": rng.choice(_TEXTS), "num_edit": rng.randint(1, 3)}
        elif kind == "postback":
            title, payload = rng.choice(_POSTBACKS)
            item["postback"] = {"mid": self._mid(), "title": title, "payload": payload}
        elif kind == "reaction":
            if rng.random() < 0.1:
                item["reaction"] = {"mid": self._mid(), "action": "unreact"}
            else:
                name, emoji = rng.choice(_REACTIONS)
                item["reaction"] = {"mid": self._mid(), "action": "react", "reaction": name, "emoji": emoji}
        elif kind == "read":
            item["read"] = {"mid": self._mid()} if self.platform == "instagram" else {"watermark": now - 1000}
        elif kind == "delivery":
            item["delivery"] = {"mids": [self._mid()], "watermark": now - 500}
        elif kind == "referral":
            item["referral"] = {"ref": "summer_sale", "source": "SHORTLINK", "type": "OPEN_THREAD"}
        else:  # pragma: no cover - guarded by next()
            raise ValueError(f"unknown event kind {kind!r}")
        return item

    def _comment(self) -> dict[str, Any]:
        user = self.user_id()
        rng = self._rng
        comment_id = str(17_865_000_000_000_000 + rng.getrandbits(40))
        media_id = str(17_895_000_000_000_000 + rng.getrandbits(20))
        if self.platform == "instagram":
            return {
                "field": "comments",
                "value": {
                    "from": {"id": user, "username": f"user{user[-4:]}"},
                    "media": {"id": media_id, "media_product_type": "FEED"},
                    "id": comment_id,
                    "text": rng.choice(_COMMENTS),
                },
            }
        return {
            "field": "feed",
            "value": {
                "item": "comment",
                "verb": "add",
                "comment_id": f"{media_id}_{comment_id}",
                "post_id": f"{self.account_id}_{media_id}",
                "from": {"id": user, "name": "Alex Doe"},
                "message": rng.choice(_COMMENTS),
                "created_time": self._clock_ms() // 1000,
            },
        }
