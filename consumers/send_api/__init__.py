"""Replies through Meta's Send API (both Instagram flavours and Messenger), and a local emulator of it."""

from consumers.send_api.client import SendApiClient, split_text
from consumers.send_api.errors import ErrorClass, SendError, classify
from consumers.send_api.model import AccountConfig, Flavour, OutboundMessage, QuickReply, SendResult
from consumers.send_api.settings import SendApiSettings

__all__ = [
    "AccountConfig",
    "ErrorClass",
    "Flavour",
    "OutboundMessage",
    "QuickReply",
    "SendApiClient",
    "SendApiSettings",
    "SendError",
    "SendResult",
    "classify",
    "split_text",
]
