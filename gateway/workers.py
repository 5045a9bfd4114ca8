"""``igw gateway --workers N``: N gateway processes sharing one port (SO_REUSEPORT).

Each worker is a full gateway with its own Kafka producer; the kernel spreads connections across
them. Metrics use prometheus_client's multiprocess mode, so any worker's ``/metrics`` answers for
all of them. The supervisor restarts a worker that dies, and on SIGHUP replaces every worker in
turn (start the new one, wait until it serves, then stop the old one gracefully): a restart that
never closes the port.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)

READY_PREFIX = "ready-"


def mark_ready(multiproc_dir: str | None) -> None:
    """Called by a worker once it serves: the supervisor waits for this before stopping an old one."""
    if multiproc_dir:
        Path(multiproc_dir, f"{READY_PREFIX}{os.getpid()}").touch()


@dataclass
class Worker:
    slot: int
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)


class Supervisor:
    def __init__(
        self, argv: Sequence[str], workers: int, shutdown_timeout: float, *, metrics_dir: str | None = None
    ) -> None:
        """``metrics_dir``: PROMETHEUS_MULTIPROC_DIR as configured; None: a temporary one, removed at the end."""
        self._argv = list(argv)
        self._count = workers
        self._shutdown_timeout = shutdown_timeout
        self._workers: dict[int, Worker] = {}
        self._stopping = False
        self._reload = False
        self._owns_metrics_dir = metrics_dir is None
        self._metrics_dir = metrics_dir or tempfile.mkdtemp(prefix="igw-metrics-")
        # Files of a previous run would be added to this run's counters.
        for stale in Path(self._metrics_dir).glob("*"):
            if stale.is_file():
                stale.unlink()

    def _spawn(self, slot: int) -> Worker:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": self._metrics_dir, "IGW_WORKER_SLOT": str(slot)}
        process = subprocess.Popen([sys.executable, "-m", "igw_tools.cli", *self._argv, "--worker"], env=env)  # noqa: S603
        log.info("worker %d started (pid %d)", slot, process.pid)
        return Worker(slot, process)

    def _wait_ready(self, worker: Worker, timeout: float = 30.0) -> bool:
        marker = Path(self._metrics_dir, f"{READY_PREFIX}{worker.process.pid}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker.exists():
                return True
            if worker.process.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def _retire(self, worker: Worker) -> None:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
            try:
                worker.process.wait(self._shutdown_timeout + 5)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
        self._forget(worker.process.pid)

    def _forget(self, pid: int) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, self._metrics_dir)  # type: ignore[no-untyped-call]
        Path(self._metrics_dir, f"{READY_PREFIX}{pid}").unlink(missing_ok=True)

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _on_reload(self, signum: int, frame: FrameType | None) -> None:
        self._reload = True

    def run(self) -> int:
        if _sysctl("net/ipv4/tcp_migrate_req") == "0":
            log.warning(
                "net.ipv4.tcp_migrate_req is 0: a rolling restart (SIGHUP) resets connections still queued at "
                "a retiring worker; set it to 1 so the kernel hands them to another worker"
            )
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        try:
            for slot in range(self._count):
                self._workers[slot] = self._spawn(slot)
            while not self._stopping:
                if self._reload:
                    self._reload = False
                    self._rolling_restart()
                self._replace_dead()
                time.sleep(0.2)
        finally:
            # SIGTERM every worker at once: each finishes its in-flight requests, then flushes.
            for worker in self._workers.values():
                if worker.process.poll() is None:
                    worker.process.send_signal(signal.SIGTERM)
            for worker in self._workers.values():
                self._retire(worker)
            if self._owns_metrics_dir:
                shutil.rmtree(self._metrics_dir, ignore_errors=True)
        return 0

    def _replace_dead(self) -> None:
        for slot, worker in list(self._workers.items()):
            status = worker.process.poll()
            if status is None:
                continue
            self._forget(worker.process.pid)
            if time.monotonic() - worker.started < 1.0:
                time.sleep(1.0)  # a worker that dies at once would otherwise spin
            log.warning(
                "worker %d (pid %d) exited with status %s; starting a new one", slot, worker.process.pid, status
            )
            self._workers[slot] = self._spawn(slot)

    def _rolling_restart(self) -> None:
        log.info("rolling restart of %d workers", len(self._workers))
        for slot, old in list(self._workers.items()):
            new = self._spawn(slot)
            if not self._wait_ready(new):
                log.error("new worker %d did not become ready; keeping the old one", slot)
                self._retire(new)
                continue
            self._workers[slot] = new
            self._retire(old)
        log.info("rolling restart done")


def _sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", name).read_text().strip()
    except OSError:
        return None
