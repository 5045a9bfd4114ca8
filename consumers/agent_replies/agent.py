"""What an agent is, and how ``IGW_AGENT`` picks one.

An agent gets the inbound event and the conversation's recent turns and answers with an
:class:`AgentReply`: text with optional quick-reply buttons, nothing, or a handover to a person.
It raises :class:`AgentError` when it cannot answer now (the consumer retries later, bounded).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from consumers.agent_replies.model import AgentReply, InboundEvent, Turn

__all__ = ["Agent", "AgentError"]


class AgentError(Exception):
    """The agent could not answer this time (timeout, bad answer, service down). Retriable."""


class Agent(Protocol):
    """Anything that turns an inbound event into a reply."""

    name: str
    # True: the consumer keeps the conversation's last turns (IGW_AGENT_HISTORY_TURNS) and passes them.
    uses_history: bool

    async def reply(self, event: InboundEvent, history: Sequence[Turn]) -> AgentReply: ...

    async def close(self) -> None: ...
