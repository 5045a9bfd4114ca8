"""Kafka's default partitioner with each key's hash kept (``igw.partitioning``).

The agent keys its reply records by conversation, and one conversation gets many replies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from aiokafka.partitioner import DefaultPartitioner

from igw.partitioning import key_hasher

__all__ = ["CachedPartitioner"]

P = TypeVar("P")


class CachedPartitioner:
    """Chooses the partition ``DefaultPartitioner`` chooses, hashing each key once."""

    __slots__ = ("_hash",)

    def __init__(self, limit: int = 100_000) -> None:
        self._hash = key_hasher(limit)

    def __call__(self, key: bytes | None, all_partitions: Sequence[P], available: Sequence[P]) -> P:
        if key is None:
            chosen: P = DefaultPartitioner()(key, all_partitions, available)
            return chosen
        return all_partitions[self._hash(key) % len(all_partitions)]
