"""Label children looked up once are the metric's own children: samples land where labels() puts them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from consumers.common.children import Children, Tally


def test_children_are_the_metrics_children() -> None:
    """children(a, b) is metric.labels(a, b), made once; counts through either show in the registry."""
    registry = CollectorRegistry()
    counter = Counter("igw_test_things", "things", ["kind", "outcome"], registry=registry)
    children = Children(counter)
    first = children("dm", "sent")
    assert children("dm", "sent") is first
    first.inc()
    counter.labels("dm", "sent").inc()
    children("dm", "failed").inc(3)
    assert registry.get_sample_value("igw_test_things_total", {"kind": "dm", "outcome": "sent"}) == 2
    assert registry.get_sample_value("igw_test_things_total", {"kind": "dm", "outcome": "failed"}) == 3
    histogram = Histogram("igw_test_seconds", "seconds", ["agent"], registry=registry)
    Children(histogram)("rules").observe(0.5)
    assert registry.get_sample_value("igw_test_seconds_count", {"agent": "rules"}) == 1


def test_tally_holds_counts_back_until_flushed() -> None:
    """A tally adds nothing to the counter until flush(), then adds each combination's count once."""
    registry = CollectorRegistry()
    counter = Counter("igw_test_events", "events", ["type"], registry=registry)
    tally = Tally(counter)
    for kind in ("dm", "dm", "read"):
        tally.add(kind)
    assert registry.get_sample_value("igw_test_events_total", {"type": "dm"}) is None
    tally.flush()
    tally.flush()  # nothing pending: nothing added twice
    assert registry.get_sample_value("igw_test_events_total", {"type": "dm"}) == 2
    assert registry.get_sample_value("igw_test_events_total", {"type": "read"}) == 1
