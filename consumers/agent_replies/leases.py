"""The leases of the replies in hand, renewed together; and whether the store answers at all.

A lease is short (``IGW_LEDGER_LEASE_SECONDS``, 15 s) so that a dead replica's events are taken
over quickly; :class:`LeaseKeeper` renews every lease this process holds, in one call, every
third of a lease, for as long as the reply is in hand (waiting to retry, or for an echo,
included). It lets go of replies whose partition moved away, so that the new owner does not
wait a lease for them, and of everything at shutdown.

:class:`StoreHealth` is the one place that knows the store is unreachable: while it is, no reply
moves on (the ledger is written before every send, so nothing is sent without it), ``/readyz``
says so, ``igw_agent_store_up`` is 0, and one probe asks the store until it answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from consumers.agent_replies.metrics import AgentMetrics
from consumers.agent_replies.store import Store, StoreUnavailable
from consumers.common.runner import Ticket

__all__ = ["LeaseKeeper", "StoreHealth"]

log = logging.getLogger(__name__)


class StoreHealth:
    """Up or down; down starts a probe that sets it up again once the store answers."""

    def __init__(
        self,
        ping: Callable[[], Awaitable[bool]],
        metrics: AgentMetrics,
        *,
        interval: float = 0.25,
        max_interval: float = 2.0,
    ) -> None:
        self._ping = ping
        self._store_up = metrics.store_up
        self._interval = interval
        self._max_interval = max_interval
        self.up = True
        self._down_since = 0.0
        self._probe: asyncio.Task[None] | None = None
        self._store_up.set(1)

    def down(self, reason: str) -> None:
        if not self.up:
            return
        self.up = False
        self._down_since = time.monotonic()
        self._store_up.set(0)
        log.warning("the ledger's store is unreachable (%s): sending is paused until it answers", reason)
        self._probe = asyncio.get_running_loop().create_task(self._wait_until_back(), name="store-probe")

    async def _answers(self) -> bool:
        try:
            return await self._ping()
        except Exception:  # any failure of the probe is "not yet"
            log.debug("store probe failed", exc_info=True)
            return False

    async def _wait_until_back(self) -> None:
        delay = self._interval
        while not await self._answers():
            await asyncio.sleep(delay)
            delay = min(self._max_interval, delay * 2)
        self.up = True
        self._store_up.set(1)
        log.warning(
            "the ledger's store answers again after %.1f s: sending resumed", time.monotonic() - self._down_since
        )

    def retry_in(self) -> float:
        """How long a reply waiting for the store waits before it looks again (no call is made meanwhile)."""
        return self._interval

    def status(self) -> dict[str, str]:
        return {"store": "up", "sending": "active"} if self.up else {"store": "unreachable", "sending": "paused"}

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe


class LeaseKeeper:
    """The events whose leases this process holds, and the loop that renews them."""

    def __init__(self, store: Store, owner: str, lease: float, health: StoreHealth, metrics: AgentMetrics) -> None:
        self._store = store
        self._leases_lost = metrics.leases_lost
        self._owner = owner
        self._lease = lease
        self._health = health
        self._held: dict[str, Ticket] = {}

    @property
    def held(self) -> int:
        return len(self._held)

    def hold(self, event_id: str, ticket: Ticket) -> None:
        self._held[event_id] = ticket

    def let_go(self, event_id: str) -> None:
        """The reply is done (or its lease released or lost): nothing more to renew."""
        self._held.pop(event_id, None)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._lease / 3)
            try:
                await self.renew_now()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not stop the renewals: leases would run out under live work
                log.exception("renewing leases failed; trying again in %.1f s", self._lease / 3)

    async def renew_now(self) -> None:
        if not self._held or not self._health.up:
            return
        try:
            await self.release_stale()
            event_ids = list(self._held)
            lost = await self._store.renew(self._owner, event_ids, self._lease)
        except StoreUnavailable as exc:
            self._health.down(str(exc))
            return
        for event_id in lost:
            self._leases_lost.inc()
            log.warning("the lease of event %s was taken by another worker; it carries on from the ledger", event_id)
            self._held.pop(event_id, None)

    async def release_stale(self) -> None:
        """Release the leases of events whose partition moved away: their new owner takes over at once."""
        stale = [event_id for event_id, ticket in self._held.items() if ticket.stale]
        for event_id in stale:
            del self._held[event_id]
        if stale:
            await self._store.release(self._owner, stale)

    async def release_all(self) -> None:
        """At shutdown: whatever is still in hand is the next owner's, without waiting for a lease."""
        event_ids = list(self._held)
        self._held.clear()
        if event_ids and self._health.up:
            try:
                await self._store.release(self._owner, event_ids)
            except StoreUnavailable:
                log.warning(
                    "%d leases not released (the store is unreachable); they run out on their own", len(event_ids)
                )
