"""How every long-running igw process runs: its event loop and its garbage collector.

- :func:`run` runs the process's main coroutine on uvloop when it is installed (measured faster
  for the gateway and both consumers, bench/), else on asyncio's own loop.
- :func:`collect_rarely`, called once the process is set up, freezes what start-up built (modules,
  the app, clients: they live as long as the process) and makes collections rarer. CPython's
  default runs a young-generation pass every 700 net container allocations, that is every few
  requests or records here, and each pass re-walks everything in flight, while most of a request's
  objects die by reference counting long before any pass. Measured: the gateway's one-message
  request 85 -> 77 µs of CPU (bench/, wrk -c64), the agent ~7 % fewer instructions per reply
  (callgrind). A full pass still runs every few million allocations (seconds at full load), so
  cyclic garbage cannot pile up for long.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, Final, TypeVar

__all__ = ["THRESHOLDS", "collect_rarely", "new_event_loop", "run"]

# Young-generation threshold, then how many young passes per middle pass and middle passes per
# full pass (CPython's defaults: 700, 10, 10).
THRESHOLDS: Final = (20_000, 20, 10)

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - depends on the install
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on :func:`new_event_loop`."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)


def collect_rarely() -> None:
    """Freeze what start-up built and make collections rarer; call once, when the process is set up."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
