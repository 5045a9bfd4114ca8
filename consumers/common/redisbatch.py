"""Redis commands from many coroutines, sent together: one pipeline per round trip.

The agent answers many conversations at once and each reply makes a few Redis calls. Sent one by
one, every call costs a round trip, a connection taken from the pool and a read of its own;
queued here, the calls made while one batch is on the wire go out together as the next batch
(at most one batch in flight, so batches grow with the load and latency stays one round trip).

Scripts are called by their SHA (``EVALSHA``) and loaded once; a Redis that restarted empty
answers ``NOSCRIPT``, and those calls (which did not run) are sent again after loading.
Retries are not this module's business: a connection failure fails every call of its batch,
and the caller decides (the agent's reply state machine does, docs/agent.md).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LuaScript", "RedisBatcher"]

# A bound on one pipeline, so that a flood does not build one enormous request.
MAX_BATCH = 1024


def _arg(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value).encode()
    raise TypeError(f"a Redis argument must be bytes, str, int or float, not {type(value).__name__}")


def _pack(commands: list[tuple[Any, ...]]) -> bytes:
    """Commands in Redis's protocol (RESP arrays of bulk strings), back to back."""
    chunks: list[bytes] = []
    append = chunks.append
    for args in commands:
        append(b"*%d\r\n" % len(args))
        for arg in args:
            # The common types inline: this runs for every argument of every call.
            kind = type(arg)
            data = arg.encode() if kind is str else arg if kind is bytes else _arg(arg)
            append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(chunks)


@dataclass(frozen=True, slots=True)
class LuaScript:
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())  # noqa: S324 - Redis's id


@dataclass(slots=True)
class _Call:
    args: tuple[Any, ...]
    future: asyncio.Future[Any]
    script: LuaScript | None = None


class RedisBatcher:
    """Queue commands with :meth:`execute` or :meth:`evalsha`; they are sent in pipelines."""

    def __init__(self, client: Any, *, max_batch: int = MAX_BATCH) -> None:
        self._client = client
        self._max_batch = max_batch
        self._queue: list[_Call] = []
        self._sender: asyncio.Task[None] | None = None

    def execute(self, *args: Any) -> asyncio.Future[Any]:
        """Queue one command; the future holds its reply (or the error Redis answered)."""
        return self._enqueue(_Call(args, asyncio.get_running_loop().create_future()))

    def evalsha(self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> asyncio.Future[Any]:
        call = _Call(
            ("EVALSHA", script.sha, len(keys), *keys, *args), asyncio.get_running_loop().create_future(), script
        )
        return self._enqueue(call)

    def _enqueue(self, call: _Call) -> asyncio.Future[Any]:
        self._queue.append(call)
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send_all(), name="redis-batch")
        return call.future

    async def _send_all(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                await self._send(batch)
        finally:
            self._sender = None

    async def _send(self, batch: list[_Call]) -> None:
        from redis.exceptions import NoScriptError  # the redis extra: only Redis users get here

        try:
            replies = await self._pipeline([call.args for call in batch])
        except Exception as exc:  # the connection failed: every call of the batch failed with it
            for call in batch:
                if not call.future.done():
                    call.future.set_exception(exc)
            return
        unloaded: list[_Call] = []
        for call, reply in zip(batch, replies, strict=True):
            if call.script is not None and isinstance(reply, NoScriptError):
                unloaded.append(call)
            elif call.future.done():
                continue  # the caller gave up waiting (cancelled)
            elif isinstance(reply, Exception):
                call.future.set_exception(reply)
            else:
                call.future.set_result(reply)
        if unloaded:
            try:
                for script in {call.script.sha: call.script for call in unloaded if call.script}.values():
                    await self._client.script_load(script.source)
            except Exception as exc:
                for call in unloaded:
                    if not call.future.done():
                        call.future.set_exception(exc)
                return
            await self._send(unloaded)

    async def _pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Write every command at once on one pooled connection, then read the replies in order.

        The client's ``Pipeline`` does the same with more bookkeeping per command (measured: its
        command packing cost more than Redis's round trip); replies are parsed by the client.
        """
        from redis.exceptions import ResponseError

        pool = self._client.connection_pool
        connection = await pool.get_connection()
        try:
            await connection.send_packed_command(_pack(commands), check_health=False)
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await connection.read_response())
                except ResponseError as exc:  # an error reply: the connection itself is fine
                    replies.append(exc)
        except BaseException:
            # Cut off mid-batch: what was read is lost with the rest; the connection is not reused.
            await connection.disconnect()
            raise
        finally:
            await pool.release(connection)
        return replies

    async def close(self) -> None:
        if self._sender is not None:
            await asyncio.gather(self._sender, return_exceptions=True)
