"""Background tasks that cannot die silently.

``keep_running(name, run)`` runs ``run()`` until cancelled. An unexpected error is counted
(``igw_background_task_failures_total{task}``), logged with its traceback the first time it
happens (a repeat of the same error gets one line), and ``run`` starts again after a backoff that
doubles up to ``BACKOFF_MAX`` and resets once a run lasted a minute.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from gateway.metrics import LabelledCounter

__all__ = ["keep_running", "start", "stop"]

log = logging.getLogger(__name__)

BACKOFF_MIN: Final = 0.5
BACKOFF_MAX: Final = 30.0
# A run that lasted this long was healthy: the next failure starts the backoff over.
HEALTHY_RUN: Final = 60.0


async def keep_running(
    name: str,
    run: Callable[[], Awaitable[None]],
    failures: LabelledCounter,
    *,
    backoff_min: float = BACKOFF_MIN,
    backoff_max: float = BACKOFF_MAX,
) -> None:
    loop = asyncio.get_running_loop()
    delay = backoff_min
    last_error: tuple[type[BaseException], str] | None = None
    while True:
        started = loop.time()
        failure: Exception | None = None
        try:
            await run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failure = exc
        if loop.time() - started >= HEALTHY_RUN:
            delay = backoff_min
        failures.labels(name).inc()
        if failure is None:
            # Every task here runs forever: returning is a bug too.
            log.error("background task %s returned; restarting it in %.1fs", name, delay)
        elif (type(failure), str(failure)) != last_error:
            log.error("background task %s failed; restarting it in %.1fs", name, delay, exc_info=failure)
            last_error = (type(failure), str(failure))
        else:
            log.error(
                "background task %s failed again (%s); restarting it in %.1fs", name, type(failure).__name__, delay
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, backoff_max)


def start(name: str, run: Callable[[], Awaitable[None]], failures: LabelledCounter) -> asyncio.Task[None]:
    """``keep_running`` as a task named ``igw-<name>``; ``failures`` counts its unexpected errors by name."""
    return asyncio.create_task(keep_running(name, run, failures), name=f"igw-{name}")


async def stop(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait until they are gone."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
