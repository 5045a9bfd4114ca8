"""The reply ledger, pauses and history in Redis: shared by every replica (consumers/agent_replies/store.py).

Each ledger operation is one Lua script, so that it is atomic and one round trip, on Redis's
clock (``TIME``), so that replicas agree on when a lease ends whatever their own clocks say. The
scripts go through a :class:`RedisBatcher`: the calls of concurrent replies share round trips.
Connection failures and timeouts become :class:`StoreUnavailable`, here and nowhere else; the
client itself never retries (a command cut off may have run: the reply state machine knows what
is safe to repeat).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from consumers.agent_replies.ledger import Entry, Step
from consumers.agent_replies.model import Turn
from consumers.agent_replies.store import (
    ECHO_CLOCK_SKEW_SECONDS,
    PENDING_TTL_SECONDS,
    Begin,
    BeginKind,
    Saved,
    SaveResult,
    StoreUnavailable,
    Witnessed,
)
from consumers.common.redisbatch import LuaScript, RedisBatcher

__all__ = ["RedisStore"]

# Every script reads Redis's clock: leases and intents are on one time line for all replicas.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: ledger, accounts zset, paused zset. ARGV: owner, lease ms, ttl ms, account, conversation.
_BEGIN = LuaScript(
    _NOW
    + """
local v = redis.call('HMGET', KEYS[1], 's', 'o', 'u', 't', 'e', 'd')
local step = v[1]
if step == 'done' then return {'done', now, v[6] or ''} end
if step and v[2] ~= ARGV[1] and tonumber(v[3] or '0') > now then
  return {'held', now, tonumber(v[3]) - now}
end
if (not step) or step == 'claimed' or step == 'chosen' then
  local secs = now / 1000
  local a = redis.call('ZSCORE', KEYS[2], ARGV[4])
  local c = redis.call('ZSCORE', KEYS[3], ARGV[5])
  local ap = (a and tonumber(a) > secs) and 1 or 0
  local cp = (c and tonumber(c) > secs) and 1 or 0
  if ap == 1 or cp == 1 then return {'paused', now, ap, cp} end
end
redis.call('HSET', KEYS[1], 'o', ARGV[1], 'u', now + tonumber(ARGV[2]))
if step then
  return {'resumed', now, step, v[6] or '', v[4] or '0', v[5] or ''}
end
redis.call('HSET', KEYS[1], 's', 'claimed')
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return {'claimed', now}
"""
)

# KEYS: ledger, pending index, ours:<mid> of parts sent. ARGV: owner, lease ms, ttl ms, step,
# part, data, member to add, index ttl ms. An echo already seen for this very part (field e)
# wins: the part is then not sent again ('echoed'); e is kept while the part stays the same.
_SAVE = LuaScript(
    _NOW
    + """
local v = redis.call('HMGET', KEYS[1], 's', 'o', 'u', 'p', 'e')
if v[1] == 'done' then return {'done', now} end
if v[1] and v[2] ~= ARGV[1] and tonumber(v[3] or '0') > now then return {'lost', now} end
local same = v[4] == ARGV[5]
if ARGV[4] == 'sending' and same and v[5] then
  redis.call('HSET', KEYS[1], 'o', ARGV[1], 'u', now + tonumber(ARGV[2]))
  return {'echoed', now, v[5]}
end
redis.call('HSET', KEYS[1], 's', ARGV[4], 'o', ARGV[1], 'u', now + tonumber(ARGV[2]), 'p', ARGV[5], 't', now,
  'd', ARGV[6])
if not same then redis.call('HDEL', KEYS[1], 'e') end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
for i = 3, #KEYS do redis.call('SET', KEYS[i], '1', 'PX', tonumber(ARGV[3])) end
if ARGV[7] ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[8]))
  redis.call('ZADD', KEYS[2], now, ARGV[7])
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[8]))
end
return {'ok', now}
"""
)

# KEYS: ledger, ours:<mid>... ARGV: ttl ms, data.
_FINISH = LuaScript(
    """
redis.call('HSET', KEYS[1], 's', 'done', 'd', ARGV[2])
redis.call('HDEL', KEYS[1], 'o', 'u', 'p', 't', 'e')
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
for i = 2, #KEYS do redis.call('SET', KEYS[i], '1', 'PX', tonumber(ARGV[1])) end
return 1
"""
)

# KEYS: ledger.
_PEEK = LuaScript(
    _NOW
    + """
local v = redis.call('HMGET', KEYS[1], 's', 'd', 't', 'e')
return {now, v[1] or '', v[2] or '', v[3] or '0', v[4] or ''}
"""
)

# KEYS: ledgers. ARGV: owner, lease ms. Returns the (1-based) positions of leases someone else holds.
_RENEW = LuaScript(
    _NOW
    + """
local lost = {}
for i, k in ipairs(KEYS) do
  local v = redis.call('HMGET', k, 's', 'o')
  if v[1] and v[1] ~= 'done' then
    if v[2] == ARGV[1] then
      redis.call('HSET', k, 'u', now + tonumber(ARGV[2]))
    else
      lost[#lost + 1] = i
    end
  end
end
return lost
"""
)

# KEYS: ledgers. ARGV: owner. The lease ends now; the entry stays, for whoever takes over.
_RELEASE = LuaScript(
    """
for _, k in ipairs(KEYS) do
  if redis.call('HGET', k, 'o') == ARGV[1] then redis.call('HSET', k, 'u', 0) end
end
return 1
"""
)

# KEYS: ours:<mid>, then the ledger (ARGV[1] 'meta': the echo names its event) or the pending
# index ('text': matched by fingerprint). ARGV: mode, mid, ttl ms, part or fingerprint, earliest
# intent time (ms), ledger key prefix. Returns 1 (ours; a part being sent and not yet confirmed
# is marked as arrived), 2 (ours, but its part had arrived already, or was sent another time:
# the user got it twice) or 0 (not ours). Index entries stay until they expire, so that a late
# echo is still known. The 'text' branch builds ledger keys from the index (a single Redis, not a
# cluster).
_WITNESS = LuaScript(
    """
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
local function mark(ledger, part)
  local v = redis.call('HMGET', ledger, 's', 'p', 'e')
  if not v[1] then return 0 end
  if v[1] ~= 'done' and v[2] == part and not v[3] then
    redis.call('HSET', ledger, 'e', ARGV[2])
    return 1
  end
  return 2
end
if ARGV[1] == 'meta' then
  local found = mark(KEYS[2], ARGV[4])
  redis.call('SET', KEYS[1], '1', 'PX', tonumber(ARGV[3]))
  if found == 0 then return 1 end
  return found
end
local members = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[5], '+inf')
local late = false
for _, m in ipairs(members) do
  local ev, part, fp = string.match(m, '^(.*)|(%d+)|(%x+)$')
  if fp == ARGV[4] then
    local found = mark(ARGV[6] .. ev, part)
    if found == 1 then
      redis.call('SET', KEYS[1], '1', 'PX', tonumber(ARGV[3]))
      return 1
    end
    if found == 2 then late = true end
  end
end
if late then
  redis.call('SET', KEYS[1], '1', 'PX', tonumber(ARGV[3]))
  return 2
end
return 0
"""
)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisStore:
    """The same state in Redis, shared by replicas. Keys start with ``prefix``.

    ``ledger:<event id>`` (a hash: step ``s``, lease owner ``o`` and end ``u`` in ms, part in
    flight ``p`` and since when ``t``, confirming echo ``e``, data ``d``), ``pending:<account>:<user>``
    (Instagram parts in flight by text fingerprint), ``ours:<mid>``, ``paused`` and ``accounts``
    (sorted sets scored by the time the pause ends, so counting them is cheap) and
    ``history:<conversation>`` (a capped list of JSON turns). Ledger calls go through a
    :class:`RedisBatcher`: concurrent replies share round trips.
    """

    def __init__(self, client: Any, prefix: str = "igw:agent:") -> None:
        from redis.exceptions import BusyLoadingError, ReadOnlyError
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        self._redis = client
        self._prefix = prefix
        self._batch = RedisBatcher(client)
        # What "Redis did not answer" looks like; anything else is a real error (a bug).
        self._unreachable: tuple[type[BaseException], ...] = (
            RedisConnectionError,
            RedisTimeoutError,
            BusyLoadingError,
            ReadOnlyError,
            OSError,
        )

    @classmethod
    def from_url(cls, url: str, prefix: str = "igw:agent:", *, timeout: float = 2.0) -> RedisStore:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No retries inside the client: a command cut off may have run, and the reply state
        # machine, not the client, knows what is safe to repeat (docs/agent.md). A timeout keeps
        # a frozen Redis from freezing the agent.
        client = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )
        return cls(client, prefix)

    def _key(self, *parts: str) -> str:
        return self._prefix + ":".join(parts)

    async def _eval(self, script: LuaScript, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self._batch.evalsha(script, keys, args)
        except self._unreachable as exc:
            raise StoreUnavailable(type(exc).__name__) from exc

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return await getattr(self._redis, method)(*args, **kwargs)
        except self._unreachable as exc:
            raise StoreUnavailable(type(exc).__name__) from exc

    async def begin(
        self, event_id: str, owner: str, *, lease: float, ttl: float, account_id: str, conversation_id: str
    ) -> Begin:
        reply = await self._eval(
            _BEGIN,
            [self._key("ledger", event_id), self._key("accounts"), self._key("paused")],
            [owner, _ms(lease), _ms(ttl), account_id, conversation_id],
        )
        kind, now = _text(reply[0]), int(reply[1]) / 1000.0
        if kind == "claimed":
            return Begin(BeginKind.CLAIMED, now)
        if kind == "done":
            return Begin(BeginKind.DONE, now, Entry.load(Step.DONE, reply[2]))
        if kind == "held":
            return Begin(BeginKind.HELD, now, retry_after=int(reply[2]) / 1000.0)
        if kind == "paused":
            return Begin(BeginKind.PAUSED, now, account_paused=bool(reply[2]), conversation_paused=bool(reply[3]))
        entry = Entry.load(_text(reply[2]), reply[3], float(_text(reply[4])), _text(reply[5]) or None)
        return Begin(BeginKind.RESUMED, now, entry)

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
        ledger = self._key("ledger", event_id)
        keys = [ledger, self._key("pending", *index) if index is not None else ledger]
        keys.extend(self._key("ours", mid) for mid in ours)
        reply = await self._eval(
            _SAVE,
            keys,
            [
                owner,
                _ms(lease),
                _ms(ttl),
                str(entry.step),
                entry.cursor,
                entry.data(),
                add if index is not None and add else "",
                _ms(PENDING_TTL_SECONDS),
            ],
        )
        result = SaveResult(_text(reply[0]))
        return Saved(result, int(reply[1]) / 1000.0, _text(reply[2]) if result is SaveResult.ECHOED else None)

    async def finish(self, event_id: str, entry: Entry, *, ttl: float) -> None:
        keys = [self._key("ledger", event_id), *(self._key("ours", mid) for mid in entry.mids)]
        await self._eval(_FINISH, keys, [_ms(ttl), entry.data()])

    async def peek(self, event_id: str) -> tuple[Entry | None, float]:
        reply = await self._eval(_PEEK, [self._key("ledger", event_id)], [])
        now = int(reply[0]) / 1000.0
        step = _text(reply[1])
        if not step:
            return None, now
        return Entry.load(step, reply[2], float(_text(reply[3])), _text(reply[4]) or None), now

    async def renew(self, owner: str, event_ids: list[str], lease: float) -> set[str]:
        if not event_ids:
            return set()
        reply = await self._eval(_RENEW, [self._key("ledger", e) for e in event_ids], [owner, _ms(lease)])
        return {event_ids[int(position) - 1] for position in reply}

    async def release(self, owner: str, event_ids: list[str]) -> None:
        if event_ids:
            await self._eval(_RELEASE, [self._key("ledger", e) for e in event_ids], [owner])

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
        ours = self._key("ours", mid)
        if token is not None:
            keys = [ours, self._key("ledger", token[0])]
            args: list[Any] = ["meta", mid, _ms(ttl), token[1], 0, ""]
        else:
            keys = [ours, self._key("pending", account_id, user_id)]
            since = int((timestamp - ECHO_CLOCK_SKEW_SECONDS) * 1000)
            args = ["text", mid, _ms(ttl), fingerprint or "-", since, self._key("ledger", "")]
        found = int(await self._eval(_WITNESS, keys, args))
        return (Witnessed.NOT_OURS, Witnessed.OURS, Witnessed.LATE)[found]

    async def _pause(self, table: str, member: str, until: float) -> None:
        # GT: a shorter pause never shortens a longer one already set.
        await self._call("zadd", self._key(table), {member: until}, gt=True)

    async def _paused_until(self, table: str, member: str) -> float | None:
        score = await self._call("zscore", self._key(table), member)
        return float(score) if score is not None and float(score) > time.time() else None

    async def _count(self, table: str) -> int:
        now = time.time()
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zremrangebyscore(self._key(table), "-inf", now)
                pipe.zcard(self._key(table))
                _, count = await pipe.execute()
        except self._unreachable as exc:
            raise StoreUnavailable(type(exc).__name__) from exc
        return int(count)

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
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(key, *(orjson.dumps({"role": t.role, "text": t.text}) for t in turns))
                pipe.ltrim(key, -keep, -1)
                pipe.pexpire(key, int(ttl * 1000))
                await pipe.execute()
        except self._unreachable as exc:
            raise StoreUnavailable(type(exc).__name__) from exc

    async def forget(self, conversation_id: str) -> None:
        await self._call("delete", self._key("history", conversation_id))
        await self._call("zrem", self._key("paused"), conversation_id)

    async def history(self, conversation_id: str, limit: int) -> list[Turn]:
        if limit <= 0:
            return []
        items = await self._call("lrange", self._key("history", conversation_id), -limit, -1)
        turns = []
        for item in items:
            data = orjson.loads(item)
            text = str(data.get("text", ""))
            turns.append(Turn("assistant", text) if data.get("role") == "assistant" else Turn("user", text))
        return turns

    async def ping(self) -> bool:
        try:
            return bool(await self._call("ping"))
        except StoreUnavailable:
            return False

    async def close(self) -> None:
        await self._batch.close()
        await self._redis.aclose()
