"""The spool's segment files against stdlib sqlite3, in the outage scenario (docs/durability.md cites this).

    .venv/bin/python -m bench.spool_formats [--seconds 5] [--dir DIR]

For each store, on DIR (default: a temporary directory) and then on a 256 KiB tmpfs (root only):

1. spooling: 64 concurrent writers append one-DM bodies for ``--seconds`` (Kafka away); bodies/s
   and the p99 time to "durable" (what a webhook waits for before its 200);
2. draining: batches of 500 are read and acknowledged while 8 writers keep appending (Kafka back,
   new bodies queue behind); bodies drained per second;
3. full disk: on the tmpfs, append until the filesystem is full, then drain: how much of it could
   be drained, and whether appends work again afterwards.

The SQLite store is what the issue proposed: WAL, ``synchronous=FULL``, one transaction per group
commit, and the drain's progress recorded by deleting the acknowledged rows in one transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sqlite3
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from bench import payloads
from gateway.spool import Spool
from igw.errors import SpoolError


class Store(Protocol):
    async def open(self) -> object: ...
    async def close(self) -> None: ...
    def append(self, body: bytes, received_at: int, signature: str | None) -> asyncio.Future[None]: ...
    async def drain_batch(self) -> int: ...


class SegmentStore:
    """gateway.spool.Spool, as the gateway uses it."""

    def __init__(self, directory: Path) -> None:
        self.spool = Spool(directory, max_bytes=1 << 40, max_age_seconds=1e9)

    async def open(self) -> object:
        return await self.spool.open()

    async def close(self) -> None:
        await self.spool.close()

    def append(self, body: bytes, received_at: int, signature: str | None) -> asyncio.Future[None]:
        return self.spool.append(body, received_at, signature)

    async def drain_batch(self) -> int:
        batch = await self.spool.read_batch(500, 4 * 1024 * 1024)
        if batch is None:
            return 0
        await self.spool.ack(batch)
        return len(batch.items)


class SqliteStore:
    """The sqlite3 alternative: the same group commits, in one thread of its own."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "spool.sqlite3"
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1)
        self._pending: list[tuple[tuple[int, str | None, bytes], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS bodies (id INTEGER PRIMARY KEY, received_at INTEGER NOT NULL, "
            "signature TEXT, body BLOB NOT NULL)"
        )
        self._db = db

    async def open(self) -> object:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._connect)
        return None

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._db is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._db.close)
        self._thread.shutdown()

    def append(self, body: bytes, received_at: int, signature: str | None) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(((received_at, signature, body), future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        return future

    def _insert(self, rows: list[tuple[int, str | None, bytes]]) -> None:
        assert self._db is not None
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT INTO bodies (received_at, signature, body) VALUES (?, ?, ?)", rows)
            self._db.execute("COMMIT")
        except sqlite3.Error:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await loop.run_in_executor(self._thread, self._insert, [row for row, _ in batch])
                except sqlite3.Error as exc:
                    for _, future in batch:
                        future.set_exception(SpoolError("disk", str(exc)))
                    continue
                for _, future in batch:
                    future.set_result(None)
        finally:
            self._flusher = None

    def _take(self) -> int:
        assert self._db is not None
        rows = self._db.execute("SELECT id, received_at, signature, body FROM bodies ORDER BY id LIMIT 500").fetchall()
        if not rows:
            return 0
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM bodies WHERE id BETWEEN ? AND ?", (rows[0][0], rows[-1][0]))
            self._db.execute("COMMIT")
        except sqlite3.Error:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        return len(rows)

    async def drain_batch(self) -> int:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._take)


BODY = payloads.one_message("s")[0]


async def _writers(store: Store, count: int, until: float, latencies: list[float]) -> int:
    appended = 0

    async def writer() -> None:
        nonlocal appended
        while time.monotonic() < until:
            started = time.monotonic()
            try:
                await store.append(BODY.body, int(time.time() * 1000), BODY.signature)
            except SpoolError:
                return
            latencies.append(time.monotonic() - started)
            appended += 1

    await asyncio.gather(*(writer() for _ in range(count)))
    return appended


async def outage(store: Store, seconds: float) -> dict[str, float]:
    await store.open()
    try:
        latencies: list[float] = []
        started = time.monotonic()
        spooled = await _writers(store, 64, started + seconds, latencies)
        spool_rate = spooled / (time.monotonic() - started)
        latencies.sort()
        p99 = latencies[int(0.99 * len(latencies))] if latencies else float("nan")
        started = time.monotonic()
        drained = 0
        writers = asyncio.ensure_future(_writers(store, 8, started + seconds, []))
        while time.monotonic() - started < seconds or not writers.done():
            n = await store.drain_batch()
            drained += n
            if n == 0 and writers.done():
                break
        added = await writers
        while n := await store.drain_batch():
            drained += n
        drain_rate = drained / (time.monotonic() - started)
        return {"spooled_per_s": spool_rate, "p99_ms": 1000 * p99, "drained_per_s": drain_rate, "added": added}
    finally:
        await store.close()


async def full_disk(store: Store) -> dict[str, float]:
    """On a filesystem the store fills itself: how much can be drained, and do appends work again."""
    await store.open()
    try:
        appended = 0
        while True:
            try:
                await store.append(BODY.body + b" " * 2000, int(time.time() * 1000), BODY.signature)
            except SpoolError:
                break
            appended += 1
        drained = 0
        with contextlib.suppress(SpoolError, sqlite3.Error, OSError):
            while n := await store.drain_batch():
                drained += n
        try:
            await store.append(BODY.body, int(time.time() * 1000), BODY.signature)
            again = 1.0
        except (SpoolError, sqlite3.Error):
            again = 0.0
        return {"appended": appended, "drained": drained, "appends_again": again}
    finally:
        with contextlib.suppress(sqlite3.Error, OSError):
            await store.close()


def _tmpfs(path: Path) -> bool:
    mount = shutil.which("mount")
    if mount is None:
        return False
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run([mount, "-t", "tmpfs", "-o", "size=262144", "tmpfs", str(path)], check=False).returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--dir", type=Path)
    args = parser.parse_args()
    base = args.dir or Path(tempfile.mkdtemp(prefix="igw-spool-formats-"))
    print(
        "| store | spooled bodies/s (64 writers) | p99 to durable | drained bodies/s (8 writers on) | "
        "256 KiB tmpfs: appended / drained / appends again |"
    )
    print("|---|---|---|---|---|")
    for name, make in (("segments", SegmentStore), ("sqlite3", SqliteStore)):
        figures = asyncio.run(outage(make(base / name), args.seconds))  # type: ignore[abstract]
        small = base / f"{name}-tmpfs"
        full = "not measured (cannot mount)"
        if _tmpfs(small):
            try:
                f = asyncio.run(full_disk(make(small / "spool")))  # type: ignore[abstract]
                full = f"{f['appended']:.0f} / {f['drained']:.0f} / {'yes' if f['appends_again'] else 'no'}"
            finally:
                subprocess.run([shutil.which("umount") or "umount", "-l", str(small)], check=False)
        print(
            f"| {name} | {figures['spooled_per_s']:,.0f} | {figures['p99_ms']:.1f} ms | "
            f"{figures['drained_per_s']:,.0f} | {full} |"
        )
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
