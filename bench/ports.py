"""Ports for the processes a benchmark starts: any free one, or only those of a given range.

On a machine shared with other sessions each may be given its own range (``--ports 19300-19399``
or ``IGW_BENCH_PORTS``), so that two benchmarks never race for the same port.
"""

from __future__ import annotations

import socket

from igw_tools.localbroker import free_port

__all__ = ["PortRange", "parse_range"]


def parse_range(text: str) -> tuple[int, int]:
    """``"19300-19399"`` -> (19300, 19399)."""
    first, sep, last = text.partition("-")
    try:
        low, high = int(first), int(last if sep else first)
    except ValueError:
        raise ValueError(f"expected a port range like 19300-19399, got {text!r}") from None
    if not 1 <= low <= high <= 65535:
        raise ValueError(f"expected a port range like 19300-19399, got {text!r}")
    return low, high


class PortRange:
    """Hands out ports that are free now, in turn over the range (a port just released may linger)."""

    def __init__(self, span: tuple[int, int] | None = None) -> None:
        self.span = span
        self._next = span[0] if span else 0

    def take(self, host: str = "127.0.0.1") -> int:
        if self.span is None:
            return free_port(host)
        low, high = self.span
        size = high - low + 1
        for _ in range(size):
            port = self._next
            self._next = low + (port - low + 1) % size
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue
            return port
        raise RuntimeError(f"no free port in {low}-{high}")

    def describe(self) -> str:
        return "any free port" if self.span is None else f"ports {self.span[0]}-{self.span[1]}"
