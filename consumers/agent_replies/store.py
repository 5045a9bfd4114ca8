"""The idempotency ledger, pause state and conversation history, in Redis or in process.

Ledger protocol, per inbound event id:

1. :meth:`Store.claim` atomically takes a lease (Redis ``SET NX PX``). Exactly one worker wins;
   the others see either ``DONE`` (answered already: skip) or ``HELD`` (someone is on it: try
   again once the lease may have run out).
2. After Meta accepted the reply, :meth:`Store.complete` replaces the lease with ``done`` and the
   Meta message ids, kept for ``ledger_ttl``. A final failure completes it too (nothing to retry).
3. A retriable failure :meth:`Store.release`\\ s the lease so the retry can claim it again.

A worker that dies between 1 and 2 leaves a lease that expires after ``lease`` seconds; the event
is then answered by whoever replays it. If it died after Meta accepted the send but before 2, that
replay is a second reply: the one duplicate window left (docs/agent.md).

The in-process store keeps the same state in dictionaries: right for one process on one machine,
lost on restart (offsets committed after the work, so a restart only replays unfinished work).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import orjson

from consumers.agent_replies.model import Turn

__all__ = ["Claim", "ClaimState", "MemoryStore", "RedisStore", "Store"]


class ClaimState(StrEnum):
    CLAIMED = "claimed"  # this worker holds the lease: go ahead
    DONE = "done"  # answered (or decided for good) already
    HELD = "held"  # another worker holds the lease


@dataclass(frozen=True, slots=True)
class Claim:
    state: ClaimState
    message_ids: tuple[str, ...] = ()
    # For HELD: seconds until the other worker's lease runs out.
    retry_after: float = 0.0


class Store(Protocol):
    async def claim(self, event_id: str, owner: str, lease: float) -> Claim: ...
    async def complete(self, event_id: str, outcome: str, message_ids: tuple[str, ...], ttl: float) -> None: ...
    async def release(self, event_id: str, owner: str) -> None: ...
    async def remember_sent(self, message_ids: tuple[str, ...], ttl: float) -> None: ...
    async def is_ours(self, message_id: str) -> bool: ...
    async def pauses(self, account_id: str, conversation_id: str) -> tuple[float | None, float | None]: ...
    async def pause_conversation(self, conversation_id: str, until: float) -> None: ...
    async def conversation_paused_until(self, conversation_id: str) -> float | None: ...
    async def paused_conversations(self) -> int: ...
    async def pause_account(self, account_id: str, until: float) -> None: ...
    async def account_paused_until(self, account_id: str) -> float | None: ...
    async def paused_accounts(self) -> int: ...
    async def append_history(self, conversation_id: str, turns: tuple[Turn, ...], keep: int, ttl: float) -> None: ...
    async def history(self, conversation_id: str, limit: int) -> list[Turn]: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...


def _done_value(outcome: str, message_ids: tuple[str, ...]) -> bytes:
    return b"done:" + orjson.dumps({"outcome": outcome, "message_ids": list(message_ids)})


def _parse_done(value: bytes) -> tuple[str, ...]:
    try:
        data = orjson.loads(value[5:])
        return tuple(str(mid) for mid in data.get("message_ids", ()))
    except (orjson.JSONDecodeError, AttributeError):
        return ()


class MemoryStore:
    """Everything in dictionaries with expiry times (wall clock, so pauses match event timestamps)."""

    def __init__(self, clock: Any = time.time) -> None:
        self._clock = clock
        self._ledger: dict[str, tuple[bytes, float]] = {}
        self._ours: dict[str, float] = {}
        self._paused: dict[str, float] = {}
        self._accounts: dict[str, float] = {}
        self._history: dict[str, tuple[deque[Turn], float]] = {}
        self._ops = 0

    def _sweep(self) -> None:
        # Expire lazily, now and then, so a long-running process does not grow without bound.
        self._ops += 1
        if self._ops % 1000:
            return
        now = self._clock()
        for table in (self._ours, self._paused, self._accounts):
            for key in [k for k, until in table.items() if until <= now]:
                del table[key]
        for key in [k for k, (_, until) in self._ledger.items() if until <= now]:
            del self._ledger[key]
        for key in [k for k, (_, until) in self._history.items() if until <= now]:
            del self._history[key]

    async def claim(self, event_id: str, owner: str, lease: float) -> Claim:
        self._sweep()
        now = self._clock()
        current = self._ledger.get(event_id)
        if current is not None and current[1] > now:
            value, until = current
            if value.startswith(b"done:"):
                return Claim(ClaimState.DONE, _parse_done(value))
            if value != owner.encode():
                return Claim(ClaimState.HELD, retry_after=max(0.0, until - now))
        self._ledger[event_id] = (owner.encode(), now + lease)
        return Claim(ClaimState.CLAIMED)

    async def complete(self, event_id: str, outcome: str, message_ids: tuple[str, ...], ttl: float) -> None:
        self._ledger[event_id] = (_done_value(outcome, message_ids), self._clock() + ttl)

    async def release(self, event_id: str, owner: str) -> None:
        current = self._ledger.get(event_id)
        if current is not None and current[0] == owner.encode():
            del self._ledger[event_id]

    async def remember_sent(self, message_ids: tuple[str, ...], ttl: float) -> None:
        until = self._clock() + ttl
        for mid in message_ids:
            self._ours[mid] = until

    async def is_ours(self, message_id: str) -> bool:
        until = self._ours.get(message_id)
        return until is not None and until > self._clock()

    async def pauses(self, account_id: str, conversation_id: str) -> tuple[float | None, float | None]:
        """When the account's pause and the conversation's pause end (None: not paused)."""
        return await self.account_paused_until(account_id), await self.conversation_paused_until(conversation_id)

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

    async def history(self, conversation_id: str, limit: int) -> list[Turn]:
        entry = self._history.get(conversation_id)
        if entry is None or entry[1] <= self._clock() or limit <= 0:
            return []
        return list(entry[0])[-limit:]

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None


# Delete the lease only while it is still ours: it may have run out and been taken by another worker.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisStore:
    """The same state in Redis, shared by replicas. Keys start with ``prefix``.

    ``ledger:<event id>`` (lease or done record), ``ours:<mid>``, ``paused`` and ``accounts``
    (sorted sets scored by the time the pause ends, so counting them is cheap) and
    ``history:<conversation>`` (a capped list of JSON turns).
    """

    def __init__(self, client: Any, prefix: str = "igw:agent:") -> None:
        self._redis = client
        self._prefix = prefix
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(cls, url: str, prefix: str = "igw:agent:") -> RedisStore:
        import redis.asyncio as aioredis

        return cls(aioredis.Redis.from_url(url), prefix)

    def _key(self, *parts: str) -> str:
        return self._prefix + ":".join(parts)

    async def claim(self, event_id: str, owner: str, lease: float) -> Claim:
        key = self._key("ledger", event_id)
        lease_ms = max(1, int(lease * 1000))
        if await self._redis.set(key, owner, nx=True, px=lease_ms):
            return Claim(ClaimState.CLAIMED)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            value, pttl = await pipe.execute()
        if value is None:  # the lease ran out between the two calls: try once more
            if await self._redis.set(key, owner, nx=True, px=lease_ms):
                return Claim(ClaimState.CLAIMED)
            return Claim(ClaimState.HELD, retry_after=0.05)
        if value.startswith(b"done:"):
            return Claim(ClaimState.DONE, _parse_done(value))
        if value == owner.encode():
            await self._redis.pexpire(key, lease_ms)
            return Claim(ClaimState.CLAIMED)
        return Claim(ClaimState.HELD, retry_after=max(0.0, pttl / 1000 if pttl and pttl > 0 else 0.05))

    async def complete(self, event_id: str, outcome: str, message_ids: tuple[str, ...], ttl: float) -> None:
        await self._redis.set(self._key("ledger", event_id), _done_value(outcome, message_ids), px=int(ttl * 1000))

    async def release(self, event_id: str, owner: str) -> None:
        await self._release(keys=[self._key("ledger", event_id)], args=[owner])

    async def remember_sent(self, message_ids: tuple[str, ...], ttl: float) -> None:
        if not message_ids:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for mid in message_ids:
                pipe.set(self._key("ours", mid), b"1", px=int(ttl * 1000))
            await pipe.execute()

    async def is_ours(self, message_id: str) -> bool:
        return bool(await self._redis.exists(self._key("ours", message_id)))

    async def _pause(self, table: str, member: str, until: float) -> None:
        # GT: a shorter pause never shortens a longer one already set.
        await self._redis.zadd(self._key(table), {member: until}, gt=True)

    async def _paused_until(self, table: str, member: str) -> float | None:
        score = await self._redis.zscore(self._key(table), member)
        return float(score) if score is not None and float(score) > time.time() else None

    async def _count(self, table: str) -> int:
        now = time.time()
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(self._key(table), "-inf", now)
            pipe.zcard(self._key(table))
            _, count = await pipe.execute()
        return int(count)

    async def pauses(self, account_id: str, conversation_id: str) -> tuple[float | None, float | None]:
        # Both in one round trip: this runs for every inbound event.
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zscore(self._key("accounts"), account_id)
            pipe.zscore(self._key("paused"), conversation_id)
            account, conversation = await pipe.execute()
        now = time.time()
        return (
            float(account) if account is not None and float(account) > now else None,
            float(conversation) if conversation is not None and float(conversation) > now else None,
        )

    async def pause_conversation(self, conversation_id: str, until: float) -> None:
        await self._pause("paused", conversation_id, until)

    async def conversation_paused_until(self, conversation_id: str) -> float | None:
        return await self._paused_until("paused", conversation_id)

    async def paused_conversations(self) -> int:
        return await self._count("paused")

    async def pause_account(self, account_id: str, until: float) -> None:
        await self._pause("accounts", account_id, until)

    async def account_paused_until(self, account_id: str) -> float | None:
        return await self._paused_until("accounts", account_id)

    async def paused_accounts(self) -> int:
        return await self._count("accounts")

    async def append_history(self, conversation_id: str, turns: tuple[Turn, ...], keep: int, ttl: float) -> None:
        if keep <= 0 or not turns:
            return
        key = self._key("history", conversation_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, *(orjson.dumps({"role": t.role, "text": t.text}) for t in turns))
            pipe.ltrim(key, -keep, -1)
            pipe.pexpire(key, int(ttl * 1000))
            await pipe.execute()

    async def history(self, conversation_id: str, limit: int) -> list[Turn]:
        if limit <= 0:
            return []
        items = await self._redis.lrange(self._key("history", conversation_id), -limit, -1)
        turns = []
        for item in items:
            data = orjson.loads(item)
            text = str(data.get("text", ""))
            turns.append(Turn("assistant", text) if data.get("role") == "assistant" else Turn("user", text))
        return turns

    async def ping(self) -> bool:
        return bool(await self._redis.ping())

    async def close(self) -> None:
        await self._redis.aclose()
