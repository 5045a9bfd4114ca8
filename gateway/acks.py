"""Waiting for Kafka's acknowledgements of delivery futures: shared by both producer backends."""

from __future__ import annotations

import asyncio
from typing import Any

from igw.errors import BrokerUnavailable, PublishTimeout

__all__ = ["all_acknowledged", "settle_stragglers"]


async def all_acknowledged(futures: list[asyncio.Future[Any]], remaining: float, timeout: float) -> None:
    """Wait for every delivery future with one waiter and one timer.

    Cheaper than ``asyncio.wait`` on the hot path, and it never cancels the delivery futures:
    a late acknowledgement is still an acknowledgement.
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    pending = len(futures)

    def on_delivery(fut: asyncio.Future[Any]) -> None:
        nonlocal pending
        pending -= 1
        if waiter.done():
            return
        failure: BaseException | None = asyncio.CancelledError() if fut.cancelled() else fut.exception()
        if failure is not None:
            waiter.set_exception(BrokerUnavailable(f"broker rejected a record: {type(failure).__name__}"))
        elif pending == 0:
            waiter.set_result(None)

    def on_timeout() -> None:
        if not waiter.done():
            waiter.set_exception(
                PublishTimeout(f"{pending} of {len(futures)} records not acknowledged within {timeout:.2f}s")
            )

    for fut in futures:
        fut.add_done_callback(on_delivery)
    timer = loop.call_later(remaining, on_timeout)
    try:
        await waiter
    finally:
        timer.cancel()


async def settle_stragglers(stragglers: set[asyncio.Future[Any]], timeout: float) -> bool:
    """Wait up to ``timeout`` for ``stragglers`` (emptied as they finish); True once none is left."""
    if stragglers:
        _, pending = await asyncio.wait(stragglers, timeout=timeout)
        for fut in stragglers - pending:
            if not fut.cancelled():
                fut.exception()  # retrieved: a failure here is expected, not worth asyncio's warning
        stragglers.intersection_update(pending)
    return not stragglers
