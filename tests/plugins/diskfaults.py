"""Disk faults for the spool: errors injected at one step, and a real small filesystem that fills up.

Each blocking step of the spool is a function of ``gateway.spool_disk``; ``disk_fault(step, errno)``
makes that step raise the ``OSError`` the kernel would (until ``clear()``). ``small_fs`` is a
256 KiB tmpfs mounted for the test when the test may mount one (root), and otherwise a directory
whose segment writes fail with ENOSPC past 256 KiB (injected): the spool sees the same error.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from gateway import spool_disk

# Step name -> the spool_disk function that performs it.
STEPS: Final = {
    "write": "write_all",
    "fsync": "sync",
    "rotation": "create_segment",
    "cursor": "write_cursor",
    "read": "read_range",
    "replay": "read_segment",
}
SMALL_FS_BYTES: Final = 256 * 1024


@dataclass
class DiskFault:
    step: str
    errno: int
    active: bool = True
    raised: int = 0

    def clear(self) -> None:
        self.active = False


DiskFaultInjector = Callable[[str, int], DiskFault]


@pytest.fixture
def disk_fault(monkeypatch: pytest.MonkeyPatch) -> DiskFaultInjector:
    """``disk_fault(step, errno.EIO)``: that spool step fails with that error until ``.clear()``."""

    def inject(step: str, err: int) -> DiskFault:
        fault = DiskFault(step, err)
        name = STEPS[step]
        original = getattr(spool_disk, name)

        def failing(*args: Any, **kwargs: Any) -> Any:
            if fault.active:
                fault.raised += 1
                if name == "write_all":
                    # As a disk filling up mid-write does: half the bytes land, then the error.
                    fd, data = args
                    original(fd, data[: len(data) // 2])
                raise OSError(err, os.strerror(err))
            return original(*args, **kwargs)

        monkeypatch.setattr(spool_disk, name, failing)
        return fault

    return inject


@dataclass(frozen=True)
class SmallFs:
    path: Path
    kind: str  # "tmpfs" (a real filesystem of SMALL_FS_BYTES) or "injected"


@pytest.fixture
def small_fs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmallFs]:
    """A directory on a filesystem of 256 KiB: a real tmpfs when mounting is allowed, else injected ENOSPC."""
    mount = tmp_path / "smallfs"
    mount.mkdir()
    mount_bin, umount_bin = shutil.which("mount"), shutil.which("umount")
    options = f"size={SMALL_FS_BYTES},mode=0700"
    mounted = (
        mount_bin is not None
        and umount_bin is not None
        and subprocess.run(
            [mount_bin, "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True, check=False
        ).returncode
        == 0
    )
    if mounted:
        assert umount_bin is not None
        try:
            yield SmallFs(mount, "tmpfs")
        finally:
            subprocess.run([umount_bin, "-l", str(mount)], capture_output=True, check=False)
        return
    original = spool_disk.write_all

    def write_all(fd: int, data: bytes) -> None:
        used = sum(p.stat().st_size for p in mount.rglob("*") if p.is_file())
        if used + len(data) > SMALL_FS_BYTES:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        original(fd, data)

    monkeypatch.setattr(spool_disk, "write_all", write_all)
    yield SmallFs(mount, "injected")
