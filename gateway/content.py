"""Sealing envelope content before it is published (``IGW_CONTENT_KEYS``, docs/privacy.md)."""

from __future__ import annotations

from igw.errors import KeyStoreUnavailable
from igw.normalize import Normalized
from igw.sealing import Sealer

__all__ = ["seal_normalized"]


async def seal_normalized(sealer: Sealer, normalized: Normalized) -> Normalized:
    """The same events with each person's content sealed; a key store that fails is a retriable publish error,
    so the body is spooled (or answered 503) like one Kafka did not take."""
    if not normalized.events:
        return normalized
    try:
        await sealer.prepare(normalized.events)
    except Exception as exc:  # any store failure: the body must not be lost, only delayed
        raise KeyStoreUnavailable(f"content key store: {type(exc).__name__}") from exc
    seal = sealer.seal
    return Normalized([seal(event) for event in normalized.events], normalized.dead_letter)
