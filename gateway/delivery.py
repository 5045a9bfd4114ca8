"""Where a signed body goes: the delivery path's state, one explicit machine.

Its inputs are set by whoever learns them, and nothing else decides where a body goes:

- ``kafka_ok``: Kafka takes records. Cleared by any failed publish or Kafka check; set again only
  by a passing check (the monitor, ``/readyz``) or a batch the drain got acknowledged, so a late
  success of an old request cannot flip it back and forth.
- ``queued``: spooled bodies wait and new ones queue behind them (order per conversation kept).
  Set when Kafka fails with the spool on, or when start-up found bodies; cleared when the drain
  finds the spool empty.
- ``write_fault``: the spool cannot take bodies (over a limit, a disk fault, or not open at all).
- ``drain_fault``: the drain cannot read the spool or record its progress (a disk fault).

The mode and its reason are a pure function of them (``decide``; the table is in
docs/durability.md). ``/readyz`` is 503 exactly in ``refusing``, the one mode in which webhooks get
503. Every change of mode or reason is logged once and exported as ``igw_delivery_mode``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from gateway.metrics import GatewayMetrics
from gateway.spool import Fault, Spool

__all__ = ["OK", "Delivery", "DeliveryState", "Mode", "decide"]

log = logging.getLogger(__name__)

OK: Final = "ok"
KAFKA_UNAVAILABLE: Final = "kafka_unavailable"


class Mode(StrEnum):
    DIRECT = "direct"  # new bodies are published; the spool (if any) is empty or not in the way
    SPOOLING = "spooling"  # Kafka does not take records: new bodies are spooled, 200 after fsync
    DRAINING = "draining"  # Kafka is back: the drain publishes the spool, new bodies queue behind it
    BYPASSING = "bypassing"  # Kafka takes records but the spool cannot take or give back bodies: new ones go direct
    REFUSING = "refusing"  # neither Kafka nor the spool takes bodies: 503, Meta retries


@dataclass(frozen=True, slots=True)
class DeliveryState:
    mode: Mode
    reason: str  # "ok", "kafka_unavailable", or a spool Fault


def decide(
    *, spool_on: bool, kafka_ok: bool, queued: bool, write_fault: Fault | None, drain_fault: Fault | None
) -> DeliveryState:
    """The mode for these inputs (the machine's whole transition table)."""
    if not spool_on:
        return DeliveryState(Mode.DIRECT, OK) if kafka_ok else DeliveryState(Mode.REFUSING, KAFKA_UNAVAILABLE)
    if not kafka_ok:
        if write_fault is not None:
            return DeliveryState(Mode.REFUSING, write_fault)
        return DeliveryState(Mode.SPOOLING, KAFKA_UNAVAILABLE)
    if not queued:
        return DeliveryState(Mode.DIRECT, OK)
    if write_fault is not None:
        return DeliveryState(Mode.BYPASSING, write_fault)
    if drain_fault is not None:
        return DeliveryState(Mode.BYPASSING, drain_fault)
    return DeliveryState(Mode.DRAINING, OK)


# What an operator should check, per spool fault.
_HINTS: Final = {
    Fault.FULL: "the spool reached IGW_SPOOL_MAX_BYTES",
    Fault.TOO_OLD: "the oldest spooled body is older than IGW_SPOOL_MAX_AGE_SECONDS: the drain is stuck",
    Fault.DISK_FULL: "the spool's filesystem is full: free space on it",
    Fault.IO_ERROR: "the spool's disk fails: check it",
    Fault.READ_ONLY: "the spool's filesystem is read-only (remounted after disk errors?)",
    Fault.PERMISSION: "the gateway may not write IGW_SPOOL_DIR: check its owner and mode",
}


def _describe(state: DeliveryState, backlog: int) -> tuple[int, str]:
    """(log level, sentence) for entering ``state``."""
    mode, reason = state.mode, state.reason
    hint = _HINTS.get(reason)  # type: ignore[call-overload]  # a StrEnum key matches its value
    if mode is Mode.DIRECT:
        return logging.INFO, "publishing webhooks to Kafka directly"
    if mode is Mode.SPOOLING:
        return logging.WARNING, "Kafka is not taking records; spooling signed bodies until it does (200 after fsync)"
    if mode is Mode.DRAINING:
        return logging.INFO, f"Kafka takes records again; draining {backlog} spooled bodies, new ones queue behind them"
    if mode is Mode.BYPASSING:
        return logging.WARNING, (
            f"Kafka takes records but the spool is in trouble ({reason}: {hint}); new bodies go to Kafka directly, "
            f"ahead of {backlog} spooled ones (order per conversation is traded, nothing is refused)"
        )
    if reason == KAFKA_UNAVAILABLE:
        return logging.ERROR, "Kafka is not taking records and the spool is off; answering 503 so Meta retries"
    return logging.ERROR, (
        f"Kafka is not taking records and the spool cannot take bodies ({reason}: {hint}); "
        "answering 503 so Meta retries"
    )


class Delivery:
    """The machine: holds the inputs, recomputes the state when one changes, reports changes once."""

    def __init__(self, *, spool_configured: bool, metrics: GatewayMetrics, kafka_ok: bool = True) -> None:
        self.spool_configured = spool_configured
        self._metrics = metrics
        self.spool: Spool | None = None
        # Why a configured spool is not open (start-up replay failed); the monitor retries.
        self.spool_open_fault: Fault | None = None
        self.kafka_ok = kafka_ok
        self.queued = False
        self.drain_fault: Fault | None = None
        self.state = self._decide()
        self._kafka_back = asyncio.Event()
        if kafka_ok:
            self._kafka_back.set()
        metrics.set_delivery_mode(self.state.mode, self.state.reason, None)

    @property
    def mode(self) -> Mode:
        return self.state.mode

    @property
    def ready(self) -> bool:
        """Whether a webhook would be taken now: everything but ``refusing``."""
        return self.state.mode is not Mode.REFUSING

    def write_fault(self) -> Fault | None:
        spool = self.spool
        if spool is not None:
            return spool.fault()
        return self.spool_open_fault

    # -- inputs --------------------------------------------------------------------------------

    def attach_spool(self, spool: Spool) -> None:
        """A spool opened (at start-up or later by the monitor); bodies it holds queue new ones."""
        self.spool = spool
        self.spool_open_fault = None
        spool.on_change = self.refresh
        if spool.records:
            self.queued = True
        self.refresh()

    def detach_spool(self) -> None:
        if self.spool is not None:
            self.spool.on_change = None
        self.spool = None
        self.refresh()

    def spool_unavailable(self, fault: Fault) -> None:
        self.spool_open_fault = fault
        self.refresh()

    def kafka_failed(self) -> None:
        if self.kafka_ok:
            self.kafka_ok = False
            self._kafka_back.clear()
            if self.spool_configured:
                # From now on new bodies queue behind what gets spooled.
                self.queued = True
            self.refresh()

    def kafka_recovered(self) -> None:
        if not self.kafka_ok:
            self.kafka_ok = True
            self._kafka_back.set()
            self.refresh()

    async def wait_kafka(self) -> None:
        await self._kafka_back.wait()

    def set_drain_fault(self, fault: Fault | None) -> None:
        if fault != self.drain_fault:
            self.drain_fault = fault
            self.refresh()

    def caught_up(self) -> None:
        """The drain found the spool empty with Kafka taking records: new bodies need not queue any more."""
        if self.queued and self.kafka_ok:
            self.queued = False
            self.refresh()

    # -- the machine ---------------------------------------------------------------------------

    def _decide(self) -> DeliveryState:
        return decide(
            spool_on=self.spool_configured,
            kafka_ok=self.kafka_ok,
            queued=self.queued,
            write_fault=self.write_fault(),
            drain_fault=self.drain_fault,
        )

    def refresh(self) -> None:
        """Recompute the state; log and export a change once. Also called every second (age limits)."""
        state = self._decide()
        if state == self.state:
            return
        previous, self.state = self.state, state
        self._metrics.set_delivery_mode(state.mode, state.reason, (previous.mode, previous.reason))
        level, sentence = _describe(state, self.spool.records if self.spool is not None else 0)
        log.log(
            level,
            "delivery %s (%s) -> %s (%s): %s",
            previous.mode,
            previous.reason,
            state.mode,
            state.reason,
            sentence,
            extra={"delivery_mode": state.mode.value, "delivery_reason": state.reason},
        )
