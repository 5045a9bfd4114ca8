"""The reply ledger, pause state and conversation history: in Redis (shared) or in process.

The ledger holds one entry per inbound event id (consumers/agent_replies/ledger.py: its steps)
and, next to it, a **lease**: which worker moves the reply on, and until when. Leases are short
(``IGW_LEDGER_LEASE_SECONDS``) and renewed while the work is in hand, so a dead worker's events
are taken over within one lease. Every operation is one round trip (a Lua script in Redis, on
Redis's clock so that replicas agree on when a lease ends):

- :meth:`Store.begin`: done already? held by a live lease? paused (before anything was sent)?
  Otherwise take the lease: a fresh claim, or the entry to resume at its step.
- :meth:`Store.save`: move the entry on (answer chosen, a part in flight, a part sent), while
  no one else holds the lease. A part in flight on Instagram is also indexed by its text, so
  that its echo can be matched (:meth:`Store.witness`); the index keeps it for an hour. The ids
  of parts sent so far are remembered as ours.
- :meth:`Store.finish`: the outcome with Meta's message ids; those ids are remembered as ours.
- :meth:`Store.renew` / :meth:`Store.release`: many leases in one call.
- :meth:`Store.peek`: the entry as it is (has an echo confirmed the part in flight?).
- :meth:`Store.witness`: an echo of a message sent by the business account: ours (and which
  part of which reply it confirms), ours but late (its part was sent again meanwhile: the user
  got it twice), or not ours (a person answered from the app).

Redis being unreachable raises :class:`StoreUnavailable` from every operation; nothing is
retried here (the reply state machine decides what to do). The Redis store is in
consumers/agent_replies/redisstore.py; :class:`MemoryStore` keeps the same state in this process.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from consumers.agent_replies.ledger import Entry, Step
from consumers.agent_replies.model import Turn

__all__ = [
    "ECHO_CLOCK_SKEW_SECONDS",
    "PENDING_TTL_SECONDS",
    "Begin",
    "BeginKind",
    "MemoryStore",
    "SaveResult",
    "Saved",
    "Store",
    "StoreUnavailable",
    "Witnessed",
    "pending_member",
]

# Pending Instagram parts are matched to echoes for this long at most (then forgotten).
PENDING_TTL_SECONDS = 3600.0
# An echo's timestamp (Meta's clock) may precede the intent (ours) by this much and still match.
ECHO_CLOCK_SKEW_SECONDS = 60.0


class StoreUnavailable(Exception):
    """The store did not answer (connection refused or lost, timeout): nothing is known of the call."""


class BeginKind(StrEnum):
    CLAIMED = "claimed"  # a fresh lease: ask the agent
    RESUMED = "resumed"  # an entry to go on with, at its step (ours again, or a dead worker's)
    DONE = "done"  # answered (or decided for good) already
    HELD = "held"  # another worker's lease is live
    PAUSED = "paused"  # nothing sent yet and the account or the conversation is paused


@dataclass(frozen=True, slots=True)
class Begin:
    kind: BeginKind
    now: float  # the store's clock, seconds
    entry: Entry | None = None
    retry_after: float = 0.0
    account_paused: bool = False
    conversation_paused: bool = False


class Witnessed(StrEnum):
    NOT_OURS = "not_ours"  # a person (or another app) sent it
    OURS = "ours"  # the echo of a reply of ours; a part in flight is marked as arrived
    LATE = "late"  # ours, for a part already sent another time: it reached the user twice


class SaveResult(StrEnum):
    OK = "ok"
    LOST = "lost"  # another worker holds the lease now
    DONE = "done"  # the entry was finished meanwhile (by another worker)
    ECHOED = "echoed"  # the part about to be sent again is known sent: its echo arrived


@dataclass(frozen=True, slots=True)
class Saved:
    result: SaveResult
    now: float
    echoed: str | None = None


def pending_member(event_id: str, part: int, fingerprint: str) -> str:
    return f"{event_id}|{part}|{fingerprint}"


def _parse_member(member: str) -> tuple[str, int, str] | None:
    head, _, fingerprint = member.rpartition("|")
    event_id, _, part = head.rpartition("|")
    if not event_id or not part.isdigit():
        return None
    return event_id, int(part), fingerprint


class Store(Protocol):
    async def begin(
        self, event_id: str, owner: str, *, lease: float, ttl: float, account_id: str, conversation_id: str
    ) -> Begin: ...
    async def save(
        self,
        event_id: str,
        owner: str,
        entry: Entry,
        *,
        lease: float,
        ttl: float,
        index: tuple[str, str] | None = None,
        add: str | None = None,
        ours: tuple[str, ...] = (),
    ) -> Saved: ...
    async def finish(self, event_id: str, entry: Entry, *, ttl: float) -> None: ...
    async def peek(self, event_id: str) -> tuple[Entry | None, float]: ...
    async def renew(self, owner: str, event_ids: list[str], lease: float) -> set[str]: ...
    async def release(self, owner: str, event_ids: list[str]) -> None: ...
    async def witness(
        self,
        account_id: str,
        user_id: str,
        mid: str,
        *,
        token: tuple[str, int] | None,
        fingerprint: str | None,
        timestamp: float,
        ttl: float,
    ) -> Witnessed: ...
    async def pause_conversation(self, conversation_id: str, until: float) -> None: ...
    async def conversation_paused_until(self, conversation_id: str) -> float | None: ...
    async def paused_conversations(self) -> int: ...
    async def pause_account(self, account_id: str, until: float) -> None: ...
    async def account_paused_until(self, account_id: str) -> float | None: ...
    async def paused_accounts(self) -> int: ...
    async def append_history(self, conversation_id: str, turns: tuple[Turn, ...], keep: int, ttl: float) -> None: ...
    async def history(self, conversation_id: str, limit: int) -> list[Turn]: ...
    async def forget(self, conversation_id: str) -> None:
        """An erased person (docs/privacy.md): drop the conversation's history and pause. The ledger keeps
        only ids (event, Meta's message ids) and outcomes, which never-twice needs."""
        ...

    async def ping(self) -> bool: ...
    async def close(self) -> None: ...


def _compact(data: bytes) -> bytes:
    """A copy of exactly ``data``'s size: orjson's output keeps its whole buffer (4 KiB) allocated,
    which for hundreds of thousands of kept entries is hundreds of MiB."""
    return bytes(memoryview(data))


@dataclass(slots=True)
class _Record:
    """The in-process ledger entry, with the fields Redis keeps in a hash."""

    step: Step
    owner: str | None
    lease_until: float
    expires: float
    # Serialized as in Redis: bytes are not tracked by the garbage collector, and a busy process
    # keeps hundreds of thousands of these (a reply's objects cost more in collections).
    data: bytes = b""
    part: int = -1
    intent_at: float = 0.0
    echoed: str | None = None

    def entry(self) -> Entry:
        return Entry.load(self.step, self.data, self.intent_at * 1000, self.echoed)


class MemoryStore:
    """Everything in dictionaries with expiry times (wall clock, so pauses match event timestamps)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._ledger: dict[str, _Record] = {}
        self._pending: dict[tuple[str, str], dict[str, float]] = {}
        # The same entries in the order they were added, for cheap expiry.
        self._pending_order: deque[tuple[float, tuple[str, str], str]] = deque()
        self._ours: dict[str, float] = {}
        self._paused: dict[str, float] = {}
        self._accounts: dict[str, float] = {}
        self._history: dict[str, tuple[deque[Turn], float]] = {}
        self._ops = 0

    def _sweep(self, now: float) -> None:
        # Expire lazily, now and then, so a long-running process does not grow without bound.
        self._ops += 1
        if self._ops % 1000:
            return
        for table in (self._ours, self._paused, self._accounts):
            for key in [k for k, until in table.items() if until <= now]:
                del table[key]
        for key in [k for k, record in self._ledger.items() if record.expires <= now]:
            del self._ledger[key]
        for key in [k for k, (_, until) in self._history.items() if until <= now]:
            del self._history[key]
        order = self._pending_order
        while order and order[0][0] + PENDING_TTL_SECONDS <= now:
            at, index, member = order.popleft()
            members = self._pending.get(index)
            if members is not None and members.get(member) == at:
                del members[member]
                if not members:
                    del self._pending[index]

    def _record(self, event_id: str, now: float) -> _Record | None:
        record = self._ledger.get(event_id)
        if record is not None and record.expires <= now:
            del self._ledger[event_id]
            return None
        return record

    async def begin(
        self, event_id: str, owner: str, *, lease: float, ttl: float, account_id: str, conversation_id: str
    ) -> Begin:
        now = self._clock()
        self._sweep(now)
        record = self._record(event_id, now)
        if record is not None:
            if record.step is Step.DONE:
                return Begin(BeginKind.DONE, now, record.entry())
            if record.owner != owner and record.lease_until > now:
                return Begin(BeginKind.HELD, now, retry_after=record.lease_until - now)
        if record is None or record.step in (Step.CLAIMED, Step.CHOSEN):
            account = self._accounts.get(account_id, 0.0) > now
            conversation = self._paused.get(conversation_id, 0.0) > now
            if account or conversation:
                return Begin(BeginKind.PAUSED, now, account_paused=account, conversation_paused=conversation)
        if record is not None:
            record.owner, record.lease_until = owner, now + lease
            return Begin(BeginKind.RESUMED, now, record.entry())
        self._ledger[event_id] = _Record(Step.CLAIMED, owner, now + lease, now + ttl)
        return Begin(BeginKind.CLAIMED, now)

    async def save(
        self,
        event_id: str,
        owner: str,
        entry: Entry,
        *,
        lease: float,
        ttl: float,
        index: tuple[str, str] | None = None,
        add: str | None = None,
        ours: tuple[str, ...] = (),
    ) -> Saved:
        now = self._clock()
        record = self._record(event_id, now)
        if record is not None:
            if record.step is Step.DONE:
                return Saved(SaveResult.DONE, now)
            if record.owner != owner and record.lease_until > now:
                return Saved(SaveResult.LOST, now)
            same = record.part == entry.cursor
            if entry.step is Step.SENDING and same and record.echoed:
                record.owner, record.lease_until = owner, now + lease
                return Saved(SaveResult.ECHOED, now, record.echoed)
        echoed = record.echoed if record is not None and record.part == entry.cursor else None
        self._ledger[event_id] = _Record(
            entry.step, owner, now + lease, now + ttl, _compact(entry.data()), entry.cursor, now, echoed
        )
        for mid in ours:
            self._ours[mid] = now + ttl
        if index is not None and add:
            self._pending.setdefault(index, {})[add] = now
            self._pending_order.append((now, index, add))
        return Saved(SaveResult.OK, now)

    async def finish(self, event_id: str, entry: Entry, *, ttl: float) -> None:
        now = self._clock()
        self._ledger[event_id] = _Record(Step.DONE, None, 0.0, now + ttl, _compact(entry.data()))
        for mid in entry.mids:
            self._ours[mid] = now + ttl

    async def peek(self, event_id: str) -> tuple[Entry | None, float]:
        now = self._clock()
        record = self._record(event_id, now)
        return (record.entry() if record is not None else None), now

    async def renew(self, owner: str, event_ids: list[str], lease: float) -> set[str]:
        now = self._clock()
        lost: set[str] = set()
        for event_id in event_ids:
            record = self._record(event_id, now)
            if record is None or record.step is Step.DONE:
                continue
            if record.owner == owner:
                record.lease_until = now + lease
            else:
                lost.add(event_id)
        return lost

    async def release(self, owner: str, event_ids: list[str]) -> None:
        for event_id in event_ids:
            record = self._ledger.get(event_id)
            if record is not None and record.owner == owner:
                record.lease_until = 0.0

    async def witness(
        self,
        account_id: str,
        user_id: str,
        mid: str,
        *,
        token: tuple[str, int] | None,
        fingerprint: str | None,
        timestamp: float,
        ttl: float,
    ) -> Witnessed:
        now = self._clock()
        if self._ours.get(mid, 0.0) > now:
            return Witnessed.OURS

        def mark(event_id: str, part: int) -> Witnessed | None:
            record = self._record(event_id, now)
            if record is None:
                return None
            if record.step is not Step.DONE and record.part == part and record.echoed is None:
                record.echoed = mid
                return Witnessed.OURS
            return Witnessed.LATE

        if token is not None:
            self._ours[mid] = now + ttl
            return mark(*token) or Witnessed.OURS
        if fingerprint is None:
            return Witnessed.NOT_OURS
        since = timestamp - ECHO_CLOCK_SKEW_SECONDS
        late = False
        members = self._pending.get((account_id, user_id), {})
        for member, at in sorted(members.items(), key=lambda item: item[1]):
            parsed = _parse_member(member)
            if at < since or parsed is None or parsed[2] != fingerprint:
                continue
            found = mark(parsed[0], parsed[1])
            if found is Witnessed.OURS:
                self._ours[mid] = now + ttl
                return found
            late = late or found is Witnessed.LATE
        if late:
            self._ours[mid] = now + ttl
            return Witnessed.LATE
        return Witnessed.NOT_OURS

    async def pause_conversation(self, conversation_id: str, until: float) -> None:
        self._paused[conversation_id] = max(until, self._paused.get(conversation_id, 0.0))

    async def conversation_paused_until(self, conversation_id: str) -> float | None:
        until = self._paused.get(conversation_id)
        return until if until is not None and until > self._clock() else None

    async def paused_conversations(self) -> int:
        now = self._clock()
        return sum(1 for until in self._paused.values() if until > now)

    async def pause_account(self, account_id: str, until: float) -> None:
        self._accounts[account_id] = max(until, self._accounts.get(account_id, 0.0))

    async def account_paused_until(self, account_id: str) -> float | None:
        until = self._accounts.get(account_id)
        return until if until is not None and until > self._clock() else None

    async def paused_accounts(self) -> int:
        now = self._clock()
        return sum(1 for until in self._accounts.values() if until > now)

    async def append_history(self, conversation_id: str, turns: tuple[Turn, ...], keep: int, ttl: float) -> None:
        if keep <= 0:
            return
        entry = self._history.get(conversation_id)
        kept: deque[Turn] = entry[0] if entry is not None else deque(maxlen=keep)
        kept.extend(turns)
        self._history[conversation_id] = (kept, self._clock() + ttl)

    async def forget(self, conversation_id: str) -> None:
        self._history.pop(conversation_id, None)
        self._paused.pop(conversation_id, None)

    async def history(self, conversation_id: str, limit: int) -> list[Turn]:
        entry = self._history.get(conversation_id)
        if entry is None or entry[1] <= self._clock() or limit <= 0:
            return []
        return list(entry[0])[-limit:]

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None
