"""The monitor: finds out when a fault is over, so ``refusing`` and ``bypassing`` end by themselves.

Once a second, four times a second while Kafka is marked failing (kept running by ``gateway.background``):

- re-evaluates the delivery state (the age limit moves with the clock) and the spool's gauges;
- while Kafka is marked failing, checks it (connected, metadata, topics) and marks it back;
- while the configured spool is not open (its start-up replay failed), tries to open it again;
- while the spool reports a disk fault, probes the disk (every second while that fault refuses
  webhooks, every ``PROBE_INTERVAL`` otherwise).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from gateway.delivery import Delivery, Mode
from gateway.kafka_health import check_kafka
from gateway.metrics import GatewayMetrics
from gateway.publisher import Publisher
from gateway.settings import GatewaySettings
from gateway.spool import Fault, open_spool
from igw.errors import SpoolUnavailable

__all__ = ["Monitor"]

log = logging.getLogger(__name__)

TICK: Final = 1.0
# While Kafka is marked failing: a check is cheap, and every second of it means 503s or a growing spool.
KAFKA_TICK: Final = 0.25
PROBE_INTERVAL: Final = 5.0
# How often a spool that could not be opened is tried again.
REOPEN_INTERVAL: Final = 2.0
_DISK_FAULTS: Final = frozenset({Fault.DISK_FULL, Fault.IO_ERROR, Fault.READ_ONLY, Fault.PERMISSION})


class Monitor:
    def __init__(
        self, delivery: Delivery, publisher: Publisher, settings: GatewaySettings, metrics: GatewayMetrics
    ) -> None:
        self.metrics = metrics
        self.delivery = delivery
        self.publisher = publisher
        self.settings = settings
        self._next_probe = 0.0
        self._next_open = 0.0

    async def run(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(TICK if self.delivery.kafka_ok else KAFKA_TICK)

    async def tick(self) -> None:
        delivery = self.delivery
        loop = asyncio.get_running_loop()
        spool = delivery.spool
        if spool is not None:
            spool.publish_metrics()
        delivery.refresh()
        if not delivery.kafka_ok:
            ok, _ = await check_kafka(self.publisher, self.settings, self.metrics)
            if ok:
                delivery.kafka_recovered()
        if self.settings.spool_dir is not None and spool is None and loop.time() >= self._next_open:
            self._next_open = loop.time() + REOPEN_INTERVAL
            await self.reopen_spool()
        elif spool is not None and spool.fault() in _DISK_FAULTS:
            refusing = delivery.mode is Mode.REFUSING
            if refusing or loop.time() >= self._next_probe:
                self._next_probe = loop.time() + PROBE_INTERVAL
                await spool.probe()

    async def reopen_spool(self) -> None:
        assert self.settings.spool_dir is not None
        try:
            spool = await open_spool(
                self.settings.spool_dir,
                metrics=self.metrics,
                max_bytes=self.settings.spool_max_bytes,
                max_age_seconds=self.settings.spool_max_age_seconds,
            )
        except SpoolUnavailable as exc:
            self.delivery.spool_unavailable(Fault(exc.reason))
            return
        log.info("spool %s opened (%d bodies waiting for Kafka)", spool.directory, spool.records)
        self.delivery.attach_spool(spool)
