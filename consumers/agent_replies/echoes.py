"""Meta's echoes, as this process sees them: which parts wait for theirs, which ids are ours.

Meta echoes every message an app sends (``is_echo``; Messenger's ``message_echoes`` field,
Instagram's ``messages`` field). How an echo is told to belong to a reply part:

- **Messenger**: the Send API's ``metadata`` comes back in the echo; igw puts a token there
  naming the event and the part (:func:`ledger.echo_token`). Exact.
- **Instagram** (both logins): Meta documents neither ``metadata`` nor ``app_id`` in the echo.
  It is matched by account, recipient and text: the oldest part being sent with that text.
  Two replies with the same text to the same user at the same time cannot be told apart.

The store keeps the same knowledge for other replicas and for after a restart
(:meth:`Store.witness`); this in-process part confirms a part the moment its echo is read here,
and keeps working while the store is unreachable or after it restarted empty.
"""

from __future__ import annotations

import contextlib
from collections import deque
from enum import StrEnum
from typing import Protocol

from consumers.agent_replies.ledger import echo_token, text_fingerprint
from consumers.agent_replies.model import InboundEvent
from consumers.agent_replies.store import pending_member

__all__ = ["LocalEchoes", "Seen", "Watching", "echo_key"]

# Message ids and echo keys kept in memory (they also live in the store).
LOCAL_MEMORY = 100_000


def echo_key(event: InboundEvent, part: int, text: str) -> tuple[str, str | None]:
    """How the echo of ``part`` of the reply to ``event`` will be known, and (Instagram) its store index entry."""
    if event.platform == "messenger":
        return echo_token(event.id, part), None
    fingerprint = text_fingerprint(text)
    return f"{event.account_id}|{event.user_id}|{fingerprint}", pending_member(event.id, part, fingerprint)


def key_of_echo(echo: InboundEvent, token: tuple[str, int] | None, fingerprint: str | None) -> str | None:
    if token is not None:
        return echo.metadata
    if fingerprint is None:
        return None
    return f"{echo.account_id}|{echo.user_id}|{fingerprint}"


class Watching(Protocol):
    """A reply waiting for the echo of the part it is sending (a :class:`processor.Job`)."""

    watch_key: str | None
    echoed: str | None


class Seen(StrEnum):
    WAITED_FOR = "waited_for"  # a part being sent here: it is marked as arrived
    OURS = "ours"  # an id Meta gave this process
    LATE = "late"  # the part was sent again for want of this echo: the user got it twice
    UNKNOWN = "unknown"  # not known here (the store may know)


class LocalEchoes:
    def __init__(self, capacity: int = LOCAL_MEMORY) -> None:
        self._capacity = capacity
        self._waiting: dict[str, deque[Watching]] = {}
        self._ours: dict[str, None] = {}
        self._resent: dict[str, None] = {}
        self._recorded: dict[str, None] = {}

    def _remember(self, table: dict[str, None], key: str) -> None:
        table[key] = None
        if len(table) > self._capacity:
            del table[next(iter(table))]

    def watch(self, job: Watching, key: str) -> None:
        """Expect the echo keyed ``key`` until the part is known sent; a new key forgets the old echo."""
        if job.watch_key == key:
            return
        self.unwatch(job)
        job.watch_key = key
        job.echoed = None
        self._waiting.setdefault(key, deque()).append(job)

    def unwatch(self, job: Watching) -> None:
        key = job.watch_key
        if key is None:
            return
        job.watch_key = None
        waiting = self._waiting.get(key)
        if waiting is not None:
            with contextlib.suppress(ValueError):
                waiting.remove(job)
            if not waiting:
                del self._waiting[key]

    def sent(self, mid: str) -> None:
        """Meta's id for a part sent from here (its answer, or its echo)."""
        self._remember(self._ours, mid)

    def resent(self, key: str) -> None:
        """The part keyed ``key`` is sent again: no echo came in time."""
        self._remember(self._resent, key)

    def recorded(self, mid: str) -> None:
        """The reply with this id is recorded done in the store: its echo needs no store call."""
        self._remember(self._recorded, mid)

    def is_recorded(self, mid: str) -> bool:
        return mid in self._recorded

    def seen(self, echo: InboundEvent, token: tuple[str, int] | None, fingerprint: str | None) -> Seen:
        """An echo read here: whose is it, as far as this process knows."""
        assert echo.mid is not None
        if echo.mid in self._ours:
            return Seen.OURS
        key = key_of_echo(echo, token, fingerprint)
        if key is None:
            return Seen.UNKNOWN
        waiting = self._waiting.get(key)
        if waiting:
            waiting[0].echoed = echo.mid
            self.sent(echo.mid)
            return Seen.WAITED_FOR
        if key in self._resent:
            self.sent(echo.mid)
            return Seen.LATE
        return Seen.UNKNOWN
