"""The spool's files: frames, the cursor, and every blocking step, each run in the spool's writer thread.

A segment file is a sequence of frames::

    magic b"IGW1" | u32 payload length | u32 crc32(payload) | payload
    payload = i64 received_at (ms) | u16 signature length | signature | body

The cursor file is created once, 1 KiB, and then only overwritten in place: two 32-byte slots
(at bytes 0 and 512) taken in turn, each ``b"IGWC" | u64 sequence | u64 segment | u64 offset |
u32 crc32``, written and synced before the drain moves on. Overwriting allocated blocks needs no
free space, so the drain can always record its progress and delete drained segments, even on a
full disk; a torn slot is ignored in favour of the other one.

Each blocking step is a function of its own (create a segment, write, sync, read, write the
cursor, read a segment at start-up): the fault tests inject disk errors there.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

from igw.errors import SpoolUnavailable

__all__ = [
    "HEADER",
    "MAGIC",
    "MAX_PAYLOAD",
    "SUFFIX",
    "Fault",
    "SpooledBody",
    "close_all",
    "create_segment",
    "decode_frames",
    "encode_frame",
    "fault_of",
    "open_cursor",
    "probe_write",
    "read_range",
    "read_segment",
    "sync",
    "unavailable",
    "unlink_quietly",
    "write_all",
    "write_and_sync",
    "write_cursor",
]

log = logging.getLogger("gateway.spool")

MAGIC: Final = b"IGW1"
HEADER: Final = struct.Struct(">4sII")
_META: Final = struct.Struct(">qH")
# A frame longer than this is damage, not a body: the gateway refuses bodies far smaller.
MAX_PAYLOAD: Final = 256 * 1024 * 1024
SUFFIX: Final = ".seg"

_CURSOR_MAGIC: Final = b"IGWC"
_CURSOR_SLOT: Final = struct.Struct(">4sQQQ")
_CURSOR_SLOTS: Final = (0, 512)  # separate sectors: a torn write can damage one slot only
_CURSOR_SIZE: Final = 1024
# What probe() writes and syncs to see whether the disk takes writes again.
_PROBE_BYTES: Final = 4096


class Fault(StrEnum):
    """Why the spool cannot take (or give back) bodies; each is a label of ``igw_spool_failures_total``."""

    FULL = "full"  # over IGW_SPOOL_MAX_BYTES
    TOO_OLD = "too_old"  # the oldest body is over IGW_SPOOL_MAX_AGE_SECONDS: the drain is stuck
    DISK_FULL = "disk_full"  # ENOSPC, EDQUOT: the filesystem is full before the spool's own limit
    IO_ERROR = "io_error"  # EIO and any other disk error
    READ_ONLY = "read_only"  # EROFS: the filesystem was remounted read-only (often after disk errors)
    PERMISSION = "permission"  # EACCES, EPERM: the volume's owner or mode changed


_FAULT_OF_ERRNO: Final = {
    errno.ENOSPC: Fault.DISK_FULL,
    errno.EDQUOT: Fault.DISK_FULL,
    errno.EROFS: Fault.READ_ONLY,
    errno.EACCES: Fault.PERMISSION,
    errno.EPERM: Fault.PERMISSION,
}


def fault_of(exc: BaseException) -> Fault:
    """The named fault of a disk error; anything unexpected counts as an I/O error."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return _FAULT_OF_ERRNO.get(exc.errno, Fault.IO_ERROR)
    return Fault.IO_ERROR


def unavailable(step: str, exc: BaseException) -> SpoolUnavailable:
    """``SpoolUnavailable`` naming the step and the fault of ``exc``."""
    fault = fault_of(exc)
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
    return SpoolUnavailable(fault.value, f"spool {step} failed: {detail}")


@dataclass(frozen=True, slots=True)
class SpooledBody:
    received_at: int
    signature: str | None
    body: bytes


def encode_frame(body: bytes, received_at: int, signature: str | None) -> bytes:
    sig = signature.encode("latin-1", "replace") if signature else b""
    payload = _META.pack(received_at, len(sig)) + sig + body
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


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
        if size - pos < HEADER.size:
            yield base + pos, "torn"
            return
        magic, length, crc = HEADER.unpack_from(view, pos)
        if magic != MAGIC or length < _META.size or length > MAX_PAYLOAD:
            yield base + pos, "corrupt"
            return
        start = pos + HEADER.size
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


def create_segment(path: Path, dir_fd: int | None) -> int:
    """Rotation: a new segment file whose name survives a crash."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        if dir_fd is not None:
            os.fsync(dir_fd)
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    return fd


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def sync(fd: int) -> None:
    os.fdatasync(fd)


def write_and_sync(path: Path, fd: int | None, end: int, data: bytes, dir_fd: int | None) -> int:
    if fd is None:
        fd = create_segment(path, dir_fd)
    try:
        write_all(fd, data)
        sync(fd)
    except BaseException:
        # Leave no half frame behind for the next write to follow; the scan would catch it anyway.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, end)
        os.close(fd)
        raise
    return fd


def read_range(path: Path, start: int, length: int) -> bytes:
    with path.open("rb") as f:
        f.seek(start)
        return f.read(length)


def read_segment(path: Path) -> bytes:
    return path.read_bytes()


def open_cursor(path: Path, dir_fd: int) -> tuple[int, int, tuple[int, int]]:
    """(fd, sequence, (segment, offset)) of the cursor file, creating it full-size when missing."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        data = os.pread(fd, _CURSOR_SIZE, 0)
        best: tuple[int, int, int] | None = None  # (sequence, segment, offset)
        for start in _CURSOR_SLOTS:
            slot = data[start : start + _CURSOR_SLOT.size + 4]
            if len(slot) < _CURSOR_SLOT.size + 4:
                continue
            magic, seq, segment, offset = _CURSOR_SLOT.unpack_from(slot)
            (crc,) = struct.unpack_from(">I", slot, _CURSOR_SLOT.size)
            if (
                magic == _CURSOR_MAGIC
                and zlib.crc32(slot[: _CURSOR_SLOT.size]) == crc
                and (best is None or seq > best[0])
            ):
                best = (seq, segment, offset)
        if best is None and data.strip(b"\0"):
            best = _legacy_cursor(data)
        if len(data) < _CURSOR_SIZE:
            # Allocated once, while there is room: later writes only overwrite these blocks.
            seq, segment, offset = best or (0, 0, 0)
            os.pwrite(fd, bytes(_CURSOR_SIZE), 0)
            write_cursor(fd, seq, segment, offset)
            os.fsync(dir_fd)
    except BaseException:
        os.close(fd)
        raise
    if best is None:
        return fd, 0, (0, 0)
    return fd, best[0], (best[1], best[2])


def _legacy_cursor(data: bytes) -> tuple[int, int, int] | None:
    """The text cursor (``<segment> <offset>``) of earlier versions."""
    try:
        segment, offset = data.decode("ascii").split()
        return 0, int(segment), int(offset)
    except (UnicodeDecodeError, ValueError):
        log.warning("spool cursor unreadable; replaying every segment from its start (duplicates possible)")
        return None


def write_cursor(fd: int, seq: int, segment: int, offset: int) -> None:
    slot = _CURSOR_SLOT.pack(_CURSOR_MAGIC, seq, segment, offset)
    slot += struct.pack(">I", zlib.crc32(slot))
    os.pwrite(fd, slot, _CURSOR_SLOTS[seq % 2])
    os.fdatasync(fd)


def probe_write(directory: Path, dir_fd: int | None) -> None:
    """The steps of an append (create, write, sync) on a scratch file."""
    path = directory / "probe"
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = create_segment(path, dir_fd)
    try:
        write_all(fd, bytes(_PROBE_BYTES))
        sync(fd)
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()


def unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not delete drained spool segment %s (%s); the next start deletes it", path.name, exc)


def close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
