"""The delivery path's state machine and the background tasks that feed it: no broker, no disk faults needed."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from gateway.background import keep_running
from gateway.delivery import KAFKA_UNAVAILABLE, OK, Delivery, DeliveryState, Mode, decide
from gateway.metrics import GatewayMetrics
from gateway.spool import Fault

# The machines of this module report into one gateway's metrics, read back with _sample.
METRICS = GatewayMetrics()


def _sample(name: str, labels: dict[str, str]) -> float:
    return METRICS.registry.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("spool_on", "kafka_ok", "queued", "write_fault", "drain_fault", "want"),
    [
        (False, True, False, None, None, DeliveryState(Mode.DIRECT, OK)),
        (False, False, False, None, None, DeliveryState(Mode.REFUSING, KAFKA_UNAVAILABLE)),
        (True, True, False, None, None, DeliveryState(Mode.DIRECT, OK)),
        # An idle spool's trouble does not matter while Kafka takes records.
        (True, True, False, Fault.DISK_FULL, Fault.IO_ERROR, DeliveryState(Mode.DIRECT, OK)),
        (True, False, False, None, None, DeliveryState(Mode.SPOOLING, KAFKA_UNAVAILABLE)),
        (True, False, True, None, Fault.IO_ERROR, DeliveryState(Mode.SPOOLING, KAFKA_UNAVAILABLE)),
        (True, False, True, Fault.DISK_FULL, None, DeliveryState(Mode.REFUSING, Fault.DISK_FULL)),
        (True, False, False, Fault.TOO_OLD, None, DeliveryState(Mode.REFUSING, Fault.TOO_OLD)),
        (True, True, True, None, None, DeliveryState(Mode.DRAINING, OK)),
        (True, True, True, Fault.FULL, None, DeliveryState(Mode.BYPASSING, Fault.FULL)),
        (True, True, True, None, Fault.READ_ONLY, DeliveryState(Mode.BYPASSING, Fault.READ_ONLY)),
        (True, True, True, Fault.PERMISSION, Fault.IO_ERROR, DeliveryState(Mode.BYPASSING, Fault.PERMISSION)),
    ],
)
def test_decide_table(
    spool_on: bool,
    kafka_ok: bool,
    queued: bool,
    write_fault: Fault | None,
    drain_fault: Fault | None,
    want: DeliveryState,
) -> None:
    """Each row of docs/durability.md's table: inputs to (mode, reason)."""
    got = decide(spool_on=spool_on, kafka_ok=kafka_ok, queued=queued, write_fault=write_fault, drain_fault=drain_fault)
    assert got == want


def test_refusing_is_the_only_mode_that_turns_webhooks_away() -> None:
    """Whatever the inputs, a webhook gets 503 (and /readyz 503) exactly in ``refusing``: a body is refused only
    when Kafka is not taking records and the spool is off or cannot take it."""
    faults: list[Fault | None] = [None, *Fault]
    for spool_on, kafka_ok, queued in itertools.product((False, True), repeat=3):
        for write_fault, drain_fault in itertools.product(faults, faults):
            state = decide(
                spool_on=spool_on, kafka_ok=kafka_ok, queued=queued, write_fault=write_fault, drain_fault=drain_fault
            )
            spool_takes = spool_on and write_fault is None
            assert (state.mode is Mode.REFUSING) == (not kafka_ok and not spool_takes), state


async def test_each_transition_is_logged_once_and_exported(caplog: pytest.LogCaptureFixture) -> None:
    """A change of mode or reason gives one log line and moves the gauge; repeating an input changes nothing."""
    delivery = Delivery(spool_configured=False, metrics=METRICS)
    assert _sample("igw_delivery_mode", {"mode": "direct", "reason": "ok"}) == 1
    refusing = {"mode": "refusing", "reason": KAFKA_UNAVAILABLE}
    entered = _sample("igw_delivery_transitions_total", refusing)
    with caplog.at_level(logging.INFO, logger="gateway.delivery"):
        for _ in range(3):
            delivery.kafka_failed()
            delivery.refresh()
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert "direct (ok) -> refusing (kafka_unavailable)" in caplog.records[0].getMessage()
    assert not delivery.ready
    assert _sample("igw_delivery_mode", refusing) == 1
    assert _sample("igw_delivery_mode", {"mode": "direct", "reason": "ok"}) == 0
    assert _sample("igw_delivery_transitions_total", refusing) == entered + 1
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="gateway.delivery"):
        delivery.kafka_recovered()
        delivery.kafka_recovered()
    assert len(caplog.records) == 1
    assert delivery.ready


async def test_a_late_success_does_not_flip_kafka_back() -> None:
    """Kafka counts as back only after a check or a drained batch, and spooled bodies keep new ones queued until
    the drain caught up with Kafka taking records."""
    delivery = Delivery(
        spool_configured=True, metrics=METRICS
    )  # a spool without faults; the object itself is not needed here
    delivery.kafka_failed()
    assert delivery.mode is Mode.SPOOLING
    delivery.caught_up()  # the drain saw an empty spool while Kafka was away: no effect
    assert delivery.queued
    delivery.kafka_recovered()
    assert delivery.mode is Mode.DRAINING
    delivery.caught_up()
    assert delivery.mode is Mode.DIRECT


async def test_background_task_failure_is_logged_once_counted_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    """A task that keeps failing with the same error: one traceback, then one line each; counted; restarted."""
    runs = 0

    async def broken() -> None:
        nonlocal runs
        runs += 1
        raise OSError(28, "No space left on device")

    before = _sample("igw_background_task_failures_total", {"task": "test-broken"})
    with caplog.at_level(logging.ERROR, logger="gateway.background"):
        task = asyncio.create_task(
            keep_running("test-broken", broken, METRICS.background_failures, backoff_min=0.01, backoff_max=0.02)
        )
        while runs < 4:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert _sample("igw_background_task_failures_total", {"task": "test-broken"}) - before >= 4
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1
    assert len(caplog.records) >= 4
    assert all("test-broken" in r.getMessage() for r in caplog.records)
