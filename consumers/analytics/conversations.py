"""Per-conversation memory for new vs returning starts, first response time and takeovers.

Bounded: at most ``limit`` conversations, least recently active forgotten first. A forgotten
conversation that comes back counts as ``new`` again, which is what "new" can mean in bounded
memory; the limit is a setting (``IGW_ANALYTICS_MAX_CONVERSATIONS``).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum

__all__ = ["ConversationState", "Conversations", "Start"]


class Start(Enum):
    NEW = "new"
    RETURNING = "returning"


@dataclass(slots=True)
class ConversationState:
    last_inbound_ms: int
    session_start_ms: int
    answered: bool = False
    taken_over: bool = False


@dataclass
class Conversations:
    gap_ms: int
    limit: int
    _states: OrderedDict[str, ConversationState] = field(default_factory=OrderedDict, init=False)

    def __len__(self) -> int:
        return len(self._states)

    def get(self, conversation_id: str) -> ConversationState | None:
        return self._states.get(conversation_id)

    def inbound(self, conversation_id: str, event_time_ms: int) -> Start | None:
        """Record an inbound item at event time; say whether it starts a conversation session."""
        state = self._states.get(conversation_id)
        if state is None:
            self._states[conversation_id] = ConversationState(event_time_ms, event_time_ms)
            self._trim()
            return Start.NEW
        self._states.move_to_end(conversation_id)
        if event_time_ms - state.last_inbound_ms >= self.gap_ms:
            state.last_inbound_ms = event_time_ms
            state.session_start_ms = event_time_ms
            state.answered = False
            state.taken_over = False
            return Start.RETURNING
        # A late item (older than the newest) belongs to a session already counted.
        state.last_inbound_ms = max(state.last_inbound_ms, event_time_ms)
        return None

    def forget(self, conversation_id: str) -> bool:
        """Drop what is kept about one conversation (an erasure); True when something was kept."""
        return self._states.pop(conversation_id, None) is not None

    def _trim(self) -> None:
        while len(self._states) > self.limit:
            self._states.popitem(last=False)
