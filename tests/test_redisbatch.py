"""Redis calls from many coroutines share pipelines: each gets its own reply or error, scripts load themselves."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from consumers.common.redisbatch import LuaScript, RedisBatcher, _pack
from tests.plugins.agent import REDIS_URL

pytestmark = pytest.mark.redis


def test_packing_matches_the_protocol() -> None:
    """Arguments of every supported type are written as RESP bulk strings, commands back to back."""
    packed = _pack([("SET", "k", b"v\r\n", 5), ("INCRBYFLOAT", "n", 0.5)])
    assert packed == (
        b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n$1\r\n5\r\n*3\r\n$11\r\nINCRBYFLOAT\r\n$1\r\nn\r\n$3\r\n0.5\r\n"
    )
    with pytest.raises(TypeError):
        _pack([("SET", "k", None)])


async def test_concurrent_calls_share_batches_and_keep_their_own_results() -> None:
    """Many calls at once: each future gets its reply, an error reply fails only its call, a new script loads itself."""
    client = aioredis.Redis.from_url(REDIS_URL)
    batcher = RedisBatcher(client)
    key, other = f"igwtest:{uuid.uuid4().hex}", f"igwtest:{uuid.uuid4().hex}"
    await client.set(other, "a string")
    # A script this Redis has never seen: the first call answers NOSCRIPT and is sent again after loading.
    script = LuaScript(f"-- {uuid.uuid4().hex}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])")
    try:
        calls = [batcher.evalsha(script, [key], [1]) for _ in range(50)]
        wrong = batcher.execute("LPUSH", other, "x")  # a string there: WRONGTYPE, for this call only
        more = [batcher.execute("GET", other) for _ in range(3)]
        results = await asyncio.gather(*calls)
        assert sorted(results) == list(range(1, 51))
        with pytest.raises(ResponseError):
            await wrong
        assert [await call for call in more] == [b"a string"] * 3
    finally:
        await client.delete(key, other)
        await batcher.close()
        await client.aclose()
