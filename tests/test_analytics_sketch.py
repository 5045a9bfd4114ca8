"""The HyperLogLog sketch behind unique users: accurate enough, bounded, mergeable."""

from __future__ import annotations

import math

import pytest

from consumers.analytics.sketch import HyperLogLog


@pytest.mark.parametrize("n", [0, 1, 10, 1000, 50_000])
def test_estimate_is_within_five_percent(n: int) -> None:
    """The distinct-count estimate stays within 5 % (or 1) of the truth at several sizes."""
    sketch = HyperLogLog()
    for i in range(n):
        sketch.add(f"user-{i}")
        sketch.add(f"user-{i}")  # repeats change nothing
    assert abs(sketch.count() - n) <= max(1, 0.05 * n)


def test_memory_is_fixed_and_merge_equals_union() -> None:
    """Two sketches merge into the sketch of the union, and the serialized size never grows."""
    a, b = HyperLogLog(), HyperLogLog()
    for i in range(3000):
        a.add(str(i))
    for i in range(2000, 6000):
        b.add(str(i))
    size = len(a.to_bytes())
    a.merge(b)
    assert len(a.to_bytes()) == size == 4097
    assert abs(a.count() - 6000) <= 0.05 * 6000
    assert HyperLogLog.from_bytes(a.to_bytes()).count() == a.count()


@pytest.mark.parametrize(("precision", "n"), [(4, 100), (12, 0), (12, 7), (12, 5000), (12, 200_000), (16, 30_000)])
def test_count_is_the_textbook_estimate(precision: int, n: int) -> None:
    """count() gives exactly the estimate of the formula summed register by register (Flajolet et al.)."""
    sketch = HyperLogLog(precision)
    for i in range(n):
        sketch.add(f"user-{i}")
    registers = sketch.to_bytes()[1:]
    m = len(registers)
    estimate = 0.7213 / (1 + 1.079 / m) * m * m / sum(2.0**-r for r in registers)
    zeros = registers.count(0)
    if estimate <= 2.5 * m and zeros:
        estimate = m * math.log(m / zeros)
    assert sketch.count() == round(estimate)
