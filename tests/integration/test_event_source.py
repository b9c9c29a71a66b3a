"""The input side (consumer.kafka.source.EventSource) against the real broker: how far behind.

``behind`` drives catch-up mode. It must never report a backlog smaller than it is: a partition
assigned but not fetched yet, or sought and not read since, is unknown, not zero.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from consumer.kafka.source import EventSource
from tests.fixtures.kafka import MakeTopic

pytestmark = pytest.mark.integration

PER_PARTITION = (400, 30, 0)


class Owner:
    def __init__(self) -> None:
        self.assigned: asyncio.Event = asyncio.Event()

    async def partitions_revoked(self, partitions: set[int]) -> None:
        pass

    async def partitions_assigned(self, partitions: set[int]) -> None:
        self.assigned.set()


async def _backlog(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for partition, count in enumerate(PER_PARTITION):
            for n in range(count):
                await producer.send(topic, b"x" * 100, key=b"%d" % n, partition=partition)
        await producer.flush()
    finally:
        await producer.stop()


def _source(bootstrap: str, topic: str, group: str) -> EventSource:
    def factory(**extra: Any) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, max_poll_records=50, **extra
        )

    return EventSource(factory, [topic])


class TestBehind:
    async def test_never_reports_less_than_the_backlog_left(
        self, kafka_bootstrap: str, make_topic: MakeTopic
    ) -> None:
        """Fetching a backlog 50 records at a time from a fresh group: each reading is either
        unknown or exactly what is left, down to zero (an empty partition included)."""
        topic = await make_topic("behind", partitions=len(PER_PARTITION))
        await _backlog(kafka_bootstrap, topic)
        source = _source(kafka_bootstrap, topic, f"behind-{uuid.uuid4().hex[:8]}")
        owner = Owner()
        await source.start(owner)
        try:
            await asyncio.wait_for(owner.assigned.wait(), 30)
            assert source.behind() is None  # nothing fetched yet
            left, readings = sum(PER_PARTITION), []
            async with asyncio.timeout(30):
                while left or source.behind() != 0:
                    left -= len(await source.fetch(200))
                    reading = source.behind()
                    readings.append(reading)
                    assert reading is None or reading == left, (reading, left)
            assert sum(r is not None for r in readings) >= 5, readings
        finally:
            await source.stop()

    async def test_a_seek_to_the_committed_offset_is_a_known_position(
        self, kafka_bootstrap: str, make_topic: MakeTopic
    ) -> None:
        """After a rebalance the member seeks to the committed offsets: what is behind is
        counted from them at once, once the partitions' ends are known. The committed offsets
        come with their metadata (what the take checks the changelog against)."""
        topic = await make_topic("behind-seek", partitions=len(PER_PARTITION))
        await _backlog(kafka_bootstrap, topic)
        group = f"behind-seek-{uuid.uuid4().hex[:8]}"
        # No auto-commit: at its stop it would commit its positions again, without metadata.
        committer = AIOKafkaConsumer(
            bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
        )
        await committer.start()
        try:
            committer.assign([TopicPartition(topic, p) for p in range(2)])
            await committer.commit(
                {TopicPartition(topic, p): OffsetAndMetadata(10 * p, f"mark-{p}") for p in range(2)}
            )
        finally:
            await committer.stop()
        source = _source(kafka_bootstrap, topic, group)
        owner = Owner()
        await source.start(owner)
        try:
            await asyncio.wait_for(owner.assigned.wait(), 30)
            fetched = len(await source.fetch(2_000))
            committed = await source.committed({0, 1, 2})
            assert committed == {
                (topic, 0): OffsetAndMetadata(0, "mark-0"),
                (topic, 1): OffsetAndMetadata(10, "mark-1"),
            }
            source.seek({key: c.offset for key, c in committed.items()})
            # Partition 2 has no committed offset (earliest, position known once reset);
            # 0 and 1 are read again from the committed offsets.
            reading = source.behind()
            assert reading is None or reading == sum(PER_PARTITION) - 10, (reading, fetched)
            async with asyncio.timeout(30):
                while source.behind() is None:
                    await source.fetch(50)
            assert source.behind() is not None
        finally:
            await source.stop()
