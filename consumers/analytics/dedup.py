"""Counting each event once: a bounded memory of recent event ids, bucketed by event-time hour.

Meta redelivers the same event (retries for up to 36 hours, duplicate deliveries, a gateway that
publishes a body again after a broker timeout); the gateway gives a redelivered event the same
``id``. Ids are kept in one set per event-time hour. Buckets older than the retention window are
dropped as event time moves on, and the oldest buckets are dropped early when the total passes
``max_ids``, so memory stays bounded whatever the traffic.

What "once" means: an id is counted once if its duplicates arrive while its hour is still
remembered. An event whose event time is older than the window cannot be checked; it is counted
(at least once) and reported as ``beyond_window``. Memory is lost on restart, so records that
Kafka redelivers after a crash (processed but not yet committed) may be counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

__all__ = ["RecentIds", "Seen"]

HOUR_MS = 3_600_000


class Seen(Enum):
    FIRST = "first"
    DUPLICATE = "duplicate"
    BEYOND_WINDOW = "beyond_window"


@dataclass
class RecentIds:
    retention_hours: int = 48
    max_ids: int = 1_000_000
    _buckets: dict[int, set[int]] = field(default_factory=dict, init=False, repr=False)
    _size: int = field(default=0, init=False)
    _newest_hour: int | None = field(default=None, init=False)
    evicted_early: int = field(default=0, init=False)

    def __len__(self) -> int:
        return self._size

    @property
    def oldest_hour(self) -> int | None:
        """The oldest event-time hour (ms // 1h) still remembered; older events are beyond the window."""
        if self._newest_hour is None:
            return None
        return self._newest_hour - self.retention_hours + 1

    def check(self, event_id: str, event_time_ms: int) -> Seen:
        """Remember ``event_id`` and say whether it was seen before."""
        hour = event_time_ms // HOUR_MS
        newest = self._newest_hour
        if newest is not None and hour < newest - self.retention_hours + 1:  # before oldest_hour
            return Seen.BEYOND_WINDOW
        key = _compact(event_id)
        bucket = self._buckets.get(hour)
        if bucket is not None and key in bucket:
            return Seen.DUPLICATE
        # Redeliveries keep their original event time, so only the event's own hour can hold it.
        if bucket is None:
            bucket = self._buckets[hour] = set()
        bucket.add(key)
        self._size += 1
        if newest is None or hour > newest:
            self._newest_hour = hour
            self._expire()
        if self._size > self.max_ids:
            self._shed()
        return Seen.FIRST

    def _expire(self) -> None:
        oldest = self.oldest_hour
        assert oldest is not None
        for hour in [h for h in self._buckets if h < oldest]:
            self._size -= len(self._buckets.pop(hour))

    def _shed(self) -> None:
        # Over budget: forget whole hours, oldest first, but never the newest one.
        for hour in sorted(self._buckets):
            if self._size <= self.max_ids or hour == self._newest_hour:
                break
            dropped = len(self._buckets.pop(hour))
            self._size -= dropped
            self.evicted_early += dropped


def _compact(event_id: str) -> int:
    # Ids are 32 hex digits (blake2b-128); 64 bits of them keep collisions out of reach for a
    # window of a few million ids, at a fraction of the memory of the string.
    try:
        return int(event_id[:16], 16)
    except ValueError:
        return hash(event_id)
