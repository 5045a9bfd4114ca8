"""The publisher's deadline: a stuck send ends in TimeoutError, other cancellations pass through."""

from __future__ import annotations

import asyncio

import pytest

from gateway.publisher import _Deadline


async def test_expiry_raises_timeout_error() -> None:
    """A block that outlives its deadline raises TimeoutError, and the task is not left cancelled."""
    with pytest.raises(TimeoutError):
        async with _Deadline(0.05):
            await asyncio.sleep(5)
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0
    await asyncio.sleep(0)  # still runnable


async def test_fast_block_is_untouched() -> None:
    """A block that finishes in time returns normally and its timer is gone."""
    async with _Deadline(5):
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)


async def test_outside_cancellation_is_not_a_timeout() -> None:
    """Cancelling the task from elsewhere raises CancelledError, not TimeoutError."""

    async def guarded() -> None:
        async with _Deadline(5):
            await asyncio.sleep(5)

    task = asyncio.create_task(guarded())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
