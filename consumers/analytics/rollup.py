"""Optional hourly rollups per account in an embedded SQLite file, for reports past Prometheus retention.

Off unless ``IGW_ANALYTICS_ROLLUP_PATH`` is set. Counts are bucketed by **event** hour (UTC) and
added with an upsert, so a late event lands in the hour it happened and flushing twice never
double-counts a delta. Daily unique users are approximate (HyperLogLog) and replaced, not added.

Reading it::

    SELECT hour, account, metric, value FROM rollup_hourly WHERE hour >= '2026-11-25' ORDER BY hour;
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["RollupBuffer", "RollupStore", "hour_label"]

HOUR_MS = 3_600_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS rollup_hourly (
    hour TEXT NOT NULL,      -- event hour, UTC, 'YYYY-MM-DDTHH:00Z'
    account TEXT NOT NULL,
    metric TEXT NOT NULL,    -- e.g. inbound_messages.text, clicks.postback.BOOK, replies.sent
    value REAL NOT NULL,
    PRIMARY KEY (hour, account, metric)
);
CREATE TABLE IF NOT EXISTS unique_users_daily (
    day TEXT NOT NULL,       -- event day, UTC, 'YYYY-MM-DD'
    account TEXT NOT NULL,
    users INTEGER NOT NULL,  -- approximate (HyperLogLog)
    PRIMARY KEY (day, account)
);
"""


def hour_label(event_time_ms: int) -> str:
    hour = datetime.fromtimestamp(event_time_ms // HOUR_MS * 3600, UTC)
    return hour.strftime("%Y-%m-%dT%H:00Z")


class RollupBuffer:
    """Deltas gathered between flushes: (hour, account, metric) -> amount."""

    def __init__(self) -> None:
        self._deltas: defaultdict[tuple[str, str, str], float] = defaultdict(float)

    def add(self, event_time_ms: int, account: str, metric: str, amount: float = 1) -> None:
        self._deltas[(hour_label(event_time_ms), account, metric)] += amount

    def drain(self) -> list[tuple[str, str, str, float]]:
        rows = [(h, a, m, float(v)) for (h, a, m), v in self._deltas.items()]
        self._deltas.clear()
        return rows


class RollupStore:
    """The SQLite file. Blocking calls: the consumer runs them in a worker thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread off: every call comes from one worker thread at a time, serialized by the caller.
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.executescript(SCHEMA)

    def write(self, rows: list[tuple[str, str, str, float]], uniques: list[tuple[str, str, int]]) -> None:
        with self._db:
            self._db.executemany(
                "INSERT INTO rollup_hourly (hour, account, metric, value) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (hour, account, metric) DO UPDATE SET value = value + excluded.value",
                rows,
            )
            self._db.executemany(
                "INSERT INTO unique_users_daily (day, account, users) VALUES (?, ?, ?) "
                "ON CONFLICT (day, account) DO UPDATE SET users = max(users, excluded.users)",
                uniques,
            )

    def close(self) -> None:
        self._db.close()
