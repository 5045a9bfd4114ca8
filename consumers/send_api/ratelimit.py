"""Per-account send rate limits: Meta's published rates, its usage header and its rate-limit errors.

Two limiters share one interface: :class:`LocalRateLimiter`, a token bucket per account in this
process, and :class:`RedisRateLimiter`, the same bucket kept in Redis by an atomic Lua script so
that every replica draws from one budget per account. Both can also *block* an account for a
while: when Meta's ``X-Business-Use-Case-Usage`` header says access returns in N minutes, or
when Meta answered with a rate-limit error.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from consumers.common.redisbatch import LuaScript, RedisBatcher

__all__ = [
    "BusinessUsage",
    "LocalRateLimiter",
    "RateLimitExceeded",
    "RateLimiter",
    "RedisRateLimiter",
    "parse_business_usage",
]

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class RateLimitExceeded(Exception):
    """The account's budget would not allow a call within the caller's deadline."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"rate limited for another {wait:.3f}s")
        self.wait = wait


class RateLimiter(Protocol):
    async def acquire(self, key: str, rate: float, *, max_wait: float) -> float:
        """Take one call from ``key``'s budget, waiting as needed; returns the seconds waited.

        Raises :class:`RateLimitExceeded` when that would take longer than ``max_wait``.
        """
        ...

    async def block(self, key: str, seconds: float) -> None:
        """Let no call through for ``key`` during the next ``seconds`` (never shortens a block)."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class BusinessUsage:
    """What Meta's ``X-Business-Use-Case-Usage`` header says, reduced to what the client acts on."""

    regain_seconds: float
    max_usage_percent: float


def parse_business_usage(header: str | None) -> BusinessUsage | None:
    """Parse ``{"<business id>": [{"call_count": 28, "estimated_time_to_regain_access": 0, ...}]}``.

    ``estimated_time_to_regain_access`` is in minutes. Unparseable headers are ignored.
    """
    if not header:
        return None
    try:
        data = orjson.loads(header)
    except orjson.JSONDecodeError:
        logger.warning("ignoring an X-Business-Use-Case-Usage header that is not JSON")
        return None
    if not isinstance(data, dict):
        return None
    regain_minutes = 0.0
    usage = 0.0
    for entries in data.values():
        for entry in entries if isinstance(entries, list) else [entries]:
            if not isinstance(entry, dict):
                continue
            regain_minutes = max(regain_minutes, _number(entry.get("estimated_time_to_regain_access")))
            for field in ("call_count", "total_cputime", "total_time"):
                usage = max(usage, _number(entry.get(field)))
    return BusinessUsage(regain_seconds=regain_minutes * 60.0, max_usage_percent=usage)


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return 0.0
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return 0.0


async def _wait_for_budget(
    take: Callable[[], Awaitable[float]], *, max_wait: float, clock: Clock, sleep: Sleep
) -> float:
    started = clock()
    while True:
        wait = await take()
        waited = clock() - started
        if wait <= 0:
            return waited
        if waited + wait > max_wait:
            raise RateLimitExceeded(wait)
        await sleep(wait)


class LocalRateLimiter:
    """A token bucket per key in this process; holds at most ``burst_seconds`` worth of calls."""

    def __init__(self, *, burst_seconds: float = 1.0, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep):
        self._burst_seconds = burst_seconds
        self._clock = clock
        self._sleep = sleep
        # key -> [tokens, last refill, blocked until]
        self._buckets: dict[str, list[float]] = {}

    def take(self, key: str, rate: float) -> float:
        """Take one call now if the budget allows (0.0), else the seconds until it would."""
        now = self._clock()
        burst = max(1.0, rate * self._burst_seconds)
        bucket = self._buckets.setdefault(key, [burst, now, 0.0])
        if bucket[2] > now:
            return bucket[2] - now
        bucket[0] = min(burst, bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return 0.0
        return (1.0 - bucket[0]) / rate

    async def acquire(self, key: str, rate: float, *, max_wait: float) -> float:
        async def take() -> float:
            return self.take(key, rate)

        return await _wait_for_budget(take, max_wait=max_wait, clock=self._clock, sleep=self._sleep)

    async def block(self, key: str, seconds: float) -> None:
        now = self._clock()
        bucket = self._buckets.setdefault(key, [0.0, now, 0.0])
        bucket[2] = max(bucket[2], now + seconds)

    async def close(self) -> None:
        self._buckets.clear()


# KEYS[1] bucket hash, KEYS[2] block marker. ARGV: rate per second, burst, bucket TTL in ms.
# Redis's own clock keeps every replica on one time line. Returns 0 (taken) or the ms to wait.
_ACQUIRE_LUA = """
local blocked = redis.call('PTTL', KEYS[2])
if blocked > 0 then return blocked end
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ts', string.format('%.3f', now))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return wait
"""

# KEYS[1] block marker, ARGV[1] ms. Only ever lengthens a block.
_BLOCK_LUA = """
local ms = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ms then
  redis.call('SET', KEYS[1], '1', 'PX', ms)
end
return 0
"""

_ACQUIRE = LuaScript(_ACQUIRE_LUA)
_BLOCK = LuaScript(_BLOCK_LUA)


class RedisRateLimiter:
    """The token bucket and blocks in Redis, shared by every process using the same key prefix."""

    def __init__(
        self,
        redis: Any,
        *,
        prefix: str,
        burst_seconds: float = 1.0,
        owns_client: bool = False,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._burst_seconds = burst_seconds
        self._owns_client = owns_client
        self._clock = clock
        self._sleep = sleep
        self._fallback = LocalRateLimiter(burst_seconds=burst_seconds, clock=clock, sleep=sleep)
        self._degraded = False
        # Concurrent sends share round trips (one pipeline per batch, consumers/common/redisbatch.py).
        self._batch = RedisBatcher(redis)

    @classmethod
    def from_url(cls, url: str, *, prefix: str, burst_seconds: float = 1.0) -> RedisRateLimiter:
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No retries in the client: while Redis is away the in-process fallback decides at once.
        client = redis.asyncio.Redis.from_url(
            url, socket_timeout=5.0, socket_connect_timeout=5.0, retry=Retry(NoBackoff(), 0)
        )
        return cls(client, prefix=prefix, burst_seconds=burst_seconds, owns_client=True)

    async def _run(self, script: LuaScript, keys: list[str], args: list[float]) -> int | None:
        """Run a script; None while Redis is unreachable (the in-process fallback then decides)."""
        from redis.exceptions import RedisError

        try:
            result: int = await self._batch.evalsha(script, keys, args)
        except (RedisError, OSError) as exc:
            if not self._degraded:
                logger.warning(
                    "Redis rate limiter unavailable (%s); limiting per process until it is back", type(exc).__name__
                )
            self._degraded = True
            return None
        if self._degraded:
            logger.warning("Redis rate limiter is back; limits are shared again")
            self._degraded = False
        return result

    def _keys(self, key: str) -> list[str]:
        return [f"{self._prefix}{key}:bucket", f"{self._prefix}{key}:block"]

    async def acquire(self, key: str, rate: float, *, max_wait: float) -> float:
        burst = max(1.0, rate * self._burst_seconds)
        # The bucket refills completely within burst / rate seconds; keep it a little longer.
        ttl_ms = max(1000, math.ceil(burst / rate * 2000))
        keys = self._keys(key)

        async def take() -> float:
            wait_ms = await self._run(_ACQUIRE, keys, [rate, burst, ttl_ms])
            if wait_ms is None:
                return self._fallback.take(key, rate)
            return wait_ms / 1000.0

        return await _wait_for_budget(take, max_wait=max_wait, clock=self._clock, sleep=self._sleep)

    async def block(self, key: str, seconds: float) -> None:
        # Kept locally as well, so that a block survives Redis going away.
        await self._fallback.block(key, seconds)
        ms = math.ceil(seconds * 1000)
        if ms > 0:
            await self._run(_BLOCK, [self._keys(key)[1]], [ms])

    async def close(self) -> None:
        await self._batch.close()
        if self._owns_client:
            await self._redis.aclose()
