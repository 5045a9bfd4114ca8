"""The records of signed bodies, without holding the event loop for long.

A usual body (one DM, ~600 bytes) is normalized and turned into records inline: that path is the
gateway's hot path and stays as it is. A body over ``BIG_BODY_BYTES`` (Meta batches up to 1,000
items into one POST) is normalized in a worker thread (``normalize`` is pure: no I/O, no shared
mutable state), and its records are built in slices of ``SLICE_EVENTS`` with a yield to the event
loop between slices, so requests arriving meanwhile are served in between. Its records are
published slice after slice, each once the one before was acknowledged, so a big body never
queues more than one slice ahead of the DMs in the producer. Only one big body is worked on at a
time (``BigBodies``), which bounds the memory it takes (docs/configuration.md,
``IGW_MAX_BODY_BYTES``); the others wait their turn holding only their raw bytes.

Records are built on the event loop only: ``igw.records`` keeps per-second caches that are not
meant to be shared between threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from gateway.publisher import Publisher
from gateway.signature import SignatureVerdict, SignatureVerifier
from igw.envelope import Topic
from igw.normalize import Normalized, normalize
from igw.records import OutRecord, build_records

__all__ = ["BIG_BODY_BYTES", "SLICE_EVENTS", "BigBodies"]

# Over this, a body is normalized off the event loop. ~500 DMs: inline, they take ~10-20 ms.
BIG_BODY_BYTES: Final = 256 * 1024
# Events turned into records, or records handed to the producer, between two yields (~5-10 ms).
SLICE_EVENTS: Final = 200
# While the worker thread normalizes, the event loop waits for the GIL up to this long (CPython: 5 ms).
SWITCH_INTERVAL: Final = 0.0005


class BigBodies:
    """One per app: the worker thread that normalizes big bodies, and the turn they wait for."""

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._turn = asyncio.Lock()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    @contextlib.asynccontextmanager
    async def turn(self, size: int) -> AsyncIterator[None]:
        """Hold the one big-body turn while working on a body (or a drain batch) of ``size`` bytes."""
        if size <= BIG_BODY_BYTES:
            yield
            return
        async with self._turn:
            # A big body's objects (parsed JSON, events, records) are acyclic and freed by reference
            # counting; the collector would only walk them, ~5 passes of up to 20 ms each for a 4 MiB
            # body, on whichever thread allocates (bench/bigbody.py). No collection until it is done.
            collecting = gc.isenabled()
            gc.disable()
            switch = sys.getswitchinterval()
            sys.setswitchinterval(SWITCH_INTERVAL)
            try:
                yield
            finally:
                sys.setswitchinterval(switch)
                if collecting:
                    gc.enable()

    def _worker(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="igw-big-body")
        return self._executor

    async def verify(self, verifier: SignatureVerifier, body: bytes, signature: str | None) -> SignatureVerdict:
        """The signature check; off the event loop for a big body (OpenSSL's HMAC releases the GIL)."""
        if len(body) <= BIG_BODY_BYTES:
            return verifier.verify(body, signature)
        return await asyncio.get_running_loop().run_in_executor(self._worker(), verifier.verify, body, signature)

    async def normalize(self, body: bytes, received_at: int) -> Normalized:
        if len(body) <= BIG_BODY_BYTES:
            return normalize(body, received_at)
        return await asyncio.get_running_loop().run_in_executor(self._worker(), normalize, body, received_at)

    async def records(
        self, normalized: Normalized, topics: dict[Topic, str], body: bytes, received_at: int, signature: str | None
    ) -> list[OutRecord]:
        """``build_records``, in slices with a yield between them when there are many events."""
        events = normalized.events
        if len(events) <= SLICE_EVENTS:
            return build_records(normalized, topics, body, received_at, signature)
        records: list[OutRecord] = []
        for start in range(0, len(events), SLICE_EVENTS):
            end = start + SLICE_EVENTS
            last = end >= len(events)
            # The dead letter (if any) once, with the last slice: as build_records would add it.
            part = Normalized(events[start:end], normalized.dead_letter if last else None)
            records += build_records(part, topics, body, received_at, signature)
            await asyncio.sleep(0)
        return records


async def publish(publisher: Publisher, records: Sequence[OutRecord], timeout: float) -> None:
    """``publisher.publish``; many records go in slices, each handed over once the one before was acknowledged.

    So a big body never fills the producer's lanes ahead of the DMs that arrive meanwhile: a DM waits
    behind one slice's batch in its partition at most. Records keep their order (slices go in order).
    """
    if len(records) <= SLICE_EVENTS:
        await publisher.publish(records, timeout)
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for start in range(0, len(records), SLICE_EVENTS):
        await publisher.publish(records[start : start + SLICE_EVENTS], max(0.0, deadline - loop.time()))
