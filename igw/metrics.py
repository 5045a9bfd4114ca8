"""The registry one igw process serves on ``/metrics``: its own, never prometheus_client's global one.

Every process builds its metrics into the registry this returns (nothing registers on import), so
a process's ``/metrics`` shows its own series and no other's, whatever modules it imported.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

__all__ = ["process_registry"]


def process_registry() -> CollectorRegistry:
    """A new registry with the process's own CPU, memory, file descriptors, GC and Python version."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
