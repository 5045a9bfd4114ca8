"""Per-account send rate limits: local and Redis token buckets, blocks, and Meta's usage header."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from consumers.send_api.client import OutboundMessage, SendApiClient
from consumers.send_api.errors import ErrorClass, SendError
from consumers.send_api.ratelimit import (
    LocalRateLimiter,
    RateLimitExceeded,
    RedisRateLimiter,
    parse_business_usage,
)
from igw_tools.graph_emulator import EmulatorConfig
from tests.plugins.graph_emulator import IG_ACCOUNT, MESSENGER_ACCOUNT, TEST_ACCOUNTS, RunningEmulator, StartEmulator

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
USER = "8800000000000001"


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted afterwards."""
    value = f"igw-test:{uuid.uuid4().hex[:12]}:"
    yield value
    cleanup = redis.asyncio.Redis.from_url(REDIS_URL)
    keys = [key async for key in cleanup.scan_iter(match=f"{value}*")]
    if keys:
        await cleanup.delete(*keys)
    await cleanup.aclose()


@pytest.fixture
async def redis_pair(prefix: str) -> AsyncIterator[tuple[RedisRateLimiter, RedisRateLimiter]]:
    """Two limiters on two separate Redis connections, sharing one key prefix (two replicas)."""
    first = RedisRateLimiter.from_url(REDIS_URL, prefix=prefix)
    second = RedisRateLimiter.from_url(REDIS_URL, prefix=prefix)
    yield first, second
    await first.close()
    await second.close()


def test_usage_header_minutes_become_seconds() -> None:
    """estimated_time_to_regain_access is read in minutes, the largest of all entries wins."""
    header = (
        '{"1784140": [{"type": "instagram", "call_count": 28, "total_cputime": 25, "total_time": 95,'
        ' "estimated_time_to_regain_access": 0}, {"type": "messenger", "call_count": 100,'
        ' "estimated_time_to_regain_access": 3}]}'
    )
    usage = parse_business_usage(header)
    assert usage is not None
    assert (usage.regain_seconds, usage.max_usage_percent) == (180.0, 100.0)


def test_usage_header_garbage_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    """A missing or unparseable header gives nothing and does not raise."""
    assert parse_business_usage(None) is None
    assert parse_business_usage("not json") is None
    assert "X-Business-Use-Case-Usage" in caplog.text
    usage = parse_business_usage('{"1": [{"estimated_time_to_regain_access": "soon"}]}')
    assert usage is not None
    assert usage.regain_seconds == 0.0


async def test_local_bucket_paces_calls() -> None:
    """At 20/s with a one-second burst, 30 calls take about half a second beyond the burst."""
    limiter = LocalRateLimiter()
    started = time.monotonic()
    for _ in range(30):
        await limiter.acquire("acct", 20.0, max_wait=5.0)
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 2.0


async def test_local_bucket_keys_are_independent() -> None:
    """One account's exhausted budget does not slow another account."""
    limiter = LocalRateLimiter()
    for _ in range(5):
        await limiter.acquire("a", 5.0, max_wait=0.0)
    with pytest.raises(RateLimitExceeded):
        await limiter.acquire("a", 5.0, max_wait=0.0)
    assert await limiter.acquire("b", 5.0, max_wait=0.0) == pytest.approx(0.0, abs=0.01)


async def test_local_block_waits_and_never_shortens() -> None:
    """A block makes the next call wait; a shorter block later does not shorten it."""
    limiter = LocalRateLimiter()
    await limiter.block("a", 0.4)
    await limiter.block("a", 0.1)
    with pytest.raises(RateLimitExceeded) as caught:
        await limiter.acquire("a", 100.0, max_wait=0.1)
    assert caught.value.wait > 0.25
    waited = await limiter.acquire("a", 100.0, max_wait=1.0)
    assert 0.2 <= waited < 1.0


@pytest.mark.redis
async def test_redis_budget_is_shared(redis_pair: tuple[RedisRateLimiter, RedisRateLimiter], prefix: str) -> None:
    """Calls through one Redis limiter use up the budget seen by the other one."""
    first, second = redis_pair
    for _ in range(10):
        await first.acquire("acct", 10.0, max_wait=0.0)
    with pytest.raises(RateLimitExceeded) as caught:
        await second.acquire("acct", 10.0, max_wait=0.0)
    assert 0 < caught.value.wait <= 0.2
    # Another account, or another prefix, has its own budget.
    await second.acquire("other", 10.0, max_wait=0.0)
    elsewhere = RedisRateLimiter.from_url(REDIS_URL, prefix=prefix + "x:")
    try:
        await elsewhere.acquire("acct", 10.0, max_wait=0.0)
    finally:
        await elsewhere.close()


@pytest.mark.redis
async def test_redis_pacing_across_two_limiters(redis_pair: tuple[RedisRateLimiter, RedisRateLimiter]) -> None:
    """20 calls split over two limiters at 10/s take about one second: one budget, not two."""
    first, second = redis_pair
    started = time.monotonic()

    async def take(limiter: RedisRateLimiter) -> None:
        for _ in range(10):
            await limiter.acquire("acct", 10.0, max_wait=5.0)

    await asyncio.gather(take(first), take(second))
    elapsed = time.monotonic() - started
    assert 0.85 <= elapsed < 3.0


@pytest.mark.redis
async def test_redis_block_is_shared(redis_pair: tuple[RedisRateLimiter, RedisRateLimiter]) -> None:
    """A block set through one limiter holds back the other; it never shortens."""
    first, second = redis_pair
    await first.block("acct", 0.5)
    await second.block("acct", 0.1)
    waited = await second.acquire("acct", 100.0, max_wait=2.0)
    assert 0.35 <= waited < 2.0


@pytest.mark.redis
async def test_redis_limiter_shared_between_two_clients(graph_emulator: RunningEmulator, prefix: str) -> None:
    """Two client instances with REDIS_URL share one budget per account: 10 sends at 5/s take about a second."""
    graph_emulator.open_window(IG_ACCOUNT.account_id, USER)
    settings = graph_emulator.client_settings(redis_url=REDIS_URL, rate_limit_key_prefix=prefix, ig_rate_per_second=5.0)
    async with SendApiClient(settings) as first, SendApiClient(settings) as second:
        started = time.monotonic()

        async def send(client: SendApiClient, n: int) -> None:
            for i in range(n):
                await client.send(IG_ACCOUNT.account_id, OutboundMessage(USER, f"message {i}"))

        await asyncio.gather(send(first, 5), send(second, 5))
        elapsed = time.monotonic() - started
    assert len(graph_emulator.state.messages) == 10
    assert 0.85 <= elapsed < 4.0


@pytest.mark.redis
async def test_meta_rate_limit_error_blocks_other_replica(graph_emulator: RunningEmulator, prefix: str) -> None:
    """A usage-header block seen by one client stops the other client's sends too (shared in Redis)."""
    graph_emulator.open_window(MESSENGER_ACCOUNT.account_id, USER)
    settings = graph_emulator.client_settings(redis_url=REDIS_URL, rate_limit_key_prefix=prefix, max_retry_seconds=1.0)
    graph_emulator.fail_next(1, code=613, regain_minutes=1, account_id=MESSENGER_ACCOUNT.account_id)
    async with SendApiClient(settings) as first, SendApiClient(settings) as second:
        with pytest.raises(SendError) as caught:
            await first.send(MESSENGER_ACCOUNT.account_id, OutboundMessage(USER, "x"))
        assert caught.value.error_class is ErrorClass.RATE_LIMITED
        calls = len(graph_emulator.state.calls)
        with pytest.raises(SendError) as caught:
            await second.send(MESSENGER_ACCOUNT.account_id, OutboundMessage(USER, "y"))
        assert (caught.value.error_class, caught.value.attempts) == (ErrorClass.RATE_LIMITED, 0)
    assert len(graph_emulator.state.calls) == calls


async def test_redis_down_falls_back_to_local_limits(caplog: pytest.LogCaptureFixture) -> None:
    """With Redis unreachable the limiter keeps limiting per process and warns once."""
    limiter = RedisRateLimiter.from_url("redis://127.0.0.1:1", prefix="igw-test:down:")
    try:
        for _ in range(3):
            await limiter.acquire("acct", 3.0, max_wait=0.0)
        with pytest.raises(RateLimitExceeded):
            await limiter.acquire("acct", 3.0, max_wait=0.0)
        await limiter.block("other", 0.3)
        with pytest.raises(RateLimitExceeded):
            await limiter.acquire("other", 3.0, max_wait=0.0)
    finally:
        await limiter.close()
    warnings = [record for record in caplog.records if "Redis rate limiter unavailable" in record.getMessage()]
    assert len(warnings) == 1


async def test_emulator_rate_limit_is_retried(start_graph_emulator: StartEmulator) -> None:
    """When the emulator's per-second limit refuses a call (code 4), the client backs off and gets through."""
    emulator = await start_graph_emulator(
        EmulatorConfig(accounts=TEST_ACCOUNTS, enforce_window=False, ig_rate_per_second=4)
    )
    settings = emulator.client_settings(
        ig_rate_per_second=1000.0, backoff_base_seconds=0.3, backoff_max_seconds=1.0, max_attempts=6
    )
    async with SendApiClient(settings) as client:
        results = await asyncio.gather(
            *(client.send(IG_ACCOUNT.account_id, OutboundMessage(USER, f"m{i}")) for i in range(6))
        )
    assert len(emulator.state.messages) == 6
    assert any(call.status == 400 for call in emulator.state.calls)
    assert max(result.attempts for [result] in results) >= 2
