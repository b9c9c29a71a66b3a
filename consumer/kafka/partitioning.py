"""Which partition a key belongs on: the Java client's default partitioner, and nothing else.

Kept apart from the Kafka clients so that the pure core (``consumer.intake``) can count
misrouted events, and ``basicsync check`` and ``redrive`` can find a job's partition, without
importing a consumer or a producer.
"""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2


@lru_cache(maxsize=1 << 16)
def hashes_to(key: bytes, partitions: int) -> int:
    """The partition the Java default partitioner picks for ``key``.

    Cached: aiokafka's murmur2 is pure Python and a job's events share its key.
    """
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions
