"""Garbage-collector settings for long-running igw processes.

CPython's default (a young-generation pass every 700 net container allocations) runs one pass
every few requests here, and every pass re-walks the objects of every request in flight. Most of
a request's objects die by reference counting long before any pass, so rarer passes do less work
for the same result: measured on the one-message benchmark, about 85 -> 77 µs of CPU per request
(bench/, ``wrk -c64``, 2 runs each; figures in the CHANGELOG). Objects built while starting
(modules, the app, clients) are frozen out of the collector's view: they live as long as the
process.
"""

from __future__ import annotations

import gc
from typing import Final

# Young-generation threshold, then how many young passes per middle pass and middle passes per
# full pass (CPython's defaults: 700, 10, 10). A full pass still runs every few million
# allocations (seconds at full load), so cyclic garbage cannot pile up for long.
THRESHOLDS: Final = (20_000, 20, 10)


def tune_after_startup() -> None:
    """Freeze what start-up built and make collections rarer; call once the process serves."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
