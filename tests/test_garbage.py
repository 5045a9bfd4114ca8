"""The gateway's collector settings: start-up objects frozen, rarer passes."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from gateway.garbage import THRESHOLDS, tune_after_startup


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restore_gc")
def test_tune_after_startup_freezes_and_raises_thresholds() -> None:
    gc.unfreeze()
    tune_after_startup()
    assert gc.get_threshold() == THRESHOLDS
    assert gc.get_freeze_count() > 1000  # this test process's modules at least
    assert THRESHOLDS[0] > 700  # rarer than CPython's default young pass, or why bother
