"""Whether the agent answers a message reconcile recovered (docs/reconcile.md). Pure: no I/O.

A recovered envelope carries ``recovered: {"source", "at", "answered_at"}`` (docs/events.md).
``answered_at`` is the time of the account's first message after this one in the history Meta
showed reconcile (a person in the app, or a reply the agent sent to a later message): the
conversation moved on, and an answer now would come out of turn. Otherwise the message is
answered like any other: once (the ledger holds its id, which is the webhook's id) and only
within the reply window, counted from the message's own time.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

__all__ = ["RecoveredVerdict", "judge"]


class RecoveredVerdict(StrEnum):
    NOT_RECOVERED = "not_recovered"  # a webhook's event: the usual rules apply
    ANSWER = "answer"
    ALREADY_ANSWERED = "already_answered"  # the account wrote in the conversation after it
    WINDOW_CLOSED = "window_closed"  # older than the reply window


def judge(envelope: Mapping[str, Any], timestamp_ms: int, now: float, window_seconds: float) -> RecoveredVerdict:
    """The verdict for one envelope; ``now`` in seconds."""
    recovered = envelope.get("recovered")
    if not isinstance(recovered, Mapping):
        return RecoveredVerdict.NOT_RECOVERED
    answered_at = recovered.get("answered_at")
    if isinstance(answered_at, int | float) and not isinstance(answered_at, bool):
        return RecoveredVerdict.ALREADY_ANSWERED
    if now * 1000 - timestamp_ms > window_seconds * 1000:
        return RecoveredVerdict.WINDOW_CLOSED
    return RecoveredVerdict.ANSWER
