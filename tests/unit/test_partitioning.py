"""The Java default partitioner's choice of partition for a key (consumer.kafka.partitioning)."""

from __future__ import annotations

import gc
import tracemalloc

import pytest
from aiokafka.partitioner import DefaultPartitioner

from consumer.kafka.partitioning import CACHED_KEY_BYTES, hashes_to

PARTITIONS = 12

#: Java ``Utils.murmur2`` of these UTF-8 keys, as published by Akka's and kafkajs's test suites
#: (both generated with Kafka's own implementation).
JAVA_MURMUR2 = {
    b"0": 971027396,
    b"1": -1993445489,
    b"12": 126087238,
    b"123": -267702483,
    b"1234": -1614185708,
    b"12345": -1188365604,
}


class TestHashesTo:
    @pytest.mark.parametrize(("key", "java_hash"), sorted(JAVA_MURMUR2.items()))
    @pytest.mark.parametrize("partitions", [1, 3, 12, 100])
    def test_matches_java_default_partitioner(
        self, key: bytes, java_hash: int, partitions: int
    ) -> None:
        """The partition equals Java's toPositive(murmur2(key)) % n for known Java hashes."""
        assert hashes_to(key, partitions) == (java_hash & 0x7FFFFFFF) % partitions

    @pytest.mark.parametrize("key", [b"job-1", b"a1b2c3", "clé-é".encode(), b"x" * 37])
    def test_agrees_with_aiokafka_default_partitioner(self, key: bytes) -> None:
        """The partition equals what aiokafka's DefaultPartitioner picks for the same key."""
        partitions = list(range(PARTITIONS))
        assert hashes_to(key, PARTITIONS) == DefaultPartitioner()(key, partitions, partitions)

    def test_long_keys_are_placed_alike_and_not_kept(self) -> None:
        """A key past the cached length lands where aiokafka's partitioner puts it, and none
        is kept once its record is gone: a broken producer sending whole values as keys
        would otherwise have 65,536 of them cached."""
        long_key = b"k" * (CACHED_KEY_BYTES + 1)
        everyone = list(range(PARTITIONS))
        expected = DefaultPartitioner()(long_key, everyone, everyone)
        assert hashes_to(long_key, PARTITIONS) == expected
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for n in range(3):
                hashes_to(b"%d" % n + b"v" * 100_000, PARTITIONS)
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert grown < 100_000, grown  # cached, the three keys alone were 300 kB
