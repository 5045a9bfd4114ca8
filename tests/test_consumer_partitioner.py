"""The agent's reply records land on the partition any Kafka client would choose for their key."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from consumers.common.partitioner import CachedPartitioner


def test_cached_partitioner_chooses_what_the_default_partitioner_chooses() -> None:
    """Same partition as aiokafka's murmur2 partitioner for every key, also after the table was emptied."""
    cached, default = CachedPartitioner(limit=7), DefaultPartitioner()
    for partitions in ([0, 1, 2], [0, 1, 2, 3, 4, 5], [3, 7, 11]):
        for n in range(40):
            key = f"instagram:17841400000000000:{n % 13}".encode()
            assert cached(key, partitions, partitions) == default(key, partitions, partitions)


def test_records_without_a_key_go_to_an_available_partition() -> None:
    """A record without a key goes to one of the available partitions, as with the default partitioner."""
    assert CachedPartitioner()(None, [0, 1, 2], [2]) == 2
