"""Label values fed by user input stay a bounded set."""

from __future__ import annotations

from consumers.analytics.labels import OTHER, BoundedLabels, TopPayloads


def test_top_payloads_never_exceed_the_limit() -> None:
    """Thousands of distinct payloads produce at most ``limit`` labels plus ``other``."""
    top = TopPayloads(limit=5, min_count=3)
    labels = set()
    for i in range(5000):
        labels.add(top.label(f"ORDER_{i}"))
        labels.add(top.label("BOOK"))
    assert "BOOK" in labels
    assert OTHER in labels
    assert len(labels) <= 6


def test_a_payload_earns_its_label_after_min_count_and_keeps_it() -> None:
    """The first clicks of a payload count as other; from ``min_count`` on it has its own label."""
    top = TopPayloads(limit=2, min_count=3, pinned=("PINNED",))
    assert top.label("PINNED") == "PINNED"
    assert [top.label("BOOK") for _ in range(4)] == [OTHER, OTHER, "BOOK", "BOOK"]
    assert [top.label("LATE") for _ in range(5)] == [OTHER] * 5  # both slots are taken


def test_accounts_past_the_limit_are_other() -> None:
    """The first accounts keep their id as label, later ones become ``other``."""
    accounts = BoundedLabels(limit=2)
    assert [accounts.label(a) for a in ("1", "2", "3", "1")] == ["1", "2", OTHER, "1"]
