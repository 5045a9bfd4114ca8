"""Kafka's default partitioner with each key's hash kept.

aiokafka's ``DefaultPartitioner`` hashes the key with murmur2 (as the Java client does, so igw's
records land where any Kafka client would put them) in pure Python, for every record. The agent
keys its reply records by conversation, and one conversation gets many replies: the hash of a key
is computed once and kept, in a table that is emptied when it gets large.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from aiokafka.partitioner import DefaultPartitioner, murmur2

__all__ = ["CachedPartitioner"]

P = TypeVar("P")


class CachedPartitioner:
    """Chooses the partition ``DefaultPartitioner`` chooses, hashing each key once."""

    __slots__ = ("_hashes", "_limit")

    def __init__(self, limit: int = 100_000) -> None:
        self._hashes: dict[bytes, int] = {}
        self._limit = limit

    def __call__(self, key: bytes | None, all_partitions: Sequence[P], available: Sequence[P]) -> P:
        if key is None:
            chosen: P = DefaultPartitioner()(key, all_partitions, available)
            return chosen
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self._limit:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]
