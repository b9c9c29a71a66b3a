"""Which partition a key belongs on: the Java client's default partitioner, and nothing else.

Kept apart from the Kafka clients so that the pure core (``consumer.intake``) can count
misrouted events, and ``basicsync check`` and ``redrive`` can find a job's partition, without
importing a consumer or a producer.
"""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2

#: keys up to this long have their partition cached (a clientJobId is far shorter)
CACHED_KEY_BYTES = 512


def hashes_to(key: bytes, partitions: int) -> int:
    """The partition the Java default partitioner picks for ``key``.

    Cached for keys up to :data:`CACHED_KEY_BYTES`: aiokafka's murmur2 is pure Python and a
    job's events share its key. A longer key is hashed anew each time: the cache keeps its
    keys, and 65,536 keys of a broken producer (an event's whole value as its key, say)
    would otherwise be kept, gigabytes of them.
    """
    if len(key) <= CACHED_KEY_BYTES:
        return _cached_home(key, partitions)
    return _home(key, partitions)


def _home(key: bytes, partitions: int) -> int:
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


_cached_home = lru_cache(maxsize=1 << 16)(_home)
