"""Hourly rollups in SQLite: by event hour, added across flushes, unique users replaced."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from prometheus_client import CollectorRegistry

from consumers.analytics.aggregate import Aggregator
from consumers.analytics.metrics import AnalyticsMetrics
from consumers.analytics.rollup import RollupBuffer, RollupStore
from consumers.analytics.settings import AnalyticsSettings
from tests.analytics_records import ACCOUNT, T0, encode, message

HOUR = 3_600_000


def test_rollups_add_up_by_event_hour_across_flushes(tmp_path: Path) -> None:
    """Two flushes of deltas sum per (hour, account, metric); a late event lands in its own hour."""
    buffer = RollupBuffer()
    agg = Aggregator(AnalyticsSettings(), AnalyticsMetrics(CollectorRegistry()), rollup=buffer, clock=lambda: T0 / 1000)
    store = RollupStore(tmp_path / "rollup.sqlite")
    agg.handle("messages", encode(message("a", user="u1", timestamp=T0)))
    agg.handle("messages", encode(message("b", user="u2", timestamp=T0 + HOUR)))
    store.write(buffer.drain(), [("2025-11-24", ACCOUNT, 2)])
    agg.handle("messages", encode(message("c", user="u3", timestamp=T0 + 10)))  # late, first hour
    store.write(buffer.drain(), [("2025-11-24", ACCOUNT, 3)])
    store.close()
    db = sqlite3.connect(tmp_path / "rollup.sqlite")
    rows = dict(
        db.execute(
            "SELECT hour, value FROM rollup_hourly WHERE account = ? AND metric = 'inbound_messages.text'", (ACCOUNT,)
        ).fetchall()
    )
    assert rows == {"2025-11-24T16:00Z": 2.0, "2025-11-24T17:00Z": 1.0}
    assert db.execute("SELECT users FROM unique_users_daily").fetchall() == [(3,)]
    db.close()
