"""Labelled metric children looked up once, not per record.

``metric.labels(...)`` validates and converts every value and takes a lock on each call (measured
here: a few microseconds, several times per record). The children of a metric never change once
made, so a consumer keeps them in a dictionary keyed by the label values. Only for labels from
small fixed sets, as every igw label is: the dictionary grows with the label combinations.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from prometheus_client import Counter
from prometheus_client.metrics import MetricWrapperBase

__all__ = ["Children", "Tally"]

M = TypeVar("M", bound=MetricWrapperBase)


class Children(Generic[M]):
    """``children(a, b)`` is ``metric.labels(a, b)``, made on first use and kept."""

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: M) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class Tally:
    """Counts for a labelled counter held back until :meth:`flush`: one ``inc`` per label combination.

    For a consumer that counts a whole fetched batch at once (analytics): adding to a dictionary
    costs a fraction of ``Counter.inc`` (a method chain and a lock). Flush before anything may read
    the counter: the batch's end, before the event loop can serve a scrape.
    """

    __slots__ = ("_children", "_pending")

    def __init__(self, metric: Counter) -> None:
        self._children = Children(metric)
        self._pending: dict[tuple[str, ...], int] = {}

    def add(self, *values: str) -> None:
        pending = self._pending
        pending[values] = pending.get(values, 0) + 1

    def flush(self) -> None:
        if self._pending:
            children = self._children
            for values, count in self._pending.items():
                children(*values).inc(count)
            self._pending.clear()
