"""The dedup memory: ids bucketed by event-time hour, bounded by a window and a size cap."""

from __future__ import annotations

from consumers.analytics.dedup import HOUR_MS, RecentIds, Seen

T0 = 1_764_000_000_000


def test_same_id_is_seen_once_even_when_it_comes_back_hours_later() -> None:
    """A redelivered id within the window is a duplicate, however late it arrives."""
    ids = RecentIds(retention_hours=48)
    assert ids.check("a" * 32, T0) is Seen.FIRST
    assert ids.check("b" * 32, T0 + 30 * HOUR_MS) is Seen.FIRST
    assert ids.check("a" * 32, T0) is Seen.DUPLICATE


def test_events_older_than_the_window_are_flagged_not_dropped() -> None:
    """Once event time moves past the window, old hours are forgotten and older events say so."""
    ids = RecentIds(retention_hours=2)
    ids.check("a" * 32, T0)
    ids.check("b" * 32, T0 + 3 * HOUR_MS)
    assert len(ids) == 1
    assert ids.check("a" * 32, T0) is Seen.BEYOND_WINDOW


def test_size_cap_sheds_oldest_hours_first() -> None:
    """Past ``max_ids`` whole old hours go, the newest hour stays."""
    ids = RecentIds(retention_hours=48, max_ids=1000)
    for hour in range(5):
        for i in range(400):
            ids.check(f"{i:012x}{hour:04x}{0:016x}", T0 + hour * HOUR_MS)
    assert len(ids) <= 1000
    assert ids.evicted_early >= 1000
    assert ids.check(f"{0:012x}{4:04x}{0:016x}", T0 + 4 * HOUR_MS) is Seen.DUPLICATE
