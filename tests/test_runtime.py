"""How igw processes run (igw.runtime): start-up objects frozen, rarer collections, one event loop choice."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from consumers.common.runner import run_main
from igw.runtime import THRESHOLDS, collect_rarely


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restore_gc")
def test_collect_rarely_freezes_and_raises_thresholds() -> None:
    """What start-up built leaves the collector's view, and every generation is collected less often."""
    gc.unfreeze()
    collect_rarely()
    assert gc.get_threshold() == THRESHOLDS
    assert gc.get_freeze_count() > 1000  # this test process's modules at least
    assert THRESHOLDS[0] > 700  # rarer than CPython's default young pass, or why bother


@pytest.mark.usefixtures("restore_gc")
def test_consumers_run_the_same_way() -> None:
    """run_main (igw agent, igw analytics) runs its coroutine with the gateway's collector settings."""
    gc.unfreeze()
    seen: list[tuple[int, int, int]] = []

    async def main() -> int:
        seen.append(gc.get_threshold())
        return 7

    assert run_main(main) == 7
    assert seen == [THRESHOLDS]
