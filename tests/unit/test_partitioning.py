"""The Java default partitioner's choice of partition for a key (consumer.kafka.partitioning)."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner

from consumer.kafka.partitioning import hashes_to

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
