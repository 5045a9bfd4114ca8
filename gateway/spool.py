"""A local append-only spool of signed webhook bodies, for when Kafka cannot take them in time.

Each body is stored as Meta sent it, with its receipt time and signature header, so draining it
later re-runs ``normalize(body, received_at)`` and produces exactly the records the direct path
would have produced (same event ids, same ``received_at``).

On disk: ``<dir>/<id>.seg`` segment files of frames, and ``<dir>/cursor`` naming how far the
drain got (segment id and byte offset; rewritten atomically, not fsynced: losing it only replays
records again, which consumers deduplicate by event id). A frame is::

    magic b"IGW1" | u32 payload length | u32 crc32(payload) | payload
    payload = i64 received_at (ms) | u16 signature length | signature | body

A torn last write (the process or the machine died mid-write) or a damaged frame is found by the
length and checksum at start-up, reported (log, ``igw_spool_failures_total``) and moved aside to
``<id>.seg.bad``: it is never replayed as garbage.

Writes are group commits: bodies appended while an fsync is running are written and synced
together by the next one, in one thread of their own so the event loop never waits on the disk.
Only the event loop touches the bookkeeping; the writer thread gets explicit arguments.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import struct
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from gateway.metrics import GatewayMetrics
from igw.errors import SpoolFull, SpoolUnavailable

__all__ = [
    "ScanReport",
    "Spool",
    "SpoolBatch",
    "SpoolLocked",
    "SpooledBody",
    "decode_frames",
    "encode_frame",
    "open_spool",
    "orphan_dirs",
]

log = logging.getLogger(__name__)

MAGIC: Final = b"IGW1"
_HEADER: Final = struct.Struct(">4sII")
_META: Final = struct.Struct(">qH")
# A frame longer than this is damage, not a body: the gateway refuses bodies far smaller.
MAX_PAYLOAD: Final = 256 * 1024 * 1024
_SUFFIX: Final = ".seg"
# Processes on one host (``--workers``, a rolling restart) each hold one of <base>/0, <base>/1, ...
MAX_DIRECTORIES: Final = 64


class SpoolLocked(Exception):
    """Another live process holds this spool directory."""


@dataclass(frozen=True, slots=True)
class SpooledBody:
    received_at: int
    signature: str | None
    body: bytes


@dataclass(frozen=True, slots=True)
class SpoolBatch:
    """Bodies read for the drain, and the position just after the last of them."""

    items: list[SpooledBody]
    segment: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class ScanReport:
    """What start-up found: bodies to replay and damage set aside."""

    records: int
    bytes: int
    segments: int
    torn: int
    corrupt: int


@dataclass(slots=True)
class _Segment:
    id: int
    path: Path
    # Bytes known to be durable and well-framed; readers never look past it.
    end: int
    fd: int | None = field(default=None)


def encode_frame(body: bytes, received_at: int, signature: str | None) -> bytes:
    sig = signature.encode("latin-1", "replace") if signature else b""
    payload = _META.pack(received_at, len(sig)) + sig + body
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def _decode_payload(payload: bytes | memoryview) -> SpooledBody:
    received_at, sig_len = _META.unpack_from(payload)
    start = _META.size
    sig = bytes(payload[start : start + sig_len]).decode("latin-1") if sig_len else None
    return SpooledBody(received_at, sig, bytes(payload[start + sig_len :]))


def decode_frames(data: bytes, base: int = 0) -> Iterator[tuple[int, SpooledBody | str]]:
    """(offset after the frame, body) per good frame; a final (offset, "torn" | "corrupt") at damage.

    Stops at the end of ``data`` or at the first bad frame. ``base`` is added to offsets.
    """
    view = memoryview(data)
    pos = 0
    size = len(data)
    while pos < size:
        if size - pos < _HEADER.size:
            yield base + pos, "torn"
            return
        magic, length, crc = _HEADER.unpack_from(view, pos)
        if magic != MAGIC or length < _META.size or length > MAX_PAYLOAD:
            yield base + pos, "corrupt"
            return
        start = pos + _HEADER.size
        if start + length > size:
            yield base + pos, "torn"
            return
        payload = view[start : start + length]
        if zlib.crc32(payload) != crc:
            # Damage in the last frame is a torn write; anything earlier is corruption.
            yield base + pos, "torn" if start + length == size else "corrupt"
            return
        pos = start + length
        yield base + pos, _decode_payload(payload)


class Spool:
    """Durable FIFO of signed bodies with size and age limits. Create, then ``await open()``."""

    def __init__(
        self,
        directory: Path,
        *,
        metrics: GatewayMetrics,
        max_bytes: int,
        max_age_seconds: float,
        segment_bytes: int = 64 * 1024 * 1024,
        report_metrics: bool = True,
    ) -> None:
        self.directory = directory
        self._metrics = metrics
        self.max_bytes = max_bytes
        self.max_age_ms = int(max_age_seconds * 1000)
        self.segment_bytes = segment_bytes
        # False for a dead process's spool being adopted: the gauges describe this process's own.
        self.report_metrics = report_metrics
        self._lock_fd: int | None = None
        self.scan_report = ScanReport(0, 0, 0, 0, 0)
        self._segments: list[_Segment] = []
        self._active: _Segment | None = None
        self._next_id = 1
        # The drain's position: everything before it was acknowledged by Kafka.
        self._cursor_segment = 0
        self._cursor_offset = 0
        self._records = 0
        self._bytes = 0
        self._oldest_ms: int | None = None
        self._pending: list[tuple[bytes, int, asyncio.Future[None]]] = []
        self._pending_bytes = 0
        self._flusher: asyncio.Task[None] | None = None
        self._has_records = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._writer: ThreadPoolExecutor | None = None
        self._dir_fd: int | None = None
        # Set by a failed write, cleared by the next good one (readiness reports it).
        self._failing = False
        # Set when a body did not fit, cleared when the drain frees space.
        self._full = False

    # -- state --------------------------------------------------------------------------------

    @property
    def records(self) -> int:
        """Durable bodies not yet acknowledged by Kafka."""
        return self._records

    @property
    def size_bytes(self) -> int:
        """Bytes of those bodies on disk, framing included."""
        return self._bytes

    @property
    def oldest_received_at(self) -> int | None:
        return self._oldest_ms

    def is_idle(self) -> bool:
        """No durable record left and no append on its way to the disk."""
        return self._records == 0 and not self._pending and self._flusher is None

    def accepting(self) -> bool:
        """Open, under both limits and not failing to write: new bodies would be taken."""
        oldest = self._oldest_ms
        return (
            self._writer is not None
            and not self._failing
            and not self._full
            and (oldest is None or time.time() * 1000 - oldest <= self.max_age_ms)
        )

    def oldest_age_seconds(self) -> float:
        oldest = self._oldest_ms
        return 0.0 if oldest is None else max(0.0, time.time() - oldest / 1000)

    async def wait_for_records(self) -> None:
        await self._has_records.wait()

    async def wait_empty(self) -> None:
        await self._empty.wait()

    # -- start-up and shutdown -----------------------------------------------------------------

    async def open(self) -> ScanReport:
        """Create the directory, read the cursor, validate every segment and set damage aside."""
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="igw-spool")
        try:
            report = await asyncio.get_running_loop().run_in_executor(self._writer, self._scan)
        except BaseException:
            self._writer.shutdown(wait=False)
            self._writer = None
            raise
        self.scan_report = report
        self.publish_metrics()
        if report.records:
            self._set_has_records(True)
        return report

    async def close(self) -> None:
        """Finish appends in progress, then close files. Undrained records stay for the next start."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        writer = self._writer
        if writer is None:
            return
        fds = [s.fd for s in self._segments if s.fd is not None]
        fds += [fd for fd in (self._dir_fd, self._lock_fd) if fd is not None]  # closing the lock releases it
        for seg in self._segments:
            seg.fd = None
        self._dir_fd = self._lock_fd = None
        self._active = None
        await asyncio.get_running_loop().run_in_executor(writer, _close_all, fds)
        writer.shutdown(wait=True)
        self._writer = None

    def _scan(self) -> ScanReport:
        """Runs in the writer thread before anything else uses the spool."""
        self.directory.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(self.directory / "lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            # Released by the kernel when the process dies, kill -9 included.
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise SpoolLocked(str(self.directory)) from None
        self._lock_fd = lock_fd
        self._dir_fd = os.open(self.directory, os.O_RDONLY)
        cursor_segment, cursor_offset = self._read_cursor()
        ids = sorted(int(p.stem) for p in self.directory.glob(f"*{_SUFFIX}") if p.stem.isdigit())
        torn = corrupt = 0
        for seg_id in ids:
            path = self._path(seg_id)
            if seg_id < cursor_segment:
                path.unlink()  # drained before the last stop
                continue
            start = cursor_offset if seg_id == cursor_segment else 0
            data = path.read_bytes()
            if start > len(data):
                log.warning("spool cursor points past the end of %s; replaying that segment from its start", path.name)
                start = 0
            good = start
            first_ms: int | None = None
            damage: str | None = None
            count = 0
            for offset, item in decode_frames(data[start:], start):
                if isinstance(item, str):
                    damage = item
                    break
                good = offset
                count += 1
                if first_ms is None:
                    first_ms = item.received_at
            if damage is not None:
                bad = path.with_suffix(f"{_SUFFIX}.bad")
                with bad.open("ab") as aside:
                    aside.write(data[good:])
                os.truncate(path, good)
                if damage == "torn":
                    torn += 1
                else:
                    corrupt += 1
                self._metrics.spool_failures.labels("torn_write" if damage == "torn" else "corrupt").inc()
                log.warning(
                    "spool segment %s: %s frame at byte %d; %d bytes moved to %s and not replayed",
                    path.name,
                    "a torn (incomplete) last" if damage == "torn" else "a damaged",
                    good,
                    len(data) - good,
                    bad.name,
                )
            if count == 0:
                path.unlink()
                continue
            self._segments.append(_Segment(seg_id, path, good))
            self._records += count
            self._bytes += good - start
            if self._oldest_ms is None:
                self._oldest_ms = first_ms
            if seg_id == cursor_segment:
                self._cursor_segment, self._cursor_offset = seg_id, start
        if self._segments and self._cursor_segment != self._segments[0].id:
            self._cursor_segment, self._cursor_offset = self._segments[0].id, 0
        # Never reuse an id at or below the cursor's: the next scan would take it for drained.
        self._next_id = max(ids[-1] if ids else 0, cursor_segment) + 1
        return ScanReport(self._records, self._bytes, len(self._segments), torn, corrupt)

    def _read_cursor(self) -> tuple[int, int]:
        path = self.directory / "cursor"
        try:
            seg, offset = path.read_text().split()
            return int(seg), int(offset)
        except FileNotFoundError:
            return 0, 0
        except (OSError, ValueError):
            log.warning("spool cursor unreadable; replaying every segment from its start (duplicates possible)")
            return 0, 0

    def _path(self, seg_id: int) -> Path:
        return self.directory / f"{seg_id:012d}{_SUFFIX}"

    # -- appending ---------------------------------------------------------------------------

    def append(self, body: bytes, received_at: int, signature: str | None) -> asyncio.Future[None]:
        """Queue ``body`` for the next group commit; the future is done once it is on disk.

        Raises ``SpoolFull`` at once when over a limit; the future fails with ``SpoolUnavailable``
        when the write or the fsync fails.
        """
        oldest = self._oldest_ms
        if oldest is not None and received_at - oldest > self.max_age_ms:
            self._metrics.spool_failures.labels("too_old").inc()
            raise SpoolFull("too_old", f"the oldest spooled body is over {self.max_age_ms // 1000}s old")
        frame = encode_frame(body, received_at, signature)
        if self._bytes + self._pending_bytes + len(frame) > self.max_bytes:
            self._full = True
            self._metrics.spool_failures.labels("full").inc()
            raise SpoolFull("full", f"the spool holds {self._bytes} of {self.max_bytes} bytes")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((frame, received_at, future))
        self._pending_bytes += len(frame)
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="igw-spool-flush")
        return future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                self._pending_bytes = 0
                data = b"".join(frame for frame, _, _ in batch)
                seg = self._active
                if seg is None:
                    seg = self._active = _Segment(self._next_id, self._path(self._next_id), 0)
                    self._next_id += 1
                    self._segments.append(seg)
                started = time.perf_counter()
                try:
                    seg.fd = await loop.run_in_executor(
                        self._writer, _write_and_sync, seg.path, seg.fd, seg.end, data, self._dir_fd
                    )
                except OSError as exc:
                    seg.fd = None  # the writer closed it: never close a number the OS may reuse
                    self._metrics.spool_failures.labels("io_error").inc()
                    log.error(
                        "spool write to %s failed (%s); answering 503 so Meta retries. Check the disk",
                        seg.path,
                        exc.strerror or type(exc).__name__,
                    )
                    self._failing = True
                    self._retire_active()
                    failure = SpoolUnavailable("io_error", "the spool could not write to disk")
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(failure)
                    continue
                self._metrics.spool_write_duration.observe(time.perf_counter() - started)
                self._failing = False
                seg.end += len(data)
                self._records += len(batch)
                self._bytes += len(data)
                if self._oldest_ms is None:
                    self._oldest_ms = min(received_at for _, received_at, _ in batch)
                self._metrics.spool_appends.inc(len(batch))
                self.publish_metrics()
                self._set_has_records(True)
                if seg.end >= self.segment_bytes:
                    self._retire_active()
                for _, _, future in batch:
                    if not future.done():
                        future.set_result(None)
        finally:
            self._flusher = None

    def _retire_active(self) -> None:
        """Stop appending to the active segment; the next write starts a new one."""
        seg = self._active
        self._active = None
        if seg is None:
            return
        fd, seg.fd = seg.fd, None
        if fd is not None and self._writer is not None:
            self._writer.submit(os.close, fd)
        if seg.end == 0:  # nothing durable in it (a failed first write)
            self._segments.remove(seg)
            if self._writer is not None:
                self._writer.submit(_unlink_quietly, seg.path)

    # -- draining ----------------------------------------------------------------------------

    async def read_batch(self, max_records: int, max_bytes: int) -> SpoolBatch | None:
        """The oldest unacknowledged bodies, from one segment; ``None`` when nothing is durable yet."""
        await self._drop_drained_segments()
        if not self._segments:
            return None
        seg = self._segments[0]
        start = self._cursor_offset if seg.id == self._cursor_segment else 0
        available = seg.end - start
        if available <= 0:
            if len(self._segments) == 1:
                # Everything durable was read and acknowledged: the counts must say so too.
                self._records = self._bytes = 0
                self._oldest_ms = None
                self._set_has_records(False)
                self.publish_metrics()
            return None
        data = await asyncio.to_thread(_read_range, seg.path, start, min(available, max_bytes))
        items: list[SpooledBody] = []
        end = start
        for offset, item in decode_frames(data, start):
            if isinstance(item, str):
                break
            items.append(item)
            end = offset
            if len(items) >= max_records:
                break
        if not items:
            # A frame larger than max_bytes: read exactly that one, if its header is sane.
            if len(data) < _HEADER.size:
                self._skip_damage(seg, start)
                return None
            magic, length, _ = _HEADER.unpack_from(data)
            if magic != MAGIC or length > MAX_PAYLOAD:
                self._skip_damage(seg, start)
                return None
            whole = await asyncio.to_thread(_read_range, seg.path, start, _HEADER.size + length)
            for offset, item in decode_frames(whole, start):
                if isinstance(item, str):
                    self._skip_damage(seg, start)
                    return None
                items.append(item)
                end = offset
        self._oldest_ms = items[0].received_at
        return SpoolBatch(items, seg.id, start, end)

    def _skip_damage(self, seg: _Segment, start: int) -> None:
        """A frame that was good when written reads back bad: report it and skip the segment's rest."""
        self._metrics.spool_failures.labels("corrupt").inc()
        log.error("spool segment %s damaged at byte %d; skipping the rest of it", seg.path.name, start)
        self._bytes -= seg.end - start
        seg.end = start
        if seg is self._active:
            self._retire_active()

    async def ack(self, batch: SpoolBatch) -> None:
        """Kafka acknowledged ``batch``: move the cursor past it and drop what is fully drained."""
        self._cursor_segment, self._cursor_offset = batch.segment, batch.end
        self._records -= len(batch.items)
        self._bytes -= batch.end - batch.start
        self._metrics.spool_drained.inc(len(batch.items))
        self._full = False
        seg = self._segments[0]
        if batch.end >= seg.end and seg is self._active and not self._pending and self._flusher is None:
            # Caught up with the writer: start the next body in a fresh segment and drop this one.
            self._retire_active()
        if self._records == 0:
            self._oldest_ms = None
            self._bytes = 0
            self._set_has_records(False)
        self.publish_metrics()
        await self._drop_drained_segments()
        if self._writer is not None:
            await asyncio.get_running_loop().run_in_executor(
                self._writer, _write_cursor, self.directory, self._cursor_segment, self._cursor_offset
            )

    async def _drop_drained_segments(self) -> None:
        while self._segments:
            seg = self._segments[0]
            cursor = self._cursor_segment
            drained = seg.id < cursor or (seg.id == cursor and self._cursor_offset >= seg.end)
            if seg is self._active or not drained:
                return
            self._segments.pop(0)
            if self._segments:
                self._cursor_segment, self._cursor_offset = self._segments[0].id, 0
            if self._writer is not None:
                await asyncio.get_running_loop().run_in_executor(self._writer, _unlink_quietly, seg.path)

    def _set_has_records(self, has: bool) -> None:
        if has:
            self._has_records.set()
            self._empty.clear()
        else:
            self._has_records.clear()
            self._empty.set()

    def publish_metrics(self) -> None:
        """Set the gauges (also called every second for the age: multiprocess gauges cannot compute it)."""
        if self.report_metrics:
            self._metrics.spool_bytes.set(self._bytes)
            self._metrics.spool_records.set(self._records)
            self._metrics.spool_oldest_age.set(self.oldest_age_seconds())


async def open_spool(base: Path, *, metrics: GatewayMetrics, **limits: Any) -> Spool:
    """This process's spool: the first of ``base``/0, /1, ... that no live process holds."""
    for n in range(MAX_DIRECTORIES):
        spool = Spool(base / str(n), metrics=metrics, **limits)
        try:
            await spool.open()
        except SpoolLocked:
            continue
        return spool
    raise RuntimeError(f"all {MAX_DIRECTORIES} spool directories under {base} are held by live processes")


def orphan_dirs(base: Path, own: Path) -> list[Path]:
    """Spool directories beside ``own`` that hold segments (their owner may be dead: adopt if unlocked)."""
    if not base.is_dir():
        return []
    return sorted(
        (p for p in base.iterdir() if p.name.isdigit() and p != own and p.is_dir() and any(p.glob(f"*{_SUFFIX}"))),
        key=lambda p: int(p.name),
    )


# -- blocking helpers, run in threads --------------------------------------------------------------


def _write_and_sync(path: Path, fd: int | None, end: int, data: bytes, dir_fd: int | None) -> int:
    created = fd is None
    if fd is None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        if created and dir_fd is not None:
            os.fsync(dir_fd)  # the new file's name must survive a crash too
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fdatasync(fd)
    except OSError:
        # Leave no half frame behind for the next write to follow; the scan would catch it anyway.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, end)
        os.close(fd)
        raise
    return fd


def _read_range(path: Path, start: int, length: int) -> bytes:
    with path.open("rb") as f:
        f.seek(start)
        return f.read(length)


def _write_cursor(directory: Path, segment: int, offset: int) -> None:
    tmp = directory / "cursor.tmp"
    tmp.write_text(f"{segment} {offset}\n")
    os.replace(tmp, directory / "cursor")


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
