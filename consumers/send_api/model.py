"""Values the Send API client works with: accounts, outbound messages and results."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from igw.config import Secret

__all__ = ["AccountConfig", "Flavour", "OutboundMessage", "QuickReply", "SendResult"]


class Flavour(StrEnum):
    """Which of Meta's APIs an account is reached through (docs/send-api.md)."""

    IG_IG = "ig_ig"  # Instagram API with Instagram Login: graph.instagram.com, Instagram user token
    IG_FB = "ig_fb"  # Instagram through the Messenger Platform: graph.facebook.com, Page token
    MESSENGER = "messenger"  # Facebook Page conversations: graph.facebook.com, Page token

    @property
    def uses_page_token(self) -> bool:
        return self is not Flavour.IG_IG


@dataclass(frozen=True, slots=True)
class AccountConfig:
    """One business account the client may send from. ``app_secret`` adds ``appsecret_proof`` on graph.facebook.com."""

    account_id: str
    flavour: Flavour
    token: Secret
    app_secret: Secret | None = None


@dataclass(frozen=True, slots=True)
class QuickReply:
    title: str
    payload: str


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """A reply to one user. Long text is split into several messages; quick replies go on the last."""

    recipient_id: str
    text: str | None = None
    quick_replies: tuple[QuickReply, ...] = ()
    messaging_type: str = "RESPONSE"
    tag: str | None = None
    # Messenger passes it back in the message's echo (up to 1000 characters); Meta documents no such
    # field for Instagram, so the client sends it on the Messenger flavour only.
    metadata: str | None = None


@dataclass(frozen=True, slots=True)
class SendResult:
    message_id: str
    recipient_id: str
    attempts: int
