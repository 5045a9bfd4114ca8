"""Bounded label values for free-form inputs: accounts and click payloads.

Prometheus keeps a series per label value forever (until restart), so a label fed by user input
must come from a bounded set. Payloads are developer-defined button ids in practice, but nothing
stops a bot from putting an order number or a user id in one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["OTHER", "BoundedLabels", "TopPayloads"]

OTHER = "other"
MAX_LABEL_CHARS = 64


def _clean(value: str) -> str:
    return value[:MAX_LABEL_CHARS] if value else "none"


@dataclass
class BoundedLabels:
    """The first ``limit`` distinct values keep their own label; later ones become ``other``.

    Used for accounts: a deployment serves a small, known set of business accounts.
    """

    limit: int
    _admitted: set[str] = field(default_factory=set, init=False)

    def label(self, value: str) -> str:
        if value in self._admitted:  # admitted values are clean already: the common case, first
            return value
        value = _clean(value)
        if value in self._admitted:
            return value
        if len(self._admitted) < self.limit and value != OTHER:
            self._admitted.add(value)
            return value
        return OTHER


@dataclass
class TopPayloads:
    """Labels for the top ``limit`` payloads; the rest are ``other``.

    Candidates are counted with the Space-Saving algorithm (Metwally et al. 2005) in a table of
    ``4 * limit`` entries; a payload earns its own label once its count reaches ``min_count``
    while a label is free. Labels, once given, are kept: a counter series that vanished and came
    back would read as a reset. Clicks before a payload earned its label were counted as
    ``other``. ``pinned`` payloads (the buttons you know you ship) have their label from the start.
    """

    limit: int = 20
    min_count: int = 3
    pinned: tuple[str, ...] = ()
    _admitted: set[str] = field(default_factory=set, init=False)
    _counts: dict[str, int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        for payload in self.pinned[: self.limit]:
            self._admitted.add(_clean(payload))

    @property
    def admitted(self) -> frozenset[str]:
        return frozenset(self._admitted)

    def label(self, payload: str | None) -> str:
        value = _clean(payload or "")
        if value in self._admitted:
            return value
        if len(self._admitted) >= self.limit:
            return OTHER
        count = self._count(value)
        if count >= self.min_count and value != OTHER:
            self._admitted.add(value)
            self._counts.pop(value, None)
            return value
        return OTHER

    def _count(self, value: str) -> int:
        counts = self._counts
        if value in counts:
            counts[value] += 1
        elif len(counts) < 4 * self.limit:
            counts[value] = 1
        else:
            # Space-Saving: the newcomer replaces the smallest entry and inherits its count.
            smallest = min(counts, key=counts.__getitem__)
            counts[value] = counts.pop(smallest) + 1
        return counts[value]
