"""Warnings that a flood of junk cannot turn into a flood of log lines.

Unauthenticated requests (bad signatures, wrong handshake tokens, malformed HTTP) are worth one
warning, not one per request: a ``Throttle`` lets one line through per ``interval`` seconds and
adds to the next line how many it held back. At 10 s and ~250 bytes a line, a flood of every kind
adds well under a hundred bytes a second of log.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

__all__ = ["INTERVAL", "Throttle"]

INTERVAL: Final = 10.0


class Throttle:
    """One kind of warning, at most once per ``interval`` seconds."""

    __slots__ = ("_held", "_next", "interval", "logger")

    def __init__(self, logger: logging.Logger, interval: float = INTERVAL) -> None:
        self.logger = logger
        self.interval = interval
        self._next = 0.0
        self._held = 0

    def allow(self) -> int | None:
        """``None`` while lines are held back; else how many were held back since the last one."""
        now = time.monotonic()
        if now < self._next:
            self._held += 1
            return None
        held, self._held = self._held, 0
        self._next = now + self.interval
        return held

    def warning(self, msg: str, *args: Any) -> None:
        held = self.allow()
        if held is None:
            return
        if held:
            # Formatted here: only lines that pass the throttle get this far.
            self.logger.warning("%s (and %d more like it in the last %.0fs)", msg % args, held, self.interval)
        else:
            self.logger.warning(msg, *args)
