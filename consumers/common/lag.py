"""Consumer lag as metrics: how far each group is behind the end of each topic.

Lag is the sum over the assigned partitions of ``end offset - position``. It is sampled on a timer
rather than per record: asking the broker for end offsets costs a round trip.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from consumers.common.metrics import ConsumerMetrics
from consumers.common.tasks import background

__all__ = ["lag_sampler", "sample_lag"]

log = logging.getLogger(__name__)


async def sample_lag(consumer: Any, metrics: ConsumerMetrics, topics: tuple[str, ...] = ()) -> dict[str, int]:
    """Set the group's lag gauge from ``consumer``'s assignment; returns the lag per topic.

    ``consumer`` is an ``AIOKafkaConsumer``; topics in ``topics`` with no assigned partition report
    0, so a gauge does not keep a stale value after a rebalance moved its partitions away.
    """
    assignment = consumer.assignment()
    lag: dict[str, int] = dict.fromkeys(topics, 0)
    if assignment:
        end_offsets = await consumer.end_offsets(list(assignment))
        for tp in assignment:
            try:
                position = await consumer.position(tp)
            except Exception:  # partition moved away or not yet positioned: skip it this round
                log.debug("no position for %s", tp, exc_info=True)
                continue
            lag[tp.topic] = lag.get(tp.topic, 0) + max(0, int(end_offsets.get(tp, position)) - int(position))
    for topic, value in lag.items():
        metrics.set_lag(topic, value)
    return lag


@asynccontextmanager
async def lag_sampler(
    consumer: Any, metrics: ConsumerMetrics, topics: tuple[str, ...], interval: float
) -> AsyncIterator[None]:
    """Sample lag every ``interval`` seconds while the block runs."""

    async def loop() -> None:
        while True:
            try:
                await sample_lag(consumer, metrics, topics)
            except asyncio.CancelledError:
                raise
            except Exception:  # lag is best effort; the next round tries again
                log.debug("lag sample failed", exc_info=True)
            await asyncio.sleep(interval)

    async with background(loop(), name=f"lag-{metrics.group}"):
        yield
