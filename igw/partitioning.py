"""The partition Kafka's default partitioner picks for a key, with each key's hash kept.

aiokafka's ``DefaultPartitioner`` hashes keys with murmur2 (as the Java client does, so igw's
records land where any Kafka client would put them) in pure Python, for every record. igw keys
records by conversation, and conversations repeat: each key is hashed once, in a table that is
emptied when it gets large.
"""

from __future__ import annotations

from collections.abc import Callable

from aiokafka.partitioner import murmur2

__all__ = ["key_hasher"]


def key_hasher(limit: int = 65_536) -> Callable[[bytes], int]:
    """A function giving murmur2(key) as the default partitioner uses it (non-negative); partition
    = hash % partitions. A closure rather than an object: it is called once per record."""
    hashes: dict[bytes, int] = {}

    def key_hash(key: bytes) -> int:
        value = hashes.get(key)
        if value is None:
            if len(hashes) >= limit:
                hashes.clear()
            value = hashes[key] = murmur2(key) & 0x7FFFFFFF
        return value

    return key_hash
